"""The compute budget of the paper profile (``python -m diffpo compute-budget``): GPU-hours and storage per table.

Method: count SD-1.5 UNet forward FLOPs (``torch.utils.flop_counter`` on a UNet built on the
meta device from its published config, so no weights are needed) for every forward a run
makes at the paper profile's sizes, weight each objective's training forwards by the
step / floor ratio the benchmark measured for it, and divide by a declared GPU peak times a
declared utilisation. Sizes come from params.yaml's paper profile and
``config/compute_budget.yaml``; nothing is typed into the output by hand.

Forward-equivalents per UNet sample: a full fine-tuning forward + backward counts 3 (the
backward's activation and weight gradients, 1 forward each), a LoRA one 2 (no weight
gradients for the frozen base), a reference or sampling forward 1; classifier-free guidance
doubles the UNet batch of rollouts and sampling.
"""

from __future__ import annotations

from pathlib import Path

import math

from diffpo.training import recipes
from diffpo.settings.configs import build, method_settings, TrainConfig


def unet_forward_flops(unet_cfg: dict, latent_size: int, tokens: int, width: int, latent_channels: int = 4) -> float:
    """FLOPs of one UNet forward on one sample."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    n = len(unet_cfg["block_out_channels"])
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
            block_out_channels=tuple(unet_cfg["block_out_channels"]), layers_per_block=unet_cfg["layers_per_block"],
            attention_head_dim=unet_cfg["attention_head_dim"], cross_attention_dim=width,
            down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1))
        with FlopCounterMode(display=False) as counter:
            unet(torch.zeros(1, latent_channels, latent_size, latent_size), torch.tensor([500]), torch.zeros(1, tokens, width))
    return float(counter.get_total_flops())


def vae_encode_flops(vae_cfg: dict, resolution: int) -> float:
    """FLOPs of encoding one image with the VAE."""
    import torch
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    n = len(vae_cfg["block_out_channels"])
    with torch.device("meta"):
        vae = AutoencoderKL(block_out_channels=tuple(vae_cfg["block_out_channels"]), layers_per_block=vae_cfg["layers_per_block"],
                            latent_channels=vae_cfg["latent_channels"], down_block_types=("DownEncoderBlock2D",) * n,
                            up_block_types=("UpDecoderBlock2D",) * n)
        with FlopCounterMode(display=False) as counter:
            vae.encode(torch.zeros(1, 3, resolution, resolution))
    return float(counter.get_total_flops())


def run_forwards(cfg: TrainConfig, gpus: int, ratio: float) -> dict:
    """UNet forward-equivalents of one training run: training (times the measured ratio) and generation."""
    per_step = cfg.batch_size * cfg.gradient_accumulation_steps * gpus  # examples per optimizer step
    train_pass = (2 if cfg.lora_rank else 3) + (1 if cfg.objective not in ("sft", "ddpo") else 0)
    generation = 0.0
    if cfg.data == "rollouts":
        k = 1 if cfg.objective == "spo" else max(1, round(cfg.timestep_fraction * cfg.sampler_steps))
        chains_per_example = 1 if cfg.objective == "ddpo" else 2
        unet_samples = per_step * chains_per_example * k * 2  # 2: guidance
        copies = {"d3po": 2, "ddpo": cfg.samples_per_prompt, "spo": 1}[cfg.objective]
        steps_per_chain = cfg.sampler_steps
        if cfg.objective == "spo":
            steps_per_chain = cfg.divert_start_step + (cfg.sampler_steps - cfg.divert_start_step) * cfg.num_candidates
        rounds = math.ceil(cfg.steps / cfg.round_updates)
        generation = rounds * cfg.rollout_prompts * gpus * copies * steps_per_chain * 2
    else:
        unet_samples = per_step * (2 if cfg.data == "pairs" else 1)
        if cfg.losers == "reference":  # every pair's loser, sampled by the round's reference with guidance
            generation = cfg.steps * per_step * cfg.sampler_steps * 2
    return {"examples": cfg.steps * per_step, "train": cfg.steps * unet_samples * train_pass * ratio,
            "generation": float(generation)}


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n < 1e12 else f"{n / 1e12:,.2f} TB"


def compute_budget(params: dict, figures: dict, assumed: dict, benchmark_path: str = "") -> str:
    """The budget as Markdown: per method, per table, and the assumptions it rests on."""
    from diffpo.data.cache import layout_bytes

    m, gpu, ckpt = assumed["models"], assumed["gpu"], assumed["checkpoint"]
    flops = unet_forward_flops(m["unet"], m["latent_size"], m["tokens"], m["unet"]["cross_attention_dim"])
    unet_params = _sd15_parameters(m)
    rate = gpu["peak_tflops"] * 1e12 * gpu["utilisation"]
    hours = lambda forwards: forwards * flops / rate / 3600
    ratios = {row["objective"]: row["ratio"] for row in figures["steps"]}
    ratios.setdefault("spo", ratios.get("d3po", 1.0))  # SPO's loss is D3PO's on step-wise pairs
    sample = params["sample"]
    prompts = assumed["data"]["prompt_sets"][sample["prompt_set"]] * sample["images_per_prompt"]
    sampling = prompts * sample["num_inference_steps"] * 2  # forwards per model: guidance doubles the batch
    models = {}
    for method in params["methods"]:
        gpus = assumed["gpus_per_run"].get(params["methods"][method]["objective"], assumed["gpus_per_run"]["default"])
        # the accumulation the trainer derives from the effective batch on this many GPUs (diffpo.training.recipes)
        cfg = recipes.resolve(build(TrainConfig, method_settings(params, method)), gpus)
        f = run_forwards(cfg, gpus, ratios.get(cfg.objective, 1.0))
        pool = math.ceil(cfg.steps / cfg.round_updates) if cfg.losers == "reference" else 0
        storage = unet_params * ckpt["weight_bytes"] * (3 * ckpt["keep"] + pool + 1)
        models[method] = {"label": cfg.label, "gpus": gpus, "ratio": ratios.get(cfg.objective, 1.0), **f,
                          "train_h": hours(f["train"]), "generation_h": hours(f["generation"]), "storage": storage}
    models["base"] = {"label": "SD-1.5", "train_h": 0.0, "generation_h": 0.0, "storage": 0}
    sample_h, sample_bytes = hours(sampling), prompts * ckpt["sample_bytes_per_image"]
    d = assumed["data"]
    cache_bytes = layout_bytes(d["pairs"], d["unique_prompts"], [4, m["latent_size"], m["latent_size"]], [m["tokens"], 768],
                               params["encode"]["dtype"])
    encode_h = 2 * d["pairs"] * vae_encode_flops(m["vae"], params["data"]["resolution"]) / rate / 3600

    lines = ["# Compute budget of the paper profile", "",
             f"Generated by `python -m diffpo compute-budget` from params.yaml (paper profile), "
             f"config/compute_budget.yaml and the benchmark figures in `{benchmark_path}`; do not edit by hand.", "",
             "## Assumptions", "",
             f"- SD-1.5 UNet at {m['latent_size']}x{m['latent_size']} latents: {flops / 1e9:,.0f} GFLOPs per forward per "
             f"sample, {unet_params / 1e6:,.0f} M parameters (counted on the meta device from the published config).",
             f"- GPU: {gpu['name']}, {gpu['peak_tflops']} TFLOP/s peak, utilisation {gpu['utilisation']:.0%} "
             f"(assumed, not measured) = {rate / 1e12:,.0f} TFLOP/s delivered.",
             "- Forward-equivalents: full fine-tuning forward + backward 3, LoRA 2, reference or sampling forward 1; "
             "guidance doubles the batch of sampling and rollouts.",
             "- Training forwards are multiplied by the objective's step / floor ratio measured by `diffpo benchmark` "
             f"on the tiny model ({figures['environment']['device']}, {figures['environment']['threads']} threads); "
             "the floor itself is assumed to scale with FLOPs.",
             "- Not counted: scorers, VAE decoding of rollouts and samples, checkpoint writes, data loading.",
             f"- Training seeds: {len(params['seeds'])} (params.yaml `seeds`); every figure below is for one seed "
             "and scales with the number of seeds.",
             f"- Evaluation: {prompts} images per model ({sample['prompt_set']}), {sample['num_inference_steps']} steps.", "",
             "## Per method", "",
             "| method | GPUs | examples | step / floor | training GPU-h | generation GPU-h | checkpoints |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for method, row in models.items():
        if method == "base":
            continue
        lines.append(f"| {row['label']} | {row['gpus']} | {row['examples']:,} | {row['ratio']:.2f} | {row['train_h']:,.1f} "
                     f"| {row['generation_h']:,.1f} | {_fmt_bytes(row['storage'])} |")
    lines += ["", f"Shared by every table: encoding the {d['pairs']:,} pairs (VAE, {2 * d['pairs']:,} images) "
              f"{encode_h:,.1f} GPU-h; the cache {_fmt_bytes(cache_bytes)} ({cache_bytes / d['pairs']:,.0f} bytes/pair, "
              f"{params['encode']['dtype']}; prompt embeddings once per unique prompt).", ""]
    storage = figures["storage"]
    jpeg = (f"the JPEGs it replaces were measured at {storage['jpeg_bytes_per_pair']:,.0f} bytes/pair in "
            f"`{portable_path(storage['jpeg_source'])}`" if "jpeg_bytes_per_pair" in storage else "Pick-a-Pic's JPEG bytes were not measured")
    lines += [f"Cache measured on the benchmark's cache: {storage['cache_bytes_per_pair']:,.0f} bytes/pair on disk against "
              f"{storage['layout_bytes_per_pair']:,.0f} from the layout; {jpeg} (`diffpo benchmark --source DIR`).", "",
              "## Per table", "",
              "| table | rows | training + generation GPU-h | sampling GPU-h | total GPU-h | checkpoints + samples |",
              "|---|---:|---:|---:|---:|---:|"]
    for table, spec in params["tables"].items():
        rows = list(dict.fromkeys(["base", *spec["rows"]]))
        train = sum(models[r]["train_h"] + models[r]["generation_h"] for r in rows)
        evaluate = sample_h * len(rows)
        disk = sum(models[r]["storage"] for r in rows) + sample_bytes * len(rows)
        lines.append(f"| {table} | {len(rows)} | {train:,.1f} | {evaluate:,.1f} | {train + evaluate + encode_h:,.1f} "
                     f"| {_fmt_bytes(disk)} |")
    lines += ["", "Each table's total includes encoding once; a method shared by two tables is trained once.", ""]
    return "\n".join(lines)


def _sd15_parameters(m: dict) -> int:
    import torch
    from diffusers import UNet2DConditionModel

    n = len(m["unet"]["block_out_channels"])
    with torch.device("meta"):
        unet = UNet2DConditionModel(block_out_channels=tuple(m["unet"]["block_out_channels"]),
                                    layers_per_block=m["unet"]["layers_per_block"],
                                    attention_head_dim=m["unet"]["attention_head_dim"],
                                    cross_attention_dim=m["unet"]["cross_attention_dim"],
                                    down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
                                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1))
    return sum(p.numel() for p in unet.parameters())


def portable_path(path: str) -> str:
    """A path as a committed report may show it: one outside the project (absolute, or reached
    through ``..``) by its last two parts, not by the folders of the machine it was measured on."""
    parts = Path(path).parts
    return path if not (Path(path).is_absolute() or ".." in parts) else str(Path(*parts[-2:]))
