"""The world's ground truth: what its hidden raters see in an image, computed from pixels.

Every image shows (at most) one object on a plain achromatic background, so a rater's view
is a two-region analysis (``_analyse``): the background colour (median of the border), the
object's colour, and a soft object mask alpha in [0, 1] (each pixel's position between the
two colours), from which area, centroid and shape follow. Alignment asks whether what is
seen matches what the caption names; aesthetics whether it looks good (contrast, colour,
exposure) and clean (no noise, blur, compression artefacts or colour cast). Everything is
vectorised numpy over images, channel-first float32, in chunks; nothing is learned.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from diffpo.world.vocabulary import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, VOCABULARIES, parse_caption

SHAPE_GRID = 20           # canonical shape frame: SHAPE_GRID^2 points ...
SHAPE_EXTENT = 0.95       # ... spanning +-SHAPE_EXTENT object diameters around the centroid
SHAPE_TEMPERATURE = 0.02  # softmax temperature on template correlations
NOISE_SCALE = 15.0        # noise factor 1 / (1 + (sigma / NOISE_SCALE)^2), sigma in 0-255 units
CHUNK = 256               # images analysed at a time (keeps the arrays in cache: ~2x faster than 4096)
_IMMERKAER = 6 * 1.5382   # Laplacian-difference response of N(0, s^2) noise, 3-channel norm: median 6 s chi_3
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601, as render uses


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -50, 50)))


def _softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _quantile(values: np.ndarray, q: float) -> np.ndarray:
    """Per-row q-quantile (nearest rank) of (N, P) values. A sort, not np.partition, whose
    introselect slows down tenfold on the many ties of flat images."""
    return np.sort(values, axis=1)[:, int(round(q * (values.shape[1] - 1)))]


def _targets(attrs, field: str) -> np.ndarray:
    """Index of each caption's named value of field; -1 where it is unnamed."""
    values = VOCABULARIES[field]
    return np.array([values.index(getattr(a, field)) if getattr(a, field) is not None else -1 for a in attrs])


def _smooth(a: np.ndarray) -> np.ndarray:
    """3-tap running median along rows, then columns, of (..., H, W): a separable stand-in
    for the 3x3 median (removes pixel noise, keeps the steps of object edges)."""
    for axis, cut in ((-1, lambda s: (Ellipsis, s)), (-2, lambda s: (Ellipsis, s, slice(None)))):
        p = np.concatenate([a[cut(slice(0, 1))], a, a[cut(slice(-1, None))]], axis=axis)
        lo, mid, hi = p[cut(slice(0, -2))], p[cut(slice(1, -1))], p[cut(slice(2, None))]
        a = np.maximum(np.minimum(lo, mid), np.minimum(np.maximum(lo, mid), hi))
    return a


def _noise_sigma(x: np.ndarray) -> np.ndarray:
    """Immerkaer's (1996) noise estimate of (N, 3, H, W) images in their units: the
    [1,-2,1] x [1,-2,1] response (6 sigma for white noise), its norm over channels, median
    over pixels (object edges cover a minority of pixels, so they do not count)."""
    lap = x[..., :-2] + x[..., 2:] - 2 * x[..., 1:-1]
    lap = lap[..., :-2, :] + lap[..., 2:, :] - 2 * lap[..., 1:-1, :]
    lap *= lap
    return np.sqrt(_quantile((lap[:, 0] + lap[:, 1] + lap[:, 2]).reshape(len(x), -1), 0.5)) / _IMMERKAER


def _geometry(alpha: np.ndarray):
    """Centroid (cx, cy) and equivalent circle diameter sqrt(4 area / pi), all in fractions
    of the width/height, of soft masks (N, H, W)."""
    n, h, w = alpha.shape
    area = alpha.sum(axis=(1, 2))
    safe = np.maximum(area, 1e-6)
    cx = alpha.sum(axis=1) @ ((np.arange(w, dtype=np.float32) + 0.5) / w) / safe
    cy = alpha.sum(axis=2) @ ((np.arange(h, dtype=np.float32) + 0.5) / h) / safe
    return cx, cy, np.sqrt(4 * area / np.pi) / w


