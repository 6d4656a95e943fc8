"""One training loop for every method: objectives and sample sources are plugged in.

A method (params.yaml ``methods``) is an objective (``OBJECTIVES``) fed by one of three
sources (``TrainConfig.data``): images or pairs from the encoded data set, pairs whose loser
the round's reference checkpoint generates (SePPO, SPIN-Diffusion), or rollouts of the
policy (D3PO, SPO, DDPO). Generating is the expensive part, so it happens once per *round*
of ``round_updates`` optimizer steps, in large batches, and serves the whole round.

Reproducible and resumable by construction: the batch, noise, timesteps and caption
dropout of optimizer step ``s`` (and the generation of round ``r``) are drawn from
generators seeded by (seed, s or r, micro-step, process), so a run resumed from the
checkpoint of step ``s`` continues exactly as an uninterrupted run would, without saving
random-number-generator state.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from diffpo import recipes
from diffpo.config import TrainConfig
from diffpo.data import EncodedPairs
from diffpo.devices import configure_unet, make_optimizer
from diffpo.errors import UserError
from diffpo.files import atomic_dir, atomic_path, remove_stale_in
from diffpo.objectives import (
    d3po_loss,
    ddpo_loss,
    diffusion_dpo_loss,
    per_prompt_advantages,
    per_sample_mse,
    seppo_loss,
    sft_loss,
)


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


@dataclass
class Generators:
    """What the generating sources need besides the policy: a DDIM scheduler for sampling, the
    VAE (to look at images), and the judge of rollouts (a reward scorer, or SPO's step-aware model)."""

    scheduler: object = None
    vae: object = None
    reward: object = None
    step_scorer: object = None

    def to(self, device) -> "Generators":
        for part in (self.vae, self.reward, self.step_scorer):
            if part is not None and hasattr(part, "to"):
                part.to(device)
        return self


class TrainingDiverged(UserError, FloatingPointError):
    """The loss became NaN or infinite (the message says which settings to lower)."""


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


def run_fingerprint(cfg: TrainConfig, init: str, cache_dir: Path, command: str) -> str:
    """What a checkpoint must match to be resumed: code, settings, starting weights and data.

    ``command`` is the CLI subcommand training (``train``, ``pretrain-unet``): the package files
    it runs are hashed where diffpo is imported from (``workflow.code_digest``), so a fixed bug
    is never resumed from a checkpoint of the old code. ``init`` identifies the starting
    weights (see ``content_digest``); the cache is identified by its layout, pair index and the
    first megabyte of its latents (``EncodedPairs.fingerprint_bytes``).
    """
    from diffpo.workflow import code_digest

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
    ``work_dir/snapshots/``, for scores along training (``snapshot_steps``).
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


# ---------------------------------------------------------------- LoRA and the reference
def add_lora(unet: UNet2DConditionModel, cfg: TrainConfig) -> None:
    """LoRA adapters (peft) on the attention projections; every other weight is frozen.

    B starts at zero, so the adapted UNet starts exactly at the base model (the reference).
    A's Gaussian initialisation is drawn from the run's seed: a rerun from nothing trains the
    same adapters.
    """
    from peft import LoraConfig

    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_for(cfg.seed, 6))
        unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, init_lora_weights="gaussian",
                                    target_modules=list(cfg.lora_targets)))


