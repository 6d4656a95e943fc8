"""A GPU smoke test of the paper profile's shapes, before any paid multi-GPU run.

An SD-1.5-shaped UNet (SD-1.5's own UNet and VAE configs, random weights: nothing is
downloaded) at 512 px (64 x 64 latents), bf16 autocast, through one Diffusion-DPO, one
SePPO and one D3PO update of the real trainer, one sampling batch and one scoring batch of a
PickScore-shaped CLIP ViT-H/14. Prints pairs/s, images/s, peak memory and model-FLOPs
utilisation (MFU: the UNet's counted FLOPs over the device's dense bf16 peak).

    scripts/gpu_smoke.sh            # a CUDA machine
    scripts/gpu_smoke.sh --tiny     # any machine: small shapes, to check the script itself runs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

# SD-1.5's unet/config.json and vae/config.json (the values that differ from diffusers' defaults).
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                 attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)
TINY_UNET = dict(SD15_UNET, sample_size=8, layers_per_block=1, cross_attention_dim=32, attention_head_dim=4,
                 block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8)
TINY_VAE = dict(SD15_VAE, sample_size=32, layers_per_block=1, block_out_channels=(8, 16),
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
# Dense bf16 peak (no sparsity), from the vendors' data sheets; an unknown device reports no MFU.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def _peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _forward_flops(unet, latents, t, embeds) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter, torch.autocast(latents.device.type, torch.bfloat16):
        unet(latents, t, embeds)
    return float(counter.get_total_flops())


def _fake_cache(folder: Path, n: int, latent: tuple, embed: tuple) -> None:
    from diffpo.data.cache import write_cache

    rng = np.random.default_rng(0)
    sample = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    captions = [f"prompt {i}" for i in range(n)]
    write_cache(folder, sample(n, *latent), sample(n, *latent), sample(n, *embed), np.zeros(embed, np.float32),
                pd.DataFrame({"caption": captions, "prompt_index": np.arange(n)}), captions)


class _ClipScore:
    """PickScore's computation (cosine of CLIP ViT-H/14 embeddings, times logit scale) on random weights."""

    def __init__(self, tiny: bool, device):
        from transformers import CLIPModel

        from diffpo.scoring.learned import pickscore_config

        self.model = CLIPModel(pickscore_config(tiny=tiny)).to(device).eval()
        self.size, self.device = self.model.config.vision_config.image_size, device

    @torch.no_grad()
    def score(self, images: np.ndarray, prompts, batch_size: int = 8) -> np.ndarray:
        pixels = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float().div(255).to(self.device)
        pixels = torch.nn.functional.interpolate(pixels, size=(self.size, self.size), mode="bilinear")
        ids = torch.randint(0, self.model.config.text_config.vocab_size, (len(pixels), 77 if self.size > 64 else 16),
                            device=self.device)
        with torch.autocast(self.device.type, torch.bfloat16):
            image = self.model.get_image_features(pixel_values=pixels)
            text = self.model.get_text_features(input_ids=ids)
        image, text = (getattr(x, "pooler_output", x).float() for x in (image, text))
        cos = torch.nn.functional.cosine_similarity(image, text)
        return (self.model.logit_scale.exp() * cos).cpu().numpy()


