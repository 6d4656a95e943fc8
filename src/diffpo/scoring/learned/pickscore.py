"""PickScore (a CLIP-ViT-H-14 fine-tuned on Pick-a-Pic, in transformers' format)."""

from __future__ import annotations

import os

from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

from diffpo.scoring.learned.interface import Scorer
from diffpo.scoring.learned.hpsv2 import hpsv2_config
from diffpo.scoring.learned.weights import PICKSCORE_MODEL, PICKSCORE_PROCESSOR, _from_pretrained


def pickscore_config(tiny: bool = False, vocab_size: int = 49408, **overrides) -> CLIPConfig:
    """The CLIP-ViT-H-14 config of PickScore_v1 (the real loader reads the folder's config.json instead)."""
    return hpsv2_config(tiny=tiny, vocab_size=vocab_size, **overrides)


class PickScoreScorer(Scorer):
    name = "pickscore"
    scale = "logit_scale.exp() * cosine(text_emb, image_emb) (~20-22 at paper scale; NOT the raw cosine)"
    version = "PickScore_v1"

    def __init__(self, model: CLIPModel, tokenizer: CLIPTokenizer, image_processor, device="cpu"):
        super().__init__(device)
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.to(device)

    def modules(self):
        return [self.model]

    def _score_batch(self, images, prompts):
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        text = self.tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt").to(self.device)
        image_emb = self.model.get_image_features(pixel_values=pixels).pooler_output
        text_emb = self.model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"]).pooler_output
        image_emb = image_emb / image_emb.norm(dim=-1, keepdim=True)
        text_emb = text_emb / text_emb.norm(dim=-1, keepdim=True)
        return self.model.logit_scale.exp() * (text_emb * image_emb).sum(-1)


def load_pickscore(model_source: str | os.PathLike = PICKSCORE_MODEL,
                   processor_source: str | os.PathLike = PICKSCORE_PROCESSOR, device="cpu") -> PickScoreScorer:
    model = _from_pretrained(CLIPModel, model_source, what="PickScore model", local_dir="resources/scorers/PickScore_v1")
    tokenizer = _from_pretrained(CLIPTokenizer, processor_source, what="PickScore tokenizer",
                                 local_dir="resources/scorers/CLIP-ViT-H-14-laion2B-s32B-b79K")
    image_processor = _from_pretrained(CLIPImageProcessorPil, processor_source, what="PickScore image processor",
                                       local_dir="resources/scorers/CLIP-ViT-H-14-laion2B-s32B-b79K")
    return PickScoreScorer(model.float(), tokenizer, image_processor, device)