def merge_lora(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A plain UNet with the adapters folded into its weights (what sampling loads)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in unet.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    state = {k.replace(".base_layer", ""): v for k, v in unet.state_dict().items() if "lora_" not in k}
    plain = UNet2DConditionModel.from_config(unet.config)
    plain.load_state_dict(state)
    return plain


class Reference:
    """The reference model of an objective: a frozen copy of the starting UNet (or of the
    round's pool checkpoint), or, for LoRA runs, the policy with its adapters disabled."""

    def __init__(self, unet: UNet2DConditionModel, needed: bool, cfg: TrainConfig, device):
        self.policy, self.copy = unet, None
        self.generating = cfg.losers == "reference"
        if (needed or self.generating) and not cfg.lora_rank:
            weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
            self.copy = copy.deepcopy(unet).requires_grad_(False).eval().to(device)
            if weight_dtype != torch.float32 and not self.generating:  # a frozen reference runs in the mixed-precision dtype
                self.copy.to(weight_dtype)

    def load(self, state: dict) -> None:
        self.copy.load_state_dict(state)

    @contextlib.contextmanager
    def model(self):
        if self.copy is not None:
            yield self.copy
            return
        self.policy.disable_adapters()
        try:
            yield self.policy
        finally:
            self.policy.enable_adapters()


# ---------------------------------------------------------------- sources
def _source(cfg, cache, accelerator, generators, work_dir):
    if cfg.data == "rollouts":
        return RolloutSource(cfg, cache, accelerator, generators)
    return DataSource(cfg, cache, accelerator, generators, work_dir)


class DataSource:
    """Images or pairs of the encoded data set; with ``losers: reference`` the loser of each
    pair is generated by the round's reference checkpoint (SePPO, SPIN-Diffusion).

    The pool: the policy's weights at the start of every round are saved under
    ``work/pool``; the round's reference is the initial one, the latest, or one drawn
    uniformly (``cfg.reference``), and generates the losers of every pair of the round in
    large batches, once.
    """

    def __init__(self, cfg, cache, accelerator, generators, work_dir):
        self.cfg, self.cache, self.accelerator, self.generators = cfg, cache, accelerator, generators
        kind = "both" if cfg.images == "both" else "pairs"
        self.sampler = BatchSampler(cache.images(kind), cfg.batch_size, cfg.seed)
        self.empty = torch.from_numpy(np.asarray(cache.empty_prompt_embed, dtype=np.float32))
        self.pool_dir = Path(work_dir) / "pool"
        self.losers: dict[int, torch.Tensor] = {}
        self.round_metrics: dict[str, float] = {}

    def begin_round(self, index: int, policy, reference: Reference) -> None:
        if not reference.generating:
            return
        cfg, acc = self.cfg, self.accelerator
        start = index * cfg.round_updates
        pool_file = self.pool_dir / f"step-{start:07d}.safetensors"
        if acc.is_main_process and not pool_file.exists():
            self.pool_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(pool_file) as tmp:
                save_file({k: v.detach().contiguous().cpu() for k, v in policy.state_dict().items()}, tmp)
        acc.wait_for_everyone()
        choice = {"initial": 0, "latest": index,
                  "uniform": int(np.random.default_rng([cfg.seed, 3, index]).integers(0, index + 1))}[cfg.reference]
        reference.load(load_file(self.pool_dir / f"step-{choice * cfg.round_updates:07d}.safetensors"))
        n_micro, n_proc = cfg.gradient_accumulation_steps, acc.num_processes
        draws = [(s * n_micro + m) * n_proc + acc.process_index
                 for s in range(start, min(start + cfg.round_updates, cfg.steps)) for m in range(n_micro)]
        idx = np.concatenate([self.sampler.indices(d) for d in draws])
        embeds = torch.from_numpy(self.cache.embeds(idx).astype(np.float32))
        shape = self.cache.latents("w", idx[:1]).shape[1:]
        generator = torch.Generator().manual_seed(_seed_for(cfg.seed, 2, index, acc.process_index))
        noise = torch.randn((len(idx), *shape), generator=generator)
        # Generation is most of a round's time; bf16 autocast (where set) roughly halves it on a
        # bf16-capable CPU, and the losers only need to look like the reference's samples.
        precision = torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=cfg.generation_precision == "bf16")
        with reference.model() as ref_unet, precision:
            latents = _generate_losers(ref_unet, self.generators.scheduler, noise, embeds, self.empty[None], cfg)
        self.losers = dict(zip(draws, latents.split(cfg.batch_size)))
        self.round_metrics = {"reference_step": float(choice * cfg.round_updates)}

    def loss(self, objective, unet, reference, noise_scheduler, step, micro, draw):
        batch = self._batch(draw, noise_scheduler)
        return _forward(self.cfg, objective, unet, reference, noise_scheduler, batch, self.accelerator.device)

    def _batch(self, draw, noise_scheduler) -> dict:
        cfg, cache = self.cfg, self.cache
        idx = self.sampler.indices(draw)
        pairs = cfg.data == "pairs"
        generator = torch.Generator().manual_seed(_seed_for(cfg.seed, draw))
        b = len(idx)
        if cfg.images == "both":
            n = len(cache)
            winners = idx < n
            latents = np.where(winners[:, None, None, None], cache.latents("w", idx % n), cache.latents("l", idx % n))
            idx = idx % n
        elif cfg.images == "random":  # SePPO^r: a random side of each pair
            side = torch.rand(b, generator=generator).numpy() < 0.5
            latents = np.where(side[:, None, None, None], cache.latents("w", idx), cache.latents("l", idx))
        else:
            latents = cache.latents("w", idx)
        latents = torch.from_numpy(np.asarray(latents, dtype=np.float32))
        if pairs:
            loser = self.losers[draw] if cfg.losers == "reference" else torch.from_numpy(cache.latents("l", idx).astype(np.float32))
            latents = torch.cat([latents, loser])
        embeds = torch.from_numpy(cache.embeds(idx).astype(np.float32))
        drop = torch.rand(b, generator=generator) < cfg.caption_dropout
        embeds[drop] = self.empty
        shape = latents.shape[1:]
        # Winner and loser share noise and timestep (DiffusionDPO: chunk(2)[0].repeat(2)).
        noise = torch.randn((b, *shape), generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator)
        if pairs:
            noise, timesteps, embeds = noise.repeat(2, 1, 1, 1), timesteps.repeat(2), embeds.repeat(2, 1, 1)
        return {"latents": latents, "noise": noise, "timesteps": timesteps, "embeds": embeds}


