"""Writing a split as Pick-a-Pic-style parquet shards, atomically, with random image uids."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def random_uids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.bytes(16 * n).hex()
    return [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
            for h in (raw[32 * i:32 * (i + 1)] for i in range(n))]


def write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_shards(table: pa.Table, out_dir: Path, split: str, size: int) -> list[str]:
    n_shards = max(1, -(-len(table) // size))
    names = [f"{split}-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)]
    for stale in out_dir.glob(f"{split}-*.parquet"):
        if stale.name not in names:
            stale.unlink()
    for i, name in enumerate(names):
        write_atomic(table.slice(i * size, size), out_dir / name)
    return names
