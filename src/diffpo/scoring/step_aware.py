"""SPO's step-aware preference model (Liang et al. 2024): PickScore conditioned on the timestep.

SPO judges the k candidates x_{t-1} of a denoising step by their predicted clean images
x0_hat, which are blurry at large t; a plain PickScore was trained on clean images only.
The step-aware model is PickScore's CLIP whose image tower is conditioned on t the way
SPO's release does it (``spo/preference_models/models/time_conditioned_clip.py``):

- t -> sinusoidal embedding (256 frequencies, max period 10000, [cos, sin]) -> MLP
  (Linear, SiLU, Linear) = ``c`` (DiT's TimestepEmbedder);
- every vision encoder layer gets adaLN: (shift, scale, gate) x (attention, MLP) =
  Linear(SiLU(c)); ``h += gate * attn(LN(h) * (1 + scale) + shift)``, the same for the MLP;
- the pooled output gets ``post_layernorm(h_cls) * (1 + scale) + shift`` before the projection.

Initialised as SPO's trainer does (``init_adaln_paras``: zero weights, gates' bias 1), the
model equals PickScore exactly; the reward is PickScore's ``logit_scale.exp() * cos``.

Two profiles, one class:
- tiny: ``train_step_aware`` (diffpo.scoring.step_aware_fit) starts from the PickScore stand-in and trains on the base
  model's x0 predictions from noised pairs, as SPO's ``spm_task.py`` does (one t and one
  noise per pair, classifier-free guidance, PickScore loss); saved by ``save_step_aware``.
- paper: ``load_released_step_aware`` loads SPO's released checkpoint
  (``SPO-Diffusion-Models/Step-Aware_Preference_Models``, ``sd-v1-5_step-aware_preference_model.bin``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

from diffpo.files import atomic_dir
from diffpo.models.loading import MissingWeightsError, save_tokenizer
from diffpo.scoring.stand_ins import load_clip
from diffpo.scoring.learned import PICKSCORE_MODEL, PICKSCORE_PROCESSOR, _from_pretrained, resolve_file

RELEASED_REPO = "SPO-Diffusion-Models/Step-Aware_Preference_Models"
RELEASED_FILE = "sd-v1-5_step-aware_preference_model.bin"
FREQUENCY_SIZE = 256  # SPO's TimestepEmbedder default
BUCKETS = 4           # held-out accuracy is reported per quarter of [0, max_timestep]
SCALE = "logit_scale.exp() * cosine(text_emb, image_emb(x0_hat, t))"
TRAIN_HINT = ("run the train_step_scorer stage (`python -m diffpo train-step-scorer --pickscore results/scorers/pickscore "
              "--base results/base/pipeline --out results/scorers/step_aware`), or in the paper profile load SPO's "
              f"released model with load_released_step_aware ({RELEASED_REPO}, {RELEASED_FILE})")


# ---------------------------------------------------------------- the model
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """GLIDE/DiT sinusoids as SPO computes them: [cos(t f), sin(t f)], f = max_period^(-i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1) if dim % 2 else embedding


class TimestepEmbedder(nn.Module):
    """t -> sinusoids -> Linear, SiLU, Linear (SPO's, from DiT); ``mlp`` keeps SPO's key names."""

    def __init__(self, hidden_size: int, frequency_size: int = FREQUENCY_SIZE):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_size))


class TimeConditioning(nn.Module):
    """The parameters SPO adds to PickScore's image tower: the t embedder and the adaLN layers."""

    def __init__(self, hidden_size: int, num_layers: int, frequency_size: int = FREQUENCY_SIZE):
        super().__init__()
        self.t_embedder = TimestepEmbedder(hidden_size, frequency_size)
        self.layers = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
                                    for _ in range(num_layers))
        self.pooled = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.reset_parameters()

    @classmethod
    def for_clip(cls, clip: CLIPModel, frequency_size: int = FREQUENCY_SIZE) -> "TimeConditioning":
        vision = clip.config.vision_config
        return cls(vision.hidden_size, vision.num_hidden_layers, frequency_size)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """SPO's ``init_adaln_paras``: identity modulation (scale 0, shift 0, gate 1), so the
        model starts as PickScore; the embedder's weights N(0, 0.02) so gradients flow."""
        hidden = self.pooled[1].in_features
        for layer in self.layers:
            nn.init.zeros_(layer[1].weight)
            nn.init.zeros_(layer[1].bias)
            layer[1].bias[2 * hidden: 3 * hidden] = 1
            layer[1].bias[5 * hidden:] = 1
        nn.init.zeros_(self.pooled[1].weight)
        nn.init.zeros_(self.pooled[1].bias)
        for linear in (self.t_embedder.mlp[0], self.t_embedder.mlp[2]):
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)


