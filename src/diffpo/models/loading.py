"""Model loading and construction: one loader for SD-1.5 and the tiny base model.

Both profiles load a diffusers Stable Diffusion folder (tokenizer, text_encoder, vae,
unet, scheduler) through the same functions; the tiny profile builds its components
from configs here, the way diffusers' tests build dummy components.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
)
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig

from diffpo.models.devices import device
from diffpo.errors import UserError


class MissingWeightsError(UserError, FileNotFoundError):
    """Weights that cannot be found locally; the message says how to provide them offline."""


def _missing(what: str, source: str, subfolder: str, err: Exception) -> MissingWeightsError:
    if Path(source).exists():
        how = f"{source} is not a complete diffusers Stable Diffusion folder; point base.pretrained at one."
    else:
        how = (
            f"Provide it offline: on a machine with internet run `huggingface-cli download {source} "
            f"--local-dir resources/{Path(source).name}`, copy that folder here and set base.pretrained "
            f"in params.yaml to its path (or pre-fill the Hugging Face cache)."
        )
    return MissingWeightsError(f"cannot load the {what} from {source!r} (subfolder {subfolder!r}): {err}\n{how}")


def _load(cls, source: str | Path, subfolder: str, what: str, **kwargs):
    source = str(source)
    local = Path(source)
    if local.exists() and not (local / subfolder).exists():
        raise _missing(what, source, subfolder, FileNotFoundError(f"{local / subfolder} does not exist"))
    try:
        loaded = cls.from_pretrained(source, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as err:
        raise _missing(what, source, subfolder, err) from err
    # Models go to this process's accelerator at once (a stage never assumes the CPU).
    return loaded.to(device()) if isinstance(loaded, torch.nn.Module) else loaded


def load_tokenizer(source: str | Path) -> CLIPTokenizer:
    tokenizer = _load(CLIPTokenizer, source, "tokenizer", "tokenizer")
    # transformers 5 may return a 2-token tokenizer for a wrong path instead of failing.
    if len(tokenizer) <= 2:
        raise _missing("tokenizer", str(source), "tokenizer", ValueError(f"it has only {len(tokenizer)} tokens"))
    return tokenizer


def load_text_encoder(source: str | Path) -> tuple[CLIPTokenizer, CLIPTextModel]:
    return load_tokenizer(source), _load(CLIPTextModel, source, "text_encoder", "text encoder")


def load_vae(source: str | Path) -> AutoencoderKL:
    return _load(AutoencoderKL, source, "vae", "VAE")


def load_unet(source: str | Path, subfolder: str = "unet") -> UNet2DConditionModel:
    return _load(UNet2DConditionModel, source, subfolder, "UNet")


def load_noise_scheduler(source: str | Path) -> DDPMScheduler:
    return _load(DDPMScheduler, source, "scheduler", "noise scheduler")


SAMPLERS = {
    "ddim": DDIMScheduler,                      # eta = 0; the tiny profile and SPO's evaluation
    "pndm": PNDMScheduler,                      # SD-1.5's default, used by SePPO's released script
    "euler": EulerDiscreteScheduler,
    "dpm_solver": DPMSolverMultistepScheduler,
}


def load_sampling_scheduler(source: str | Path, name: str = "ddim"):
    """The base model's noise schedule, driven by the sampler ``name`` (one of SAMPLERS)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    # SD-1.5's scheduler config skips PNDM's Runge-Kutta warm-up; the tiny base's config has no such key.
    options = {"skip_prk_steps": True} if name == "pndm" else {}
    return _load(SAMPLERS[name], source, "scheduler", f"{name} sampling scheduler", **options)