def _canonical(alpha: np.ndarray, cx, cy, d):
    """The mask in a canonical frame: bilinear samples (N, G*G) at centroid + d * grid;
    points off the image are invalid (weight 0)."""
    n, h, w = alpha.shape
    g = np.linspace(-SHAPE_EXTENT, SHAPE_EXTENT, SHAPE_GRID, dtype=np.float32)
    gy, gx = (v.ravel() for v in np.meshgrid(g, g, indexing="ij"))
    u = (cx[:, None] + d[:, None] * gx[None]) * w - 0.5   # pixel-index coordinates
    v = (cy[:, None] + d[:, None] * gy[None]) * h - 0.5
    valid = ((u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)).astype(np.float32)
    u, v = np.clip(u, 0, w - 1), np.clip(v, 0, h - 1)
    u0, v0 = np.minimum(u.astype(np.int64), w - 2), np.minimum(v.astype(np.int64), h - 2)
    fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    flat = alpha.reshape(n, -1)
    corner = [np.take_along_axis(flat, (v0 + dv) * w + u0 + du, axis=1) for dv in (0, 1) for du in (0, 1)]
    samples = (1 - fv) * ((1 - fu) * corner[0] + fu * corner[1]) + fv * ((1 - fu) * corner[2] + fu * corner[3])
    return samples, valid


@lru_cache(maxsize=1)
def _templates() -> np.ndarray:
    """(sizes, shapes, G*G) canonical masks: clean 32 px renders (render.coverage, 25
    sub-pixel offsets) of each shape at each size of SIZES, seen through the images'
    pipeline and averaged (a small object's pixels blur its shape more, so each size has its own)."""
    from diffpo.world.render import coverage

    offsets = np.linspace(-0.5, 0.5, 5) / 32
    ox, oy = (v.ravel() for v in np.meshgrid(offsets, offsets))
    out = np.zeros((len(SIZES), len(SHAPES), SHAPE_GRID ** 2), dtype=np.float32)
    for i, size in enumerate(SIZES.values()):
        for j in range(len(SHAPES)):
            alpha = _smooth(coverage(np.full(len(ox), j), 0.5 + ox, 0.5 + oy, np.full(len(ox), size), 32))
            samples, valid = _canonical(alpha, *_geometry(alpha))
            out[i, j] = (samples * valid).sum(axis=0) / np.maximum(valid.sum(axis=0), 1)
    return out


def _shape_correlation(alpha: np.ndarray, cx, cy, d) -> np.ndarray:
    """(N, 4) Pearson correlations, over the valid canonical points, with each shape's
    template of the size nearest the object's diameter d."""
    a, valid = _canonical(alpha, cx, cy, d)
    sizes = np.array(list(SIZES.values()))
    t = _templates()[np.abs(d[:, None] - sizes[None]).argmin(axis=1)]  # (N, 4, P)
    sw = np.maximum(valid.sum(axis=1), 1)[:, None]
    dot = lambda u, v: np.einsum("np,nkp->nk", u, v) / sw  # noqa: E731
    mean_a, mean_t = (a * valid).sum(axis=1, keepdims=True) / sw, dot(valid, t)
    cov = dot(a * valid, t) - mean_a * mean_t
    var_a = (a * a * valid).sum(axis=1, keepdims=True) / sw - mean_a ** 2
    var_t = dot(valid, t * t) - mean_t ** 2
    return cov / np.sqrt(np.maximum(var_a * var_t, 1e-12))


