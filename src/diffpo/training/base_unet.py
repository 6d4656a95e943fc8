"""Pre-training the tiny profile's base UNet on the encoded corpus, with the preference trainer
(SFT on every image), then saving the whole diffusers pipeline folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffpo.data.preparation import EncodedPairs
from diffpo.files import atomic_dir
from diffpo.models.loading import build_noise_scheduler, build_unet, load_text_encoder, load_vae, save_pipeline
from diffpo.settings.configs import TrainConfig
from diffpo.training.loop import run_fingerprint, train


def pretrain_unet(
    cache_dir: Path, text_source: Path, vae_source: Path, cfg: dict, scheduler_cfg: dict, seed: int, work_dir: Path, out_dir: Path
) -> Path:
    """Train the UNet from scratch on every image of the encoded corpus; write the whole pipeline folder."""
    cache = EncodedPairs(cache_dir)
    info = json.loads((cache_dir / "cache.json").read_text())
    tokenizer, text_encoder = load_text_encoder(text_source)
    vae = load_vae(vae_source)
    torch.manual_seed(seed)
    latent_channels, size, _ = info["latent_shape"]
    unet = build_unet(cfg, size, latent_channels, text_encoder.config.hidden_size)
    noise_scheduler = build_noise_scheduler(scheduler_cfg)
    train_cfg = TrainConfig(
        objective="sft",
        images="both",
        steps=cfg["steps"],
        batch_size=cfg["batch_size"],
        learning_rate=cfg["learning_rate"],
        lr_warmup_fraction=cfg["warmup_steps"] / cfg["steps"],
        # Decayed to zero so the base ends at a plateau rather than mid-oscillation: then
        # further training on the same unfiltered data (the control row) gains little.
        lr_schedule="cosine",
        caption_dropout=cfg["caption_dropout"],
        checkpoint_every=max(1, cfg["steps"] // 4),
        seed=seed,
        label="base UNet",
    )
    fingerprint = run_fingerprint(train_cfg, json.dumps({"unet": cfg, "scheduler": scheduler_cfg}, sort_keys=True), cache_dir,
                                  "pretrain-unet")
    unet, metrics = train(train_cfg, cache, unet, noise_scheduler, work_dir, fingerprint)
    with atomic_dir(out_dir) as tmp:
        save_pipeline(tmp, tokenizer, text_encoder, vae, unet, noise_scheduler)
    return metrics
