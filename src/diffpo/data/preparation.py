"""Preference data: tie removal, the rows that cannot be used, and the encoded cache.

Pick-a-Pic (and the tiny world, which copies its layout) is a folder of parquet shards
``{split}-*.parquet`` (or ``data/{split}-*.parquet`` as on the hub; ``diffpo.data.reading``
reads them). Diffusion-DPO keeps rows with ``label_0 in (0, 1)``: 959,040 -> 851,293 pairs.
diffusers' research script keeps ties as if image 0 had won, a silent data bug this module
refuses to repeat.

Bad input: a shard that is not readable parquet stops with a ``DataError`` naming it; a row
that cannot be used (``SKIP_REASONS``) is skipped and counted by reason, never dropped or
changed without a count.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from diffpo.data.cache import EncodedPairs  # noqa: F401  (re-exported: the trainers' import)
from diffpo.files import atomic_dir, atomic_write_text, write_parquet
from diffpo.data.reading import DataError, decode_image, fit_image, list_shards, read_shard

REQUIRED_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0", "label_1")
PAIR_COLUMNS = ("caption", "label_0", "label_1", "image_0_uid", "image_1_uid", "model_0", "model_1", "ranking_id")
SKIP_REASONS = {
    "tie": "labels 0.5 / 0.5 (kept by the scorers' readers, which learn from ties)",
    "invalid_label": "labels other than (1, 0), (0, 1) or (0.5, 0.5)",
    "empty_caption": "no caption, or only white space",
    "undecodable_caption": "caption bytes that are not UTF-8",
    "invalid_ranking_id": "a ranking_id column whose value is null or not an integer",
    "duplicate_row": "the same ranking, caption, images and labels as an earlier row",
    "undecodable_image": "image bytes that are not a whole image, or a 32-bit image",
}


# ---------------------------------------------------------------- tie removal
def label_outcome(label_0: float, label_1: float) -> str:
    """'0' or '1' for the winning side, 'tie' for 0.5/0.5, 'invalid' for anything else."""
    if label_0 == 1.0 and label_1 == 0.0:
        return "0"
    if label_0 == 0.0 and label_1 == 1.0:
        return "1"
    if label_0 == 0.5 and label_1 == 0.5:
        return "tie"
    return "invalid"


def remove_ties(labels: pd.DataFrame) -> tuple[pd.Series, Counter]:
    """Which rows to keep (a decided label) and what was dropped, by reason."""
    outcome = [label_outcome(a, b) for a, b in zip(labels["label_0"], labels["label_1"])]
    counts = Counter("tie" if o == "tie" else "invalid_label" if o == "invalid" else "kept" for o in outcome)
    keep = pd.Series([o in ("0", "1") for o in outcome], index=labels.index)
    return keep, counts


@dataclass
class PreparedPairs:
    """Winner-first index into the source shards (no image bytes are copied)."""

    index: pd.DataFrame
    manifest: dict


def iter_rated_pairs(source: str | Path, split: str, skipped: Counter, keep_ties: bool = False):
    """Yield (shard name, row, record, image 0, image 1) for every usable row, in shard order.

    A row that cannot be used is skipped and counted in ``skipped`` by reason
    (``SKIP_REASONS``; ties too, unless ``keep_ties``); ``skipped["rows_in"]`` counts the rows
    read. A record's caption is text (a caption stored as UTF-8 bytes is decoded). Data
    preparation, the scorers' training data and their accuracy all read pairs through here,
    so they skip the same rows for the same reasons.
    """
    seen: set[bytes] = set()
    for shard in list_shards(source, split):
        table = _read_rated_shard(shard)
        skipped["rows_in"] += len(table)
        if keep_ties:
            valid = [label_outcome(a, b) != "invalid" for a, b in zip(table["label_0"], table["label_1"])]
            skipped["invalid_label"] += len(valid) - sum(valid)
        else:
            keep, counts = remove_ties(table)
            valid = keep.tolist()
            skipped["tie"] += counts["tie"]
            skipped["invalid_label"] += counts["invalid_label"]
        for row in np.flatnonzero(valid):
            record = table.iloc[row]
            reason = _row_problem(record, seen)
            if reason is None:
                try:
                    image_0, image_1 = decode_image(record["jpg_0"]), decode_image(record["jpg_1"])
                except ValueError:
                    reason = "undecodable_image"
            if reason:
                skipped[reason] += 1
                continue
            record["caption"] = record["caption"].decode("utf-8")
            if "ranking_id" in record:
                record["ranking_id"] = _integer(record["ranking_id"])
            yield shard.name, int(row), record, image_0, image_1


def _read_rated_shard(shard: Path) -> pd.DataFrame:
    """A shard's rows, captions as bytes (one caption that is not UTF-8 must not fail the whole shard)."""
    table = read_shard(shard)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{shard}: missing columns {missing} (Pick-a-Pic v2 layout expected)")
    position = table.schema.get_field_index("caption")
    captions = table.column(position)
    as_bytes = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary()}.get(captions.type)
    if as_bytes is not None:
        table = table.set_column(position, "caption", captions.cast(as_bytes))
    frame = table.to_pandas()
    frame["caption"] = [c.encode("utf-8") if isinstance(c, str) else c for c in frame["caption"]]
    return frame


