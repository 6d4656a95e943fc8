import logging

import numpy as np
import pytest

from diffpo.scoring import diversity
from diffpo.scoring.diversity import HIGHER_IS_MORE_DIVERSE, METRICS, PSNR_CAP_DB, diversity_table, prompt_diversity


def noise(k: int, side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (k, side, side, 3), dtype=np.uint8)


def mixed(t: float, k: int = 4, side: int = 32) -> np.ndarray:
    """Images (1 - t) * shared + t * own noise: t = 0 identical, t = 1 independent noise."""
    rng = np.random.default_rng(1)
    shared = rng.random((side, side, 3))
    own = rng.random((k, side, side, 3))
    return np.round(255 * ((1 - t) * shared + t * own)).astype(np.uint8)


def test_identical_images_are_not_diverse():
    images = np.repeat(noise(1, 32), 4, axis=0)
    scores = prompt_diversity(images)
    assert scores["rmse"] == 0.0
    assert scores["psnr"] == PSNR_CAP_DB
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert scores["e1"] == 0.0
    assert scores["e2"] == 0.0
    assert scores["vendi"] == pytest.approx(1.0, abs=1e-9)


def test_identical_constant_images_are_not_diverse():
    scores = prompt_diversity(np.zeros((3, 16, 16, 3), dtype=np.uint8))
    assert scores == pytest.approx({"rmse": 0, "psnr": PSNR_CAP_DB, "ssim": 1, "e1": 0, "e2": 0, "vendi": 1})


def test_independent_noise():
    k = 4
    scores = prompt_diversity(noise(k, 64))
    assert scores["rmse"] == pytest.approx(1 / np.sqrt(6), abs=0.005)
    assert scores["psnr"] == pytest.approx(20 * np.log10(np.sqrt(6)), abs=0.1)
    assert abs(scores["ssim"]) < 0.05
    assert scores["e1"] == pytest.approx(np.log2(k), abs=0.02)
    assert scores["e2"] == pytest.approx(1 / np.sqrt(6) / 8, abs=0.01)  # 8x8-pixel cells average noise down 8x
    assert scores["vendi"] == pytest.approx(k, abs=0.01)


def test_more_noise_is_more_diverse_on_every_metric():
    table = [prompt_diversity(mixed(t)) for t in (0.0, 0.05, 0.2, 0.5, 1.0)]
    for metric in METRICS:
        values = np.array([row[metric] for row in table])
        steps = np.diff(values) if HIGHER_IS_MORE_DIVERSE[metric] else -np.diff(values)
        assert np.all(steps > 0), (metric, values)


def test_rmse_and_psnr_by_hand():
    images = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    images[1, 0, 0] = 255  # one of four pixels differs by 1 in all channels: MSE = 3 / 12
    assert diversity.pairwise_rmse(images) == pytest.approx(0.5)
    assert diversity.pairwise_psnr(images) == pytest.approx(10 * np.log10(4))

    flat = np.stack([np.full((2, 2, 3), v, dtype=np.uint8) for v in (0, 51, 102)])  # 0, 0.2, 0.4
    # pairs (0, 0.2), (0, 0.4), (0.2, 0.4): RMSE 0.2, 0.4, 0.2; MSE 0.04, 0.16, 0.04
    assert diversity.pairwise_rmse(flat) == pytest.approx((0.2 + 0.4 + 0.2) / 3)
    assert diversity.pairwise_psnr(flat) == pytest.approx((2 * 10 * np.log10(25) + 10 * np.log10(6.25)) / 3)


def test_psnr_is_capped_for_nearly_identical_large_images():
    images = np.zeros((2, 256, 256, 3), dtype=np.uint8)
    images[1, 0, 0, 0] = 1  # true PSNR 101.1 dB
    assert diversity.pairwise_psnr(images) == PSNR_CAP_DB


def test_entropy_gain_by_hand():
    images = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    images[1, 0, :] = 255  # two of four locations differ: 1 bit there, 0 elsewhere
    assert diversity.entropy_gain(images) == pytest.approx(0.5)
    images[1, 0, :] = 20  # same colour bin as 0 (8 levels per channel): no difference
    assert diversity.entropy_gain(images) == 0.0
    distinct = np.stack([np.full((2, 2, 3), v, dtype=np.uint8) for v in (0, 64, 128, 192)])
    assert diversity.entropy_gain(distinct) == pytest.approx(2.0)


def test_vendi_of_orthogonal_and_duplicated_images():
    patterns = np.array([[1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])  # zero-mean, orthogonal
    images = np.repeat(np.where(patterns > 0, 255, 0).astype(np.uint8).reshape(3, 2, 2, 1), 3, axis=-1)
    assert diversity.vendi_score(images) == pytest.approx(3.0)
    # two copies of one image and an unrelated one: eigenvalues 2/3, 1/3
    expected = np.exp(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)))
    assert diversity.vendi_score(images[[0, 0, 1]]) == pytest.approx(expected)
    black_and_noise = np.concatenate([np.zeros((2, 2, 2, 3), dtype=np.uint8), images[:1]])
    assert diversity.vendi_score(black_and_noise) == pytest.approx(expected)


def test_ssim_of_flat_images_by_hand():
    # Flat images with equal means: SSIM = luminance term only = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.8, 0.4
    images = np.stack([np.full((16, 16, 3), round(255 * v), dtype=np.uint8) for v in (a, b)])
    a, b = round(255 * a) / 255, round(255 * b) / 255
    c1 = diversity.SSIM_K1**2
    assert diversity.pairwise_ssim(images) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_diversity_table_groups_and_counts_skipped(caplog):
    images = noise(7, 16, seed=3)
    prompt_ids = np.array([7, 2, 2, 5, 7, 2, 9])
    with caplog.at_level(logging.WARNING, logger="diffpo.scoring.diversity"):
        table = diversity_table(images, prompt_ids)
    assert list(table.columns) == ["prompt_id", "n_images", *METRICS]
    assert table["prompt_id"].tolist() == [2, 7]
    assert table["n_images"].tolist() == [3, 2]
    assert table.attrs["skipped_prompts"] == 2
    assert "skipped 2 prompt(s)" in caplog.text
    assert table.iloc[0][list(METRICS)].to_dict() == pytest.approx(prompt_diversity(images[[1, 2, 5]]))
    assert table.iloc[1][list(METRICS)].to_dict() == pytest.approx(prompt_diversity(images[[0, 4]]))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        prompt_diversity(noise(1, 16))
    with pytest.raises(ValueError, match="uint8"):
        prompt_diversity(noise(2, 16).astype(np.float32))
    with pytest.raises(ValueError, match="at least 11x11"):
        diversity.pairwise_ssim(noise(2, 8))
    with pytest.raises(ValueError, match="prompt ids"):
        diversity_table(noise(3, 16), np.array([1, 1]))


def test_every_metric_has_a_direction():
    assert set(HIGHER_IS_MORE_DIVERSE) == set(METRICS)
