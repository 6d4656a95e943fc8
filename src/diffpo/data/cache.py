"""The encoded cache's storage: sharded ``.npy`` files, written one shard at a time, read memory-mapped.

At paper scale the cache holds 851,293 pairs of SD-1.5 latents (4 x 64 x 64 each) and the
embeddings of 58,960 unique prompts (77 x 768 each): about 55 GB and 7 GB in float16. No
stage may hold that in memory, so

- the writer (``CacheWriter``) buffers at most one shard of pairs and one shard of prompts
  and writes each full shard to its own file;
- prompt embeddings are stored once per unique prompt (``prompts-*.npy``) and each pair
  names its prompt by ``prompt_index`` (``pairs.parquet``), as Diffusion-DPO's ~14 pairs per
  prompt would otherwise store each embedding 14 times;
- the reader (``EncodedPairs``) memory-maps every shard; ``ShardedArray`` gathers rows
  across shards, so a random batch reads only its rows.

Layout of a cache folder::

    cache.json                      counts, shapes, dtype, the shard sizes (``read_layout``)
    pairs.parquet                   one row per pair: caption, prompt_index, ... (pair order)
    prompts.parquet                 one row per unique prompt: caption (prompt order)
    latents_w-00000.npy ...         (n, C, H, W) winner latents of each pair shard
    latents_l-00000.npy ...         (n, C, H, W) loser latents, same shards
    prompts-00000.npy ...           (m, tokens, width) prompt embeddings of each prompt shard
    empty_prompt_embed.npy          (tokens, width): the empty caption (caption dropout, CFG)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from diffpo.errors import UserError

FORMAT = "diffpo-encoded-cache/2"


class CacheError(UserError, ValueError):
    """A cache folder that is not complete or not of this format (re-run the encode stage)."""


class ShardedArray:
    """Rows of several ``.npy`` shards (memory-mapped) read as one array along axis 0.

    Supports what the trainers do with a cache array: ``len``, ``shape``, ``dtype`` and
    ``a[i]`` for an integer, a slice or an integer array (in any order, with repeats).
    """

    def __init__(self, paths: list[Path]):
        if not paths:
            raise CacheError("a sharded array needs at least one shard")
        self.parts = [np.load(p, mmap_mode="r") for p in paths]
        row_shapes = {p.shape[1:] for p in self.parts}
        if len(row_shapes) > 1 or len({p.dtype for p in self.parts}) > 1:
            raise CacheError(f"shards disagree in row shape or dtype: {[str(p) for p in paths]}")
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.dtype = self.parts[0].dtype
        self.shape = (int(self.offsets[-1]), *self.parts[0].shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(len(self)))
        scalar = np.ndim(idx) == 0
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        idx = np.where(idx < 0, idx + len(self), idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} rows")
        if len(self.parts) == 1:  # the tiny profile's cache: one shard, one fancy-indexed read
            out = np.asarray(self.parts[0][idx])
        else:
            shard = np.searchsorted(self.offsets, idx, side="right") - 1
            out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
            for s in np.unique(shard):
                rows = shard == s
                out[rows] = self.parts[s][idx[rows] - self.offsets[s]]
        return out[0] if scalar else out


class _ShardBuffer:
    """One shard's worth of rows in memory; full shards go to ``{stem}-{k:05d}.npy`` files."""

    def __init__(self, folder: Path, stems: tuple[str, ...], rows: int, row_shape: tuple, dtype: np.dtype):
        self.folder, self.stems, self.rows = folder, stems, rows
        self.arrays = [np.empty((rows, *row_shape), dtype=dtype) for _ in stems]
        self.filled, self.sizes = 0, []

    def add(self, *blocks: np.ndarray) -> None:
        start = 0
        while start < len(blocks[0]):
            take = min(self.rows - self.filled, len(blocks[0]) - start)
            for array, block in zip(self.arrays, blocks):
                array[self.filled : self.filled + take] = block[start : start + take]
            self.filled += take
            start += take
            if self.filled == self.rows:
                self.flush()

    def flush(self) -> None:
        if not self.filled:
            return
        for stem, array in zip(self.stems, self.arrays):
            np.save(self.folder / f"{stem}-{len(self.sizes):05d}.npy", array[: self.filled])
        self.sizes.append(self.filled)
        self.filled = 0


