"""Speed and storage of the hot paths, as figures (``python -m diffpo benchmark``).

Uses components built from params.yaml's tiny-model configs and random latents, so it
needs no results; per-job wall time and memory of real runs are in Snakemake's
``benchmarks/`` files. For every objective it times the training micro-step (the source's
loss and its backward) against the *compute floor* measured in the same run on the same
UNet inputs: the policy's forward and backward and, where the objective has one, the
reference's forward, nothing else. step / floor is what the objective's own work costs
(batch assembly, cache reads, losses); the optimizer step is timed apart. ``--out`` writes
every figure to a JSON file that ``diffpo compute-budget`` reads.
"""

from __future__ import annotations

import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diffpo.data.cache import EncodedPairs, write_cache
from diffpo.settings.configs import SampleConfig, TrainConfig, build, method_settings
from diffpo.models.loading import build_noise_scheduler, build_unet, build_vae
from diffpo.evidence.rendering import machine_description
from diffpo.training.loop import OBJECTIVES
from diffpo.training.sources import Generators, _source
from diffpo.training.reference import Reference, add_lora

METHODS = ("sft_w", "diffusion_dpo", "seppo_w", "d3po", "ddpo")
PRECISION_NAMES = {"no": "float32", "bf16": "bf16 autocast"}
N_PAIRS, N_PROMPTS = 2048, 64


class MeanPixel:
    """A free judge for rollouts, so the figures time the diffusion model, not a scorer."""

    def score(self, images, prompts, batch_size=8):
        return np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3))


def _fake_cache(folder: Path, n: int, latent: tuple[int, int, int], tokens: int, width: int) -> EncodedPairs:
    rng = np.random.default_rng(0)
    prompt_index = np.arange(n) % N_PROMPTS
    return write_cache(folder, rng.standard_normal((n, *latent), dtype=np.float32),
                       rng.standard_normal((n, *latent), dtype=np.float32),
                       rng.standard_normal((N_PROMPTS, tokens, width), dtype=np.float32), np.zeros((tokens, width), np.float32),
                       pd.DataFrame({"caption": [f"prompt {i}" for i in prompt_index], "prompt_index": prompt_index}),
                       [f"prompt {i}" for i in range(N_PROMPTS)])


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, timed in alternation so a busy machine slows all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


class _Inputs:
    """Records the arguments of the first UNet call after ``arm()``: the policy's forward."""

    def __init__(self, unet):
        self.armed, self.args, self.kwargs = False, None, None
        unet.register_forward_pre_hook(self._hook, with_kwargs=True)

    def arm(self):
        self.armed = True

    def _hook(self, module, args, kwargs):
        if self.armed:
            self.args = tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args)
            self.kwargs = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}
            self.armed = False


def _floor(unet, reference, needs_reference: bool, inputs: _Inputs):
    """The compute floor of a step: policy forward + backward and reference forward on the same inputs."""

    def floor():
        unet(*inputs.args, **inputs.kwargs).sample.float().square().mean().backward()
        if needs_reference:
            with torch.no_grad(), reference.model() as ref:
                ref(*inputs.args, **inputs.kwargs)
        unet.zero_grad(set_to_none=True)

    return floor


def _generation_precisions(cfg: TrainConfig) -> tuple[str, ...]:
    """The precisions a round's generation is timed in: both for generated losers (their
    ``generation_precision`` is a per-CPU trade, docs/reproduction.md), the configured one otherwise."""
    return ("no", "bf16") if cfg.data == "pairs" else (cfg.generation_precision,)


def _shapes(params: dict) -> tuple[tuple[int, int, int], int, int]:
    pre = params["pretrain"]
    size = params["data"]["resolution"] // 2 ** (len(pre["vae"]["block_out_channels"]) - 1)
    return (pre["vae"]["latent_channels"], size, size), pre["text_encoder"]["max_length"], pre["text_encoder"]["hidden_size"]


