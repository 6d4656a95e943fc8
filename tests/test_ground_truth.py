"""Tests of the world's ground truth (diffpo.world.ground_truth): what its raters see."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from diffpo.world import ground_truth as gt
from diffpo.world.render import CLEAN_STYLE, GENERATOR_STYLES, decode_jpeg, encode_jpeg, render_batch
from diffpo.world.vocabulary import (COLOURS, FREE_ATTRIBUTES, SHAPES, TEMPLATES, VOCABULARIES, all_combinations,
                                     leave_free, make_caption)

COMBOS = all_combinations()


def truth(attrs, field: str) -> np.ndarray:
    return np.array([VOCABULARIES[field].index(getattr(a, field)) for a in attrs])


def noisy(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(images + rng.normal(0, sigma, images.shape), 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def every_combination():
    """Each attribute combination once, clean, through a JPEG q95 round trip (as rated)."""
    images = render_batch(COMBOS, [CLEAN_STYLE] * len(COMBOS), np.random.default_rng(0))
    return np.stack([decode_jpeg(encode_jpeg(i)) for i in images]), [make_caption(a, TEMPLATES[0]) for a in COMBOS]


@pytest.fixture(scope="module")
def random_clean():
    """240 clean renders of random combinations (degradation_table's setting)."""
    rng = np.random.default_rng(1)
    attrs = [COMBOS[i] for i in rng.integers(len(COMBOS), size=240)]
    return render_batch(attrs, [CLEAN_STYLE] * 240, rng), [make_caption(a, TEMPLATES[1]) for a in attrs]


def test_clean_renders_align_and_their_shapes_are_recognised(every_combination):
    images, captions = every_combination
    parts = gt.alignment_components(images, captions)
    assert list(parts) == list(VOCABULARIES)
    for values in parts.values():
        assert ((values >= 0) & (values <= 1)).all()
    score = gt.alignment_score(images, captions)
    assert score.mean() > 0.95 and score.min() > 0.85
    assert parts["shape"].mean() > 0.85
    assert (gt.recognise(images)["shape"] == truth(COMBOS, "shape")).mean() >= 0.9


def test_unnamed_attributes_are_left_out_of_alignment(every_combination):
    images, _ = every_combination
    loose = [make_caption(leave_free(a, ("size", "position")), TEMPLATES[0]) for a in COMBOS]
    parts = gt.alignment_components(images, loose)
    assert np.isnan(parts["size"]).all() and np.isnan(parts["position"]).all()
    named = np.stack([parts["colour"], parts["shape"], parts["background"]])
    assert np.allclose(gt.alignment_score(images, loose), named.mean(axis=0))


def test_wrong_shape_or_colour_scores_clearly_lower(every_combination):
    images, captions = every_combination
    right = gt.alignment_score(images, captions)
    for shift in (1, 2, 3):
        wrong = [make_caption(dataclasses.replace(a, shape=SHAPES[(SHAPES.index(a.shape) + shift) % 4]), TEMPLATES[0])
                 for a in COMBOS]
        drop = right - gt.alignment_score(images, wrong)
        assert drop.mean() > 0.15 and (drop > 0.05).mean() > 0.97, shift
    colours = list(COLOURS)
    wrong = [make_caption(dataclasses.replace(a, colour=colours[(colours.index(a.colour) + 1) % 6]), TEMPLATES[0])
             for a in COMBOS]
    assert (gt.alignment_score(images, wrong) < right - 0.15).all()
    blank = np.full((2, 32, 32, 3), 245, np.uint8)
    empty = gt.alignment_score(blank, captions[:2])
    assert np.isfinite(empty).all() and (empty < 0.5).all()


@pytest.mark.parametrize("kind", gt.DEGRADATIONS)
def test_each_degradation_lowers_preference_and_aesthetics(random_clean, kind):
    images, captions = random_clean
    degraded = gt.degrade(images, kind, np.random.default_rng(2))
    assert degraded.shape == images.shape and degraded.dtype == np.uint8
    for score in (lambda i: gt.preference_score(i, captions), gt.aesthetic_score):
        drop = score(images) - score(degraded)
        se = drop.std(ddof=1) / np.sqrt(len(drop))
        assert drop.mean() >= 0.05 and drop.mean() >= 5 * se, (kind, drop.mean(), se)
    with pytest.raises(ValueError, match="unknown degradation"):
        gt.degrade(images, "sepia", np.random.default_rng(0))


STYLES = {"clean": CLEAN_STYLE, "faded": dataclasses.replace(CLEAN_STYLE, contrast=0.45, saturation=0.5),
          "dark": dataclasses.replace(CLEAN_STYLE, exposure=-0.3),
          "blurred": dataclasses.replace(CLEAN_STYLE, blur=1.5)}


@pytest.mark.parametrize("style", STYLES.values(), ids=STYLES.keys())
def test_noise_never_raises_aesthetics(style):
    rng = np.random.default_rng(3)
    images = render_batch(COMBOS, [style] * len(COMBOS), rng).astype(np.float32)
    scores = [gt.aesthetic_score(noisy(images, sigma, rng)) for sigma in (0, 3, 8, 20, 50)]
    for before, after in zip(scores, scores[1:]):
        assert after.mean() < before.mean()
        assert (after <= before + 0.03).mean() > 0.97
    assert ((scores[0] >= 0) & (scores[0] <= 1)).all()


def test_faded_and_dark_renders_look_worse():
    rng = np.random.default_rng(4)
    crisp = gt.aesthetic_score(render_batch(COMBOS, [CLEAN_STYLE] * len(COMBOS), rng))
    for style in (STYLES["faded"], STYLES["dark"]):
        assert gt.aesthetic_score(render_batch(COMBOS, [style] * len(COMBOS), rng)).mean() < crisp.mean() - 0.15


def test_generators_rank_with_crisp_best():
    rng = np.random.default_rng(5)
    captions = [make_caption(a, TEMPLATES[2]) for a in COMBOS]
    means = {s.name: gt.preference_score(render_batch(COMBOS, [s] * len(COMBOS), rng), captions).mean()
             for s in GENERATOR_STYLES}
    assert all(means["gen-crisp"] > means[name] + 0.05 for name in means if name != "gen-crisp"), means


def test_scores_stay_in_the_unit_interval(random_clean):
    images, captions = random_clean
    rng = np.random.default_rng(6)
    odd = np.concatenate([rng.integers(0, 256, (8, 32, 32, 3)), np.zeros((2, 32, 32, 3)),
                          np.full((2, 32, 32, 3), 255)]).astype(np.uint8)
    batches = [odd] + [gt.degrade(images[:24], kind, rng) for kind in gt.DEGRADATIONS]
    for batch in batches:
        for score in (gt.aesthetic_score(batch), gt.preference_score(batch, captions[:len(batch)])):
            assert np.isfinite(score).all() and ((score >= 0) & (score <= 1)).all()
    assert gt.aesthetic_score(odd[:8]).max() < 0.05  # pure noise is no picture


def test_recognise_names_what_is_drawn(every_combination):
    images, _ = every_combination
    seen = gt.recognise(images)
    assert list(seen) == list(VOCABULARIES)
    for field, values in seen.items():
        assert values.shape == (len(COMBOS),) and np.issubdtype(values.dtype, np.integer)
        assert (values == truth(COMBOS, field)).mean() >= 0.95, field
    noisy_seen = gt.recognise(noisy(images, 20, np.random.default_rng(7)))
    for field in VOCABULARIES:
        assert (noisy_seen[field] == truth(COMBOS, field)).mean() >= 0.9, field


def test_chunks_do_not_change_scores(random_clean, monkeypatch):
    images, captions = random_clean
    whole = gt.preference_score(images, captions)
    monkeypatch.setattr(gt, "CHUNK", 7)
    assert np.allclose(gt.preference_score(images, captions), whole, atol=1e-6)


def test_semantic_diversity_counts_free_attributes_only():
    rng = np.random.default_rng(8)
    base = [COMBOS[i] for i in rng.choice(len(COMBOS), 20, replace=False)]
    free = [leave_free(a, FREE_ATTRIBUTES) for a in base]
    k = 8
    ids = np.repeat(np.arange(20), k)
    captions = [make_caption(free[i], TEMPLATES[0]) for i in ids]
    varied = render_batch([free[i] for i in ids], [CLEAN_STYLE] * len(ids), rng)
    same = render_batch([base[i] for i in ids], [CLEAN_STYLE] * len(ids), rng)
    table = gt.semantic_diversity(varied, captions, ids)
    assert list(table.columns) == ["prompt_id", "semantic_entropy", "n_free"]
    assert table["prompt_id"].tolist() == list(range(20)) and (table["n_free"] == 3).all()
    identical = gt.semantic_diversity(same, captions, ids)["semantic_entropy"]
    assert table["semantic_entropy"].mean() > 0.7 and identical.max() < 0.05
    for images, entropy in ((varied, table["semantic_entropy"]), (same, identical)):
        with_noise = gt.semantic_diversity(noisy(images, 20, rng), captions, ids)["semantic_entropy"]
        assert with_noise.mean() <= entropy.mean() + 0.02
    # A prompt that names everything leaves nothing to vary; one free attribute is counted alone.
    named = [make_caption(base[0], TEMPLATES[0])] * 4 + [make_caption(leave_free(base[1], ("size",)), TEMPLATES[0])] * 4
    small_large = render_batch([base[0]] * 4 + [dataclasses.replace(base[1], size=s) for s in ("small", "large") * 2],
                               [CLEAN_STYLE] * 8, rng)
    table = gt.semantic_diversity(small_large, named, np.array([5] * 4 + [3] * 4))
    assert table["prompt_id"].tolist() == [3, 5] and table["n_free"].tolist() == [1, 0]
    assert table["semantic_entropy"].iloc[0] == pytest.approx(1.0) and np.isnan(table["semantic_entropy"].iloc[1])


def test_degradation_diagnostic_is_zero_when_clean_and_rises_with_noise(every_combination):
    images, _ = every_combination
    png = render_batch(COMBOS, [CLEAN_STYLE] * len(COMBOS), np.random.default_rng(9))
    assert gt.degradation_diagnostic(png).max() < 0.5 and gt.degradation_diagnostic(images).mean() < 1.0
    rng = np.random.default_rng(10)
    levels = [gt.degradation_diagnostic(noisy(png.astype(np.float32), s, rng)).mean() for s in (2, 5, 10, 20, 40)]
    assert all(a < b for a, b in zip(levels, levels[1:]))
    assert levels[1] == pytest.approx(5, rel=0.2) and levels[3] == pytest.approx(20, rel=0.2)
    assert len(gt.degradation_diagnostic(np.zeros((0, 32, 32, 3), np.uint8))) == 0
