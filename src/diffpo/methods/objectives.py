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
    """SEE-DPO's modifier (RECONSTRUCTED, FACTS.md section 2), one function for every base method.

    A self-entropy bonus beta * gamma * H(pi) turns the implicit reward into
    beta (1 + gamma) log pi - beta log pi_ref: the policy's term of the base objective's
    log-ratio gains gamma times itself. This returns that extra term, which each objective adds
    to its (policy - reference) difference. gamma = 0 adds exactly +0.0, so the base method is
    reproduced bit for bit.
    """
    return gamma * policy_term


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
    ``gamma`` != 0 gives SEE-Diffusion-DPO: the policy term becomes (1 + gamma)(mse_θ(w) - mse_θ(l)).
    """
    model_diff = mse_policy_w - mse_policy_l
    ref_diff = mse_ref_w - mse_ref_l
    inside = -0.5 * beta * (model_diff - ref_diff + self_entropy(model_diff, gamma))
    loss = -F.logsigmoid(inside).mean()
    return loss, _pair_metrics(loss, inside, mse_policy_w, mse_policy_l, mse_ref_w, mse_ref_l)


def d3po_loss(
    log_prob_w: torch.Tensor,
    log_prob_l: torch.Tensor,
    ref_log_prob_w: torch.Tensor,
    ref_log_prob_l: torch.Tensor,
    beta: float,
    clip_range: float,
    gamma: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """D3PO (Yang et al. 2024) per denoising step; SPO uses it with its step-wise winner and loser.

    ratio = clamp(exp(log pi_θ - log pi_ref), 1 - eps, 1 + eps) per step, and
    loss  = -logsigmoid(beta log ratio_w - beta log ratio_l), averaged over steps and pairs.
    SEE (``gamma``): the clamp is D3PO's trust region on the policy/reference ratio; the
    self-entropy term gamma * log pi_θ is added after it. Clamping after the term would zero the
    gradient from the first step whenever |gamma log pi_θ| > log(1 + eps), since per-dimension
    log-densities of the small late-step variances are far from 0.
    """
    def log_ratio(policy, ref):
        clamped = torch.log(torch.clamp(torch.exp(policy - ref), 1 - clip_range, 1 + clip_range))
        return clamped + self_entropy(policy, gamma)

    inside = beta * (log_ratio(log_prob_w, ref_log_prob_w) - log_ratio(log_prob_l, ref_log_prob_l))
    loss = -F.logsigmoid(inside).mean()
    return loss, {
        "loss": loss.detach(),
        "implicit_acc": (inside.detach() > 0).float().mean(),
        "log_ratio_w": (log_prob_w - ref_log_prob_w).detach().mean(),
        "log_ratio_l": (log_prob_l - ref_log_prob_l).detach().mean(),
        "clip_frac": ((log_prob_w - ref_log_prob_w).abs() > clip_range).float().mean().detach(),
    }


def ddpo_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict]:
    """DDPO (Black et al. 2024): PPO's clipped surrogate on per-step log-probabilities.

    ratio = exp(log pi_θ - log pi_old); loss = mean(max(-A ratio, -A clamp(ratio, 1 - c, 1 + c))).
    No reference model: the trust region is the clip around the sampling policy.
    """
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    return loss, {
        "loss": loss.detach(),
        "approx_kl": (0.5 * (log_prob - old_log_prob) ** 2).mean().detach(),
        "clip_frac": ((ratio - 1).abs() > clip_range).float().mean().detach(),
    }


def per_prompt_advantages(rewards: torch.Tensor, prompt_ids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """DDPO's per-prompt normalisation: (r - mean) / (std + eps) over the samples of each prompt.

    A prompt with a single sample in the batch falls back to the batch's statistics.
    """
    advantages = torch.empty_like(rewards)
    for prompt in prompt_ids.unique():
        mask = prompt_ids == prompt
        group = rewards[mask] if mask.sum() > 1 else rewards
        advantages[mask] = (rewards[mask] - group.mean()) / (group.std(unbiased=False) + eps)
    return advantages


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