@dataclass
class Pipeline:
    """The components every stage needs, loaded from one Stable Diffusion folder."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_pipeline(source: str | Path, unet_source: str | Path | None = None) -> Pipeline:
    """Load a base model; ``unet_source`` swaps in a trained UNet folder (diffusers format)."""
    tokenizer, text_encoder = load_text_encoder(source)
    vae = load_vae(source)
    unet = load_unet(unet_source, subfolder="") if unet_source else load_unet(source)
    for module in (text_encoder, vae, unet):
        module.eval().requires_grad_(False)
    return Pipeline(tokenizer, text_encoder, vae, unet)


@torch.no_grad()
def encode_prompts(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Prompt embeddings as SD-1.5 uses them: the text encoder's last hidden state."""
    device = text_encoder.device
    chunks = []
    for start in range(0, len(prompts), batch_size):
        ids = tokenizer(
            prompts[start : start + batch_size],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        chunks.append(text_encoder(ids)[0].float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to scaled latents (the latent distribution's mean, as the DPO code caches)."""
    latents = vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean
    return latents * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents to uint8 images (N, H, W, 3)."""
    images = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu()


# ---------------------------------------------------------------- tiny components
def build_tokenizer(words: list[str], out_dir: Path, max_length: int) -> CLIPTokenizer:
    """A CLIP BPE tokenizer whose vocabulary spells every world word as one token.

    Like CLIP's: the 256 byte-level symbols, the same with ``</w>``, one entry per merge,
    then the special tokens. Each word gets merges appended (lowest priority) until BPE
    reduces it to one token; a merge of lowest priority never changes how an earlier word
    is split, since BPE always applies the highest-priority merge available.
    """
    from tokenizers.pre_tokenizers import ByteLevel

    symbols = sorted(ByteLevel.alphabet())
    vocab = symbols + [s + "</w>" for s in symbols]
    ranks: dict[tuple[str, str], int] = {}
    for word in sorted(set(words)):
        while len(parts := _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)) > 1:
            ranks[(parts[0], parts[1])] = len(ranks)
            vocab.append(parts[0] + parts[1])
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=list(ranks), model_max_length=max_length)
    save_tokenizer(tokenizer, out_dir)
    return tokenizer


def save_tokenizer(tokenizer, out_dir: Path) -> None:
    """``save_pretrained`` without the loading call's ``local_files_only``.

    transformers keeps that keyword (True under HF_HUB_OFFLINE) among the tokenizer's init
    arguments and writes it to tokenizer_config.json, so the same weights saved with and
    without the variable set would differ and DVC would call every stage after them changed.
    """
    without_loading_flags(tokenizer).save_pretrained(out_dir)


def without_loading_flags(tokenizer):
    """The tokenizer with the loading call's ``local_files_only`` dropped (see ``save_tokenizer``)."""
    tokenizer.init_kwargs.pop("local_files_only", None)
    return tokenizer


def _bpe(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: repeatedly apply the highest-priority (lowest-rank) merge."""
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), len(ranks)), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
    return parts


def build_clip(cfg: dict, vocab_size: int, image_size: int) -> CLIPModel:
    """A small CLIP (text tower = the base model's text encoder, plus an image tower)."""
    text = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        max_position_embeddings=cfg["max_length"],
        projection_dim=cfg["projection_dim"],
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    vision = CLIPVisionConfig(
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        image_size=image_size,
        patch_size=cfg["image_patch_size"],
        projection_dim=cfg["projection_dim"],
    )
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=cfg["projection_dim"]))


def build_vae(cfg: dict) -> AutoencoderKL:
    n = len(cfg["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg["block_out_channels"]),
        latent_channels=cfg["latent_channels"],
        layers_per_block=1,
        norm_num_groups=min(cfg["block_out_channels"]) // 2,
    )


def build_unet(cfg: dict, sample_size: int, latent_channels: int, cross_attention_dim: int) -> UNet2DConditionModel:
    """SD-shaped UNet; cross-attention at the lowest resolution only (cheap, measured to learn)."""
    n = len(cfg["block_out_channels"])
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg["layers_per_block"],
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=cfg["attention_head_dim"],
        norm_num_groups=min(cfg["block_out_channels"]) // 4,
    )


def build_noise_scheduler(cfg: dict) -> DDIMScheduler:
    """SD-1.5's schedule; saved as DDIM so samplers read set_alpha_to_one/steps_offset as SD's."""
    return DDIMScheduler(
        num_train_timesteps=cfg["num_train_timesteps"],
        beta_start=cfg["beta_start"],
        beta_end=cfg["beta_end"],
        beta_schedule=cfg["beta_schedule"],
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def save_pipeline(out_dir: Path, tokenizer, text_encoder, vae, unet, scheduler) -> None:
    """Write a diffusers StableDiffusionPipeline folder (no safety checker, as in research use)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=without_loading_flags(tokenizer),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out_dir, safe_serialization=True)

