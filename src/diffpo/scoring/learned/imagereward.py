"""ImageReward (BLIP ViT-L/16 + med BERT with cross-attention + MLP head)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torch import nn
from transformers import BertTokenizer, BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

from diffpo.scoring.learned.interface import Scorer, clip_preprocess, reward_mlp
from diffpo.scoring.learned.weights import (
    IMAGEREWARD_FILE,
    IMAGEREWARD_MED_CONFIG,
    IMAGEREWARD_REPO,
    IMAGEREWARD_TOKENIZER,
    _from_pretrained,
    _load_strict,
    _torch_load,
    resolve_file,
)

IMAGEREWARD_MEAN = 0.16717362830052426
IMAGEREWARD_STD = 1.0333394966054072
IMAGEREWARD_MAX_LENGTH = 35


def imagereward_vision_config(tiny: bool = False, **overrides) -> BlipVisionConfig:
    """BLIP ``create_vit('large', 224)``: ViT-L/16, width 1024, 24 layers, 16 heads, mlp 4096, LayerNorm eps 1e-6."""
    if tiny:
        cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=16)
    else:
        cfg = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224, patch_size=16)
    cfg.update(hidden_act="gelu", layer_norm_eps=1e-6)
    cfg.update(overrides)
    return BlipVisionConfig(**cfg)


def imagereward_text_config(med_config: dict, vision_width: int) -> BlipTextConfig:
    """BLIP's med BertConfig (``med_config.json``) with ``encoder_width = vision_width`` as BlipTextConfig."""
    return BlipTextConfig(
        vocab_size=med_config["vocab_size"], hidden_size=med_config["hidden_size"],
        encoder_hidden_size=vision_width, intermediate_size=med_config["intermediate_size"],
        num_hidden_layers=med_config["num_hidden_layers"], num_attention_heads=med_config["num_attention_heads"],
        max_position_embeddings=med_config["max_position_embeddings"], hidden_act=med_config.get("hidden_act", "gelu"),
        layer_norm_eps=med_config.get("layer_norm_eps", 1e-12), pad_token_id=med_config.get("pad_token_id", 0),
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        is_decoder=True,  # creates the cross-attention blocks; forward runs bidirectionally (is_decoder=False)
    )


def imagereward_to_hf(state_dict: dict) -> tuple[dict, dict, dict]:
    """Split an ``ImageReward.pt`` state dict into (BlipVisionModel, BlipTextModel, MLP) state dicts."""
    vision, text, mlp = {}, {}, {}
    vis_simple = {
        "cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
        "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
        "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
        "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias",
    }
    vis_block = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
                 "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for key, value in state_dict.items():
        if key.startswith("blip.visual_encoder."):
            rest = key[len("blip.visual_encoder."):]
            if rest in vis_simple:
                vision[vis_simple[rest]] = value
            elif m := re.match(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$", rest):
                if m.group(2) not in vis_block:
                    raise ValueError(f"unsupported ImageReward key {key!r}")
                vision[f"encoder.layers.{m.group(1)}.{vis_block[m.group(2)]}.{m.group(3)}"] = value
            else:
                raise ValueError(f"unsupported ImageReward key {key!r}")
        elif key.startswith("blip.text_encoder."):
            rest = key[len("blip.text_encoder."):]
            if rest.endswith("position_ids") or rest.startswith("pooler."):
                continue
            text[rest] = value  # med.py BertModel and BlipTextModel share names
        elif key.startswith("mlp.layers."):
            mlp[key[len("mlp.layers."):]] = value
        # blip.vision_proj / blip.text_proj / queues are not used by the reward
    return vision, text, mlp


class ImageRewardScorer(Scorer):
    name = "imagereward"
    scale = f"(mlp(text_encoder_cls) - {IMAGEREWARD_MEAN}) / {IMAGEREWARD_STD}  (standardised, ~N(0,1) over the ImageReward data)"
    version = "ImageReward-v1.0"

    def __init__(self, vision: BlipVisionModel, text: BlipTextModel, mlp: nn.Sequential, tokenizer, device="cpu"):
        super().__init__(device)
        self.vision, self.text, self.mlp, self.tokenizer = vision, text, mlp, tokenizer
        self.image_size = vision.config.image_size
        self.to(device)

    def modules(self):
        return [self.vision, self.text, self.mlp]

    def _score_batch(self, images, prompts):
        pixels = clip_preprocess(images, self.image_size).to(self.device)
        tok = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=IMAGEREWARD_MAX_LENGTH,
                             return_tensors="pt").to(self.device)
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        out = self.text(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                        encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts, is_decoder=False)
        reward = self.mlp(out.last_hidden_state[:, 0, :].float())
        return (reward - IMAGEREWARD_MEAN) / IMAGEREWARD_STD


def _imagereward_tokenizer(source) -> BertTokenizer:
    tok = _from_pretrained(BertTokenizer, source, what="ImageReward BERT tokenizer", local_dir="resources/scorers/bert-base-uncased")
    # BLIP init_tokenizer(); the reward uses the tokenizer's plain [CLS] ... [SEP] ids (no [ENC] swap).
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


def load_imagereward(checkpoint_source: str | os.PathLike = IMAGEREWARD_REPO,
                     med_config_source: str | os.PathLike = IMAGEREWARD_REPO,
                     tokenizer_source: str | os.PathLike = IMAGEREWARD_TOKENIZER, device="cpu",
                     vision_config: BlipVisionConfig | None = None) -> ImageRewardScorer:
    path = resolve_file(checkpoint_source, IMAGEREWARD_FILE, what="ImageReward-v1.0", repo_hint=IMAGEREWARD_REPO,
                        local_dir="resources/scorers/ImageReward")
    med_path = resolve_file(med_config_source, IMAGEREWARD_MED_CONFIG, what="ImageReward med config",
                            repo_hint=IMAGEREWARD_REPO, local_dir="resources/scorers/ImageReward")
    tokenizer = _imagereward_tokenizer(tokenizer_source)
    med = json.loads(Path(med_path).read_text())
    vision_config = vision_config or imagereward_vision_config()
    vision_sd, text_sd, mlp_sd = imagereward_to_hf(_torch_load(path, "ImageReward"))
    vision = BlipVisionModel(vision_config)
    text = BlipTextModel(imagereward_text_config(med, vision_config.hidden_size), add_pooling_layer=False)
    mlp = reward_mlp(med["hidden_size"])
    _load_strict(vision, vision_sd, "ImageReward vision")
    _load_strict(text, text_sd, "ImageReward text", ignore=lambda k: k.endswith("position_ids"))
    _load_strict(mlp, mlp_sd, "ImageReward MLP")
    return ImageRewardScorer(vision, text, mlp, tokenizer, device)
