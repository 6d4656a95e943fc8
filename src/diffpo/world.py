"""Synthetic preference world standing in for Pick-a-Pic v2 (Kirstain et al., 2023).

Prompts describe one object: colour, shape, background, size and position. Pairs of
32x32 images come from a mixture of four "generator models" with distinct low-frequency
habits (vivid vs faded vs dark, correct vs wrong attributes); hidden raters label each
pair with a Bradley-Terry choice on a ground-truth utility computed from pixels.

Ground truth deliberately ignores the shape: a diffusion model with a 4x8x8 latent
learns colour, brightness, contrast, position and size, but not shape or fine texture,
so the shape is kept in the prompt only. Plain training on all images learns the
generator mixture; preference training should move towards the good generators' habits.

Splits are written as Pick-a-Pic v2 shaped parquet shards (train, validation_unique,
test_unique); held-out attribute combinations and held-out phrasings form the prompt
sets standing in for the HPSv2 benchmark prompts and PartiPrompts.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

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
SIZES: dict[str, float] = {"small": 0.32, "large": 0.56}
POSITIONS: dict[str, float] = {"left": 0.25, "centre": 0.5, "right": 0.75}
POSITION_PHRASES: dict[str, str] = {"left": "on the left", "centre": "in the centre", "right": "on the right"}

TEMPLATES: tuple[str, ...] = (
    "a {size} {colour} {shape} {where}, {background} background",
    "{background} background with a {size} {colour} {shape} {where}",
    "a {colour} {shape}, {size}, {where} of the frame, on a {background} background",
    "{size} {shape} in {colour} {where}, {background} background",
)
OOD_TEMPLATES: tuple[str, ...] = (
    "a picture of a {shape}, {colour} and {size}, placed {where} over a {background} backdrop",
    "on a {background} canvas, someone drew a {colour} {shape} that is {size} and sits {where}",
    "{where} there is a {size} {shape} coloured {colour}, the backdrop is {background}",
)


@dataclass(frozen=True)
class Attributes:
    """What a prompt asks for."""

    colour: str
    shape: str
    background: str
    size: str
    position: str


def all_combinations() -> list[Attributes]:
    """Every attribute combination, in a fixed order."""
    return [Attributes(*c) for c in itertools.product(COLOURS, SHAPES, BACKGROUNDS, SIZES, POSITIONS)]


def make_caption(attrs: Attributes, template: str) -> str:
    """Fill one template with the attribute words."""
    return template.format(
        size=attrs.size, colour=attrs.colour, shape=attrs.shape,
        where=POSITION_PHRASES[attrs.position], background=attrs.background,
    )


def _words(caption: str) -> list[str]:
    return caption.replace(",", " , ").split()


def parse_caption(caption: str) -> Attributes:
    """Recover the attributes from a caption of any template (exact word matches)."""
    words = set(_words(caption.lower()))
    found = {}
    for field, vocabulary in (("colour", COLOURS), ("shape", SHAPES), ("background", BACKGROUNDS),
                              ("size", SIZES), ("position", POSITIONS)):
        hits = sorted(words.intersection(vocabulary))
        if len(hits) != 1:
            raise ValueError(f"caption {caption!r} names {len(hits)} {field} words: {hits}")
        found[field] = hits[0]
    return Attributes(**found)


def all_words() -> list[str]:
    """Sorted vocabulary of every template (lower case; the comma is its own token)."""
    words: set[str] = set()
    for template in TEMPLATES + OOD_TEMPLATES:
        words.update(_words(template.format(size="", colour="", shape="", where="", background="")))
    for vocabulary in (COLOURS, SHAPES, BACKGROUNDS, SIZES, POSITIONS):
        words.update(vocabulary)
    for phrase in POSITION_PHRASES.values():
        words.update(phrase.split())
    return sorted(words)


@dataclass(frozen=True)
class GeneratorStyle:
    """Low-frequency habits of one generator model.

    p_wrong_*: chance of rendering another value than the prompt's.
    contrast: blend towards mid grey (1.0 = none); saturation: chroma factor around the
    luma; exposure: additive shift of all channels in [0, 1] units; variation: standard
    deviation of the per-image relative jitter of contrast and saturation (and absolute
    jitter of exposure).
    """

    name: str
    p_wrong_colour: float
    p_wrong_background: float
    p_wrong_position: float
    p_wrong_size: float
    contrast: float
    saturation: float
    exposure: float
    variation: float


GENERATOR_STYLES: tuple[GeneratorStyle, ...] = (
    GeneratorStyle("gen-crisp", 0.05, 0.03, 0.05, 0.05, 1.0, 1.0, 0.0, 0.05),
    GeneratorStyle("gen-vivid-careless", 0.35, 0.05, 0.35, 0.10, 1.0, 1.15, 0.03, 0.05),
    GeneratorStyle("gen-faded", 0.08, 0.05, 0.08, 0.08, 0.45, 0.5, 0.05, 0.08),
    GeneratorStyle("gen-murky", 0.10, 0.25, 0.10, 0.30, 0.85, 0.8, -0.3, 0.08),
)

SUPERSAMPLE = 4
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _coverage(shapes: np.ndarray, cx: np.ndarray, cy: np.ndarray, diameter: np.ndarray,
              image_size: int) -> np.ndarray:
    """Anti-aliased object coverage (N, H, W) in [0, 1]: supersampled masks, box-filtered."""
    grid = image_size * SUPERSAMPLE
    axis = ((np.arange(grid, dtype=np.float32) + 0.5) / grid)
    dx = axis[None, None, :] - cx[:, None, None].astype(np.float32)
    dy = axis[None, :, None] - cy[:, None, None].astype(np.float32)
    d = diameter[:, None, None].astype(np.float32)
    mask = np.zeros((len(shapes), grid, grid), dtype=bool)
    for index, shape in enumerate(SHAPES):
        rows = np.flatnonzero(shapes == index)
        if rows.size == 0:
            continue
        x, y, r = dx[rows], dy[rows], d[rows] / 2
        if shape == "circle":
            mask[rows] = x * x + y * y <= r * r
        elif shape == "square":
            half = r * np.sqrt(np.pi / 4)
            mask[rows] = (np.abs(x) <= half) & (np.abs(y) <= half)
        elif shape == "triangle":  # isosceles, apex up, base = height
            side = 2 * r * np.sqrt(np.pi / 2)
            t = (y + side / 2) / side
            mask[rows] = (t >= 0) & (t <= 1) & (np.abs(x) <= t * side / 2)
        else:  # cross with arm thickness a third of its span
            span = 2 * r * np.sqrt(9 * np.pi / 20)
            ax, ay = np.abs(x), np.abs(y)
            mask[rows] = ((ax <= span / 6) & (ay <= span / 2)) | ((ay <= span / 6) & (ax <= span / 2))
    s = SUPERSAMPLE
    return mask.reshape(len(shapes), image_size, s, image_size, s).mean(axis=(2, 4), dtype=np.float32)


def _other(values: list[str], current: str, rng: np.random.Generator) -> str:
    return [v for v in values if v != current][rng.integers(len(values) - 1)]


def render_batch(attrs: list[Attributes], styles: list[GeneratorStyle], rng: np.random.Generator,
                 image_size: int = 32, chunk: int = 256) -> np.ndarray:
    """Render one image per (attributes, style) as uint8 (N, H, W, 3)."""
    n = len(attrs)
    drawn = []
    for a, st in zip(attrs, styles):
        colour = _other(list(COLOURS), a.colour, rng) if rng.random() < st.p_wrong_colour else a.colour
        background = (_other(list(BACKGROUNDS), a.background, rng)
                      if rng.random() < st.p_wrong_background else a.background)
        position = (_other(list(POSITIONS), a.position, rng)
                    if rng.random() < st.p_wrong_position else a.position)
        size = _other(list(SIZES), a.size, rng) if rng.random() < st.p_wrong_size else a.size
        drawn.append((colour, a.shape, background, size, position))
    shapes = np.array([SHAPES.index(d[1]) for d in drawn])
    cx = np.array([POSITIONS[d[4]] for d in drawn]) + rng.normal(0, 0.02, n)
    cy = 0.5 + rng.normal(0, 0.02, n)
    diameter = np.array([SIZES[d[3]] for d in drawn]) * (1 + rng.normal(0, 0.04, n))
    obj = (np.array([COLOURS[d[0]] for d in drawn]) + rng.normal(0, 10, (n, 3))) / 255
    bg = (np.array([BACKGROUNDS[d[2]] for d in drawn]) + rng.normal(0, 5, (n, 3))) / 255
    var = np.array([st.variation for st in styles])
    contrast = np.array([st.contrast for st in styles]) * (1 + var * rng.normal(size=n))
    saturation = np.array([st.saturation for st in styles]) * (1 + var * rng.normal(size=n))
    exposure = np.array([st.exposure for st in styles]) + var * rng.normal(size=n)
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        alpha = _coverage(shapes[sl], cx[sl], cy[sl], diameter[sl], image_size)[..., None]
        img = bg[sl, None, None, :] * (1 - alpha) + obj[sl, None, None, :] * alpha
        luma = (img @ _LUMA)[..., None]
        img = luma + saturation[sl, None, None, None] * (img - luma)
        img = 0.5 + contrast[sl, None, None, None] * (img - 0.5) + exposure[sl, None, None, None]
        out[sl] = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return out


def render(attrs: Attributes, style: GeneratorStyle, rng: np.random.Generator,
           image_size: int = 32) -> np.ndarray:
    """Render one image (H, W, 3) uint8 of the prompt's attributes in a generator's style."""
    return render_batch([attrs], [style], rng, image_size)[0]


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of a uint8 (H, W, 3) array (deterministic for a given PIL build)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), "RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """uint8 (H, W, 3) array from JPEG bytes; ValueError for undecodable bytes."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as error:  # PIL raises OSError, SyntaxError, UnidentifiedImageError...
        raise ValueError(f"undecodable JPEG ({len(data)} bytes): {error}") from error


