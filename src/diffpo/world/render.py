"""Rendering: one object on a background, drawn in a generator model's style.

A generator's *habits* are low-frequency (contrast, saturation, exposure), attribute
errors (drawing another colour, size, ... than asked), and for the pre-training corpus's
web images also pixel noise and blur. Unnamed attributes are drawn at random per image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from diffpo.world.vocabulary import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, Attributes

SUPERSAMPLE = 4
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class GeneratorStyle:
    """Habits of one generator model.

    p_wrong_*: chance of rendering another value than the prompt's.
    contrast: blend towards mid grey (1.0 = none); saturation: chroma factor around the
    luma; exposure: additive shift of all channels in [0, 1] units; variation: standard
    deviation of the per-image relative jitter of contrast and saturation (and absolute
    jitter of exposure); noise: standard deviation of per-pixel Gaussian noise in [0, 1]
    units; blur: Gaussian blur sigma in pixels.
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
    p_wrong_shape: float = 0.0
    noise: float = 0.0
    blur: float = 0.0


# The preference data's generators: on average better than the base model (as Pick-a-Pic's
# SDXL / Dreamlike images were better than SD-1.5's), each with its own habit.
GENERATOR_STYLES: tuple[GeneratorStyle, ...] = (
    GeneratorStyle("gen-crisp", 0.05, 0.03, 0.05, 0.05, 1.0, 1.0, 0.0, 0.05, p_wrong_shape=0.05),
    GeneratorStyle("gen-vivid-careless", 0.30, 0.05, 0.30, 0.10, 1.0, 1.15, 0.03, 0.05, p_wrong_shape=0.25),
    GeneratorStyle("gen-faded", 0.08, 0.05, 0.08, 0.08, 0.55, 0.6, 0.05, 0.08, p_wrong_shape=0.10),
    GeneratorStyle("gen-murky", 0.10, 0.20, 0.10, 0.25, 0.85, 0.8, -0.25, 0.08, p_wrong_shape=0.10),
)
# The pre-training corpus's "web" images (standing in for LAION): another distribution,
# with careless captions (attribute errors), washed-out and dark photos, noise and blur.
CORPUS_STYLES: tuple[GeneratorStyle, ...] = (
    GeneratorStyle("web-photo", 0.15, 0.10, 0.15, 0.15, 0.9, 0.9, 0.0, 0.10, p_wrong_shape=0.15, noise=0.02),
    GeneratorStyle("web-washed", 0.15, 0.10, 0.15, 0.15, 0.5, 0.5, 0.08, 0.10, p_wrong_shape=0.15, noise=0.02),
    GeneratorStyle("web-dark", 0.20, 0.20, 0.20, 0.20, 0.8, 0.7, -0.25, 0.10, p_wrong_shape=0.2, noise=0.03),
    GeneratorStyle("web-blurry", 0.20, 0.10, 0.20, 0.20, 0.9, 0.8, 0.0, 0.10, p_wrong_shape=0.2, blur=0.9),
)
CLEAN_STYLE = GeneratorStyle("clean", 0, 0, 0, 0, 1.0, 1.0, 0.0, 0.0)


def coverage(shapes: np.ndarray, cx: np.ndarray, cy: np.ndarray, diameter: np.ndarray,
             image_size: int) -> np.ndarray:
    """Anti-aliased object coverage (N, H, W) in [0, 1]: supersampled masks, box-filtered.

    ``shapes`` indexes SHAPES; every shape has the area of a circle of ``diameter``.
    """
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


def _draw(value: str | None, values: list[str], p_wrong: float, rng: np.random.Generator) -> str:
    """The value a generator draws: a random one if unnamed, another one with p_wrong."""
    if value is None:
        return values[rng.integers(len(values))]
    if rng.random() < p_wrong:
        return [v for v in values if v != value][rng.integers(len(values) - 1)]
    return value


def gaussian_blur(images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of float (N, H, W, C) images, one sigma (pixels) per image."""
    out = images.copy()
    for i in np.flatnonzero(sigma > 0):
        radius = max(1, int(np.ceil(3 * sigma[i])))
        kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma[i]) ** 2)
        kernel /= kernel.sum()
        padded = np.pad(out[i], ((radius, radius), (radius, radius), (0, 0)), mode="edge")
        rows = sum(k * padded[j:j + out.shape[1], :, :] for j, k in enumerate(kernel))
        out[i] = sum(k * rows[:, j:j + out.shape[2], :] for j, k in enumerate(kernel))
    return out


def render_batch(attrs: list[Attributes], styles: list[GeneratorStyle], rng: np.random.Generator,
                 image_size: int = 32, chunk: int = 256) -> np.ndarray:
    """Render one image per (attributes, style) as uint8 (N, H, W, 3)."""
    n = len(attrs)
    drawn = [(_draw(a.colour, list(COLOURS), st.p_wrong_colour, rng),
              _draw(a.shape, list(SHAPES), st.p_wrong_shape, rng),
              _draw(a.background, list(BACKGROUNDS), st.p_wrong_background, rng),
              _draw(a.size, list(SIZES), st.p_wrong_size, rng),
              _draw(a.position, list(POSITIONS), st.p_wrong_position, rng)) for a, st in zip(attrs, styles)]
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
    noise = np.array([st.noise for st in styles], dtype=np.float32)
    blur = np.array([st.blur for st in styles])
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        alpha = coverage(shapes[sl], cx[sl], cy[sl], diameter[sl], image_size)[..., None]
        img = bg[sl, None, None, :] * (1 - alpha) + obj[sl, None, None, :] * alpha
        luma = (img @ _LUMA)[..., None]
        img = luma + saturation[sl, None, None, None] * (img - luma)
        img = 0.5 + contrast[sl, None, None, None] * (img - 0.5) + exposure[sl, None, None, None]
        img = gaussian_blur(img, blur[sl])
        if noise[sl].any():
            img = img + noise[sl, None, None, None] * rng.standard_normal(img.shape, dtype=np.float32)
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
