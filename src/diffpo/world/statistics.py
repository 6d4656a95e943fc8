"""Facts about the world that need the pre-trained base model: is the preference data better
than what the base draws (as Pick-a-Pic's images were better than SD-1.5's), how diverse the
base is on what its prompts leave free, and how degraded its samples are."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from diffpo.world.ground_truth import degradation_diagnostic, preference_score
from diffpo.world.render import decode_jpeg

Z95 = 1.959964


def interval(values: np.ndarray) -> dict:
    """Mean and normal-approximation 95 % interval over independent units (here prompts)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    mean, se = float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))
    return {"mean": mean, "ci95": [mean - Z95 * se, mean + Z95 * se], "se": se, "n_prompts": int(len(values))}


def data_vs_base(shards: list[Path], base_scores: pd.DataFrame, alignment_weight: float,
                 aesthetic_weight: float) -> dict:
    """GT preference of the data's images minus the base model's samples, per prompt.

    ``random``: the mean of a pair's two images (a random data image, in expectation);
    ``winner``: the image the raters chose (ties and invalid labels left out).
    """
    rows = pq.read_table(shards, columns=["caption", "jpg_0", "jpg_1", "label_0", "label_1"]).to_pandas()
    usable = []
    for row in rows.itertuples(index=False):
        try:
            usable.append((row.caption, decode_jpeg(row.jpg_0), decode_jpeg(row.jpg_1), row.label_0, row.label_1))
        except ValueError:
            continue
    captions = [u[0] for u in usable]
    images = np.stack([u[1] for u in usable] + [u[2] for u in usable])
    utility = preference_score(images, captions * 2, alignment_weight, aesthetic_weight)
    u0, u1 = utility[: len(usable)], utility[len(usable):]
    label_0 = np.array([u[3] for u in usable])
    label_1 = np.array([u[4] for u in usable])
    winner = np.where((label_0 == 1) & (label_1 == 0), u0, np.where((label_0 == 0) & (label_1 == 1), u1, np.nan))
    data = pd.DataFrame({"caption": captions, "random": (u0 + u1) / 2, "winner": winner})
    data = data.groupby("caption").mean()
    base = base_scores.groupby("caption")["gt_preference"].mean()
    joined = data.join(base, how="inner")
    data_degradation = degradation_diagnostic(images)
    return {
        "prompts": int(len(joined)),
        "random_data_image_minus_base": interval(joined["random"] - joined["gt_preference"]),
        "winner_minus_base": interval(joined["winner"] - joined["gt_preference"]),
        "base_gt_preference": interval(joined["gt_preference"]),
        "data_gt_preference": interval(joined["random"]),
        "degradation": {"data_images": float(data_degradation.mean()),
                        "base_samples": float(base_scores["degradation"].mean())},
    }


def _image_keys(shards: list[Path]) -> tuple[set[str], set[str]]:
    uids, hashes = set(), set()
    for shard in shards:
        table = pq.read_table(shard, columns=["jpg_0", "jpg_1", "image_0_uid", "image_1_uid"])
        for k in (0, 1):
            uids.update(table.column(f"image_{k}_uid").to_pylist())
            hashes.update(hashlib.sha256(b).hexdigest() for b in table.column(f"jpg_{k}").to_pylist())
    return uids, hashes


def disjointness(corpus_shards: list[Path], preference_shards: list[Path]) -> dict:
    """Images the base model's corpus shares with the preference data, by uid and by content
    (SHA-256 of the encoded bytes): both must be zero."""
    corpus_uids, corpus_hashes = _image_keys(corpus_shards)
    preference_uids, preference_hashes = _image_keys(preference_shards)
    return {"corpus_images": len(corpus_hashes), "preference_images": len(preference_hashes),
            "shared_uids": len(corpus_uids & preference_uids), "shared_content": len(corpus_hashes & preference_hashes)}


def world_statistics(shards: list[Path], base_scores: pd.DataFrame, base_diversity: pd.DataFrame,
                     alignment_weight: float, aesthetic_weight: float) -> dict:
    facts = data_vs_base(shards, base_scores, alignment_weight, aesthetic_weight)
    semantic = base_diversity["semantic_entropy"].dropna() if "semantic_entropy" in base_diversity else pd.Series([])
    facts["base_semantic_diversity"] = interval(semantic.to_numpy()) if len(semantic) > 1 else None
    facts["interval"] = "mean and 95 % normal interval over prompts (a prompt's images averaged first)"
    return facts