class CacheWriter:
    """Writes a cache folder in pair order, holding at most one shard of pairs and one of prompts.

    ``add_prompts`` takes the embeddings of unique prompts in prompt-index order,
    ``add_pairs`` winner and loser latents in pair order; ``close`` writes the pair and
    prompt tables and ``cache.json`` and checks that every count agrees.
    """

    def __init__(self, folder: Path, latent_shape: tuple, embed_shape: tuple, dtype, shard_pairs: int,
                 shard_prompts: int | None = None):
        if shard_pairs < 1:
            raise ValueError(f"shard_pairs must be at least 1, not {shard_pairs}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self.latent_shape, self.embed_shape = tuple(latent_shape), tuple(embed_shape)
        # A prompt shard holds as many bytes as a pair shard, roughly.
        pair_bytes, embed_bytes = 2 * np.prod(self.latent_shape), np.prod(self.embed_shape)
        shard_prompts = shard_prompts or max(1, int(shard_pairs * pair_bytes // embed_bytes))
        self.pairs = _ShardBuffer(self.folder, ("latents_w", "latents_l"), shard_pairs, self.latent_shape, self.dtype)
        self.prompts = _ShardBuffer(self.folder, ("prompts",), shard_prompts, self.embed_shape, self.dtype)
        self.max_buffered_bytes = sum(a.nbytes for a in self.pairs.arrays + self.prompts.arrays)

    def add_pairs(self, latents_w: np.ndarray, latents_l: np.ndarray) -> None:
        if latents_w.shape != latents_l.shape or latents_w.shape[1:] != self.latent_shape:
            raise ValueError(f"latents of shape {latents_w.shape} / {latents_l.shape}, expected (n, {self.latent_shape})")
        self.pairs.add(latents_w.astype(self.dtype, copy=False), latents_l.astype(self.dtype, copy=False))

    def add_prompts(self, embeds: np.ndarray) -> None:
        if embeds.shape[1:] != self.embed_shape:
            raise ValueError(f"prompt embeddings of shape {embeds.shape}, expected (n, {self.embed_shape})")
        self.prompts.add(embeds.astype(self.dtype, copy=False))

    def close(self, pairs: pd.DataFrame, captions: list[str], empty_embed: np.ndarray, info: dict) -> dict:
        """Write the tables and ``cache.json``; ``pairs`` needs a ``prompt_index`` column."""
        from diffpo.files import write_parquet

        self.pairs.flush()
        self.prompts.flush()
        n_pairs, n_prompts = sum(self.pairs.sizes), sum(self.prompts.sizes)
        if len(pairs) != n_pairs or len(captions) != n_prompts:
            raise CacheError(f"{self.folder}: {n_pairs} latent pairs for {len(pairs)} pair rows, "
                             f"{n_prompts} prompt embeddings for {len(captions)} prompts")
        index = pairs["prompt_index"].to_numpy()
        if len(index) and (index.min() < 0 or index.max() >= n_prompts):
            raise CacheError(f"{self.folder}: a prompt_index outside 0..{n_prompts - 1}")
        np.save(self.folder / "empty_prompt_embed.npy", np.asarray(empty_embed).astype(self.dtype))
        write_parquet(pairs.reset_index(drop=True), self.folder / "pairs.parquet")
        write_parquet(pd.DataFrame({"caption": list(captions)}), self.folder / "prompts.parquet")
        info = {**info, "format": FORMAT, "pairs": n_pairs, "unique_prompts": n_prompts,
                "latent_shape": list(self.latent_shape), "embed_shape": list(self.embed_shape), "dtype": str(self.dtype),
                "pair_shards": self.pairs.sizes, "prompt_shards": self.prompts.sizes}
        (self.folder / "cache.json").write_text(json.dumps(info, indent=2) + "\n")
        return info


def layout_bytes(pairs: int, prompts: int, latent_shape, embed_shape, dtype) -> int:
    """Bytes of a cache's arrays: two latents per pair, one embedding per unique prompt and the
    empty prompt's (the tables and the 128-byte ``.npy`` headers aside)."""
    item = np.dtype(dtype).itemsize
    return int(item * (2 * pairs * np.prod(latent_shape) + (prompts + 1) * np.prod(embed_shape)))


def read_layout(cache_dir: Path) -> dict:
    """``cache.json``, checked to be of this format and to name shards that exist."""
    path = Path(cache_dir) / "cache.json"
    if not path.is_file():
        raise CacheError(f"{cache_dir}: no cache.json; run the encode stage")
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT:
        raise CacheError(f"{cache_dir}: a cache of format {info.get('format', 'diffpo-encoded-cache/1')}, "
                         f"this code reads {FORMAT}; re-run the encode stage")
    return info


def shard_paths(cache_dir: Path, stem: str, count: int) -> list[Path]:
    paths = [Path(cache_dir) / f"{stem}-{k:05d}.npy" for k in range(count)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise CacheError(f"{cache_dir}: missing shards {missing[:3]}; re-run the encode stage")
    return paths


class EncodedPairs:
    """The cache every training job reads: winner/loser latents and prompt embeddings.

    ``latents_w``, ``latents_l`` (per pair) and ``prompt_embeds`` (per unique prompt) are
    ``ShardedArray``s over memory-mapped shards; ``prompt_index[i]`` is pair i's prompt.
    """

    def __init__(self, cache_dir: str | Path):
        cache_dir = self.cache_dir = Path(cache_dir)
        self.info = read_layout(cache_dir)
        pair_shards, prompt_shards = len(self.info["pair_shards"]), len(self.info["prompt_shards"])
        self.latents_w = ShardedArray(shard_paths(cache_dir, "latents_w", pair_shards))
        self.latents_l = ShardedArray(shard_paths(cache_dir, "latents_l", pair_shards))
        self.prompt_embeds = ShardedArray(shard_paths(cache_dir, "prompts", prompt_shards))
        self.empty_prompt_embed = np.load(cache_dir / "empty_prompt_embed.npy")
        self.prompt_index = pd.read_parquet(cache_dir / "pairs.parquet", columns=["prompt_index"])["prompt_index"].to_numpy()
        if not (len(self.latents_w) == len(self.latents_l) == len(self.prompt_index) == self.info["pairs"]):
            raise CacheError(f"{cache_dir}: latent and pair counts disagree; re-run the encode stage")
        if len(self.prompt_embeds) != self.info["unique_prompts"]:
            raise CacheError(f"{cache_dir}: prompt embedding and prompt counts disagree; re-run the encode stage")

    def __len__(self) -> int:
        return len(self.prompt_index)

    def images(self, kind: str) -> int:
        """How many training examples a run over ``kind`` (winners, both, pairs) draws from."""
        return 2 * len(self) if kind == "both" else len(self)

    @property
    def latent_ndim(self) -> int:
        """Dimensions of a batch of latents: (B, C, H, W) for images, (B, C, F, H, W) for clips."""
        return 1 + len(self.info["latent_shape"])

    def latents(self, which: str, idx: np.ndarray) -> np.ndarray:
        return (self.latents_w if which == "w" else self.latents_l)[idx]

    def embeds(self, idx: np.ndarray) -> np.ndarray:
        return self.prompt_embeds[self.prompt_index[idx]]

    def captions(self) -> list[str]:
        """The prompt of each row of ``prompt_embeds`` (what rollouts show their scorer)."""
        return pd.read_parquet(self.cache_dir / "prompts.parquet", columns=["caption"])["caption"].tolist()

    def fingerprint_bytes(self) -> bytes:
        """What identifies the cache's content cheaply: its layout, tables and first megabyte of latents."""
        data = b"".join((self.cache_dir / name).read_bytes() for name in ("cache.json", "pairs.parquet"))
        with open(self.cache_dir / "latents_w-00000.npy", "rb") as f:
            return data + f.read(1 << 20)


def write_cache(folder: Path, latents_w: np.ndarray, latents_l: np.ndarray, prompt_embeds: np.ndarray,
                empty_embed: np.ndarray, pairs: pd.DataFrame, captions: list[str], shard_pairs: int | None = None,
                info: dict | None = None) -> EncodedPairs:
    """A cache from in-memory arrays (tests and benchmarks; the encode stage streams through ``CacheWriter``)."""
    writer = CacheWriter(folder, latents_w.shape[1:], prompt_embeds.shape[1:], latents_w.dtype,
                         shard_pairs or max(1, len(latents_w)))
    writer.add_prompts(prompt_embeds)
    writer.add_pairs(latents_w, latents_l)
    writer.close(pairs, captions, empty_embed, info or {})
    return EncodedPairs(folder)