# ---------------------------------------------------------------- ground-truth scorers

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -50, 50)))


def _quantile(values: np.ndarray, q: float) -> np.ndarray:
    """Per-row q-quantile (nearest rank) of (N, P) values; faster than np.percentile."""
    k = int(round(q * (values.shape[1] - 1)))
    return np.partition(values, k, axis=1)[:, k]


def _softmax_pick(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p[np.arange(len(target)), target] / p.sum(axis=1)


def alignment_components(images: np.ndarray, captions: list[str]) -> dict[str, np.ndarray]:
    """Soft per-attribute matches in [0, 1] of images (N, H, W, 3) uint8 to their captions.

    background: median border colour, softmax over the palette of -RGB distance / 25.
    foreground: pixels whose distance to that background exceeds half the 99th percentile
      distance (and at least 30 of 255); presence = sigmoid((d - 0.16) / 0.025), where d is
      the equivalent circle diameter sqrt(4 area / pi) as a fraction of the width.
    colour: chroma direction (mean foreground colour minus its grey level, which undoes
      grey blending and exposure shifts), softmax of cosine / 0.1 against the palette's,
      with logits scaled down when chroma is weak (< 20 of 255); times presence.
    size: sigmoid((d - 0.44) / 0.025) for large, its complement times presence for small.
    position: foreground centroid x, Gaussian softmax (sigma 0.07) over 0.25 / 0.5 / 0.75;
      times presence.
    """
    x = np.asarray(images, dtype=np.float32)
    n, h, w, _ = x.shape
    attrs = [parse_caption(c) for c in captions]
    border = np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)
    bg = np.median(border, axis=1)
    bg_palette = np.array(list(BACKGROUNDS.values()), dtype=np.float32)
    bg_logits = -np.linalg.norm(bg[:, None] - bg_palette[None], axis=2) / 25
    background = _softmax_pick(bg_logits, np.array([list(BACKGROUNDS).index(a.background) for a in attrs]))

    dist = np.linalg.norm(x - bg[:, None, None, :], axis=3).reshape(n, -1)
    threshold = np.maximum(30.0, 0.5 * _quantile(dist, 0.99))
    mask = dist > threshold[:, None]
    count = mask.sum(axis=1)
    d = np.sqrt(4 * count / (h * w) / np.pi)
    presence = _sigmoid((d - 0.16) / 0.025)

    pixels = x.reshape(n, -1, 3)
    fg = (pixels * mask[..., None]).sum(axis=1) / np.maximum(count, 1)[:, None]
    chroma = fg - fg.mean(axis=1, keepdims=True)
    strength = np.linalg.norm(chroma, axis=1)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    palette_chroma = palette - palette.mean(axis=1, keepdims=True)
    palette_chroma /= np.linalg.norm(palette_chroma, axis=1, keepdims=True)
    cosine = chroma @ palette_chroma.T / np.maximum(strength, 1e-6)[:, None]
    colour_logits = cosine * np.minimum(1.0, strength / 20)[:, None] / 0.1
    colour = presence * _softmax_pick(colour_logits, np.array([list(COLOURS).index(a.colour) for a in attrs]))

    large = _sigmoid((d - 0.44) / 0.025)
    wants_large = np.array([a.size == "large" for a in attrs])
    size = np.where(wants_large, large, presence * (1 - large))

    centre_x = (mask.reshape(n, h, w).sum(axis=1) @ ((np.arange(w) + 0.5) / w)) / np.maximum(count, 1)
    targets = np.array(list(POSITIONS.values()))
    pos_logits = -((centre_x[:, None] - targets[None]) ** 2) / (2 * 0.07 ** 2)
    position = presence * _softmax_pick(pos_logits, np.array([list(POSITIONS).index(a.position) for a in attrs]))
    return {"colour": colour, "background": background, "size": size, "position": position}


