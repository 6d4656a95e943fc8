"""Generating the world: Pick-a-Pic v2 shaped preference splits, out-of-distribution prompt
sets, and the facts about them (world.json). The base model's corpus is ``corpus``'s."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from diffpo.world.ground_truth import DEGRADATIONS, aesthetic_score, degrade, preference_score
from diffpo.world.shards import random_uids, write_atomic, write_shards
from diffpo.world.render import CLEAN_STYLE, GENERATOR_STYLES, decode_jpeg, encode_jpeg, render_batch
from diffpo.world.vocabulary import (FREE_ATTRIBUTES, OOD_TEMPLATES, TEMPLATES, Attributes, all_combinations,
                                     leave_free, make_caption, parse_caption)

@dataclass
class WorldConfig:
    """Size and randomness of the synthetic world (everything derives from seed)."""

    seed: int = 0
    image_size: int = 32
    n_train_pairs: int = 20000
    n_validation_unique: int = 200
    n_test_unique: int = 200
    n_ood_combinations: int = 200
    n_ood_phrasings: int = 200
    train_shard_size: int = 5000
    tie_fraction: float = 0.10
    rater_temperature: float = 0.1
    n_raters: int = 8
    alignment_weight: float = 0.6
    aesthetic_weight: float = 0.4
    heldout_combination_fraction: float = 0.15
    n_corrupt_rows: int = 3
    n_invalid_label_rows: int = 2
    n_tuning: int = 160
    free_attribute_probability: float = 0.3


SCHEMA = pa.schema([
    ("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()),
    ("label_0", pa.float64()), ("label_1", pa.float64()), ("best_image_uid", pa.string()),
    ("image_0_uid", pa.string()), ("image_1_uid", pa.string()),
    ("model_0", pa.string()), ("model_1", pa.string()), ("ranking_id", pa.int64()),
    ("user_id", pa.int64()), ("created_at", pa.timestamp("us")), ("are_different", pa.bool_()),
    ("has_label", pa.bool_()), ("num_example_per_prompt", pa.int64()),
])
PROMPT_SCHEMA = pa.schema([("caption", pa.string()), ("prompt_id", pa.int64())])


def rate_pairs(u0: np.ndarray, u1: np.ndarray, temperature: float, tie_fraction: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hidden raters: (label_0, tie). P(image 0 preferred) = sigmoid((u0 - u1) / T)
    (Bradley-Terry); a tie with probability proportional to exp(-|u0 - u1| / T), scaled so
    that the expected tie fraction is tie_fraction. label_0 is 1, 0 or 0.5 (tie)."""
    gap = np.abs(u0 - u1)
    weight = np.exp(-gap / temperature)
    p_tie = np.clip(tie_fraction * len(gap) * weight / weight.sum(), 0, 1)
    tie = rng.random(len(gap)) < p_tie
    first = rng.random(len(gap)) < 1 / (1 + np.exp(-np.clip((u0 - u1) / temperature, -50, 50)))
    return np.where(tie, 0.5, first.astype(np.float64)), tie


