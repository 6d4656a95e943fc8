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


def self_entropy(policy_term: torch.Tensor, gamma: float) -> torch.Tensor:
    """SEE-DPO's modifier (RECONSTRUCTED, FACTS.md section 2): the self-entropy bonus
    beta * gamma * H(pi) turns the implicit reward into beta(1+gamma) log pi - beta log pi_ref,
    so the policy's term of any DPO-style loss is scaled by (1 + gamma). gamma = 0 is the
    base method exactly ((1 + 0) * x == x in floating point)."""
    return (1.0 + gamma) * policy_term


def diffusion_dpo_loss(
    mse_policy_w: torch.Tensor,
    mse_policy_l: torch.Tensor,
    mse_ref_w: torch.Tensor,
    mse_ref_l: torch.Tensor,
    beta: float,
    gamma: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """Diffusion-DPO (Wallace et al. 2024), Salesforce convention:

    inside = -0.5 * beta * ((mse_θ(w) - mse_θ(l)) - (mse_ref(w) - mse_ref(l)))
    loss   = -logsigmoid(inside).mean()

    diffusers' research script drops the 0.5, so its beta 2500 is this beta 5000.
    ``gamma`` > 0 gives SEE-Diffusion-DPO (see ``self_entropy``).
    """
    model_diff = self_entropy(mse_policy_w - mse_policy_l, gamma)
    ref_diff = mse_ref_w - mse_ref_l
    inside = -0.5 * beta * (model_diff - ref_diff)
    loss = -F.logsigmoid(inside).mean()
    return loss, _pair_metrics(loss, inside, mse_policy_w, mse_policy_l, mse_ref_w, mse_ref_l)


AAF_MODES = ("sign", "indicator", "off")


def seppo_loss(
    mse_policy_w: torch.Tensor,
    mse_policy_l: torch.Tensor,
    mse_ref_w: torch.Tensor,
    mse_ref_l: torch.Tensor,
    beta: float,
    aaf: str = "sign",
) -> tuple[torch.Tensor, dict]:
    """SePPO (Appendix B.2): the "loser" is a sample of the reference checkpoint.

    pos = mse_θ(w) - mse_ref(w); the anchor-based adaptive flipper (AAF, ``sign``) sets
    sign = +1 where pos > 0 (the reference fits the anchor better: its sample is treated as
    good and both errors are pushed down) and -1 otherwise (ordinary DPO with the reference
    sample as loser). ``off``: sign = -1 always (the "w/o AAF" ablation); ``indicator``:
    sign = 0 where pos > 0, i.e. learn from the winner alone there (Table 4's variant).
    inside = -0.5 * beta * ((mse_θ(w) + sign mse_θ(l)) - (mse_ref(w) + sign mse_ref(l)))
    """
    if aaf not in AAF_MODES:
        raise ValueError(f"unknown AAF mode {aaf!r}; known: {', '.join(AAF_MODES)}")
    pos = mse_policy_w - mse_ref_w
    flip = {"sign": 1.0, "indicator": 0.0, "off": -1.0}[aaf]
    sign = torch.where(pos > 0, torch.full_like(pos, flip), torch.full_like(pos, -1.0)).detach()
    model_diff = mse_policy_w + sign * mse_policy_l
    ref_diff = mse_ref_w + sign * mse_ref_l
    inside = -0.5 * beta * (model_diff - ref_diff)
    loss = -F.logsigmoid(inside).mean()
    metrics = _pair_metrics(loss, inside, mse_policy_w, mse_policy_l, mse_ref_w, mse_ref_l)
    metrics["aaf_rate"] = (sign == -1).float().mean()  # paper Fig. 3: share judged a loser
    return loss, metrics


def _pair_metrics(loss, inside, mse_policy_w, mse_policy_l, mse_ref_w, mse_ref_l) -> dict:
    return {
        "loss": loss.detach(),
        "mse_policy_w": mse_policy_w.detach().mean(),
        "mse_policy_l": mse_policy_l.detach().mean(),
        "mse_ref_w": mse_ref_w.detach().mean(),
        "mse_ref_l": mse_ref_l.detach().mean(),
        "implicit_acc": (inside.detach() > 0).float().mean(),
    }
