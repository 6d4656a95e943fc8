"""The training loop: ``train()``, its checkpoints and resumption, snapshots along training,
the per-step metrics file, and the fingerprint a checkpoint must match to be resumed.

The objectives (``OBJECTIVES``) are the methods' losses; the examples they are fed come from
``diffpo.training.sources``, the reference model from ``diffpo.training.reference``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator, PartialState
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from diffpo.training import recipes
from diffpo.settings.configs import TrainConfig
from diffpo.data.preparation import EncodedPairs
from diffpo.models.devices import configure_unet, make_optimizer
from diffpo.files import atomic_dir, atomic_path, remove_stale_in
from diffpo.methods.objectives import d3po_loss, ddpo_loss, diffusion_dpo_loss, seppo_loss, sft_loss
from diffpo.training.reference import Reference, add_lora, merge_lora
from diffpo.training.snapshots import snapshot_path
from diffpo.training.sources import Generators, TrainingDiverged, _source


@dataclass(frozen=True)
class Objective:
    """A loss of the policy's (and, if ``reference``, the reference's) per-sample quantities:
    denoising errors for the data objectives, per-step log-probabilities for rollouts."""

    reference: bool
    loss: Callable[..., tuple[torch.Tensor, dict]]


OBJECTIVES: dict[str, Objective] = {
    "sft": Objective(reference=False, loss=lambda cfg, policy, ref, extra: sft_loss(policy)),
    "diffusion_dpo": Objective(
        reference=True,
        loss=lambda cfg, policy, ref, extra: diffusion_dpo_loss(*policy.chunk(2), *ref.chunk(2), beta=cfg.beta, gamma=cfg.gamma),
    ),
    "seppo": Objective(
        reference=True,
        loss=lambda cfg, policy, ref, extra: seppo_loss(*policy.chunk(2), *ref.chunk(2), beta=cfg.beta, aaf=cfg.aaf),
    ),
    "d3po": Objective(
        reference=True,
        loss=lambda cfg, policy, ref, extra: d3po_loss(*policy.chunk(2), *ref.chunk(2), beta=cfg.beta,
                                                       clip_range=cfg.clip_range, gamma=cfg.gamma),
    ),
    "ddpo": Objective(
        reference=False,
        loss=lambda cfg, policy, ref, extra: ddpo_loss(policy, extra["old_log_probs"], extra["advantages"], cfg.clip_range),
    ),
}
OBJECTIVES["spo"] = OBJECTIVES["d3po"]  # SPO's loss is D3PO's, with its step-wise winner and loser


def run_fingerprint(cfg: TrainConfig, init: str, cache_dir: Path, command: str) -> str:
    """What a checkpoint must match to be resumed: code, settings, starting weights and data.

    ``command`` is the CLI subcommand training (``train``, ``pretrain-unet``): the package files
    it runs are hashed where diffpo is imported from (``diffpo.pipeline.code_inputs.code_digest``), so a fixed bug
    is never resumed from a checkpoint of the old code. ``init`` identifies the starting
    weights (see ``content_digest``); the cache is identified by its layout, pair index and the
    first megabyte of its latents (``EncodedPairs.fingerprint_bytes``).
    """
    from diffpo.pipeline.code_inputs import code_digest

    identity = {"cfg": asdict(cfg), "init": init, "code": code_digest(command)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    digest.update(EncodedPairs(cache_dir).fingerprint_bytes())
    return digest.hexdigest()[:16]


def content_digest(folder: Path) -> str:
    """A digest of the weight files in ``folder`` (a retrained base must not resume old runs)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*.safetensors")):
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _latest_checkpoint(work_dir: Path, fingerprint: str) -> tuple[int, Path] | None:
    found = []
    for ckpt in work_dir.glob("checkpoint-*"):
        state = ckpt / "state.json"
        if state.exists() and json.loads(state.read_text()).get("fingerprint") == fingerprint:
            found.append((json.loads(state.read_text())["step"], ckpt))
    return max(found) if found else None


