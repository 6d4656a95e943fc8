"""One training loop for every method: objectives and data kinds are plugged in.

Reproducible and resumable by construction: the batch, noise, timesteps and caption
dropout of optimizer step ``s`` are drawn from generators seeded by (seed, s, micro-step,
process), so a run resumed from the checkpoint of step ``s`` continues exactly as an
uninterrupted run would, without saving random-number-generator state.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from diffpo.config import TrainConfig
from diffpo.data import EncodedPairs
from diffpo.files import atomic_dir, atomic_path
from diffpo.objectives import diffusion_dpo_loss, per_sample_mse, sft_loss


@dataclass(frozen=True)
class Objective:
    """How an objective consumes data: image batches or (winner, loser) pairs, with or without a reference."""

    pairs: bool
    reference: bool
    loss: Callable[..., tuple[torch.Tensor, dict]]


OBJECTIVES: dict[str, Objective] = {
    "sft": Objective(pairs=False, reference=False, loss=lambda cfg, policy, ref: sft_loss(policy)),
    "diffusion_dpo": Objective(
        pairs=True,
        reference=True,
        loss=lambda cfg, policy, ref: diffusion_dpo_loss(*policy.chunk(2), *ref.chunk(2), beta=cfg.beta, gamma=cfg.gamma),
    ),
}


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite."""


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class BatchSampler:
    """Deterministic batches: epoch permutations of the examples, indexed by global position."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def indices(self, draw: int) -> np.ndarray:
        """The examples of the ``draw``-th batch of the whole run (over steps, micro-steps, processes)."""
        start = draw * self.batch_size
        out = []
        while len(out) < self.batch_size:
            epoch, offset = divmod(start + len(out), self.n)
            take = min(self.batch_size - len(out), self.n - offset)
            out.extend(self._perm(epoch)[offset : offset + take])
        return np.asarray(out)


def run_fingerprint(cfg: TrainConfig, init: str, cache_dir: Path) -> str:
    """What a checkpoint must match to be resumed: settings, starting weights and data.

    ``init`` identifies the starting weights (see ``content_digest``); the cache is
    identified by its pair index and the first megabyte of its latents.
    """
    digest = hashlib.sha256(json.dumps({"cfg": asdict(cfg), "init": init}, sort_keys=True, default=str).encode())
    for name in ("cache.json", "pairs.parquet"):
        digest.update((cache_dir / name).read_bytes())
    with open(cache_dir / "latents_w.npy", "rb") as f:
        digest.update(f.read(1 << 20))
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
    keep_checkpoints: int = 2,
) -> tuple[UNet2DConditionModel, Path]:
    """Train ``unet`` with ``cfg.objective``; return it and the path of its per-step metrics CSV.

    ``unet`` is the starting policy; objectives with a reference use a frozen copy of it.
    """
    objective = OBJECTIVES[cfg.objective]
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    work_dir.mkdir(parents=True, exist_ok=True)
    reference = None
    if objective.reference:
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
        reference = copy.deepcopy(unet).requires_grad_(False).eval().to(accelerator.device)
        if weight_dtype != torch.float32:  # the frozen reference runs in the mixed-precision dtype
            reference.to(weight_dtype)
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    lr_scheduler = get_scheduler(
        cfg.lr_schedule,
        optimizer=optimizer,
        num_warmup_steps=int(cfg.lr_warmup_fraction * cfg.steps) * accelerator.num_processes,
        num_training_steps=cfg.steps * accelerator.num_processes,
    )

    start = 0
    metrics_path = work_dir / "metrics.csv"
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
        for stale in work_dir.glob("checkpoint-*"):
            shutil.rmtree(stale)  # another configuration's checkpoints: never resume from them
        metrics_path.unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)

    sampler = BatchSampler(cache.images("both" if cfg.images == "both" else "pairs"), cfg.batch_size, cfg.seed)
    empty = torch.from_numpy(np.asarray(cache.empty_prompt_embed, dtype=np.float32))
    n_micro = cfg.gradient_accumulation_steps
    progress = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=cfg.label or cfg.objective,
                    disable=not accelerator.is_local_main_process, mininterval=10)
    with open(metrics_path, "a", newline="") as metrics_file:
        writer = None
        for step in progress:
            logged: dict[str, float] = {}
            for micro in range(n_micro):
                draw = (step * n_micro + micro) * accelerator.num_processes + accelerator.process_index
                batch = _make_batch(cache, cfg, sampler, draw, empty, noise_scheduler, objective.pairs)
                with accelerator.accumulate(unet):
                    loss, metrics = _forward(cfg, objective, unet, reference, noise_scheduler, batch, accelerator.device)
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
            progress.set_postfix({k: f"{v:.4g}" for k, v in logged.items() if k in ("loss", "implicit_acc")}, refresh=False)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    _save_checkpoint(work_dir, step + 1, fingerprint, accelerator.unwrap_model(unet), optimizer, lr_scheduler, keep_checkpoints)
    return accelerator.unwrap_model(unet), metrics_path


def _make_batch(cache, cfg, sampler, draw, empty, noise_scheduler, pairs: bool) -> dict:
    idx = sampler.indices(draw)
    if pairs:
        latents = np.concatenate([cache.latents("w", idx), cache.latents("l", idx)])
        prompt = idx
    elif cfg.images == "both":
        n = len(cache)
        winners = idx < n
        latents = np.where(winners[:, None, None, None], cache.latents("w", idx % n), cache.latents("l", idx % n))
        prompt = idx % n
    else:
        latents = cache.latents("w", idx)
        prompt = idx
    generator = torch.Generator().manual_seed(_seed_for(cfg.seed, draw))
    b = len(idx)
    embeds = torch.from_numpy(cache.embeds(prompt).astype(np.float32))
    drop = torch.rand(b, generator=generator) < cfg.caption_dropout
    embeds[drop] = empty
    shape = latents.shape[1:]
    # Winner and loser share noise and timestep (DiffusionDPO: chunk(2)[0].repeat(2)).
    noise = torch.randn((b, *shape), generator=generator)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator)
    if pairs:
        noise, timesteps, embeds = noise.repeat(2, 1, 1, 1), timesteps.repeat(2), embeds.repeat(2, 1, 1)
    return {"latents": torch.from_numpy(latents.astype(np.float32)), "noise": noise, "timesteps": timesteps, "embeds": embeds}


def _forward(cfg, objective, unet, reference, noise_scheduler, batch, device) -> tuple[torch.Tensor, dict]:
    latents, noise, timesteps, embeds = (batch[k].to(device) for k in ("latents", "noise", "timesteps", "embeds"))
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    mse_policy = per_sample_mse(unet(noisy, timesteps, embeds).sample, target)
    mse_ref = None
    if reference is not None:
        with torch.no_grad():
            ref_dtype = next(reference.parameters()).dtype
            mse_ref = per_sample_mse(reference(noisy.to(ref_dtype), timesteps, embeds.to(ref_dtype)).sample, target)
    return objective.loss(cfg, mse_policy, mse_ref)


def _save_checkpoint(work_dir, step, fingerprint, unet, optimizer, lr_scheduler, keep: int) -> None:
    with atomic_dir(work_dir / f"checkpoint-{step:07d}") as tmp:
        save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, tmp / "unet.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "fingerprint": fingerprint}))
    for old in sorted(work_dir.glob("checkpoint-*"))[:-keep]:
        shutil.rmtree(old)


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [ln for ln in lines[1:] if int(ln.split(",", 1)[0]) <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept))


def save_unet(unet: UNet2DConditionModel, out_dir: Path) -> None:
    with atomic_dir(out_dir) as tmp:
        unet.save_pretrained(tmp, safe_serialization=True)

