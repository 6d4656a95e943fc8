"""Speed and memory of the hot paths, printed as figures (``python -m diffpo benchmark``).

Uses components built from params.yaml's tiny-model configs and random latents, so it
needs no results; per-job wall time and memory of real runs are in Snakemake's
``benchmarks/`` files.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diffpo.config import SampleConfig, TrainConfig, build, method_settings
from diffpo.cache import EncodedPairs, write_cache
from diffpo.models import build_noise_scheduler, build_unet, build_vae
from diffpo.training import OBJECTIVES, Generators, Reference, _source, add_lora

METHODS = ("sft_w", "diffusion_dpo", "seppo_w", "d3po", "ddpo")


class MeanPixel:
    """A free judge for rollouts, so the figures time the diffusion model, not a scorer."""

    def score(self, images, prompts, batch_size=8):
        return np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3))


def _fake_cache(folder: Path, n: int, latent: tuple[int, int, int], tokens: int, width: int) -> EncodedPairs:
    rng = np.random.default_rng(0)
    prompt_index = np.arange(n) % 64
    return write_cache(folder, rng.standard_normal((n, *latent), dtype=np.float32),
                       rng.standard_normal((n, *latent), dtype=np.float32),
                       rng.standard_normal((64, tokens, width), dtype=np.float32), np.zeros((tokens, width), np.float32),
                       pd.DataFrame({"caption": [f"prompt {i}" for i in prompt_index], "prompt_index": prompt_index}),
                       [f"prompt {i}" for i in range(64)])


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run(params: dict, repeats: int = 10) -> pd.DataFrame:
    """Per method: one optimizer step, and (generating methods) one round's generation."""
    from accelerate import Accelerator
    from diffusers import DDIMScheduler

    pre = params["pretrain"]
    size = params["data"]["resolution"] // 2 ** (len(pre["vae"]["block_out_channels"]) - 1)
    latent = (pre["vae"]["latent_channels"], size, size)
    width, tokens = pre["text_encoder"]["hidden_size"], pre["text_encoder"]["max_length"]
    scheduler = build_noise_scheduler(pre["scheduler"])
    ddim = DDIMScheduler.from_config(scheduler.config)
    generators = Generators(scheduler=ddim, vae=build_vae(pre["vae"]).eval().requires_grad_(False), reward=MeanPixel())
    accelerator = Accelerator()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = _fake_cache(Path(tmp), 2048, latent, tokens, width)
        for method in METHODS:
            cfg = build(TrainConfig, method_settings(params, method))
            objective = OBJECTIVES[cfg.objective]
            unet = build_unet(pre["unet"], size, latent[0], width)
            if cfg.lora_rank:
                add_lora(unet, cfg)
            reference = Reference(unet, objective.reference, cfg, "cpu")
            optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=cfg.learning_rate)
            source = _source(cfg, cache, accelerator, generators, Path(tmp) / method)
            if cfg.round_updates:
                start = time.perf_counter()
                source.begin_round(0, unet, reference)
                seconds = time.perf_counter() - start
                count, unit = ((cfg.round_updates * cfg.batch_size, "losers") if cfg.data == "pairs"
                               else (cfg.rollout_prompts, "prompts"))
                rows.append({"what": f"{cfg.label}: one round's generation",
                             "batch": f"{count} {unit}, {cfg.sampler_steps} DDIM steps",
                             "seconds": seconds, "per_second": count / seconds})
            draws = iter(range(10**6))

            def step():
                draw = next(draws)  # generated losers exist for the draws of round 0
                loss, _ = source.loss(objective, unet, reference, scheduler, 0, 0, draw % cfg.round_updates if cfg.round_updates else draw)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()

            seconds = _time(step, repeats)
            unit = {"pairs": "pairs", "images": "images", "rollouts": "pairs or chains"}[cfg.data]
            rows.append({"what": f"{cfg.label}: training step", "batch": f"{cfg.batch_size} {unit}",
                         "seconds": seconds, "per_second": cfg.batch_size / seconds})
        from diffpo.sampling import denoise

        sample = SampleConfig(**{k: v for k, v in params["sample"].items() if k in SampleConfig.__dataclass_fields__})
        n = sample.batch_size
        embeds = torch.randn(n, tokens, width)
        empty = torch.zeros(1, tokens, width)
        seconds = _time(lambda: denoise(unet.eval(), ddim, torch.randn(n, *latent), embeds, empty, sample.num_inference_steps,
                                        sample.guidance_scale), max(1, repeats // 5))
        rows.append({"what": f"DDIM sampling, {sample.num_inference_steps} steps, CFG", "batch": f"{n} images",
                     "seconds": seconds, "per_second": n / seconds})
    table = pd.DataFrame(rows)
    table.attrs["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table.attrs["threads"] = torch.get_num_threads()
    return table