def _make_split(captions: list[str], config: WorldConfig, rng: np.random.Generator,
                rater_ids: np.ndarray, first_ranking_id: int) -> tuple[dict, dict]:
    """Columns of one split (one pair per caption entry) and the hidden facts about it."""
    n = len(captions)
    attrs = [parse_caption(c) for c in captions]
    gen = rng.integers(len(GENERATOR_STYLES), size=(2, n))
    styles = [GENERATOR_STYLES[g] for g in gen.ravel()]
    images = render_batch(attrs + attrs, styles, rng, config.image_size)
    jpgs = [encode_jpeg(image) for image in images]
    seen = np.stack([decode_jpeg(j) for j in jpgs])
    utility = preference_score(seen, captions + captions, config.alignment_weight, config.aesthetic_weight)
    u0, u1 = utility[:n], utility[n:]
    label_0, tie = rate_pairs(u0, u1, config.rater_temperature, config.tie_fraction, rng)
    uids = random_uids(rng, 2 * n)
    start = np.datetime64("2023-04-01T00:00:00", "us") + np.timedelta64(int(rng.integers(0, 86400 * 30)), "s")
    created = np.sort(start + rng.integers(0, 86400 * 60 * 10**6, n).astype("timedelta64[us]"))
    counts: dict[str, int] = {}
    for c in captions:
        counts[c] = counts.get(c, 0) + 1
    columns = {
        "caption": captions, "jpg_0": jpgs[:n], "jpg_1": jpgs[n:],
        "label_0": label_0, "label_1": 1 - label_0,
        "best_image_uid": [("" if t else (a if l == 1 else b)) for t, l, a, b in zip(tie, label_0, uids[:n], uids[n:])],
        "image_0_uid": uids[:n], "image_1_uid": uids[n:],
        "model_0": [GENERATOR_STYLES[g].name for g in gen[0]],
        "model_1": [GENERATOR_STYLES[g].name for g in gen[1]],
        "ranking_id": np.arange(first_ranking_id, first_ranking_id + n, dtype=np.int64),
        "user_id": rater_ids[rng.integers(len(rater_ids), size=n)],
        "created_at": created, "are_different": np.ones(n, bool), "has_label": np.ones(n, bool),
        "num_example_per_prompt": np.array([counts[c] for c in captions], dtype=np.int64),
    }
    decided = ~tie & (u0 != u1)
    agree = (label_0 == 1) == (u0 > u1)
    facts = {
        "rater_agreement": float(agree[decided].mean()) if decided.any() else float("nan"),
        "tie_fraction": float(tie.mean()),
        "mean_utility": {st.name: float(utility[gen.ravel() == i].mean())
                         for i, st in enumerate(GENERATOR_STYLES) if (gen.ravel() == i).any()},
    }
    return columns, facts