def _analyse(images: np.ndarray, shapes: bool = True) -> dict[str, np.ndarray]:
    """The two-region view of uint8 images (N, H, W, 3).

    bg: median border colour. fg: mean colour of the pixels farther from bg than
      max(15, half the 99th percentile distance), twice refined to the pixels more than 3/4
      of the way from bg to fg (edge pixels are blends).
    alpha_raw: each pixel's projection on the bg -> fg axis (0 at bg, 1 at fg); alpha: its
      3-tap row and column median, clipped to [0, 1], zero if |fg - bg| < 15 (no object).
    cx, cy, d: centroid and equivalent diameter of alpha (fractions of the width);
      presence = sigmoid((d - 0.16) / 0.025).
    shape_corr: correlation of the canonical-frame alpha with each shape's template.
    sigma: the robust noise estimate (0-255 units).
    """
    x = np.ascontiguousarray(np.asarray(images, dtype=np.float32).transpose(0, 3, 1, 2))  # (N, 3, H, W)
    n, _, h, w = x.shape
    border = np.concatenate([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], axis=2)
    bg = np.median(border, axis=2)
    diff = (x - bg[:, :, None, None]).reshape(n, 3, -1)
    dist = np.sqrt(np.einsum("ncp,ncp->np", diff, diff))
    mask = (dist > np.maximum(15.0, 0.5 * _quantile(dist, 0.99))[:, None]).astype(np.float32)
    fg = bg + (diff @ mask[:, :, None])[..., 0] / np.maximum(mask.sum(axis=1), 1)[:, None]
    for step in range(3):  # batched matrix products: the fast way to project and to sum
        axis = fg - bg
        norm2 = np.maximum((axis * axis).sum(axis=1), 1.0)
        alpha_raw = ((axis / norm2[:, None])[:, None, :] @ diff).reshape(n, h, w)
        if step == 2:
            break
        core = (alpha_raw > 0.75).reshape(n, -1, 1).astype(np.float32)
        count = core.sum(axis=(1, 2))
        fg = np.where((count > 0)[:, None], bg + (diff @ core)[..., 0] / np.maximum(count, 1)[:, None], fg)
    contrast = np.sqrt(norm2)
    alpha = np.where((contrast >= 15)[:, None, None], np.clip(_smooth(alpha_raw), 0, 1), 0).astype(np.float32)
    cx, cy, d = _geometry(alpha)
    view = {"x": x, "bg": bg, "fg": fg, "alpha_raw": alpha_raw, "alpha": alpha, "cx": cx, "d": d,
            "presence": _sigmoid((d - 0.16) / 0.025), "sigma": _noise_sigma(x)}
    if shapes:
        view["shape_corr"] = _shape_correlation(alpha, cx, cy, d)
    return view


def _views(images: np.ndarray, shapes: bool = True):
    """(slice, view) per chunk of CHUNK images."""
    for start in range(0, len(images), CHUNK):
        yield slice(start, start + CHUNK), _analyse(images[start:start + CHUNK], shapes)


def _logits(view: dict) -> dict[str, np.ndarray]:
    """Per attribute, (N, K) logits over its values (order of VOCABULARIES)."""
    bg_palette = np.array(list(BACKGROUNDS.values()), dtype=np.float32)
    background = -np.linalg.norm(view["bg"][:, None] - bg_palette[None], axis=2) / 25
    # Chroma direction (colour minus its grey level): undoes grey blending and exposure shifts.
    chroma = view["fg"] - view["fg"].mean(axis=1, keepdims=True)
    strength = np.linalg.norm(chroma, axis=1)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    palette = palette - palette.mean(axis=1, keepdims=True)
    palette /= np.linalg.norm(palette, axis=1, keepdims=True)
    cosine = chroma @ palette.T / np.maximum(strength, 1e-6)[:, None]
    colour = cosine * np.minimum(1.0, strength / 20)[:, None] / 0.1
    large = (view["d"] - 0.5) / 0.025
    centres = np.array(list(POSITIONS.values()))
    logits = {"colour": colour, "background": background, "size": np.stack([-large, large], axis=1) / 2,
              "position": -((view["cx"][:, None] - centres[None]) ** 2) / (2 * 0.06 ** 2)}
    if "shape_corr" in view:
        logits["shape"] = view["shape_corr"] / SHAPE_TEMPERATURE
    return logits


