"""Scoring generated images; per-image scores are stored so tables never score twice.

Learned scorers (PickScore, HPSv2, ImageReward, aesthetic) are the real checkpoints in the
paper profile and stand-ins trained on the world's raters in the tiny profile; the tiny
profile adds the world's ground truth: prompt alignment, aesthetics and their weighted sum,
the preference the hidden raters maximise. Each scorer's name, version and scale are stored
in the score file's metadata, beside the numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from diffpo.models.sampling import from_png

GROUND_TRUTH = ("gt_preference", "gt_alignment", "gt_aesthetic")


def load_scorers(params: dict, stand_in_dir: Path | None = None) -> dict:
    """The configured scorers, on this process's accelerator: stand-ins from ``stand_in_dir`` (tiny) or the
    real checkpoints (paper)."""
    from diffpo.models.devices import device

    names = params["scorers"]["names"]
    if params["profile"] == "tiny":
        from diffpo.scoring.stand_ins import load_stand_in

        return {name: load_stand_in(Path(stand_in_dir) / name, device=device()) for name in names}
    from diffpo.scoring.learned import build_scorer

    return {name: build_scorer(name, device=device(), **params["scorers"]["sources"].get(name, {})) for name in names}


def describe(scorers: dict) -> dict:
    return {name: {"version": s.version, "scale": s.scale} for name, s in scorers.items()}


def score_images(images: np.ndarray, captions: list[str], scorers: dict, batch_size: int,
                 world_params: dict | None = None) -> pd.DataFrame:
    """One column per learned scorer, plus the ground truth where a world defines it."""
    from diffpo.world.ground_truth import degradation_diagnostic

    # Pixel-level degradation (high-frequency energy): noise must not pass for diversity.
    columns = {"degradation": degradation_diagnostic(images)}
    if world_params is not None:
        columns.update(ground_truth(images, captions, world_params))
    for name, scorer in scorers.items():
        columns[name] = scorer.score(images, captions, batch_size=batch_size)
    return pd.DataFrame(columns)


def decode_samples(samples: pd.DataFrame) -> np.ndarray:
    return np.stack([from_png(b) for b in samples["png"]])


def score_samples(samples: pd.DataFrame, images: np.ndarray, scorers: dict, batch_size: int,
                  world_params: dict | None = None) -> pd.DataFrame:
    """Per-image scores of sampled images, beside their prompt and seed (PNG bytes dropped)."""
    scores = score_images(images, samples["caption"].tolist(), scorers, batch_size, world_params)
    return pd.concat([samples.drop(columns=["png"]).reset_index(drop=True), scores], axis=1)


def ground_truth(images: np.ndarray, captions: list[str], world_params: dict) -> dict[str, np.ndarray]:
    """The world's hidden-rater utility and its two parts."""
    from diffpo import world

    scores = {}
    scores["gt_preference"] = world.preference_score(
        images, captions, world_params["alignment_weight"], world_params["aesthetic_weight"]
    )
    scores["gt_alignment"] = world.alignment_score(images, captions)
    scores["gt_aesthetic"] = world.aesthetic_score(images)
    return scores


def scorer_accuracy(pairs, scorers: dict, world_params: dict | None = None, batch_size: int = 8) -> pd.DataFrame:
    """Each scorer's agreement with held-out rated pairs (ties excluded), as Diffusion-DPO's table.

    ``pairs``: a ``Pairs``, or an iterable of ``Pairs`` batches (``rated_pairs.PairStream``):
    only the batch in hand and each pair's scores are held, so a split of any size fits.
    """
    from diffpo.data.rated_pairs import Pairs
    from diffpo.scoring.stand_ins import agreement

    scores: dict[str, list] = {name: [] for name in [*scorers, *(["ground_truth"] if world_params is not None else [])]}
    labels = []
    for batch in [pairs] if isinstance(pairs, Pairs) else pairs:
        for name, scorer in scorers.items():
            scores[name].append((scorer.score(batch.images_0, batch.captions, batch_size=batch_size),
                                 scorer.score(batch.images_1, batch.captions, batch_size=batch_size)))
        if world_params is not None:  # the raters' own utility: the ceiling set by their Bradley-Terry noise
            scores["ground_truth"].append(tuple(ground_truth(images, batch.captions, world_params)["gt_preference"]
                                                for images in (batch.images_0, batch.images_1)))
        labels.append(batch.label_0)
    label_0 = np.concatenate(labels)
    rows = []
    for name, parts in scores.items():
        s0, s1 = (np.concatenate([part[k] for part in parts]) for k in (0, 1))
        version = scorers[name].version if name in scorers else "the world's rater utility (ceiling)"
        rows.append({"scorer": name, "version": version, "accuracy": agreement(s0, s1, label_0)})
    decided = label_0 != 0.5
    table = pd.DataFrame(rows)
    n = int(decided.sum())
    table["n_pairs"] = n
    table["se"] = np.sqrt(table["accuracy"] * (1 - table["accuracy"]) / n)
    table["ties_excluded"] = int((~decided).sum())
    return table


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
