"""The scorer interface (``Scorer``), image preprocessing, and the MLP head ImageReward and
the LAION aesthetic predictor share."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Scorer:
    """A reward model: ``score(images uint8 (N,H,W,3), prompts) -> float (N,)`` in batches, no grad."""

    name: str = "scorer"
    scale: str = ""
    version: str = ""
    uses_prompts: bool = True

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    def to(self, device: str | torch.device) -> "Scorer":
        self.device = torch.device(device)
        for module in self.modules():
            module.to(self.device)
        return self

    def modules(self) -> list[nn.Module]:
        return []

    def _score_batch(self, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def score(self, images, prompts: Sequence[str] | None = None, batch_size: int = 8) -> np.ndarray:
        pil = _as_pil_list(images)
        if prompts is None:
            if self.uses_prompts:
                raise ValueError(f"{self.name} needs one prompt per image")
            prompts = [""] * len(pil)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(pil):
            raise ValueError(f"{len(pil)} images but {len(prompts)} prompts")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        out = []
        for module in self.modules():
            module.eval()
        with torch.no_grad():
            for start in range(0, len(pil), batch_size):
                batch = self._score_batch(pil[start : start + batch_size], prompts[start : start + batch_size])
                out.append(batch.detach().float().cpu().reshape(-1))
        if not out:
            return np.zeros((0,), dtype=np.float64)
        return torch.cat(out).numpy().astype(np.float64)

    def describe(self) -> dict:
        """What to record next to the numbers."""
        return {"name": self.name, "version": self.version, "scale": self.scale}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r}, scale={self.scale!r})"


def _as_pil_list(images) -> list[Image.Image]:
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N,H,W,3), got shape {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        return [Image.fromarray(np.ascontiguousarray(im)) for im in images]
    if isinstance(images, Image.Image):
        return [images.convert("RGB")]
    return [im.convert("RGB") if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, np.uint8)) for im in images]


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision ``Resize(size, BICUBIC)`` (shorter side) + ``CenterCrop(size)`` on a PIL image."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def clip_preprocess(images: list[Image.Image], size: int, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> torch.Tensor:
    """Resize shorter side (bicubic), centre crop, to [0,1], normalise: the OpenAI CLIP / open_clip eval transform."""
    arrs = [np.asarray(resize_center_crop(im.convert("RGB"), size), dtype=np.float32) / 255.0 for im in images]
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean_t) / std_t



def reward_mlp(input_size: int) -> nn.Sequential:
    """The ImageReward / LAION-aesthetic head: Linear-Dropout-Linear-Dropout-Linear-Dropout-Linear-Linear, no activations."""
    return nn.Sequential(
        nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
    )


aesthetic_mlp = reward_mlp
