"""Intervals over training seeds and prompts: a two-level (hierarchical) bootstrap.

A row's value is a mean over training seeds s and prompts p of v[s, p], a prompt's images
averaged first. Both are samples: seeds of the training noise, prompts of the prompt
distribution. One bootstrap draw resamples the seeds with replacement and, independently,
the prompts with replacement (the same prompts for every seed, so that differences paired
on (seed, prompt) stay paired), and takes the mean of v over the drawn seeds x prompts.
The 95 % interval is the 2.5th to 97.5th percentile of the draws (the inverse of the draws'
distribution function, so a discrete case can be checked by hand). With one seed it is an
interval over prompts only, and the table headers say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

N_DRAWS = 4000
LEVEL = 0.95
METHOD = (f"two-level bootstrap over training seeds and prompts ({N_DRAWS} draws; seeds and prompts resampled "
          "independently, with replacement; percentile interval)")


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n_seeds: int
    n_prompts: int

    def excludes(self, value: float) -> bool:
        return self.low > value or self.high < value


def bootstrap_means(matrix: np.ndarray, n_draws: int = N_DRAWS, seed: int = 0) -> np.ndarray:
    """The means of ``n_draws`` resamples of a seeds x prompts matrix (rows and columns drawn
    independently, with replacement), computed from multinomial counts without copying it."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n_seeds, n_prompts = matrix.shape
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_draws)
    prompt_counts = rng.multinomial(n_prompts, np.full(n_prompts, 1 / n_prompts), size=n_draws)
    return np.einsum("bs,sp,bp->b", seed_counts, matrix, prompt_counts) / (n_seeds * n_prompts)


def estimate(matrix: np.ndarray, level: float = LEVEL, n_draws: int = N_DRAWS, seed: int = 0) -> Estimate:
    """Mean and percentile interval of a seeds x prompts matrix (no missing cells)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0)
    if np.isnan(matrix).any():
        raise ValueError("estimate: the seeds x prompts matrix has missing cells; align the prompts first")
    draws = bootstrap_means(matrix, n_draws, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail], method="inverted_cdf")
    return Estimate(float(matrix.mean()), float(low), float(high), matrix.shape[0], matrix.shape[1])


def seed_prompt_matrix(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Seeds x prompts of a per-image (or per-prompt) table: each cell the mean over that
    seed's images of the prompt; prompts that some seed lacks are dropped."""
    seeds = frame["seed"] if "seed" in frame else pd.Series(0, index=frame.index)
    cells = frame.assign(seed=seeds).groupby(["seed", "prompt_id"])[column].mean().unstack("prompt_id")
    return cells.dropna(axis=1)


def summarise(frame: pd.DataFrame, column: str, **kwargs) -> Estimate:
    return estimate(seed_prompt_matrix(frame, column).to_numpy(), **kwargs)


def paired_difference(frame: pd.DataFrame, baseline: pd.DataFrame, column: str, **kwargs) -> Estimate:
    """``frame`` minus ``baseline`` on the same (seed, prompt) cells, with its interval."""
    a, b = seed_prompt_matrix(frame, column), seed_prompt_matrix(baseline, column)
    seeds, prompts = a.index.intersection(b.index), a.columns.intersection(b.columns)
    if len(seeds) == 0 or len(prompts) == 0:
        raise ValueError(f"paired_difference: no common seeds and prompts for {column!r}")
    return estimate((a.loc[seeds, prompts] - b.loc[seeds, prompts]).to_numpy(), **kwargs)