def training_steps(params: dict, cache: EncodedPairs, work: Path, repeats: int) -> tuple[list, list]:
    """Per method: the micro-step, its floor, the optimizer step; and each round's generation."""
    from accelerate import Accelerator
    from diffusers import DDIMScheduler

    pre = params["pretrain"]
    latent, tokens, width = _shapes(params)
    scheduler = build_noise_scheduler(pre["scheduler"])
    ddim = DDIMScheduler.from_config(scheduler.config)
    generators = Generators(scheduler=ddim, vae=build_vae(pre["vae"]).eval().requires_grad_(False), reward=MeanPixel())
    accelerator = Accelerator()
    steps, rounds = [], []
    for method in METHODS:
        cfg = build(TrainConfig, method_settings(params, method))
        objective = OBJECTIVES[cfg.objective]
        torch.manual_seed(0)
        unet = build_unet(pre["unet"], latent[1], latent[0], width)
        if cfg.lora_rank:
            add_lora(unet, cfg)
        reference = Reference(unet, objective.reference, cfg, "cpu")
        # Learning rate 0: AdamW's arithmetic all the same, but the policy stays where it starts, so
        # every repeat times the same step (a drifting policy saturates the DPO losses, whose
        # subnormal gradients are slow on a CPU: a property of the drift, not of the objective).
        optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=0.0)
        source = None if cfg.round_updates else _source(cfg, cache, accelerator, generators, work / method)
        if cfg.round_updates:
            count, unit = ((cfg.round_updates * cfg.batch_size, "losers") if cfg.data == "pairs"
                           else (cfg.rollout_prompts, "prompts"))
            for precision in _generation_precisions(cfg):
                variant = dataclasses.replace(cfg, generation_precision=precision)
                timed_source = _source(variant, cache, accelerator, generators, work / f"{method}-{precision}")
                seconds = _time(lambda: timed_source.begin_round(0, unet, reference), 1)
                rounds.append({"method": method, "what": f"{cfg.label}: one round's generation",
                               "batch": f"{count} {unit}, {cfg.sampler_steps} DDIM steps",
                               "precision": PRECISION_NAMES[precision],
                               "configured": precision == cfg.generation_precision,
                               "seconds": seconds, "per_second": count / seconds})
                if precision == cfg.generation_precision:
                    source = timed_source  # its round's losers feed the timed steps below
        inputs = _Inputs(unet)
        draws = iter(range(10**6))

        def micro_step():
            draw = next(draws)  # generated losers exist for the draws of round 0
            inputs.arm()
            loss, _ = source.loss(objective, unet, reference, scheduler, 0, 0,
                                  draw % cfg.round_updates if cfg.round_updates else draw)
            loss.backward()
            unet.zero_grad(set_to_none=True)

        micro_step()  # records the UNet inputs of a step
        loss, _ = source.loss(objective, unet, reference, scheduler, 0, 0, 0)
        loss.backward()
        grads = {p: p.grad for p in unet.parameters() if p.grad is not None}

        def optimizer_step():  # with a real step's gradients, which the other two clear
            for param, grad in grads.items():
                param.grad = grad
            optimizer.step()

        timed = _interleaved({"step": micro_step, "floor": _floor(unet, reference, objective.reference, inputs),
                              "optimizer": optimizer_step}, repeats)
        unit = {"pairs": "pairs", "images": "images", "rollouts": "pairs or chains"}[cfg.data]
        steps.append({"method": method, "objective": cfg.objective, "label": cfg.label,
                      "batch": f"{cfg.batch_size} {unit}", "unet_batch": int(inputs.args[0].shape[0]),
                      "reference": objective.reference, "lora": bool(cfg.lora_rank),
                      "step_s": timed["step"], "floor_s": timed["floor"], "ratio": timed["step"] / timed["floor"],
                      "optimizer_s": timed["optimizer"]})
    return steps, rounds


