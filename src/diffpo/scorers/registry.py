"""The scorers by name: ``build_scorer("hpsv2", ...)``."""

from __future__ import annotations

import re
from typing import Callable

from diffpo.scorers.aesthetic import load_aesthetic
from diffpo.scorers.base import Scorer
from diffpo.scorers.hpsv2 import load_hpsv2
from diffpo.scorers.imagereward import load_imagereward
from diffpo.scorers.pickscore import load_pickscore

SCORERS: dict[str, Callable[..., Scorer]] = {
    "pickscore": load_pickscore,
    "hpsv2": load_hpsv2,
    "imagereward": load_imagereward,
    "aesthetic": load_aesthetic,
}


def build_scorer(name: str, **sources) -> Scorer:
    """``build_scorer("hpsv2", checkpoint_source=..., version="v2.1")``: the loader's keyword arguments."""
    key = re.sub(r"[-_.\s]", "", name.lower())
    aliases = {"hps": "hpsv2", "hpsv21": "hpsv2", "aestheticscore": "aesthetic", "laionaesthetic": "aesthetic"}
    if key == "hpsv21":
        sources.setdefault("version", "v2.1")
    key = aliases.get(key, key)
    if key not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known scorers: {', '.join(sorted(SCORERS))}")
    return SCORERS[key](**sources)