def _alignment(view: dict, attrs: list) -> dict[str, np.ndarray]:
    """Per attribute, each image's probability of its caption's value (alignment_components)."""
    probs = {k: _softmax(v) for k, v in _logits(view).items()}
    rows = np.arange(len(attrs))
    out = {}
    for field in VOCABULARIES:
        target = _targets(attrs, field)
        p = probs[field][rows, np.maximum(target, 0)]
        if field in ("colour", "shape", "position"):  # an absent object has none of these
            p = p * view["presence"]
        elif field == "size":  # nor is it small
            p = p * np.where(target == 0, view["presence"], 1.0)
        out[field] = np.where(target < 0, np.nan, p)
    return out


def alignment_components(images: np.ndarray, captions: list[str]) -> dict[str, np.ndarray]:
    """Soft per-attribute matches in [0, 1] of images (N, H, W, 3) uint8 to their captions
    (NaN where a caption leaves the attribute unnamed).

    colour: softmax of cosine / 0.1 between the object's chroma direction and the palette's,
      logits scaled down when chroma is weak (< 20 of 255); times presence.
    shape: softmax of template correlation / 0.02 over circle / square / triangle / cross
      (the mask seen at its centroid, scaled to its equivalent diameter); times presence.
    background: softmax over the palette of -RGB distance / 25 of the median border colour.
    size: sigmoid((d - 0.50) / 0.025) for large, its complement times presence for small.
    position: centroid x, Gaussian softmax (sigma 0.06) over POSITIONS; times presence.
    """
    attrs = [parse_caption(c) for c in captions]
    parts = [_alignment(view, attrs[s]) for s, view in _views(images)]
    return {field: np.concatenate([p[field] for p in parts]) if parts else np.zeros(0) for field in VOCABULARIES}


def alignment_score(images: np.ndarray, captions: list[str]) -> np.ndarray:
    """Mean of the matches of the attributes each caption names, in [0, 1]."""
    return np.nanmean(np.stack(list(alignment_components(images, captions).values())), axis=0)