def run(tiny: bool) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from diffpo.models import devices
    import diffpo.training.loop, diffpo.training.sources
    from diffpo import training
    from diffpo.settings.configs import TrainConfig
    from diffpo.data.preparation import EncodedPairs
    from diffpo.models.loading import build_noise_scheduler, decode_latents
    from diffpo.models.sampling import denoise

    device = devices.device()
    torch.manual_seed(0)
    unet_cfg, vae_cfg = (TINY_UNET, TINY_VAE) if tiny else (SD15_UNET, SD15_VAE)
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**vae_cfg).to(device).eval().requires_grad_(False)
    size, embed = unet_cfg["sample_size"], (77 if not tiny else 8, unet_cfg["cross_attention_dim"])
    latent = (4, size, size)
    steps = {"sampler": 4 if tiny else 50, "rollout": 4 if tiny else 20, "losers": 4 if tiny else 20}
    results: dict = {"device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else device),
                     "unet_parameters_M": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1), "latent": list(latent)}
    x = torch.randn(1, *latent, device=device)
    flops = _forward_flops(unet.to(device), x, torch.tensor([500], device=device), torch.randn(1, *embed, device=device))
    peak = _peak(device)
    results["unet_forward_GFLOPs"] = round(flops / 1e9, 3)

    def timed(fn):
        devices.synchronize()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        out = fn()
        devices.synchronize()
        memory = round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
        return out, time.perf_counter() - start, memory

    scheduler = build_noise_scheduler(SCHEDULER)
    common = dict(steps=1, batch_size=1, learning_rate=1e-6, mixed_precision="bf16", checkpoint_every=1,
                  gradient_checkpointing=not tiny, label="smoke")
    methods = {
        # model FLOPs per pair: policy forward + backward (3x) and the reference forward, on both images
        "diffusion_dpo": (TrainConfig(objective="diffusion_dpo", images="pairs", beta=5000.0, **common), 8),
        # plus the loser generated by the reference: sampler steps x 2 (guidance)
        "seppo": (TrainConfig(objective="seppo", images="winners", losers="reference", beta=2000.0, round_updates=1,
                              sampler_steps=steps["losers"], guidance_scale=7.5, generation_batch_size=1, **common),
                  8 + 2 * steps["losers"]),
        # two chains of rollout, then every step of the pair re-evaluated (policy + reference, with guidance)
        "d3po": (TrainConfig(objective="d3po", images="winners", beta=0.1, lora_rank=4, round_updates=1, rollout_prompts=1,
                             sampler_steps=steps["rollout"], guidance_scale=5.0, reward_scorer="pickscore",
                             generation_batch_size=2, **common), 2 * 2 * steps["rollout"] + 2 * steps["rollout"] * 2 * 4),
    }
    scorer = _ClipScore(tiny, device)
    with tempfile.TemporaryDirectory() as tmp:
        _fake_cache(Path(tmp), 8, latent, embed)
        cache = EncodedPairs(tmp)
        for name, (cfg, forwards) in methods.items():
            gens = training.sources.Generators(scheduler=build_noise_scheduler(SCHEDULER), vae=vae, reward=scorer)
            start_unet = UNet2DConditionModel(**unet_cfg)
            _, seconds, memory = timed(lambda: training.loop.train(cfg, cache, start_unet, scheduler, Path(tmp) / name, name, gens))
            results[name] = {"pairs_per_s": round(1 / seconds, 3), "seconds": round(seconds, 2), "peak_GiB": memory,
                             "MFU": round(forwards * flops / seconds / peak, 4) if peak else None}
        batch = 2 if tiny else 16
        ddim = build_noise_scheduler(SCHEDULER)
        unet = unet.to(device, torch.bfloat16).eval()
        noise, cond, uncond = torch.randn(batch, *latent), torch.randn(batch, *embed), torch.zeros(1, *embed)
        clean, seconds, memory = timed(lambda: denoise(unet, ddim, noise, cond, uncond, steps["sampler"], 7.5))
        images, decode_s, _ = timed(lambda: decode_latents(vae, clean.float()).numpy())
        results["sampling"] = {"images_per_s": round(batch / (seconds + decode_s), 3), "batch": batch,
                               "steps": steps["sampler"], "peak_GiB": memory,
                               "MFU": round(batch * steps["sampler"] * 2 * flops / seconds / peak, 4) if peak else None}
        scores, seconds, memory = timed(lambda: scorer.score(images, [""] * len(images)))
        results["scoring"] = {"images_per_s": round(len(scores) / seconds, 3), "peak_GiB": memory,
                              "finite": bool(np.isfinite(scores).all())}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffpo.pipeline.gpu_smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true",
                        help="small shapes on any device (a CPU test checks the script runs end to end)")
    args = parser.parse_args(argv)
    from diffpo.models.devices import device

    if device().type != "cuda" and not args.tiny:
        sys.exit(f"gpu_smoke: no CUDA device here ({device()}); the SD-1.5-shaped smoke test needs a GPU. "
                 "Run it on the GPU machine, or pass --tiny to check the script at small shapes.")
    print(json.dumps(run(args.tiny), indent=2))


if __name__ == "__main__":
    main()