def resize_center_crop(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """SPO's ``get_preference_score`` resize: shorter side to ``size`` (bicubic, tensors), centre crop."""
    h, w = pixels.shape[-2:]
    if (h, w) == (size, size):
        return pixels
    scale = size / min(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    pixels = F.interpolate(pixels, size=(new_h, new_w), mode="bicubic", align_corners=False)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return pixels[..., top: top + size, left: left + size]


class StepAwareScorer(nn.Module):
    """A PickScore CLIP + SPO's time conditioning; ``reward(pixels, prompts, timesteps)``.

    pixels: (B, 3, H, W) in [-1, 1] as the VAE decodes them. ``image_mean``/``image_std``
    None: the CLIP takes [-1, 1] pixels (the tiny stand-in's pre-training convention);
    given: SPO's ``(x / 2 + 0.5).clamp(0, 1)`` then normalised (the released model).
    """

    name = "step_aware"
    scale = SCALE

    def __init__(self, clip: CLIPModel, tokenizer: CLIPTokenizer, time: TimeConditioning | None = None,
                 image_size: int | None = None, image_mean=None, image_std=None, version: str = ""):
        super().__init__()
        self.clip, self.tokenizer, self.version = clip, tokenizer, version
        self.time = time if time is not None else TimeConditioning.for_clip(clip)
        self.image_size = image_size or clip.config.vision_config.image_size
        self.normalise = image_mean is not None
        if self.normalise:
            self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Padded to the context length, no attention mask: as PickScore's stand-in and SPO's prompt dataset."""
        return self.tokenizer(list(prompts), padding="max_length", truncation=True, return_tensors="pt",
                              max_length=self.clip.config.text_config.max_position_embeddings)["input_ids"]

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = resize_center_crop(pixels.to(self.device, torch.float32), self.image_size)
        if not self.normalise:
            return pixels.clamp(-1, 1)
        return ((pixels / 2 + 0.5).clamp(0, 1) - self.image_mean) / self.image_std

    def image_embeds(self, pixels: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features of the t-conditioned vision tower (differentiable)."""
        x = self.preprocess(pixels)
        vision = self.clip.vision_model
        cond = self.time.t_embedder(torch.as_tensor(timesteps, device=self.device).reshape(-1).to(x.dtype))
        hidden = vision.pre_layrnorm(vision.embeddings(x))
        for layer, modulation in zip(vision.encoder.layers, self.time.layers):
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation(cond)[:, None].chunk(6, dim=-1)
            attn = layer.self_attn(hidden_states=layer.layer_norm1(hidden) * (1 + scale_msa) + shift_msa)[0]
            hidden = hidden + attn * gate_msa
            mlp = layer.mlp(layer.layer_norm2(hidden) * (1 + scale_mlp) + shift_mlp)
            hidden = hidden + mlp * gate_mlp
        shift, scale = self.time.pooled(cond).chunk(2, dim=-1)
        pooled = vision.post_layernorm(hidden[:, 0]) * (1 + scale) + shift
        return F.normalize(self.clip.visual_projection(pooled), dim=-1)

    def text_embeds(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.get_text_features(input_ids=ids.to(self.device)).pooler_output, dim=-1)

    def reward(self, pixels: torch.Tensor, prompts: list[str], timesteps: torch.Tensor) -> torch.Tensor:
        """PickScore's scale: logit_scale.exp() * cos(text, image_t), one per image."""
        image = self.image_embeds(pixels, timesteps)
        text = self.text_embeds(self.tokenize(prompts))
        return self.clip.logit_scale.exp() * (image * text).sum(-1)

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "scale": self.scale}


def save_step_aware(scorer: StepAwareScorer, summary: dict, out_dir: str | Path) -> None:
    """Write clip/ (CLIPModel), tokenizer/, time.safetensors (the time conditioning), scorer.json, atomically."""
    with atomic_dir(out_dir) as tmp:
        scorer.clip.save_pretrained(tmp / "clip")
        save_tokenizer(scorer.tokenizer, tmp / "tokenizer")
        save_file({k: v.contiguous() for k, v in scorer.time.state_dict().items()}, tmp / "time.safetensors")
        (tmp / "scorer.json").write_text(json.dumps(summary, indent=2) + "\n")


def load_step_aware(folder: str | Path, device="cpu") -> StepAwareScorer:
    """The tiny profile's step-aware model, as ``save_step_aware`` wrote it."""
    folder = Path(folder)
    missing = [name for name in ("scorer.json", "clip", "tokenizer", "time.safetensors") if not (folder / name).exists()]
    if missing:
        raise MissingWeightsError(f"{folder} holds no step-aware preference model (missing {', '.join(missing)}): {TRAIN_HINT}")
    meta = json.loads((folder / "scorer.json").read_text())
    clip, tokenizer = load_clip(folder / "clip", folder / "tokenizer")
    time = TimeConditioning.for_clip(clip, meta.get("frequency_size", FREQUENCY_SIZE))
    time.load_state_dict(load_file(folder / "time.safetensors"))
    return StepAwareScorer(clip, tokenizer, time, version=meta.get("version", "")).eval().requires_grad_(False).to(device)


# ---------------------------------------------------------------- SPO's released model (paper profile)
def released_to_step_aware(state_dict: dict) -> tuple[dict, dict]:
    """Split SPO's checkpoint (a ``StepAwarePreferenceModel`` state dict: ``model.`` + the
    HFTimeConditionedCLIPModel's keys) into a transformers ``CLIPModel``'s and ``TimeConditioning``'s."""
    clip, time = {}, {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.").removeprefix("model.")
        parts = key.split(".")
        if parts[0] == "t_embedder":
            time[key] = value
        elif key.startswith("vision_model.adaLN_modulation."):
            time["pooled." + ".".join(parts[2:])] = value
        elif key.startswith("vision_model.encoder.layers.") and parts[4] == "adaLN_modulation":
            time[f"layers.{parts[3]}." + ".".join(parts[5:])] = value
        else:
            clip[key] = value
    return clip, time


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":  # the hub's refs/pr/1 conversion
        return load_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is not SPO's checkpoint
        raise MissingWeightsError(f"cannot read SPO's step-aware checkpoint {str(path)!r}: {err}") from err


def load_released_step_aware(source: str | os.PathLike = RELEASED_REPO, model_source: str | os.PathLike | CLIPConfig = PICKSCORE_MODEL,
                             processor_source: str | os.PathLike = PICKSCORE_PROCESSOR, filename: str = RELEASED_FILE,
                             device="cpu") -> StepAwareScorer:
    """SPO's released SD-1.5 step-aware preference model, as SPO's ``StepAwarePreferenceModel`` builds it.

    source: the checkpoint file, a folder holding ``filename``, or a hub repo (the Hugging Face
    cache when offline). SPO builds the architecture from PickScore_v1's config
    (``model_source``: a folder, hub id, or a CLIPConfig) and preprocesses / tokenises with the
    CLIP-ViT-H-14 processor (``processor_source``): shorter side to its size (bicubic on tensors),
    centre crop, [0, 1], its mean / std.
    """
    path = resolve_file(source, filename, what="SPO step-aware preference model", repo_hint=RELEASED_REPO,
                        local_dir="resources/scorers/step_aware")
    config = model_source if isinstance(model_source, CLIPConfig) else _from_pretrained(
        CLIPConfig, model_source, what="PickScore config", local_dir="resources/scorers/PickScore_v1")
    tokenizer = _from_pretrained(CLIPTokenizer, processor_source, what="PickScore tokenizer",
                                 local_dir="resources/scorers/CLIP-ViT-H-14-laion2B-s32B-b79K")
    processor = _from_pretrained(CLIPImageProcessorPil, processor_source, what="PickScore image processor",
                                 local_dir="resources/scorers/CLIP-ViT-H-14-laion2B-s32B-b79K")
    clip_state, time_state = released_to_step_aware(_read_state_dict(path))
    with torch.device("meta"):  # no random init of a 1B-parameter model that is overwritten at once
        clip, time = CLIPModel(config), TimeConditioning(config.vision_config.hidden_size, config.vision_config.num_hidden_layers)
    clip, time = clip.to_empty(device="cpu"), time.to_empty(device="cpu")
    for name, buffer in clip.named_buffers():
        if name.endswith("position_ids"):  # rebuilt, not read (non-persistent in recent transformers)
            buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
    loaded = clip.load_state_dict({k: v.float() for k, v in clip_state.items()}, strict=False, assign=True)
    mismatched = [*loaded.missing_keys, *(k for k in loaded.unexpected_keys if not k.endswith("position_ids"))]
    loaded = time.load_state_dict({k: v.float() for k, v in time_state.items()}, strict=False, assign=True)
    mismatched += [f"time.{k}" for k in (*loaded.missing_keys, *loaded.unexpected_keys)]
    if mismatched:
        raise ValueError(f"{path} does not match SPO's step-aware model on the {config.vision_config.hidden_size}-wide "
                         f"CLIP of {model_source!r}: mismatched keys {mismatched[:8]}")
    size = processor.size.get("shortest_edge") or processor.size["height"]
    return StepAwareScorer(clip.float(), tokenizer, time, size, processor.image_mean, processor.image_std,
                           version=f"SPO release {Path(str(path)).name}").eval().requires_grad_(False).to(device)
