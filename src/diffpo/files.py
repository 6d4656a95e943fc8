"""Atomic artifacts: every output appears whole or not at all (temporary name, then rename).

An output NAME is written under a temporary ``.NAME.XXXXXXXX.tmp`` beside it, then renamed
onto NAME; a folder that replaces a finished one renames the old one aside first and deletes
it last, so that a kill never loses the finished output while the new one is not in place.
A killed write leaves its temporary behind: the next write of the same output removes it
(``remove_stale``), and a training run removes those of its work folder (``remove_stale_in``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

_UMASK = os.umask(0)
os.umask(_UMASK)


def _temporary_dir(path: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))


def _temporaries(folder: Path, name: str) -> list[Path]:
    """The temporaries in ``folder`` of outputs whose name matches regular expression ``name``."""
    # tempfile's names: the prefix, 8 characters of [a-z0-9_], the suffix
    pattern = re.compile(rf"\.{name}\.[a-z0-9_]{{8}}\.tmp")
    return [p for p in folder.iterdir() if pattern.fullmatch(p.name)] if folder.is_dir() else []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_stale(path: str | Path) -> None:
    """Remove the temporaries that killed writes of ``path`` left beside it."""
    path = Path(path)
    for stale in _temporaries(path.parent, re.escape(path.name)):
        _remove(stale)


def remove_stale_in(folder: str | Path) -> None:
    """Remove the temporaries that killed writes left in ``folder`` (not in its subfolders)."""
    for stale in _temporaries(Path(folder), ".+"):
        _remove(stale)


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary file path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside ``path``; it replaces ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = _temporary_dir(path)
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if path.exists():
            old = _temporary_dir(path)
            old.rmdir()  # a free name beside path, for the old output until the new one is in place
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
