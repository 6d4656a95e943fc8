"""The two-level bootstrap over training seeds and prompts, against cases worked by hand."""

import numpy as np
import pandas as pd
import pytest

from diffpo.evidence.intervals import bootstrap_means, estimate, paired_difference, seed_prompt_matrix


def test_bootstrap_distribution_of_a_two_by_two_case_worked_by_hand():
    # v[s, p] = 2 s + p. A draw's mean is 2 mean(drawn seeds) + mean(drawn prompts); each mean is
    # 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, independently. So the draw's mean is
    # 0: 1/16, 0.5: 1/8, 1: 1/16 + 1/8, 1.5: 1/4, 2: 1/8 + 1/16, 2.5: 1/8, 3: 1/16,
    # whose distribution function is 0.0625, 0.1875, 0.375, 0.625, 0.8125, 0.9375, 1.
    matrix = np.array([[0.0, 1.0], [2.0, 3.0]])
    draws = bootstrap_means(matrix, n_draws=200_000, seed=1)
    expected = {0.0: 1 / 16, 0.5: 1 / 8, 1.0: 3 / 16, 1.5: 1 / 4, 2.0: 3 / 16, 2.5: 1 / 8, 3.0: 1 / 16}
    for value, probability in expected.items():
        assert np.mean(np.isclose(draws, value)) == pytest.approx(probability, abs=0.005)
    # the 50 % interval: the smallest values whose distribution function reaches 0.25 and 0.75
    half = estimate(matrix, level=0.5, n_draws=200_000)
    assert (half.low, half.high) == (1.0, 2.0) and half.mean == 1.5
    # the 95 % interval: 0.025 is reached at 0, 0.975 at 3
    full = estimate(matrix, n_draws=200_000)
    assert (full.low, full.high) == (0.0, 3.0)


def test_one_seed_is_an_interval_over_prompts_and_constant_cells_have_none():
    flat = estimate(np.full((3, 5), 0.7))
    assert flat.low == pytest.approx(0.7) and flat.high == pytest.approx(0.7)
    one_seed = estimate(np.array([[0.0, 1.0]]), level=0.6, n_draws=100_000)  # tails 0.2 and 0.8
    assert (one_seed.low, one_seed.high) == (0.0, 1.0) and one_seed.n_seeds == 1  # P(mean 0) = 1/4


def test_the_seed_level_widens_the_interval_when_seeds_disagree():
    rng = np.random.default_rng(0)
    prompts = rng.normal(0, 0.1, 100)
    agree = estimate(np.stack([prompts, prompts, prompts]))
    disagree = estimate(np.stack([prompts - 0.2, prompts, prompts + 0.2]))
    assert (disagree.high - disagree.low) > 3 * (agree.high - agree.low)


def test_paired_difference_matches_cells_by_seed_and_prompt():
    rows = lambda values: pd.DataFrame([{"seed": s, "prompt_id": p, "image_index": i, "x": v}
                                        for (s, p), v in values.items() for i in range(2)])
    base = rows({(0, 0): 0.1, (0, 1): 0.5, (1, 0): 0.2, (1, 1): 0.4, (1, 2): 9.0})  # prompt 2: seed 1 only
    method = rows({(0, 0): 0.3, (0, 1): 0.7, (1, 0): 0.4, (1, 1): 0.6, (1, 2): 9.0})
    assert list(seed_prompt_matrix(base, "x").columns) == [0, 1]  # a prompt some seed lacks is dropped
    diff = paired_difference(method, base, "x")
    assert diff.mean == pytest.approx(0.2) and diff.low == pytest.approx(0.2) and diff.high == pytest.approx(0.2)
    assert (diff.n_seeds, diff.n_prompts) == (2, 2)
