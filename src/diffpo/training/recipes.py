"""The papers' batch recipes, computed from the number of processes a run actually has.

Diffusion-DPO and SePPO train on an effective batch of 2,048 pairs per optimizer update
(Diffusion-DPO: 16 GPUs x 1 x accumulation 128; SePPO: 8 GPUs x 1 x 256; FACTS.md
section 2). Written as a fixed accumulation, the same settings give 1,024 pairs on 8 GPUs,
so the paper profile states the effective batch (``effective_batch``) and the accumulation
is derived here: effective_batch / (processes x per-device batch), an error if it does not
divide. The online methods (D3PO, SPO, DDPO) keep their own codebases' fixed accumulation.
"""

from __future__ import annotations

import dataclasses

from diffpo.errors import UserError


class RecipeError(UserError, ValueError):
    """A recipe that cannot be met on this number of processes; the message says what would."""


def accumulation_steps(effective_batch: int, num_processes: int, batch_size: int) -> int:
    """Gradient accumulation giving ``effective_batch`` examples per optimizer update."""
    per_micro_step = num_processes * batch_size
    if effective_batch % per_micro_step:
        divisors = [n for n in range(1, 65) if effective_batch % (n * batch_size) == 0]
        raise RecipeError(
            f"effective_batch {effective_batch} is not a multiple of processes x batch_size = {num_processes} x "
            f"{batch_size} = {per_micro_step}: run on a number of processes that divides it "
            f"({', '.join(map(str, divisors[:12]))}, ...) or change batch_size")
    return effective_batch // per_micro_step


def resolve(cfg, num_processes: int):
    """``cfg`` (a TrainConfig) with its gradient accumulation for ``num_processes`` processes."""
    if cfg.effective_batch is None:
        return cfg
    steps = accumulation_steps(cfg.effective_batch, num_processes, cfg.batch_size)
    return dataclasses.replace(cfg, gradient_accumulation_steps=steps, effective_batch=None)


def effective_batch(cfg, num_processes: int) -> int:
    """Examples per optimizer update of a resolved TrainConfig."""
    return cfg.batch_size * cfg.gradient_accumulation_steps * num_processes