def _row_problem(record: pd.Series, seen: set[bytes]) -> str | None:
    """Why a row with a valid label cannot be used (a ``SKIP_REASONS`` key), or None.
    ``seen``: digests of the earlier usable rows (this one's is added)."""
    caption = record["caption"]
    if not isinstance(caption, bytes):
        return "empty_caption"  # null
    try:
        if not caption.decode("utf-8").strip():
            return "empty_caption"
    except UnicodeDecodeError:
        return "undecodable_caption"
    if "ranking_id" in record and _integer(record["ranking_id"]) is None:
        return "invalid_ranking_id"
    digest = hashlib.blake2b(repr((_integer(record.get("ranking_id")), float(record["label_0"]),
                                   float(record["label_1"]))).encode(), digest_size=16)
    for value in (caption, record["jpg_0"], record["jpg_1"]):
        data = value if isinstance(value, bytes) else repr(value).encode()
        digest.update(len(data).to_bytes(8, "little") + data)
    if digest.digest() in seen:
        return "duplicate_row"
    seen.add(digest.digest())
    return None


def _integer(value) -> int | None:
    """``value`` as an int; None for a null or anything else that is not an integer (1.5, "7")."""
    if pd.isna(value):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number == value else None


def prepare_pairs(source: str | Path, split: str, max_pairs: int | None = None) -> PreparedPairs:
    """Drop ties, invalid labels and undecodable images, put the winner first, count everything."""
    skipped, kept = Counter(), []
    for shard_name, row, record, _, _ in iter_rated_pairs(source, split, skipped):
        swapped = record["label_0"] == 0.0
        w, l = ("1", "0") if swapped else ("0", "1")
        kept.append(
            {
                "shard": shard_name,
                "row": row,
                "swapped": bool(swapped),
                "caption": record["caption"],
                "uid_w": str(record.get(f"image_{w}_uid", "")),
                "uid_l": str(record.get(f"image_{l}_uid", "")),
                "model_w": str(record.get(f"model_{w}", "")),
                "model_l": str(record.get(f"model_{l}", "")),
                "ranking_id": int(record.get("ranking_id", -1)),
            }
        )
        if max_pairs and len(kept) >= max_pairs:
            break
    rows_in = skipped.pop("rows_in", 0)
    index = pd.DataFrame(kept)
    if index.empty:
        raise DataError(f"no usable pairs in {source} split {split}: {dict(skipped)}")
    manifest = {
        "source": str(source),
        "split": split,
        "rows_in": rows_in,
        "ties_removed": skipped["tie"],
        "rows_skipped": {k: v for k, v in sorted(skipped.items()) if k != "tie"},
        "pairs_out": len(index),
        "unique_prompts": int(index["caption"].nunique()),
        "winner_was_image_1": int(index["swapped"].sum()),
    }
    return PreparedPairs(index, manifest)


def index_corpus(source: str | Path, split: str) -> PreparedPairs:
    """Every row of an unrated image corpus (two images per caption, the tiny base model's
    pre-training data) as a prepared index; rows with an undecodable image are skipped."""
    kept, skipped = [], Counter()
    for shard in list_shards(source, split):
        table = read_shard(shard, columns=["caption", "jpg_0", "jpg_1"]).to_pandas()
        for row, record in enumerate(table.itertuples(index=False)):
            try:
                decode_image(record.jpg_0), decode_image(record.jpg_1)
            except ValueError:
                skipped["undecodable_image"] += 1
                continue
            kept.append({"shard": shard.name, "row": row, "swapped": False, "caption": record.caption or ""})
    index = pd.DataFrame(kept)
    if index.empty:
        raise DataError(f"no usable images in {source} split {split}: {dict(skipped)}")
    return PreparedPairs(index, {"source": str(source), "split": split, "pairs_out": len(index),
                                 "rows_skipped": dict(skipped), "unique_prompts": int(index["caption"].nunique())})


