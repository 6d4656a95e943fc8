"""Training objectives: small pure functions of per-sample denoising errors (FACTS.md section 2).

Errors are per-sample MEANS over (C, H, W), the convention every published beta assumes.
Every loss returns ``(loss, metrics)`` with scalar tensors for logging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean over C, H, W of (target - prediction)^2, in float32."""
    return (prediction.float() - target.float()).pow(2).mean(dim=tuple(range(1, prediction.ndim)))


def sft_loss(mse_policy: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Supervised fine-tuning: the plain denoising loss (SePPO's SFT^w on winning images)."""
    loss = mse_policy.mean()
    return loss, {"loss": loss.detach(), "mse_policy": loss.detach()}


def diffusion_dpo_loss(
    mse_policy_w: torch.Tensor,
    mse_policy_l: torch.Tensor,
    mse_ref_w: torch.Tensor,
    mse_ref_l: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict]:
    """Diffusion-DPO (Wallace et al. 2024), Salesforce convention:

    inside = -0.5 * beta * ((mse_θ(w) - mse_ref(w)) - (mse_θ(l) - mse_ref(l)))
    loss   = -logsigmoid(inside).mean()

    diffusers' research script drops the 0.5, so its beta 2500 is this beta 5000.
    """
    model_diff = mse_policy_w - mse_policy_l
    ref_diff = mse_ref_w - mse_ref_l
    inside = -0.5 * beta * (model_diff - ref_diff)
    loss = -F.logsigmoid(inside).mean()
    metrics = {
        "loss": loss.detach(),
        "mse_policy_w": mse_policy_w.detach().mean(),
        "mse_policy_l": mse_policy_l.detach().mean(),
        "mse_ref_w": mse_ref_w.detach().mean(),
        "mse_ref_l": mse_ref_l.detach().mean(),
        "implicit_acc": (inside.detach() > 0).float().mean(),
    }
    return loss, metrics