def sampling(params: dict, repeats: int) -> dict:
    from diffusers import DDIMScheduler

    from diffpo.models.sampling import denoise

    latent, tokens, width = _shapes(params)
    pre = params["pretrain"]
    ddim = DDIMScheduler.from_config(build_noise_scheduler(pre["scheduler"]).config)
    torch.manual_seed(0)
    unet = build_unet(pre["unet"], latent[1], latent[0], width).eval()
    sample = SampleConfig(**{k: v for k, v in params["sample"].items() if k in SampleConfig.__dataclass_fields__})
    n = sample.batch_size
    embeds, empty = torch.randn(n, tokens, width), torch.zeros(1, tokens, width)
    seconds = _time(lambda: denoise(unet, ddim, torch.randn(n, *latent), embeds, empty, sample.num_inference_steps,
                                    sample.guidance_scale), max(1, repeats // 5))
    return {"what": f"DDIM sampling, {sample.num_inference_steps} steps, CFG", "batch": f"{n} images",
            "seconds": seconds, "images_per_second": n / seconds}


def storage(cache: EncodedPairs, source: Path | None, split: str, max_rows: int = 2000) -> dict:
    """Cache bytes per pair (on disk, and per the layout at its pair/prompt ratio) and the JPEG bytes it replaces."""
    from diffpo.data.cache import layout_bytes

    folder = cache.cache_dir
    on_disk = sum(p.stat().st_size for p in folder.iterdir())
    info = cache.info
    out = {"cache_pairs": info["pairs"], "cache_prompts": info["unique_prompts"], "cache_bytes": on_disk,
           "cache_bytes_per_pair": on_disk / info["pairs"],
           "layout_bytes_per_pair": layout_bytes(info["pairs"], info["unique_prompts"], info["latent_shape"],
                                                 info["embed_shape"], info["dtype"]) / info["pairs"]}
    if source is not None:
        import pyarrow.compute as pc

        from diffpo.data.reading import list_shards, read_shard

        sizes = []
        for shard in list_shards(source, split):
            table = read_shard(shard, columns=["jpg_0", "jpg_1"])
            for column in ("jpg_0", "jpg_1"):
                sizes.append(np.asarray(pc.binary_length(table.column(column)), dtype=np.int64))
            if sum(len(s) for s in sizes) >= 2 * max_rows:
                break
        both = np.concatenate(sizes)
        out.update({"jpeg_source": str(source), "jpeg_rows": len(both) // 2, "jpeg_bytes_per_pair": 2 * float(both.mean())})
    return out


def run(params: dict, repeats: int = 10, source: Path | None = None, split: str = "train") -> dict:
    """Every figure: training steps and floors, generation rounds, sampling, storage."""
    latent, tokens, width = _shapes(params)
    with tempfile.TemporaryDirectory() as tmp:
        cache = _fake_cache(Path(tmp) / "cache", N_PAIRS, latent, tokens, width)
        steps, rounds = training_steps(params, cache, Path(tmp), repeats)
        figures = {"steps": steps, "rounds": rounds, "sampling": sampling(params, repeats),
                   "storage": storage(cache, source, split)}
    figures["environment"] = {"profile": params["profile"], "device": "cpu", "machine": machine_description(),
                              "threads": torch.get_num_threads(),
                              "repeats": repeats, "torch": torch.__version__,
                              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    figures["models"] = {"unet": params["pretrain"]["unet"], "latent_shape": list(latent), "tokens": tokens,
                         "width": width, "resolution": params["data"]["resolution"]}
    return figures


def report(figures: dict) -> str:
    """The figures as Markdown tables."""
    steps = pd.DataFrame(figures["steps"])
    steps = steps[["label", "batch", "unet_batch", "step_s", "floor_s", "ratio", "optimizer_s"]].rename(columns={
        "label": "objective (method)", "unet_batch": "UNet batch", "step_s": "step s", "floor_s": "floor s",
        "ratio": "step / floor", "optimizer_s": "optimizer s"})
    rounds = pd.DataFrame(figures["rounds"])[["what", "batch", "precision", "seconds", "per_second"]]
    s, st, env = figures["sampling"], figures["storage"], figures["environment"]
    lines = ["Training micro-step (loss + backward) against its floor (policy forward + backward, reference forward, "
             "same UNet inputs), medians of interleaved repeats:", "", steps.to_markdown(index=False, floatfmt=".4f"), "",
             rounds.to_markdown(index=False, floatfmt=".3f"), "",
             f"{s['what']}: {s['batch']} in {s['seconds']:.3f} s, {s['images_per_second']:.1f} images/s", "",
             f"Cache: {st['cache_bytes_per_pair']:.0f} bytes/pair on disk ({st['cache_pairs']} pairs, "
             f"{st['cache_prompts']} prompts; layout predicts {st['layout_bytes_per_pair']:.0f})"
             + (f"; the JPEGs it replaces: {st['jpeg_bytes_per_pair']:.0f} bytes/pair ({st['jpeg_rows']} rows of "
                f"{st['jpeg_source']})" if "jpeg_bytes_per_pair" in st else ""), "",
             f"Measured on {env['machine']}: peak resident memory {env['peak_rss_mb']:.0f} MB, {env['threads']} torch "
             f"threads, {env['repeats']} repeats"]
    return "\n".join(lines)