def alignment_score(images: np.ndarray, captions: list[str]) -> np.ndarray:
    """Mean of the colour, background, size and position matches, in [0, 1]."""
    parts = alignment_components(images, captions)
    return np.mean(np.stack(list(parts.values())), axis=0)


def aesthetic_score(images: np.ndarray) -> np.ndarray:
    """Low-frequency image quality in [0, 1]: 0.4 contrast + 0.4 colourfulness + 0.2 exposure.

    contrast: RMS contrast of the RGB values in [0, 1] (std over pixels, averaged over
      channels), divided by 0.12 and clipped.
    colourfulness: Hasler & Suesstrunk (2003) M = sigma_rgyb + 0.3 mu_rgyb on 0-255 values,
      divided by 45 and clipped.
    exposure: highlight level, the 99th percentile of the per-pixel max channel; an
      under-exposed image (no pixel reaching near full brightness) is penalised:
      clip((v99 - 0.5) / 0.35, 0, 1).
    """
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1, 3)
    contrast = np.clip(x.std(axis=1).mean(axis=1) / 255 / 0.12, 0, 1)
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    m = np.hypot(rg.std(axis=1), yb.std(axis=1)) + 0.3 * np.hypot(rg.mean(axis=1), yb.mean(axis=1))
    colourfulness = np.clip(m / 45, 0, 1)
    v99 = _quantile(x.max(axis=2), 0.99) / 255
    exposure = np.clip((v99 - 0.5) / 0.35, 0, 1)
    return 0.4 * contrast + 0.4 * colourfulness + 0.2 * exposure


