"""Learned reward models reported by the papers: PickScore, HPSv2, ImageReward, LAION aesthetic.

Every scorer loads the ORIGINAL checkpoint files (a local file/folder or a Hugging Face hub id,
resolved offline when ``HF_HUB_OFFLINE=1``) into transformers components, and exposes one interface::

    scorer = build_scorer("pickscore")               # or load_pickscore(...), load_hpsv2(...), ...
    scores = scorer.score(images_uint8_NHW3, prompts)  # np.ndarray float64 (N,)
    scorer.name, scorer.scale, scorer.version        # what the numbers mean; record them with results

The architecture builders (``pickscore_config``, ``hpsv2_config``, ``imagereward_vision_config``,
``aesthetic_mlp``) and the key mappings (``openclip_to_hf_clip``, ``imagereward_to_hf``) are used
by the real loaders and by the tests, which build tiny models of the same families. See
docs/scorers.md for where the files come from and the scale traps.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import (
    BertTokenizer,
    BlipTextConfig,
    BlipTextModel,
    BlipVisionConfig,
    BlipVisionModel,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)

from diffpo.models import MissingWeightsError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

IMAGEREWARD_MEAN = 0.16717362830052426
IMAGEREWARD_STD = 1.0333394966054072
IMAGEREWARD_MAX_LENGTH = 35

# Default sources: hub ids (work offline once the Hugging Face cache holds them) or resources/ paths.
PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
HPSV2_REPO = "xswu/HPSv2"
HPSV2_FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
HPSV2_TOKENIZER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
IMAGEREWARD_REPO = "THUDM/ImageReward"
IMAGEREWARD_FILE = "ImageReward.pt"
IMAGEREWARD_MED_CONFIG = "med_config.json"
IMAGEREWARD_TOKENIZER = "bert-base-uncased"
AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"
AESTHETIC_MLP = f"resources/scorers/aesthetic/{AESTHETIC_FILE}"
AESTHETIC_CLIP = "openai/clip-vit-large-patch14"
AESTHETIC_URL = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/" + AESTHETIC_FILE
)


# --------------------------------------------------------------------------------------------
# Interface
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Resolving sources (local path or hub id), offline-friendly errors
# --------------------------------------------------------------------------------------------


def _offline_hint(repo: str, filename: str | None, local_dir: str) -> str:
    what = f"{repo} {filename}" if filename else repo
    if filename == AESTHETIC_FILE and "/" not in repo:
        return (
            f"Provide it offline: on a machine with internet download {AESTHETIC_URL} (or run "
            f"`huggingface-cli download <a hub mirror of it> {filename} --local-dir {local_dir}`), copy it to "
            f"{local_dir}/{filename} and point mlp_source at that path."
        )
    return (
        f"Provide it offline: on a machine with internet run `huggingface-cli download {what} "
        f"--local-dir {local_dir}`, copy {local_dir} here and point the scorer's source parameter at "
        f"{local_dir + '/' + filename if filename else local_dir} (or pre-fill the Hugging Face cache)."
    )


def resolve_file(source: str | os.PathLike, filename: str, *, what: str, repo_hint: str, local_dir: str,
                 local_files_only: bool | None = None) -> Path:
    """A local file, ``folder/filename``, or ``filename`` from hub repo ``source`` (cache only when offline)."""
    source = str(source)
    local = Path(source)
    if local.is_file():
        return local
    if local.is_dir():
        if (local / filename).is_file():
            return local / filename
        raise MissingWeightsError(
            f"cannot find the {what} file {filename!r} in folder {source!r}.\n" + _offline_hint(repo_hint, filename, local_dir)
        )
    looks_like_path = source.startswith((".", "/", "~")) or source.endswith((".pt", ".pth", ".bin", ".json", ".safetensors")) or source.count("/") > 1
    if looks_like_path:
        raise MissingWeightsError(
            f"cannot find the {what} file {filename!r}: {source!r} does not exist.\n" + _offline_hint(repo_hint, filename, local_dir)
        )
    from huggingface_hub import hf_hub_download

    if local_files_only is None:
        from huggingface_hub import constants

        local_files_only = bool(constants.HF_HUB_OFFLINE)
    try:
        return Path(hf_hub_download(repo_id=source, filename=filename, local_files_only=local_files_only))
    except Exception as err:  # noqa: BLE001 - hub errors are many; all mean "not available here"
        raise MissingWeightsError(
            f"cannot load the {what} file {filename!r} from hub repo {source!r} (offline or not cached: "
            f"{type(err).__name__}: {err}).\n" + _offline_hint(source, filename, local_dir)
        ) from err


def _from_pretrained(cls, source: str | os.PathLike, *, what: str, local_dir: str, **kwargs):
    source = str(source)
    if not Path(source).exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise MissingWeightsError(f"cannot load the {what} from {source!r}: it does not exist.\n" + _offline_hint(source, None, local_dir))
    try:
        obj = cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        raise MissingWeightsError(
            f"cannot load the {what} from {source!r} (offline or not cached: {err}).\n" + _offline_hint(source, None, local_dir)
        ) from err
    if hasattr(obj, "__len__") and what.endswith("tokenizer") and len(obj) <= 2:
        # transformers 5 may return a near-empty tokenizer for a wrong path instead of failing.
        raise MissingWeightsError(
            f"cannot load the {what} from {source!r}: it has only {len(obj)} tokens.\n" + _offline_hint(source, None, local_dir)
        )
    return obj


def _torch_load(path: Path, what: str) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise MissingWeightsError(f"cannot read the {what} checkpoint {str(path)!r}: {err}") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"the {what} checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state dict")
    out = {}
    for key, value in obj.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value.float() if torch.is_tensor(value) and value.is_floating_point() else value
    return out


def _load_strict(module: nn.Module, state_dict: dict, what: str, ignore: Callable[[str], bool] = lambda k: False) -> None:
    result = module.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not ignore(k)]
    unexpected = [k for k in result.unexpected_keys if not ignore(k)]
    if missing or unexpected:
        raise ValueError(f"the {what} checkpoint does not match the architecture: missing {missing[:8]}, unexpected {unexpected[:8]}")


# --------------------------------------------------------------------------------------------
# PickScore
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# HPSv2 (open_clip ViT-H-14 checkpoint -> transformers CLIPModel)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# ImageReward (BLIP ViT-L/16 + med BERT with cross-attention + MLP head)
# --------------------------------------------------------------------------------------------


def reward_mlp(input_size: int) -> nn.Sequential:
    """The ImageReward / LAION-aesthetic head: Linear-Dropout-Linear-Dropout-Linear-Dropout-Linear-Linear, no activations."""
    return nn.Sequential(
        nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
    )


aesthetic_mlp = reward_mlp


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


# --------------------------------------------------------------------------------------------
# LAION improved aesthetic predictor (CLIP ViT-L/14 + MLP)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

SCORERS: dict[str, Callable[..., Scorer]] = {
    "pickscore": load_pickscore,
    "hpsv2": load_hpsv2,
    "imagereward": load_imagereward,
    "aesthetic": load_aesthetic,
}


def build_scorer(name: str, **sources) -> Scorer:
    """``build_scorer("hpsv2", checkpoint_source=..., version="v2.1")``: the loader's keyword arguments."""
    key = re.sub(r"[-_.\s]", "", name.lower())
    aliases = {"hps": "hpsv2", "hpsv21": "hpsv2", "aestheticscore": "aesthetic", "laionaesthetic": "aesthetic"}
    if key == "hpsv21":
        sources.setdefault("version", "v2.1")
    key = aliases.get(key, key)
    if key not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known scorers: {', '.join(sorted(SCORERS))}")
    return SCORERS[key](**sources)
