"""Diversity of the images one prompt yields from different seeds.

SEE-DPO reports six diversity metrics (RMSE, PSNR, SSIM, "entropy energy scores E1, E2", ...)
without definitions we can see; the six here are this project's own (docs/metrics.md).
Every metric takes ``images``: uint8 of shape (K, H, W, 3), K >= 2 images of ONE prompt,
and pixel values are read as v / 255 in [0, 1]. Pairwise metrics average over the
K (K - 1) / 2 unordered pairs.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0
SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
COLOUR_LEVELS = 8  # per channel: 8^3 = 512 colours for the entropy score
ENERGY_GRID = 8  # the energy score compares images area-averaged to 8 x 8 cells

METRICS = ("rmse", "psnr", "ssim", "e1", "e2", "vendi")
HIGHER_IS_MORE_DIVERSE: dict[str, bool] = {
    "rmse": True,
    "psnr": False,
    "ssim": False,
    "e1": True,
    "e2": True,
    "vendi": True,
}


def _check(images: np.ndarray, min_side: int = 1) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (K, H, W, 3), got {images.dtype} {images.shape}")
    if len(images) < 2:
        raise ValueError(f"diversity needs at least 2 images of a prompt, got {len(images)}")
    if min(images.shape[1:3]) < min_side:
        raise ValueError(f"images must be at least {min_side}x{min_side}, got {images.shape[1:3]}")


def _pairs(k: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def _pairwise_mse(images: np.ndarray) -> np.ndarray:
    """MSE of every unordered pair on the [0, 1] scale, exact (integer sums): 0 iff identical."""
    _check(images)
    pixels = images.astype(np.int64)
    scale = images[0].size * 255.0**2
    return np.array([np.sum((pixels[i] - pixels[j]) ** 2) / scale for i, j in _pairs(len(images))])


def pairwise_rmse(images: np.ndarray) -> float:
    """Mean over pairs of RMSE(x, y) = sqrt(mean((x - y)^2)), pixels in [0, 1]. Higher = more diverse."""
    return float(np.mean(np.sqrt(_pairwise_mse(images))))


def pairwise_psnr(images: np.ndarray) -> float:
    """Mean over pairs of PSNR(x, y) = min(10 log10(1 / MSE(x, y)), PSNR_CAP_DB), in dB (data range 1).

    Lower = more diverse. Identical images (MSE 0) score the cap, 100 dB, never inf.
    """
    mse = _pairwise_mse(images)
    with np.errstate(divide="ignore"):
        psnr = 10.0 * np.log10(1.0 / mse)
    return float(np.mean(np.minimum(psnr, PSNR_CAP_DB)))


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(SSIM_WINDOW_SIZE) - (SSIM_WINDOW_SIZE - 1) / 2
    weights = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return weights / weights.sum()


def _blur(x: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter over the H and W axes of (..., H, W, C), 'valid' borders only."""
    weights = _gaussian_window()
    n = len(weights)
    h = x.shape[-3] - n + 1
    x = sum(w * x[..., k : k + h, :, :] for k, w in enumerate(weights))
    width = x.shape[-2] - n + 1
    return sum(w * x[..., :, k : k + width, :] for k, w in enumerate(weights))


def pairwise_ssim(images: np.ndarray) -> float:
    """Mean over pairs of SSIM (Wang et al., 2004), computed per RGB channel and averaged.

    SSIM(x, y) = mean over windows and channels of
    (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
    with local statistics under an 11x11 Gaussian window (sigma 1.5), valid positions only,
    data range 1, C1 = (0.01)^2, C2 = (0.03)^2. Lower = more diverse; identical images give 1.
    """
    _check(images, min_side=SSIM_WINDOW_SIZE)
    x = images.astype(np.float64) / 255.0
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu = _blur(x)
    var = _blur(x * x) - mu * mu
    scores = []
    for i, j in _pairs(len(images)):
        cov = _blur(x[i] * x[j]) - mu[i] * mu[j]
        numerator = (2 * mu[i] * mu[j] + c1) * (2 * cov + c2)
        denominator = (mu[i] ** 2 + mu[j] ** 2 + c1) * (var[i] + var[j] + c2)
        scores.append(np.mean(numerator / denominator))
    return float(np.mean(scores))


