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

from diffpo.config import SampleConfig, TrainConfig
from diffpo.data import EncodedPairs
from diffpo.models import build_noise_scheduler, build_unet
from diffpo.training import BatchSampler, OBJECTIVES, _forward, _make_batch


def _fake_cache(folder: Path, n: int, latent: tuple[int, int, int], tokens: int, width: int) -> EncodedPairs:
    rng = np.random.default_rng(0)
    np.save(folder / "latents_w.npy", rng.standard_normal((n, *latent), dtype=np.float32))
    np.save(folder / "latents_l.npy", rng.standard_normal((n, *latent), dtype=np.float32))
    np.save(folder / "prompt_embeds.npy", rng.standard_normal((64, tokens, width), dtype=np.float32))
    np.save(folder / "empty_prompt_embed.npy", np.zeros((tokens, width), np.float32))
    pd.DataFrame({"prompt_index": rng.integers(0, 64, n)}).to_parquet(folder / "pairs.parquet")
    return EncodedPairs(folder)


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run(params: dict, repeats: int = 10) -> pd.DataFrame:
    pre = params["pretrain"]
    size = params["data"]["resolution"] // 2 ** (len(pre["vae"]["block_out_channels"]) - 1)
    latent = (pre["vae"]["latent_channels"], size, size)
    width, tokens = pre["text_encoder"]["hidden_size"], pre["text_encoder"]["max_length"]
    scheduler = build_noise_scheduler(pre["scheduler"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = _fake_cache(Path(tmp), 2048, latent, tokens, width)
        empty = torch.zeros(tokens, width)
        for method in ("sft_w", "diffusion_dpo"):
            settings = {**params["train"], **params["methods"][method]}
            cfg = TrainConfig(**{k: v for k, v in settings.items() if k in TrainConfig.__dataclass_fields__})
            objective = OBJECTIVES[cfg.objective]
            unet = build_unet(pre["unet"], size, latent[0], width)
            reference = build_unet(pre["unet"], size, latent[0], width).requires_grad_(False) if objective.reference else None
            optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate)
            sampler = BatchSampler(cache.images(cfg.images), cfg.batch_size, 0)
            draws = iter(range(10**6))

            def step():
                batch = _make_batch(cache, cfg, sampler, next(draws), empty, scheduler, objective.pairs)
                loss, _ = _forward(cfg, objective, unet, reference, scheduler, batch, "cpu")
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()

            seconds = _time(step, repeats)
            unit = "pairs" if objective.pairs else "images"
            rows.append({"what": f"{cfg.label} training step", "batch": f"{cfg.batch_size} {unit}",
                         "seconds": seconds, "per_second": cfg.batch_size / seconds})
        from diffpo.sampling import denoise

        sample = SampleConfig(**{k: v for k, v in params["sample"].items() if k in SampleConfig.__dataclass_fields__})
        pipe = type("P", (), {"unet": unet.eval()})()
        from diffusers import DDIMScheduler

        ddim = DDIMScheduler.from_config(scheduler.config)
        n = sample.batch_size
        embeds = torch.randn(n, tokens, width)
        seconds = _time(lambda: denoise(pipe, ddim, torch.randn(n, *latent), embeds, empty[None], sample.num_inference_steps,
                                        sample.guidance_scale), max(1, repeats // 5))
        rows.append({"what": f"DDIM sampling, {sample.num_inference_steps} steps, CFG", "batch": f"{n} images",
                     "seconds": seconds, "per_second": n / seconds})
    table = pd.DataFrame(rows)
    table.attrs["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table.attrs["threads"] = torch.get_num_threads()
    return table
