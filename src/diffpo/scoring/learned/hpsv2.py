"""HPSv2 (open_clip ViT-H-14 checkpoint -> transformers CLIPModel)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from diffpo.scoring.learned.interface import Scorer, clip_preprocess
from diffpo.scoring.learned.weights import (
    HPSV2_FILES,
    HPSV2_REPO,
    HPSV2_TOKENIZER,
    _from_pretrained,
    _load_strict,
    _torch_load,
    resolve_file,
)


def hpsv2_config(tiny: bool = False, vocab_size: int = 49408, **overrides) -> CLIPConfig:
    """open_clip ``ViT-H-14`` as a transformers CLIPConfig (gelu, eps 1e-5); ``tiny`` = same family, small."""
    if tiny:
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77)
        vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14)
        projection_dim = 24
    else:
        text = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, max_position_embeddings=77)
        vision = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224, patch_size=14)
        projection_dim = 1024
    text.update(vocab_size=vocab_size, hidden_act="gelu", layer_norm_eps=1e-5, eos_token_id=2,
                projection_dim=projection_dim, **overrides.pop("text_config", {}))
    vision.update(hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=projection_dim, **overrides.pop("vision_config", {}))
    # eos_token_id=2 selects transformers' legacy pooling: the argmax token id (open_clip's ``text.argmax(-1)``).
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim, **overrides)


def openclip_to_hf_clip(state_dict: dict, config: CLIPConfig | None = None) -> dict:
    """Rename an open_clip (OpenAI CLIP layout) state dict to transformers ``CLIPModel`` keys.

    Splits ``attn.in_proj_*`` into q/k/v, transposes ``visual.proj`` / ``text_projection``
    (open_clip multiplies ``x @ proj``; nn.Linear stores ``proj.T``).
    """
    out: dict[str, torch.Tensor] = {}
    block = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
    block_names = {
        "ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
        "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
    }
    simple = {
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    for key, value in state_dict.items():
        if key in ("attn_mask", "visual.attn_mask") or key.endswith("position_ids"):
            continue
        if key in simple:
            out[simple[key]] = value
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif m := block.match(key):
            tower = "vision_model" if m.group(1) else "text_model"
            prefix = f"{tower}.encoder.layers.{m.group(2)}."
            rest = m.group(3)
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = "weight" if rest.endswith("weight") else "bias"
                q, k, v = value.chunk(3, dim=0)
                out[prefix + f"self_attn.q_proj.{kind}"] = q.contiguous()
                out[prefix + f"self_attn.k_proj.{kind}"] = k.contiguous()
                out[prefix + f"self_attn.v_proj.{kind}"] = v.contiguous()
            else:
                name, _, kind = rest.rpartition(".")
                if name not in block_names:
                    raise ValueError(f"unsupported open_clip key {key!r} (layer scale / other variants are not ViT-H-14)")
                out[prefix + f"{block_names[name]}.{kind}"] = value
        else:
            raise ValueError(f"unsupported open_clip key {key!r}")
    if config is not None:
        n_pos = config.vision_config.image_size // config.vision_config.patch_size
        pos = out.get("vision_model.embeddings.position_embedding.weight")
        if pos is not None and pos.shape[0] != n_pos * n_pos + 1:
            raise ValueError(f"visual.positional_embedding has {pos.shape[0]} rows, config expects {n_pos * n_pos + 1}")
    return out


class HPSv2Scorer(Scorer):
    name = "hpsv2"
    scale = "100 * cosine(image_emb, text_emb)"

    def __init__(self, model: CLIPModel, tokenizer: CLIPTokenizer, version: str = "v2.0", device="cpu"):
        super().__init__(device)
        self.model, self.tokenizer = model, tokenizer
        self.version = f"HPS {version}"
        self.image_size = model.config.vision_config.image_size
        self.context_length = model.config.text_config.max_position_embeddings
        self.to(device)

    def modules(self):
        return [self.model]

    def _score_batch(self, images, prompts):
        pixels = clip_preprocess(images, self.image_size).to(self.device)
        # open_clip tokenizer: lower-cased BPE, <sot> ... <eot>, padded/truncated to 77 (eot kept last).
        ids = self.tokenizer([p.lower() for p in prompts], padding="max_length", truncation=True,
                             max_length=self.context_length, return_tensors="pt")["input_ids"].to(self.device)
        image_emb = self.model.get_image_features(pixel_values=pixels).pooler_output
        # no padding mask: open_clip uses only the causal mask (the EOT token never sees padding)
        text_emb = self.model.get_text_features(input_ids=ids).pooler_output
        image_emb = image_emb / image_emb.norm(dim=-1, keepdim=True)
        text_emb = text_emb / text_emb.norm(dim=-1, keepdim=True)
        return 100.0 * (image_emb * text_emb).sum(-1)


def load_hpsv2(checkpoint_source: str | os.PathLike = HPSV2_REPO, tokenizer_source: str | os.PathLike = HPSV2_TOKENIZER,
               version: str = "v2.0", device="cpu", config: CLIPConfig | None = None) -> HPSv2Scorer:
    """HPSv2 from ``HPS_v2_compressed.pt`` (v2.0) or ``HPS_v2.1_compressed.pt`` (v2.1): a file, a folder or hub id."""
    if version not in HPSV2_FILES:
        raise ValueError(f"unknown HPS version {version!r}; known: {sorted(HPSV2_FILES)} (not comparable with each other)")
    filename = HPSV2_FILES[version]
    path = resolve_file(checkpoint_source, filename, what=f"HPS {version}", repo_hint=HPSV2_REPO,
                        local_dir="resources/scorers/HPSv2")
    if Path(checkpoint_source).is_file() and Path(checkpoint_source).name in HPSV2_FILES.values() and Path(checkpoint_source).name != filename:
        raise ValueError(f"{checkpoint_source} is not the HPS {version} file {filename}; pass version= to match (v2.0 and v2.1 differ)")
    tokenizer = _from_pretrained(CLIPTokenizer, tokenizer_source, what="HPSv2 tokenizer",
                                 local_dir="resources/scorers/CLIP-ViT-H-14-laion2B-s32B-b79K")
    state = _torch_load(path, f"HPS {version}")
    config = config or hpsv2_config(vocab_size=state["token_embedding.weight"].shape[0])
    model = CLIPModel(config)
    _load_strict(model, openclip_to_hf_clip(state, config), f"HPS {version}", ignore=lambda k: k.endswith("position_ids"))
    return HPSv2Scorer(model, tokenizer, version, device)