def write_prepared(prepared: PreparedPairs, pairs_path: Path, manifest_path: Path) -> None:
    write_parquet(prepared.index, pairs_path)
    atomic_write_text(manifest_path, json.dumps(prepared.manifest, indent=2) + "\n")


def iter_pair_images(source: str | Path, split: str, index: pd.DataFrame):
    """Yield (position, winner image, loser image) for every row of a prepared index."""
    shards = {p.name: p for p in list_shards(source, split)}
    for shard_name, group in index.groupby("shard", sort=False):
        table = read_shard(shards[shard_name], columns=["jpg_0", "jpg_1"])
        jpg_0, jpg_1 = table.column("jpg_0"), table.column("jpg_1")
        for pos, row, swapped in zip(group.index, group["row"], group["swapped"]):
            a, b = decode_image(jpg_0[row].as_py()), decode_image(jpg_1[row].as_py())
            yield pos, (b if swapped else a), (a if swapped else b)


def image_to_tensor(image: Image.Image, resolution: int) -> np.ndarray:
    """Resize the shorter side and centre-crop (SD training preprocessing) to CHW in [-1, 1]."""
    image = fit_image(image, resolution, resolution)
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0


# ---------------------------------------------------------------- encoded cache
SHARD_BYTES = 256 << 20  # latents per pair shard: few files at 851k pairs (~210), one shard in the tiny profile


def encode_cache(
    source: str | Path,
    split: str,
    index: pd.DataFrame,
    text_encoder_source: str | Path,
    vae_source: str | Path,
    out_dir: Path,
    resolution: int,
    batch_size: int,
    dtype: str,
    shard_bytes: int = SHARD_BYTES,
) -> dict:
    """Encode every pair of a prepared ``index`` once (VAE latents, prompt embeddings) for all methods to share.

    Streams: prompts are encoded ``batch_size`` at a time, pairs in the order the source
    shards yield them (the cache's ``pairs.parquet`` is written in that order), and
    ``CacheWriter`` holds at most one shard; memory does not grow with the split.
    """
    import torch
    from tqdm import tqdm

    from diffpo.data.cache import CacheWriter
    from diffpo.models.loading import encode_images, encode_prompts, load_text_encoder, load_vae

    index = index.copy()
    prompts = sorted(index["caption"].unique())
    prompt_pos = {p: i for i, p in enumerate(prompts)}
    index["prompt_index"] = index["caption"].map(prompt_pos).astype("int64")
    tokenizer, text_encoder = load_text_encoder(text_encoder_source)
    vae = load_vae(vae_source)
    text_encoder.eval()
    vae.eval()
    np_dtype = np.dtype(dtype) if dtype != "bfloat16" else np.dtype("float32")  # numpy has no bfloat16
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_shape = (vae.config.latent_channels, resolution // factor, resolution // factor)
    empty = encode_prompts(tokenizer, text_encoder, [""])[0].numpy()
    shard_pairs = max(1, shard_bytes // (2 * int(np.prod(latent_shape)) * np_dtype.itemsize))

    with atomic_dir(out_dir) as tmp:
        writer = CacheWriter(tmp, latent_shape, empty.shape, np_dtype, shard_pairs)
        for start in range(0, len(prompts), batch_size):
            writer.add_prompts(encode_prompts(tokenizer, text_encoder, prompts[start : start + batch_size]).numpy())
        order, batch_w, batch_l = [], [], []

        def flush():
            z = encode_images(vae, torch.from_numpy(np.stack(batch_w + batch_l))).float().numpy()
            writer.add_pairs(z[: len(batch_w)], z[len(batch_w) :])
            batch_w.clear(), batch_l.clear()

        for pos, winner, loser in tqdm(iter_pair_images(source, split, index), total=len(index), desc="encode pairs", mininterval=5):
            order.append(pos)
            batch_w.append(image_to_tensor(winner, resolution))
            batch_l.append(image_to_tensor(loser, resolution))
            if len(batch_w) == batch_size:
                flush()
        if batch_w:
            flush()
        info = writer.close(index.loc[order], prompts, empty, {
            "text_encoder": str(text_encoder_source),
            "vae": str(vae_source),
            "resolution": resolution,
        })
    return info
