"""Reading input data: parquet shards of the Pick-a-Pic layout (a local folder, or the hub
for an explicit ``hf://datasets/OWNER/NAME``), prompt files, and image bytes.

A file that cannot be read stops with a ``DataError`` naming it and saying what to do.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from diffpo.errors import UserError

HUB_PREFIX = "hf://datasets/"


class DataError(UserError, ValueError):
    """Input data that cannot be used as it is; the message says what and where."""


def list_shards(source: str | Path, split: str) -> list[Path]:
    """Parquet shards of one split: from a local folder, or for ``hf://datasets/OWNER/NAME``
    from the Hugging Face hub (its cache when offline). Only that explicit form goes to the
    network: a folder that does not exist is an error saying so."""
    if str(source).startswith(HUB_PREFIX):
        local = _hub_snapshot(str(source)[len(HUB_PREFIX):], split)
    else:
        local = Path(source)
        if not local.is_dir():
            state = "is a file, not a folder of parquet shards" if local.exists() else "does not exist"
            raise DataError(
                f"data source {str(source)!r} {state} ({local.resolve()}). Copy the {split}-*.parquet shards into "
                f"that folder (the tiny profile's world stage makes results/world), or write a hub dataset as "
                f"{HUB_PREFIX}OWNER/NAME."
            )
    shards = sorted(local.glob(f"{split}-*.parquet")) or sorted(local.glob(f"data/{split}-*.parquet"))
    if not shards:
        raise DataError(f"no parquet shards for split {split!r} in {local} (expected {split}-*.parquet)")
    return shards


def _hub_snapshot(repo_id: str, split: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=[f"data/{split}-*"]))
    except Exception as err:  # the hub client raises many types; all mean "not available here"
        raise DataError(
            f"hub dataset {repo_id!r} is not available here ({err}). "
            f"Pick-a-Pic v2 left the hub in 2025: copy its parquet shards to a local folder "
            f"(e.g. resources/pickapic_v2/{split}-*.parquet) and set data.source to it."
        ) from err


def read_shard(shard: Path, columns: list[str] | None = None) -> pa.Table:
    """A shard's table; a file that is not parquet, or is truncated or damaged, is a DataError naming it."""
    try:
        return pq.read_table(shard, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{shard}: not a readable parquet file ({err}); replace it with a whole copy or remove it") from err


def read_captions(source: str | Path, split: str) -> list[str]:
    """The prompts of a split, in order (validation_unique / test_unique have one row per prompt)."""
    captions: list[str] = []
    for shard in list_shards(source, split):
        captions += read_shard(shard, columns=["caption"]).column("caption").to_pylist()
    return captions


def read_prompts(spec: dict) -> list[str]:
    """The prompts of a prompt set: ``{source, split}`` of a Pick-a-Pic-layout source, or ``{file}``.

    Files: .parquet (a ``caption`` or ``prompt`` column), PartiPrompts' .tsv (column
    ``Prompt``), .txt (one per line), .json (a list of strings), or a folder of .json files
    (the HPSv2 benchmark: anime, concept-art, paintings, photo; read in name order).
    """
    if "split" in spec:
        return read_captions(spec["source"], spec["split"])
    path = Path(spec["file"])
    if not path.exists():
        raise DataError(
            f"prompt file {path} not found. Copy it here on a machine with internet (HPSv2 benchmark: the "
            f"hpsv2 package's benchmark/*.json; PartiPrompts: PartiPrompts.tsv from google-research/parti)."
        )
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise DataError(f"{path} holds no .json prompt files")
        return [p for f in files for p in read_prompts({"file": str(f)})]
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        column = next((c for c in ("caption", "prompt", "Prompt") if c in frame), None)
        if column is None:
            raise DataError(f"{path}: no caption/prompt column (columns: {list(frame.columns)})")
        return frame[column].astype(str).tolist()
    if path.suffix == ".tsv":
        frame = pd.read_csv(path, sep="\t")
        if "Prompt" not in frame:
            raise DataError(f"{path}: PartiPrompts .tsv needs a 'Prompt' column (has {list(frame.columns)})")
        return frame["Prompt"].astype(str).tolist()
    if path.suffix == ".json":
        prompts = json.loads(path.read_text())
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise DataError(f"{path}: expected a JSON list of prompt strings")
        return prompts
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    raise DataError(f"{path}: unsupported prompt file type {path.suffix!r}")


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes to 8-bit RGB; raises ValueError for bytes that are not a whole image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as err:
        raise ValueError(f"undecodable image bytes ({err})") from err
    if image.mode.startswith("I;16"):
        # 16-bit greyscale (PNG): convert("RGB") would clip every value above 255, nearly all white.
        image = Image.fromarray(np.round(np.asarray(image, dtype=np.float64) / 257).astype(np.uint8))
    elif image.mode in ("I", "F"):
        raise ValueError(f"a {image.mode}-mode (32-bit) image, whose range is unknown")
    return image.convert("RGB")


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Resize to cover ``width`` x ``height`` (bicubic), then centre-crop to it (SD training preprocessing)."""
    w, h = image.size
    scale = max(width / w, height / h)
    if scale != 1:
        image = image.resize((max(width, round(w * scale)), max(height, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))
