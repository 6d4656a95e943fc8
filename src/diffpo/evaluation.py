"""Scoring generated images; per-image scores are stored so tables never score twice.

The tiny profile's ground truth is the world's hidden raters (diffpo.world): prompt
alignment, aesthetics and their weighted sum, the preference the raters maximise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from diffpo.sampling import from_png

GROUND_TRUTH = ("gt_preference", "gt_alignment", "gt_aesthetic")


def ground_truth_scores(samples: pd.DataFrame, world_params: dict) -> pd.DataFrame:
    """The world's ground-truth scores of every sampled image, beside its prompt and seed."""
    from diffpo import world

    images = np.stack([from_png(b) for b in samples["png"]])
    captions = samples["caption"].tolist()
    scores = samples.drop(columns=["png"]).copy()
    scores["gt_preference"] = world.preference_score(
        images, captions, world_params["alignment_weight"], world_params["aesthetic_weight"]
    )
    scores["gt_alignment"] = world.alignment_score(images, captions)
    scores["gt_aesthetic"] = world.aesthetic_score(images)
    return scores


def per_prompt(scores: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean over a prompt's images: the unit over which standard errors are taken."""
    return scores.groupby("prompt_id")[columns].mean()


def mean_and_se(values: pd.Series) -> tuple[float, float]:
    values = values.dropna()
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    se = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(values.mean()), se
