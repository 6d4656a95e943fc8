"""A run's snapshots along training: the policy's weights at each checkpoint, one file per step
(written by the training loop, read by the curve stage without importing the trainer)."""

from __future__ import annotations

from pathlib import Path


def snapshot_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step-{step:07d}.safetensors"


def snapshot_steps(folder: Path) -> dict[int, Path]:
    """The snapshots in ``folder`` by step."""
    return {int(p.stem.split("-")[1]): p for p in sorted(Path(folder).glob("step-*.safetensors"))}