def preference_score(images: np.ndarray, captions: list[str], alignment_weight: float = 0.6,
                     aesthetic_weight: float = 0.4) -> np.ndarray:
    """The hidden raters' utility u = w_align * alignment + w_aes * aesthetic."""
    return alignment_weight * alignment_score(images, captions) + aesthetic_weight * aesthetic_score(images)


# ---------------------------------------------------------------- world generation

@dataclass
class WorldConfig:
    """Size and randomness of the synthetic world (everything derives from seed)."""

    seed: int = 0
    image_size: int = 32
    n_train_pairs: int = 20000
    n_validation_unique: int = 200
    n_test_unique: int = 200
    n_ood_combinations: int = 200
    n_ood_phrasings: int = 200
    train_shard_size: int = 5000
    tie_fraction: float = 0.10
    rater_temperature: float = 0.1
    n_raters: int = 8
    alignment_weight: float = 0.6
    aesthetic_weight: float = 0.4
    heldout_combination_fraction: float = 0.15
    n_corrupt_rows: int = 3
    n_invalid_label_rows: int = 2


SCHEMA = pa.schema([
    ("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()),
    ("label_0", pa.float64()), ("label_1", pa.float64()), ("best_image_uid", pa.string()),
    ("image_0_uid", pa.string()), ("image_1_uid", pa.string()),
    ("model_0", pa.string()), ("model_1", pa.string()), ("ranking_id", pa.int64()),
    ("user_id", pa.int64()), ("created_at", pa.timestamp("us")), ("are_different", pa.bool_()),
    ("has_label", pa.bool_()), ("num_example_per_prompt", pa.int64()),
])
PROMPT_SCHEMA = pa.schema([("caption", pa.string()), ("prompt_id", pa.int64())])


def rate_pairs(u0: np.ndarray, u1: np.ndarray, temperature: float, tie_fraction: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hidden raters: (label_0, tie). P(image 0 preferred) = sigmoid((u0 - u1) / T)
    (Bradley-Terry); a tie with probability proportional to exp(-|u0 - u1| / T), scaled so
    that the expected tie fraction is tie_fraction. label_0 is 1, 0 or 0.5 (tie)."""
    gap = np.abs(u0 - u1)
    weight = np.exp(-gap / temperature)
    p_tie = np.clip(tie_fraction * len(gap) * weight / weight.sum(), 0, 1)
    tie = rng.random(len(gap)) < p_tie
    first = rng.random(len(gap)) < _sigmoid((u0 - u1) / temperature)
    return np.where(tie, 0.5, first.astype(np.float64)), tie


def _uids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.bytes(16 * n).hex()
    return [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
            for h in (raw[32 * i:32 * (i + 1)] for i in range(n))]


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _make_split(captions: list[str], config: WorldConfig, rng: np.random.Generator,
                rater_ids: np.ndarray, first_ranking_id: int) -> tuple[dict, dict]:
    """Columns of one split (one pair per caption entry) and the hidden facts about it."""
    n = len(captions)
    attrs = [parse_caption(c) for c in captions]
    gen = rng.integers(len(GENERATOR_STYLES), size=(2, n))
    styles = [GENERATOR_STYLES[g] for g in gen.ravel()]
    images = render_batch(attrs + attrs, styles, rng, config.image_size)
    jpgs = [encode_jpeg(image) for image in images]
    seen = np.stack([decode_jpeg(j) for j in jpgs])
    utility = preference_score(seen, captions + captions, config.alignment_weight, config.aesthetic_weight)
    u0, u1 = utility[:n], utility[n:]
    label_0, tie = rate_pairs(u0, u1, config.rater_temperature, config.tie_fraction, rng)
    uids = _uids(rng, 2 * n)
    start = np.datetime64("2023-04-01T00:00:00", "us") + np.timedelta64(int(rng.integers(0, 86400 * 30)), "s")
    created = np.sort(start + rng.integers(0, 86400 * 60 * 10**6, n).astype("timedelta64[us]"))
    counts: dict[str, int] = {}
    for c in captions:
        counts[c] = counts.get(c, 0) + 1
    columns = {
        "caption": captions, "jpg_0": jpgs[:n], "jpg_1": jpgs[n:],
        "label_0": label_0, "label_1": 1 - label_0,
        "best_image_uid": [("" if t else (a if l == 1 else b)) for t, l, a, b in zip(tie, label_0, uids[:n], uids[n:])],
        "image_0_uid": uids[:n], "image_1_uid": uids[n:],
        "model_0": [GENERATOR_STYLES[g].name for g in gen[0]],
        "model_1": [GENERATOR_STYLES[g].name for g in gen[1]],
        "ranking_id": np.arange(first_ranking_id, first_ranking_id + n, dtype=np.int64),
        "user_id": rater_ids[rng.integers(len(rater_ids), size=n)],
        "created_at": created, "are_different": np.ones(n, bool), "has_label": np.ones(n, bool),
        "num_example_per_prompt": np.array([counts[c] for c in captions], dtype=np.int64),
    }
    decided = ~tie & (u0 != u1)
    agree = (label_0 == 1) == (u0 > u1)
    facts = {
        "rater_agreement": float(agree[decided].mean()) if decided.any() else float("nan"),
        "tie_fraction": float(tie.mean()),
        "mean_utility": {st.name: float(utility[gen.ravel() == i].mean())
                         for i, st in enumerate(GENERATOR_STYLES) if (gen.ravel() == i).any()},
    }
    return columns, facts


def _corrupt(columns: dict, config: WorldConfig, rng: np.random.Generator) -> dict:
    """Inject the bad rows of a real scrape: truncated JPEGs and invalid labels."""
    n = len(columns["caption"])
    rows = rng.choice(n, size=min(n, config.n_corrupt_rows + config.n_invalid_label_rows), replace=False)
    corrupt, invalid = sorted(rows[:config.n_corrupt_rows].tolist()), sorted(rows[config.n_corrupt_rows:].tolist())
    damaged = [f"jpg_{k % 2}" for k in range(len(corrupt))]
    for row, column in zip(corrupt, damaged):
        columns[column][row] = columns[column][row][: len(columns[column][row]) // 3]
    for k, row in enumerate(invalid):
        columns["label_0"][row], columns["label_1"][row] = (1.0, 1.0) if k % 2 == 0 else (0.7, 0.2)
        columns["best_image_uid"][row] = ""
    return {"corrupt_jpg_rows": [int(r) for r in corrupt], "corrupt_jpg_columns": damaged,
            "invalid_label_rows": [int(r) for r in invalid]}


def make_world(config: WorldConfig, out_dir: Path) -> dict:
    """Write the Pick-a-Pic v2 shaped splits, prompt sets and world.json; return the summary."""
    out_dir = Path(out_dir)
    (out_dir / "prompts").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    combos = all_combinations()
    order = rng.permutation(len(combos))
    n_heldout = int(round(config.heldout_combination_fraction * len(combos)))
    heldout = [combos[i] for i in sorted(order[:n_heldout])]
    seen = [combos[i] for i in sorted(order[n_heldout:])]

    pool = [make_caption(a, t) for a in seen for t in TEMPLATES]
    pool = [pool[i] for i in rng.permutation(len(pool))]
    n_val, n_test = config.n_validation_unique, config.n_test_unique
    if n_val + n_test >= len(pool):
        raise ValueError(f"validation + test prompts ({n_val + n_test}) must be fewer than {len(pool)}")
    val_captions, test_captions = pool[:n_val], pool[n_val:n_val + n_test]
    train_pool = pool[n_val + n_test:]
    train_captions = [train_pool[i] for i in rng.integers(len(train_pool), size=config.n_train_pairs)]

    rater_ids = np.sort(rng.choice(1_000_000, size=config.n_raters, replace=False)).astype(np.int64)
    summary: dict = {"config": dataclasses.asdict(config),
                     "generator_styles": [dataclasses.asdict(s) for s in GENERATOR_STYLES],
                     "scorer_weights": {"alignment": config.alignment_weight, "aesthetic": config.aesthetic_weight},
                     "heldout_combinations": [dataclasses.asdict(a) for a in heldout],
                     "rater_ids": rater_ids.tolist(), "splits": {}}
    next_id = int(rng.integers(10**6, 10**7))
    for split, captions in (("train", train_captions), ("validation_unique", val_captions),
                            ("test_unique", test_captions)):
        columns, facts = _make_split(captions, config, rng, rater_ids, next_id)
        next_id += len(captions)
        if split == "train":
            facts["bad_rows"] = _corrupt(columns, config, rng)
        table = pa.table(columns, schema=SCHEMA)
        size = config.train_shard_size if split == "train" else max(1, len(captions))
        n_shards = max(1, -(-len(captions) // size))
        names = [f"{split}-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)]
        for stale in out_dir.glob(f"{split}-*.parquet"):
            if stale.name not in names:
                stale.unlink()
        for i, name in enumerate(names):
            _write_atomic(table.slice(i * size, size), out_dir / name)
        summary["splits"][split] = {"rows": len(captions), "prompts": len(set(captions)), "shards": names, **facts}

    prompt_sets = {
        "ood_combinations": [make_caption(a, t) for a in heldout for t in TEMPLATES],
        "ood_phrasings": [make_caption(a, t) for a in seen for t in OOD_TEMPLATES],
    }
    summary["prompt_sets"] = {}
    for name, wanted in (("ood_combinations", config.n_ood_combinations), ("ood_phrasings", config.n_ood_phrasings)):
        candidates = prompt_sets[name]
        chosen = [candidates[i] for i in rng.permutation(len(candidates))[:wanted]]
        table = pa.table({"caption": chosen, "prompt_id": np.arange(len(chosen), dtype=np.int64)}, schema=PROMPT_SCHEMA)
        _write_atomic(table, out_dir / "prompts" / f"{name}.parquet")
        summary["prompt_sets"][name] = len(chosen)

    tmp = out_dir / ".world.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / "world.json")
    return summary
