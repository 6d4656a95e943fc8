"""The LAION improved aesthetic predictor (CLIP ViT-L/14 + MLP)."""

from __future__ import annotations

import os

from torch import nn
from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection

from diffpo.scoring.learned.interface import Scorer, reward_mlp
from diffpo.scoring.learned.weights import AESTHETIC_CLIP, AESTHETIC_FILE, AESTHETIC_MLP, _from_pretrained, _load_strict, _torch_load, resolve_file


class AestheticScorer(Scorer):
    name = "aesthetic"
    scale = "mlp(L2-normalised CLIP ViT-L/14 image embedding), ~1-10 rating scale (prompt ignored)"
    version = "sac+logos+ava1-l14-linearMSE"
    uses_prompts = False

    def __init__(self, clip: CLIPVisionModelWithProjection, image_processor, mlp: nn.Sequential, device="cpu"):
        super().__init__(device)
        self.clip, self.image_processor, self.mlp = clip, image_processor, mlp
        self.to(device)

    def modules(self):
        return [self.clip, self.mlp]

    def _score_batch(self, images, prompts):
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        emb = self.clip(pixel_values=pixels).image_embeds
        emb = emb / emb.norm(dim=-1, keepdim=True)
        return self.mlp(emb.float())


def load_aesthetic(mlp_source: str | os.PathLike = AESTHETIC_MLP, clip_source: str | os.PathLike = AESTHETIC_CLIP,
                   device="cpu") -> AestheticScorer:
    path = resolve_file(mlp_source, AESTHETIC_FILE, what="LAION aesthetic MLP", repo_hint="aesthetic",
                        local_dir="resources/scorers/aesthetic")
    clip = _from_pretrained(CLIPVisionModelWithProjection, clip_source, what="aesthetic CLIP ViT-L/14",
                            local_dir="resources/scorers/clip-vit-large-patch14")
    image_processor = _from_pretrained(CLIPImageProcessorPil, clip_source, what="aesthetic CLIP image processor",
                                       local_dir="resources/scorers/clip-vit-large-patch14")
    state = _torch_load(path, "LAION aesthetic MLP")
    state = {k[len("layers."):] if k.startswith("layers.") else k: v for k, v in state.items()}
    mlp = reward_mlp(clip.config.projection_dim)
    _load_strict(mlp, state, "LAION aesthetic MLP")
    return AestheticScorer(clip.float(), image_processor, mlp, device)
