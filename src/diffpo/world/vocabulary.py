"""What the world's prompts can say: attributes, their words, and caption templates.

A prompt always names the object's colour and shape; background, size and position may be
left unnamed, and an unnamed attribute is free: generators draw it at random, and the
semantic diversity of a model is how varied its images are on the attributes its prompts
leave free. Pre-training captions (``corpus_caption``) are looser still: any attribute may
be missing and the words come in any order, as web alt-texts do.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, fields

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 30),
    "magenta": (210, 40, 200),
    "cyan": (30, 200, 210),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# Achromatic corners and centre of the RGB cube: far from all six saturated colours.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "grey": (128, 128, 128),
}
# Diameter (fraction of image width) of a circle with the object's area; the other
# shapes are scaled to the same area so that size is readable from the pixel count.
SIZES: dict[str, float] = {"small": 0.38, "large": 0.62}
POSITIONS: dict[str, float] = {"left": 0.32, "centre": 0.5, "right": 0.68}
POSITION_PHRASES: dict[str, str] = {"left": "on the left", "centre": "in the centre", "right": "on the right"}
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS), "shape": SHAPES, "background": tuple(BACKGROUNDS),
    "size": tuple(SIZES), "position": tuple(POSITIONS),
}
# Attributes a prompt may leave unnamed (colour and shape are always named).
FREE_ATTRIBUTES: tuple[str, ...] = ("background", "size", "position")

# [...] is dropped when the attribute inside it is unnamed.
TEMPLATES: tuple[str, ...] = (
    "a[ {size}] {colour} {shape}[ {where}][, {background} background]",
    "[{background} background with ]a[ {size}] {colour} {shape}[ {where}]",
    "a {colour} {shape}[, {size}][, {where} of the frame][, on a {background} background]",
    "[{size} ]{shape} in {colour}[ {where}][, {background} background]",
)
OOD_TEMPLATES: tuple[str, ...] = (
    "a picture of a {shape}, {colour}[ and {size}][, placed {where}][ over a {background} backdrop]",
    "[on a {background} canvas, ]someone drew a {colour} {shape}[ that is {size}][, sitting {where}]",
    "[{where} ]there is a[ {size}] {shape} coloured {colour}[, the backdrop is {background}]",
)
CORPUS_FRAGMENTS: dict[str, str] = {
    "colour": "{colour}", "shape": "{shape}", "background": "{background} background",
    "size": "{size}", "position": "{where}",
}


@dataclass(frozen=True)
class Attributes:
    """What a prompt asks for; ``None``: the prompt leaves that attribute free."""

    colour: str | None
    shape: str | None
    background: str | None = None
    size: str | None = None
    position: str | None = None

    def named(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def free(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is None]


def all_combinations() -> list[Attributes]:
    """Every fully named attribute combination, in a fixed order."""
    return [Attributes(*c) for c in itertools.product(COLOURS, SHAPES, BACKGROUNDS, SIZES, POSITIONS)]


def leave_free(attrs: Attributes, free: tuple[str, ...]) -> Attributes:
    """The same request with the attributes in ``free`` unnamed."""
    return Attributes(**{f.name: (None if f.name in free else getattr(attrs, f.name)) for f in fields(attrs)})


_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")


def make_caption(attrs: Attributes, template: str) -> str:
    """Fill one template, dropping the optional parts whose attribute is unnamed."""
    values = {"size": attrs.size, "colour": attrs.colour, "shape": attrs.shape, "background": attrs.background,
              "where": POSITION_PHRASES[attrs.position] if attrs.position else None}

    def part(match: re.Match) -> str:
        text = match.group(1)
        wanted = re.findall(r"{(\w+)}", text)
        return text.format(**values) if all(values[w] is not None for w in wanted) else ""

    filled = _OPTIONAL.sub(part, template)
    if attrs.colour is None or attrs.shape is None:
        raise ValueError(f"a prompt names colour and shape: {attrs}")
    return filled.format(**values)


def corpus_caption(attrs: Attributes, rng: np.random.Generator) -> str:
    """A loose pre-training caption: the named attributes' fragments in random order."""
    values = {"size": attrs.size, "colour": attrs.colour, "shape": attrs.shape, "background": attrs.background,
              "where": POSITION_PHRASES[attrs.position] if attrs.position else None}
    parts = [CORPUS_FRAGMENTS[name].format(**values) for name in attrs.named()]
    return ", ".join(parts[i] for i in rng.permutation(len(parts))) if parts else ""


def _words(caption: str) -> list[str]:
    return caption.replace(",", " , ").split()


def parse_caption(caption: str) -> Attributes:
    """The attributes a caption of any template names (exact word matches; unnamed: None)."""
    words = set(_words(caption.lower()))
    found = {}
    for field, vocabulary in VOCABULARIES.items():
        hits = sorted(words.intersection(vocabulary))
        if len(hits) > 1:
            raise ValueError(f"caption {caption!r} names {len(hits)} {field} words: {hits}")
        found[field] = hits[0] if hits else None
    return Attributes(**found)


def all_words() -> list[str]:
    """Sorted vocabulary of every template (lower case; the comma is its own token)."""
    words: set[str] = set()
    blank = {"size": "", "colour": "", "shape": "", "where": "", "background": ""}
    for template in TEMPLATES + OOD_TEMPLATES + tuple(CORPUS_FRAGMENTS.values()):
        words.update(_words(template.replace("[", "").replace("]", "").format(**blank)))
    for vocabulary in VOCABULARIES.values():
        words.update(vocabulary)
    for phrase in POSITION_PHRASES.values():
        words.update(phrase.split())
    return sorted(words)