def _corrupt(columns: dict, config: WorldConfig, rng: np.random.Generator) -> dict:
    """Inject the bad rows of a real scrape: truncated JPEGs and invalid labels."""
    n = len(columns["caption"])
    rows = rng.choice(n, size=min(n, config.n_corrupt_rows + config.n_invalid_label_rows), replace=False)
    corrupt, invalid = sorted(rows[:config.n_corrupt_rows].tolist()), sorted(rows[config.n_corrupt_rows:].tolist())
    damaged = [f"jpg_{k % 2}" for k in range(len(corrupt))]
    for row, column in zip(corrupt, damaged):
        columns[column][row] = columns[column][row][: len(columns[column][row]) // 3]
    for k, row in enumerate(invalid):
        columns["label_0"][row], columns["label_1"][row] = (1.0, 1.0) if k % 2 == 0 else (0.7, 0.2)
        columns["best_image_uid"][row] = ""
    return {"corrupt_jpg_rows": [int(r) for r in corrupt], "corrupt_jpg_columns": damaged,
            "invalid_label_rows": [int(r) for r in invalid]}


def _prompt_pool(combos: list[Attributes], templates: tuple[str, ...], p_free: float,
                 rng: np.random.Generator) -> list[str]:
    """One caption per (combination, template), each free attribute left unnamed with p_free."""
    pool = []
    for attrs in combos:
        for template in templates:
            free = tuple(f for f in FREE_ATTRIBUTES if rng.random() < p_free)
            pool.append(make_caption(leave_free(attrs, free), template))
    return list(dict.fromkeys(pool))  # a free attribute can make two captions equal


def make_world(config: WorldConfig, out_dir: Path) -> dict:
    """Write the Pick-a-Pic v2 shaped splits, prompt sets and world.json."""
    out_dir = Path(out_dir)
    (out_dir / "prompts").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    combos = all_combinations()
    order = rng.permutation(len(combos))
    n_heldout = int(round(config.heldout_combination_fraction * len(combos)))
    heldout = [combos[i] for i in sorted(order[:n_heldout])]
    seen = [combos[i] for i in sorted(order[n_heldout:])]

    pool = _prompt_pool(seen, TEMPLATES, config.free_attribute_probability, rng)
    pool = [pool[i] for i in rng.permutation(len(pool))]
    n_val, n_test, n_tune = config.n_validation_unique, config.n_test_unique, config.n_tuning
    if n_val + n_test + n_tune >= len(pool):
        raise ValueError(f"validation + test + tuning prompts ({n_val + n_test + n_tune}) must be fewer than {len(pool)}")
    val_captions, test_captions = pool[:n_val], pool[n_val:n_val + n_test]
    tuning_captions = pool[n_val + n_test:n_val + n_test + n_tune]
    train_pool = pool[n_val + n_test + n_tune:]
    train_captions = [train_pool[i] for i in rng.integers(len(train_pool), size=config.n_train_pairs)]

    rater_ids = np.sort(rng.choice(1_000_000, size=config.n_raters, replace=False)).astype(np.int64)
    summary: dict = {"config": dataclasses.asdict(config),
                     "generator_styles": [dataclasses.asdict(s) for s in GENERATOR_STYLES],
                     "scorer_weights": {"alignment": config.alignment_weight, "aesthetic": config.aesthetic_weight},
                     "heldout_combinations": [dataclasses.asdict(a) for a in heldout],
                     "rater_ids": rater_ids.tolist(), "splits": {}}
    next_id = int(rng.integers(10**6, 10**7))
    for split, captions in (("train", train_captions), ("validation_unique", val_captions),
                            ("test_unique", test_captions), ("tuning", tuning_captions)):
        columns, facts = _make_split(captions, config, rng, rater_ids, next_id)
        next_id += len(captions)
        if split == "train":
            facts["bad_rows"] = _corrupt(columns, config, rng)
        table = pa.table(columns, schema=SCHEMA)
        size = config.train_shard_size if split == "train" else max(1, len(captions))
        names = write_shards(table, out_dir, split, size)
        summary["splits"][split] = {"rows": len(captions), "prompts": len(set(captions)), "shards": names, **facts}

    prompt_sets = {
        "ood_combinations": _prompt_pool(heldout, TEMPLATES, config.free_attribute_probability, rng),
        "ood_phrasings": _prompt_pool(seen, OOD_TEMPLATES, config.free_attribute_probability, rng),
    }
    summary["prompt_sets"] = {}
    for name, wanted in (("ood_combinations", config.n_ood_combinations), ("ood_phrasings", config.n_ood_phrasings)):
        candidates = prompt_sets[name]
        chosen = [candidates[i] for i in rng.permutation(len(candidates))[:wanted]]
        table = pa.table({"caption": chosen, "prompt_id": np.arange(len(chosen), dtype=np.int64)}, schema=PROMPT_SCHEMA)
        write_atomic(table, out_dir / "prompts" / f"{name}.parquet")
        summary["prompt_sets"][name] = len(chosen)
    summary["degradations"] = degradation_table(config, np.random.default_rng([config.seed, 1]))

    tmp = out_dir / ".world.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / "world.json")
    return summary


def degradation_table(config: WorldConfig, rng: np.random.Generator, n: int = 240) -> dict:
    """GT preference and aesthetics of clean renders and of each degradation of them."""
    combos = all_combinations()
    attrs = [combos[i] for i in rng.integers(len(combos), size=n)]
    captions = [make_caption(a, TEMPLATES[0]) for a in attrs]
    clean = render_batch(attrs, [CLEAN_STYLE] * n, rng, config.image_size)
    out = {}
    for kind in ("clean", *DEGRADATIONS):
        images = clean if kind == "clean" else degrade(clean, kind, rng)
        pref = preference_score(images, captions, config.alignment_weight, config.aesthetic_weight)
        aes = aesthetic_score(images)
        out[kind] = {"gt_preference": float(pref.mean()), "gt_aesthetic": float(aes.mean()),
                     "gt_preference_se": float(pref.std(ddof=1) / np.sqrt(n)),
                     "gt_aesthetic_se": float(aes.std(ddof=1) / np.sqrt(n))}
    return out