def _quality(view: dict) -> dict[str, np.ndarray]:
    """Base appeal and cleanliness factors (formulas: aesthetic_score), plus their measures."""
    x, sigma, bg, fg = view["x"], view["sigma"], view["bg"], view["fg"]
    n, _, h, w = x.shape
    s2 = sigma * sigma
    flat = x.reshape(n, 3, -1)
    mean = flat.mean(axis=2)
    cov = flat @ flat.transpose(0, 2, 1) / flat.shape[2] - mean[:, :, None] * mean[:, None, :]
    cov = cov - s2[:, None, None] * np.eye(3, dtype=np.float32)  # white noise adds sigma^2 I:
    # taken off, so that noise cannot look contrasty or colourful.
    contrast = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0)).mean(axis=1)
    opponent = np.array([[1, -1, 0], [0.5, 0.5, -1]], dtype=np.float32)  # rg, yb
    spread = np.sqrt(np.maximum(np.einsum("kc,ncd,kd->n", opponent, cov, opponent), 0))
    colourfulness = (spread + 0.3 * np.linalg.norm(mean @ opponent.T, axis=1)) / 45
    exposure = (np.maximum(bg.max(axis=1), fg.max(axis=1)) / 255 - 0.5) / 0.35
    base = (0.4 * np.clip(contrast / 255 / 0.12, 0, 1) + 0.4 * np.clip(colourfulness, 0, 1)
            + 0.2 * np.clip(exposure, 0, 1))

    # Blur is seen through luminance edges (people resolve chroma edges poorly, which is why
    # JPEG halves chroma resolution): the median-filtered luma's mean edge steepness.
    luma = _smooth(_LUMA[0] * x[:, 0] + _LUMA[1] * x[:, 1] + _LUMA[2] * x[:, 2])
    # Gradients shrunk by 3 noise SDs (white noise of sigma leaves ~0.31 sigma in them):
    # noise neither counts as edges nor can make a soft edge look steep.
    tau = (0.94 * sigma)[:, None, None]
    gx = np.maximum(np.abs(np.diff(luma, axis=2)) - tau, 0)
    gy = np.maximum(np.abs(np.diff(luma, axis=1)) - tau, 0)
    step = np.abs((fg - bg) @ _LUMA)
    steep = (((gx * gx).sum(axis=(1, 2)) + (gy * gy).sum(axis=(1, 2)))
             / np.maximum(gx.sum(axis=(1, 2)) + gy.sum(axis=(1, 2)), 1e-6) / np.maximum(step, 1))
    visible = view["presence"] * np.clip(step / 30, 0, 1)
    # Artefacts: colour the two-region blend cannot explain, on 2x2 means (JPEG's halved
    # chroma then costs little); noise's share (~sigma^2 / 2 there) taken off.
    even = (Ellipsis, slice(0, h // 2 * 2), slice(0, w // 2 * 2))
    pool = lambda a: (a[..., ::2, ::2] + a[..., 1::2, ::2] + a[..., ::2, 1::2] + a[..., 1::2, 1::2]) / 4  # noqa: E731
    blend = bg[:, :, None, None] + pool(np.clip(view["alpha_raw"][even], 0, 1))[:, None] * (fg - bg)[:, :, None, None]
    r = pool(x[even]) - blend
    residual = np.sqrt(np.maximum((r * r).sum(axis=1).mean(axis=(1, 2)) - 0.5 * s2, 0))
    tint = np.linalg.norm(bg - bg.mean(axis=1, keepdims=True), axis=1)
    return {"base": base, "noise": 1 / (1 + (sigma / NOISE_SCALE) ** 2),
            "sharpness": 1 - 0.6 * visible * (1 - np.clip((steep - 0.2) / 0.15, 0, 1)),
            "artefacts": 1 / (1 + (np.maximum(residual - 8, 0) / 12) ** 2),
            "cast": 1 - 0.6 * np.clip((tint - 12) / 36, 0, 1),
            "steepness": steep, "residual": residual, "tint": tint}


def _aesthetic(view: dict) -> np.ndarray:
    q = _quality(view)
    return q["base"] * q["noise"] * q["sharpness"] * q["artefacts"] * q["cast"]


def aesthetic_score(images: np.ndarray) -> np.ndarray:
    """Image quality in [0, 1]: base * noise * sharpness * artefacts * cast.

    base = 0.4 contrast + 0.4 colourfulness + 0.2 exposure, each clipped to [0, 1]: contrast
      the channels' RMS (noise variance sigma^2 taken off) / 255 / 0.12; colourfulness Hasler
      & Suesstrunk M = sigma_rgyb + 0.3 mu_rgyb (noise variance taken off) / 45; exposure
      (v - 0.5) / 0.35, v the brighter region colour's max channel in [0, 1].
    noise = 1 / (1 + (sigma / 15)^2), sigma the robust noise estimate (0-255 units).
    sharpness = 1 - 0.6 vis (1 - clip((s - 0.2) / 0.15)): s = sum g^2 / sum g / |Y_fg - Y_bg|
      with g = max(|grad Y| - 0.94 sigma, 0) on the median-filtered luma Y, the mean edge
      steepness per pixel (>= 0.38 for clean renders, JPEG q95 included; ~0.2 after a
      1.2 px blur); vis = presence * clip(|Y_fg - Y_bg| / 30), how visible edges are in luma.
    artefacts = 1 / (1 + (max(r - 8, 0) / 12)^2): r the RMS (0-255) of 2x2 means of the
      colour the bg/fg blend leaves unexplained (clean <= ~7, JPEG q95 <= ~10, q5 ~22).
    cast = 1 - 0.6 clip((t - 12) / 36), t the chroma of the (achromatic) background.
    Every factor is 1 (or nearly) on clean renders, so no degradation can raise their score;
    added noise lowers every style's mean (per image it can gain a few hundredths where a soft
    edge of little luma contrast drowns in it: under 3 % of images by more than 0.03).
    """
    parts = [_aesthetic(view) for _, view in _views(images, shapes=False)]
    return np.concatenate(parts) if parts else np.zeros(0)


def preference_score(images: np.ndarray, captions: list[str], alignment_weight: float = 0.6,
                     aesthetic_weight: float = 0.4) -> np.ndarray:
    """The hidden raters' utility u = w_align * alignment + w_aes * aesthetic."""
    attrs = [parse_caption(c) for c in captions]
    parts = [alignment_weight * np.nanmean(np.stack(list(_alignment(view, attrs[s]).values())), axis=0)
             + aesthetic_weight * _aesthetic(view) for s, view in _views(images)]
    return np.concatenate(parts) if parts else np.zeros(0)


def recognise(images: np.ndarray) -> dict[str, np.ndarray]:
    """What a person would name: per attribute (order of VOCABULARIES) the index of the most
    likely value per image (the argmax of alignment's logits; an empty image still gets one)."""
    parts = [{k: v.argmax(axis=1) for k, v in _logits(view).items()} for _, view in _views(images)]
    return {field: np.concatenate([p[field] for p in parts]) if parts else np.zeros(0, np.int64)
            for field in VOCABULARIES}


def semantic_diversity(images: np.ndarray, captions: list[str], prompt_ids: np.ndarray) -> pd.DataFrame:
    """Per prompt id (sorted): semantic_entropy, the mean over the attributes its caption
    leaves free of H(recognised values across its images) / log(number of values) (NaN
    where nothing is free), and n_free, the number of free attributes."""
    seen = recognise(images)
    frame = pd.DataFrame({"prompt_id": np.asarray(prompt_ids), "caption": list(captions), **seen})
    rows = []
    for prompt_id, group in frame.groupby("prompt_id", sort=True):
        free = parse_caption(group["caption"].iloc[0]).free()
        entropies = []
        for field in free:
            p = np.bincount(group[field], minlength=len(VOCABULARIES[field])) / len(group)
            p = p[p > 0]
            entropies.append(float(-(p * np.log(p)).sum() / np.log(len(VOCABULARIES[field]))))
        rows.append({"prompt_id": prompt_id, "semantic_entropy": float(np.mean(entropies)) if free else np.nan,
                     "n_free": len(free)})
    return pd.DataFrame(rows, columns=["prompt_id", "semantic_entropy", "n_free"])


def degradation_diagnostic(images: np.ndarray) -> np.ndarray:
    """Per image, high-frequency energy as the robust noise estimate sigma in 0-255 units
    (Immerkaer's Laplacian difference, median over pixels so object edges do not count):
    ~0 for clean renders (< 1 after a JPEG q95 round trip), ~s for added Gaussian noise of
    standard deviation s."""
    chunks = (np.asarray(images[s:s + CHUNK], dtype=np.float32) for s in range(0, len(images), CHUNK))
    parts = [_noise_sigma(np.ascontiguousarray(x.transpose(0, 3, 1, 2))) for x in chunks]
    return np.concatenate(parts) if parts else np.zeros(0)


# ---------------------------------------------------------------- degradations a person dislikes
DEGRADATIONS: tuple[str, ...] = ("noise", "blur", "blocking", "colour_cast", "collapse")


def degrade(images: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, H, W, 3) images degraded in one way (the ground truth must score each lower).

    noise: Gaussian, sigma 20/255; blur: Gaussian, sigma 1.2 px; blocking: JPEG at quality 5
    (8x8 block artefacts); colour_cast: a warm cast (+30 red, -30 blue); collapse: the same
    picture for every prompt (the mean of all the images, what a model ignoring its prompt
    under a squared-error loss converges to).
    """
    from diffpo.world.render import decode_jpeg, encode_jpeg, gaussian_blur

    x = np.asarray(images, dtype=np.float32) / 255
    if kind == "noise":
        x = x + rng.normal(0, 20 / 255, x.shape).astype(np.float32)
    elif kind == "blur":
        x = gaussian_blur(x, np.full(len(x), 1.2))
    elif kind == "blocking":
        return np.stack([decode_jpeg(encode_jpeg(image, quality=5)) for image in images])
    elif kind == "colour_cast":
        x = x + np.array([30, 0, -30], dtype=np.float32) / 255
    elif kind == "collapse":
        x = np.broadcast_to(x.mean(axis=0, keepdims=True), x.shape)
    else:
        raise ValueError(f"unknown degradation {kind!r}; known: {', '.join(DEGRADATIONS)}")
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