def entropy_gain(images: np.ndarray) -> float:
    """E1: bits of colour the seed adds at a pixel, H(colour | location), averaged over locations.

    Colours are quantised to COLOUR_LEVELS levels per channel (512 colours). At each pixel
    location the K images give an empirical colour distribution p; its Shannon entropy
    -sum p log2 p is averaged over the H x W locations. Because the colour is fixed by
    (seed, location), this equals I(colour; seed | location). Range [0, log2 K]:
    0 for identical images, about log2 K for independent noise. Higher = more diverse.
    """
    _check(images)
    levels = (images.astype(np.int64) * COLOUR_LEVELS) // 256
    codes = (levels[..., 0] * COLOUR_LEVELS + levels[..., 1]) * COLOUR_LEVELS + levels[..., 2]
    codes = codes.reshape(len(images), -1)
    k = len(images)
    # Entropy at a location = mean over its K images of log2(K / n), n = images sharing that colour there.
    shared = np.stack([np.sum(codes == codes[i], axis=0) for i in range(k)])
    return float(np.mean(np.log2(k / shared)))


def _downsample(images: np.ndarray) -> np.ndarray:
    """Area-average to ENERGY_GRID x ENERGY_GRID cells of floor(H/8) x floor(W/8) pixels (remainder cropped)."""
    k, h, w, c = images.shape
    bh, bw = h // ENERGY_GRID, w // ENERGY_GRID
    x = images[:, : bh * ENERGY_GRID, : bw * ENERGY_GRID].astype(np.float64) / 255.0
    return x.reshape(k, ENERGY_GRID, bh, ENERGY_GRID, bw, c).mean(axis=(2, 4))


def energy_score(images: np.ndarray) -> float:
    """E2: the dispersion term E||X - X'|| of the energy distance, on coarse images.

    Each image becomes its 8x8 grid of cell-mean colours f (192 values in [0, 1]); E2 is the
    mean over pairs of ||f_x - f_y||_2 / sqrt(192), an RMS distance in [0, 1] that sees
    layout and colour composition but not fine texture. 0 for identical images; higher =
    more diverse.
    """
    _check(images, min_side=ENERGY_GRID)
    features = _downsample(images)
    distances = [np.sqrt(np.mean((features[i] - features[j]) ** 2)) for i, j in _pairs(len(images))]
    return float(np.mean(distances))


def vendi_score(images: np.ndarray) -> float:
    """Vendi score (Friedman & Dieng, 2023): exp(-sum_i l_i ln l_i), l = eigenvalues of S / K.

    S is the K x K Pearson-correlation kernel of the images' pixel vectors (cosine similarity
    after subtracting each image's mean). A constant image has no direction: it is similar
    (1) to an identical constant image and 0 to every other image. Range [1, K]: 1 for
    identical images, K for mutually uncorrelated ones. Higher = more diverse.
    """
    _check(images)
    k = len(images)
    x = images.reshape(k, -1).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1)
    constant = norms == 0
    z = x / np.where(constant, 1.0, norms)[:, None]
    similarity = z @ z.T
    flat = images.reshape(k, -1)
    for i in np.flatnonzero(constant):
        similarity[i, constant] = [np.array_equal(flat[i], flat[j]) for j in np.flatnonzero(constant)]
    eigenvalues = np.clip(np.linalg.eigvalsh(similarity / k), 0.0, None)
    eigenvalues = eigenvalues[eigenvalues > 0]
    return float(np.exp(-np.sum(eigenvalues * np.log(eigenvalues))))


def prompt_diversity(images: np.ndarray) -> dict[str, float]:
    """The six diversity metrics of K >= 2 uint8 images (K, H, W, 3) of one prompt, H and W >= 11."""
    return {
        "rmse": pairwise_rmse(images),
        "psnr": pairwise_psnr(images),
        "ssim": pairwise_ssim(images),
        "e1": entropy_gain(images),
        "e2": energy_score(images),
        "vendi": vendi_score(images),
    }


def diversity_table(images: np.ndarray, prompt_ids: np.ndarray) -> pd.DataFrame:
    """One row per prompt: prompt_id, n_images and the six metrics, prompts in sorted id order.

    Prompts with fewer than 2 images are skipped; their number is logged as a warning and
    kept in ``table.attrs["skipped_prompts"]``.
    """
    prompt_ids = np.asarray(prompt_ids)
    if len(prompt_ids) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompt_ids)} prompt ids")
    rows = []
    skipped = 0
    for prompt_id in np.unique(prompt_ids):
        group = images[prompt_ids == prompt_id]
        if len(group) < 2:
            skipped += 1
            continue
        rows.append({"prompt_id": prompt_id, "n_images": len(group), **prompt_diversity(group)})
    if skipped:
        log.warning("diversity: skipped %d prompt(s) with fewer than 2 images", skipped)
    table = pd.DataFrame(rows, columns=["prompt_id", "n_images", *METRICS])
    table.attrs["skipped_prompts"] = skipped
    return table
