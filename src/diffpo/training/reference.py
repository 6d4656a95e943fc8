"""LoRA adapters (added with a seeded initialisation, merged into a plain UNet) and the
reference model of an objective."""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
from diffusers import UNet2DConditionModel

from diffpo.settings.configs import TrainConfig


def seed_for(*parts: int) -> int:
    """A seed that is a function of (run seed, purpose, step or round, process): every batch, noise
    and generation of a run can be drawn again on resumption."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def add_lora(unet: UNet2DConditionModel, cfg: TrainConfig) -> None:
    """LoRA adapters (peft) on the attention projections; every other weight is frozen.

    B starts at zero, so the adapted UNet starts exactly at the base model (the reference).
    A's Gaussian initialisation is drawn from the run's seed: a rerun from nothing trains the
    same adapters.
    """
    from peft import LoraConfig

    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(cfg.seed, 6))
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
