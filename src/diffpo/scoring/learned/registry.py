"""The scorers by name: ``build_scorer("hpsv2", ...)``."""

from __future__ import annotations

import re
from typing import Callable

from diffpo.scoring.learned.aesthetic import load_aesthetic
from diffpo.scoring.learned.interface import Scorer
from diffpo.scoring.learned.hpsv2 import load_hpsv2
from diffpo.scoring.learned.imagereward import load_imagereward
from diffpo.scoring.learned.pickscore import load_pickscore

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