def _generate_losers(ref_unet, scheduler, noise, embeds, uncond, cfg) -> torch.Tensor:
    from diffpo.rollouts import generate_losers

    if scheduler is None:
        raise ValueError(f"{cfg.label or cfg.objective}: generating losers needs a sampling scheduler (Generators.scheduler)")
    return generate_losers(ref_unet, scheduler, noise, embeds, uncond, cfg.sampler_steps, cfg.guidance_scale,
                           cfg.generation_batch_size)


def _forward(cfg, objective, unet, reference, noise_scheduler, batch, device) -> tuple[torch.Tensor, dict]:
    latents, noise, timesteps, embeds = (batch[k].to(device) for k in ("latents", "noise", "timesteps", "embeds"))
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    mse_policy = per_sample_mse(unet(noisy, timesteps, embeds).sample, target)
    mse_ref = None
    if objective.reference:
        with torch.no_grad(), reference.model() as ref:
            ref_dtype = next(ref.parameters()).dtype
            mse_ref = per_sample_mse(ref(noisy.to(ref_dtype), timesteps, embeds.to(ref_dtype)).sample, target)
    return objective.loss(cfg, mse_policy, mse_ref, {})


class RolloutSource:
    """Online methods: each round the policy samples chains for ``rollout_prompts`` prompts
    (drawn from the data's prompts) and the round's updates train on minibatches of their
    steps, re-evaluated under the current policy with the sampling guidance.

    D3PO: two chains per prompt from one initial noise, the reward scorer picks the winner.
    DDPO: ``samples_per_prompt`` chains per prompt, advantages normalised per prompt.
    SPO: branching chains; the step-aware model picks a winner and a loser per step.
    """

    def __init__(self, cfg, cache, accelerator, generators):
        self.cfg, self.cache, self.accelerator, self.g = cfg, cache, accelerator, generators
        if generators.scheduler is None or (cfg.objective != "spo" and generators.reward is None):
            raise ValueError(f"{cfg.label or cfg.objective}: rollouts need a DDIM scheduler and a reward scorer")
        if cfg.objective == "spo" and (generators.step_scorer is None or generators.vae is None):
            raise ValueError(f"{cfg.label or cfg.objective}: SPO needs the step-aware preference model and the VAE")
        self.uncond = torch.from_numpy(np.asarray(cache.empty_prompt_embed, dtype=np.float32))[None]
        self.captions = cache.captions()
        self.round_metrics: dict[str, float] = {}
        self.index = -1

    def begin_round(self, index: int, policy, reference: Reference) -> None:
        cfg, acc = self.cfg, self.accelerator
        rank = acc.process_index
        rng = np.random.default_rng([cfg.seed, 4, index, rank])
        prompts = self.cache.prompt_index[rng.integers(0, len(self.cache), cfg.rollout_prompts)]
        generator = torch.Generator().manual_seed(_seed_for(cfg.seed, 5, index, rank))
        shape = self.cache.latents("w", np.arange(1)).shape[1:]
        embeds_of = lambda ids: torch.from_numpy(np.asarray(self.cache.prompt_embeds[ids], dtype=np.float32))
        policy.eval()
        if cfg.objective == "spo":
            from diffpo.rollouts import branch_trajectories

            noise = torch.randn((len(prompts), *shape), generator=generator)
            found = branch_trajectories(policy, self.g.scheduler, self.g.vae, self.g.step_scorer, noise, embeds_of(prompts),
                                        self.uncond, self.captions, prompts, cfg, generator)
            if not len(found):
                raise TrainingDiverged(f"{cfg.label or cfg.objective}: no step of round {index} passed score_gap "
                                       f"{cfg.score_gap} over {found.candidates_scored} candidates; lower score_gap")
            self.data = found
            self.round_metrics = {"step_pairs": float(len(found)), "score_gap_mean": float(found.gaps.mean())}
        else:
            from diffpo.rollouts import Trajectories, chain_generators, gather_chains, sample_trajectories

            # The round's rollouts are one global set (rollout_prompts per process), each chain seeded
            # by its global position: every process trains on all of them, and P processes compute
            # what one process with P times the prompts would (tests/test_distributed.py).
            copies, n_proc, mine = (2 if cfg.objective == "d3po" else cfg.samples_per_prompt), acc.num_processes, cfg.rollout_prompts
            every = self.cache.prompt_index[np.random.default_rng([cfg.seed, 4, index]).integers(0, len(self.cache), mine * n_proc)]
            prompts = every[rank * mine:(rank + 1) * mine]
            gens = chain_generators(cfg.seed, index, [c * mine * n_proc + rank * mine + j for c in range(copies) for j in range(mine)])
            if cfg.objective == "d3po":  # one initial noise for both chains: they part through eta > 0
                noise = torch.stack([torch.randn(shape, generator=g) for g in gens[:mine]]).repeat(2, 1, 1, 1)
            else:
                noise = torch.stack([torch.randn(shape, generator=g) for g in gens])
            chain_prompts = np.tile(prompts, copies)
            traj = sample_trajectories(policy, self.g.scheduler, noise, embeds_of(chain_prompts), self.uncond,
                                       cfg.sampler_steps, cfg.guidance_scale, cfg.eta, gens, cfg.generation_batch_size)
            rewards = torch.from_numpy(self._rewards(traj.latents[:, -1], chain_prompts)).float()
            every_chain = lambda t: gather_chains(acc.gather, t, copies, acc.device)
            traj = Trajectories(every_chain(traj.latents), every_chain(traj.log_probs), traj.timesteps)
            prompts, chain_prompts, rewards = every, np.tile(every, copies), every_chain(rewards)
            self.data = {"traj": traj, "prompts": chain_prompts, "rewards": rewards}
            self.round_metrics = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std())}
            if cfg.objective == "d3po":
                n = len(prompts)
                first_wins = rewards[:n] >= rewards[n:]
                order = torch.arange(n)
                self.data["winner"] = torch.where(first_wins, order, order + n)
                self.data["loser"] = torch.where(first_wins, order + n, order)
                self.round_metrics["reward_gap"] = float((rewards[:n] - rewards[n:]).abs().mean())
            else:
                self.data["advantages"] = per_prompt_advantages(rewards, torch.from_numpy(chain_prompts))
        policy.train()
        self.index = index

    def _rewards(self, latents: torch.Tensor, prompts: np.ndarray) -> np.ndarray:
        from diffpo.models import decode_latents

        images = decode_latents(self.g.vae, latents).numpy()
        return self.g.reward.score(images, [self.captions[i] for i in prompts], batch_size=self.cfg.generation_batch_size)

    def loss(self, objective, unet, reference, noise_scheduler, step, micro, draw):
        from diffpo.rollouts import step_log_probs

        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 6, draw])
        n = len(self.data) if cfg.objective == "spo" else len(self.data["prompts"]) // (2 if cfg.objective == "d3po" else 1)
        pick = rng.choice(n, size=min(cfg.batch_size, n), replace=False)
        embeds_of = lambda ids: torch.from_numpy(np.asarray(self.cache.prompt_embeds[ids], dtype=np.float32))
        device = self.accelerator.device
        extra = {}
        if cfg.objective == "spo":
            d = self.data
            x_t = torch.cat([d.x_t[pick], d.x_t[pick]])
            x_prev = torch.cat([d.x_w[pick], d.x_l[pick]])
            t = torch.cat([d.t[pick], d.t[pick]])
            embeds = embeds_of(np.concatenate([d.prompts[pick], d.prompts[pick]]))
        else:
            traj = self.data["traj"]
            n_steps = traj.log_probs.shape[1]
            k = max(1, round(cfg.timestep_fraction * n_steps))
            steps = np.stack([rng.choice(n_steps, size=k, replace=False) for _ in pick])  # (B, k)
            if cfg.objective == "d3po":  # the same steps of the winner's and the loser's chain
                chains = np.concatenate([self.data["winner"].numpy()[pick], self.data["loser"].numpy()[pick]])
                steps = np.concatenate([steps, steps])
            else:
                chains = pick
            # rows are (winner steps..., loser steps...) for D3PO, so the loss's chunk(2) splits them
            rows, cols = np.repeat(chains, k), steps.reshape(-1)
            x_t = traj.latents[rows, cols]
            x_prev = traj.latents[rows, cols + 1]
            t = traj.timesteps[cols]
            embeds = embeds_of(self.data["prompts"][rows])
            if cfg.objective == "ddpo":
                extra = {"old_log_probs": traj.log_probs[rows, cols].to(device),
                         "advantages": self.data["advantages"][rows].to(device)}
        x_t, x_prev, embeds = x_t.to(device), x_prev.to(device), embeds.to(device)
        uncond = self.uncond.to(device)
        policy_lp = step_log_probs(unet, self.g.scheduler, x_t, t, x_prev, embeds, uncond, cfg.guidance_scale, cfg.eta)
        ref_lp = None
        if objective.reference:
            with torch.no_grad(), reference.model() as ref:
                ref_lp = step_log_probs(ref, self.g.scheduler, x_t, t, x_prev, embeds, uncond, cfg.guidance_scale, cfg.eta)
        return objective.loss(cfg, policy_lp, ref_lp, extra)


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
    with atomic_path(work_dir / "snapshots" / f"step-{step:07d}.safetensors") as tmp:
        save_file({k: v.detach().float().contiguous() for k, v in plain.state_dict().items()}, tmp)


def snapshot_steps(folder: Path) -> dict[int, Path]:
    """The snapshots in ``folder`` by step."""
    return {int(p.stem.split("-")[1]): p for p in sorted(Path(folder).glob("step-*.safetensors"))}


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