def train(
    cfg: TrainConfig,
    cache: EncodedPairs,
    unet: UNet2DConditionModel,
    noise_scheduler: DDPMScheduler,
    work_dir: Path,
    fingerprint: str,
    generators: Generators | None = None,
    keep_checkpoints: int = 2,
    snapshots: bool = False,
) -> tuple[UNet2DConditionModel, Path]:
    """Train ``unet`` with ``cfg``'s method; return it (LoRA merged) and its per-step metrics CSV.

    ``unet`` is the starting policy; a reference is a frozen copy of it (or, with LoRA, the
    same UNet with its adapters disabled). ``generators`` is needed by methods that generate.
    ``snapshots``: also keep the policy's weights (LoRA merged) at every checkpoint in
    ``work_dir/snapshots/``, for scores along training (``diffpo.training.snapshots``).
    """
    objective = OBJECTIVES[cfg.objective]
    cfg = recipes.resolve(cfg, PartialState().num_processes)  # effective batch -> this run's accumulation
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    generators = (generators or Generators()).to(accelerator.device)
    work_dir.mkdir(parents=True, exist_ok=True)
    configure_unet(unet, cfg.gradient_checkpointing, cfg.attention)
    if cfg.lora_rank:
        add_lora(unet, cfg)
    reference = Reference(unet, objective.reference, cfg, accelerator.device)
    unet.train()
    optimizer = make_optimizer(unet.parameters(), cfg.optimizer, cfg.learning_rate, cfg.weight_decay)
    lr_scheduler = get_scheduler(
        cfg.lr_schedule,
        optimizer=optimizer,
        num_warmup_steps=int(cfg.lr_warmup_fraction * cfg.steps) * accelerator.num_processes,
        num_training_steps=cfg.steps * accelerator.num_processes,
    )

    start = 0
    metrics_path = work_dir / "metrics.csv"
    if accelerator.is_main_process:  # what a killed run was writing: half checkpoints and pool files
        remove_stale_in(work_dir)
        remove_stale_in(work_dir / "pool")
    resumed = _latest_checkpoint(work_dir, fingerprint)
    if resumed:
        start, ckpt = resumed
        unet.load_state_dict(load_file(ckpt / "unet.safetensors"))
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
        lr_scheduler.load_state_dict(torch.load(ckpt / "lr_scheduler.pt", weights_only=True))
        if accelerator.is_main_process:
            _truncate_metrics(metrics_path, start)
        accelerator.print(f"resuming from {ckpt} (step {start} of {cfg.steps})")
    elif accelerator.is_main_process:
        for stale in [*work_dir.glob("checkpoint-*"), work_dir / "pool", work_dir / "snapshots"]:
            shutil.rmtree(stale, ignore_errors=True)  # another configuration's: never resume from them
        metrics_path.unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)

    source = _source(cfg, cache, accelerator, generators, work_dir)
    n_micro = cfg.gradient_accumulation_steps
    progress = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=cfg.label or cfg.objective,
                    disable=not accelerator.is_local_main_process, mininterval=10)
    # Where the time goes, printed to the job's log (not to metrics.csv, which must be reproducible).
    seconds = {"generation": 0.0, "updates": 0.0, "checkpoints": 0.0}
    with open(metrics_path, "a", newline="") as metrics_file:
        writer = None
        for step in progress:
            tick = time.perf_counter()
            if cfg.round_updates and (step % cfg.round_updates == 0 or step == start):
                source.begin_round(step // cfg.round_updates, accelerator.unwrap_model(unet), reference)
            seconds["generation"] += time.perf_counter() - tick
            tick = time.perf_counter()
            logged: dict[str, float] = dict(source.round_metrics)
            for micro in range(n_micro):
                draw = (step * n_micro + micro) * accelerator.num_processes + accelerator.process_index
                with accelerator.accumulate(unet):
                    loss, metrics = source.loss(objective, unet, reference, noise_scheduler, step, micro, draw)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"{cfg.label or cfg.objective}: loss is {loss.item()} at step {step}; lower the learning "
                            f"rate{' or beta' if cfg.beta else ''}. Checkpoints so far are in {work_dir}."
                        )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(unet.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad()
                for key, value in metrics.items():
                    logged[key] = logged.get(key, 0.0) + float(accelerator.gather(value.reshape(1)).mean()) / n_micro
            row = {"step": step + 1, "lr": lr_scheduler.get_last_lr()[0], **logged}
            if accelerator.is_main_process:
                if writer is None:
                    writer = csv.DictWriter(metrics_file, fieldnames=list(row), lineterminator="\n")
                    if metrics_file.tell() == 0:
                        writer.writeheader()
                writer.writerow(row)
                metrics_file.flush()
            progress.set_postfix({k: f"{v:.4g}" for k, v in logged.items() if k in ("loss", "implicit_acc", "aaf_rate", "reward_mean")},
                                 refresh=False)
            seconds["updates"] += time.perf_counter() - tick
            tick = time.perf_counter()
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    _save_checkpoint(work_dir, step + 1, fingerprint, accelerator.unwrap_model(unet), optimizer, lr_scheduler, keep_checkpoints)
                    if snapshots:
                        _save_snapshot(work_dir, step + 1, accelerator.unwrap_model(unet), cfg)
            seconds["checkpoints"] += time.perf_counter() - tick
    accelerator.print(f"{cfg.label or cfg.objective}: {cfg.steps - start} steps; time "
                      + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    unet = accelerator.unwrap_model(unet)
    return (merge_lora(unet) if cfg.lora_rank else unet), metrics_path


def _save_checkpoint(work_dir, step, fingerprint, unet, optimizer, lr_scheduler, keep: int) -> None:
    with atomic_dir(work_dir / f"checkpoint-{step:07d}") as tmp:
        save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, tmp / "unet.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "fingerprint": fingerprint}))
    for old in sorted(work_dir.glob("checkpoint-*"))[:-keep]:
        shutil.rmtree(old)


def _save_snapshot(work_dir: Path, step: int, unet: UNet2DConditionModel, cfg: TrainConfig) -> None:
    """The policy at ``step`` as plain UNet weights (a LoRA run's adapters merged into a copy)."""
    plain = merge_lora(copy.deepcopy(unet)) if cfg.lora_rank else unet
    (work_dir / "snapshots").mkdir(exist_ok=True)
    with atomic_path(snapshot_path(work_dir / "snapshots", step)) as tmp:
        save_file({k: v.detach().float().contiguous() for k, v in plain.state_dict().items()}, tmp)


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the header and the rows of steps up to ``step``, the checkpoint resumed from.

    A kill can tear the last line: it is dropped when it lacks its newline or has the wrong
    number of fields (its first field may still read as a step number).
    """
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    header, rows = (lines[0], lines[1:]) if lines and lines[0].endswith("\n") else ("", [])
    if rows and (not rows[-1].endswith("\n") or rows[-1].count(",") != header.count(",")):
        rows.pop()
    kept = [header] + [ln for ln in rows if int(ln.split(",", 1)[0]) <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept))


def save_unet(unet: UNet2DConditionModel, out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        unet.save_pretrained(tmp, safe_serialization=True)
