"""The base model's own pre-training corpus, standing in for LAION.

Two "web" images per caption, no ratings, in the web styles (``render.CORPUS_STYLES``):
another distribution than the preference data's generators, with careless, loose captions
that name only some attributes, in any order. It is generated apart from the preference
world (its own seed stream and folder), so the base never depends on the raters, and no
image of it is an image of a preference split (``world_stats`` checks uids and content).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from diffpo.world.shards import random_uids, write_shards
from diffpo.world.render import CORPUS_STYLES, encode_jpeg, render_batch
from diffpo.world.vocabulary import TEMPLATES, all_combinations, corpus_caption, leave_free, make_caption, parse_caption

CORPUS_SCHEMA = pa.schema([("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()),
                           ("image_0_uid", pa.string()), ("image_1_uid", pa.string()),
                           ("model_0", pa.string()), ("model_1", pa.string())])
# How often a pre-training caption names each attribute (web alt-texts leave much unsaid).
CORPUS_NAMING = {"colour": 0.8, "shape": 0.7, "background": 0.5, "size": 0.4, "position": 0.4}


def make_corpus_table(n: int, image_size: int, rng: np.random.Generator) -> tuple[pa.Table, dict]:
    """The base model's pre-training corpus: two web images per loose caption, no ratings.

    Images are drawn over every attribute combination (held-out ones too: SD-1.5's LAION
    covered what Pick-a-Pic's prompts later combined), in the web styles.
    """
    combos = all_combinations()
    truth = [combos[i] for i in rng.integers(len(combos), size=n)]
    captions = []
    for attrs in truth:
        named = tuple(f for f in CORPUS_NAMING if rng.random() >= CORPUS_NAMING[f])
        loose = leave_free(attrs, named)
        if loose.colour and loose.shape and rng.random() < 0.5:
            captions.append(make_caption(loose, TEMPLATES[rng.integers(len(TEMPLATES))]))
        else:
            captions.append(corpus_caption(loose, rng))
    # Both images show the caption's true attributes; what the caption leaves out varies.
    described = [parse_caption(c) for c in captions]
    gen = rng.integers(len(CORPUS_STYLES), size=(2, n))
    images = render_batch(described + described, [CORPUS_STYLES[g] for g in gen.ravel()], rng, image_size)
    jpgs = [encode_jpeg(image) for image in images]
    uids = random_uids(rng, 2 * n)
    table = pa.table({"caption": captions, "jpg_0": jpgs[:n], "jpg_1": jpgs[n:], "image_0_uid": uids[:n],
                      "image_1_uid": uids[n:], "model_0": [CORPUS_STYLES[g].name for g in gen[0]],
                      "model_1": [CORPUS_STYLES[g].name for g in gen[1]]}, schema=CORPUS_SCHEMA)
    facts = {"captions": n, "images": 2 * n, "empty_captions": sum(not c for c in captions),
             "named_fraction": {f: float(np.mean([getattr(a, f) is not None for a in described]))
                                for f in CORPUS_NAMING}}
    return table, facts


def digests(tables: list[pa.Table]) -> tuple[set[str], set[str]]:
    uids, hashes = set(), set()
    for table in tables:
        for k in (0, 1):
            uids.update(table.column(f"image_{k}_uid").to_pylist())
            hashes.update(hashlib.sha256(b).hexdigest() for b in table.column(f"jpg_{k}").to_pylist())
    return uids, hashes


def make_corpus(seed: int, n_captions: int, shard_size: int, image_size: int, out_dir: Path) -> dict:
    """Write ``corpus-*.parquet`` shards and corpus.json into ``out_dir``; return the facts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, facts = make_corpus_table(n_captions, image_size, np.random.default_rng([seed, 7]))
    facts["shards"] = write_shards(table, out_dir, "corpus", shard_size)
    facts["styles"] = [style.name for style in CORPUS_STYLES]
    tmp = out_dir / ".corpus.json.tmp"
    tmp.write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / "corpus.json")
    return facts
