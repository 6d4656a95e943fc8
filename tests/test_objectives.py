"""Losses against values worked out by hand from FACTS.md section 2."""

import torch

from diffpo.methods.objectives import (
    d3po_loss,
    ddpo_loss,
    diffusion_dpo_loss,
    per_prompt_advantages,
    per_sample_mse,
    self_entropy,
    seppo_loss,
    sft_loss,
)


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_per_sample_mse_is_a_mean_over_channels_and_pixels():
    prediction = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])
    # sample 0: four errors of 1 -> 1; sample 1: one error of 2 among four pixels -> 4 / 4 = 1
    assert torch.equal(per_sample_mse(prediction, target), t(1.0, 1.0))
    target[1, 0, 0, 0] = 4.0
    assert torch.equal(per_sample_mse(prediction, target), t(1.0, 4.0))


def test_sft_loss_is_the_mean_denoising_error():
    loss, metrics = sft_loss(t(0.2, 0.4))
    assert abs(loss.item() - 0.3) < 1e-7
    assert abs(metrics["mse_policy"].item() - 0.3) < 1e-7


def test_diffusion_dpo_loss_by_hand():
    # pair 0: model_diff = 0.3 - 0.5 = -0.2, ref_diff = 0.4 - 0.45 = -0.05,
    #         inside = -0.5 * 10 * (-0.2 + 0.05) = 0.75, loss = log(1 + e^-0.75) = 0.386871
    # pair 1: model_diff = 0.2 - 0.1 = 0.1, ref_diff = 0, inside = -0.5, loss = log(1 + e^0.5) = 0.974077
    loss, metrics = diffusion_dpo_loss(t(0.3, 0.2), t(0.5, 0.1), t(0.4, 0.1), t(0.45, 0.1), beta=10.0)
    assert abs(loss.item() - (0.386871 + 0.974077) / 2) < 1e-5
    assert metrics["implicit_acc"].item() == 0.5
    assert abs(metrics["mse_policy_w"].item() - 0.25) < 1e-7
    assert abs(metrics["mse_ref_l"].item() - 0.275) < 1e-7


def test_diffusion_dpo_at_the_reference_is_log_2():
    # policy == reference: inside = 0 for any beta, loss = log 2, gradient pushes w down and l up
    mse_w = t(0.3, 0.6).requires_grad_()
    mse_l = t(0.5, 0.2).requires_grad_()
    loss, _ = diffusion_dpo_loss(mse_w, mse_l, t(0.3, 0.6), t(0.5, 0.2), beta=2000.0)
    assert abs(loss.item() - 0.693147) < 1e-6
    loss.backward()
    # d/d mse_w of -logsigmoid(-0.5 b (w - l)) at 0 = 0.5 * 0.5 * b / 2 (mean over 2 pairs) = 250
    assert torch.allclose(mse_w.grad, torch.full((2,), 250.0))
    assert torch.allclose(mse_l.grad, torch.full((2,), -250.0))


def test_see_diffusion_dpo_by_hand():
    # gamma 0.5 scales the policy term: pair 0 model_diff 1.5 * -0.2 = -0.3, minus ref -0.05 -> inside 1.25
    # pair 1: 1.5 * 0.1 = 0.15 -> inside -0.75; loss = (log(1+e^-1.25) + log(1+e^0.75)) / 2 = 0.694400
    loss, _ = diffusion_dpo_loss(t(0.3, 0.2), t(0.5, 0.1), t(0.4, 0.1), t(0.45, 0.1), beta=10.0, gamma=0.5)
    assert abs(loss.item() - 0.694400) < 1e-5


def test_gamma_zero_is_diffusion_dpo_bit_for_bit():
    torch.manual_seed(0)
    errors = [torch.rand(16) for _ in range(4)]
    base, _ = diffusion_dpo_loss(*errors, beta=2000.0)
    see, _ = diffusion_dpo_loss(*errors, beta=2000.0, gamma=0.0)
    assert torch.equal(base, see)
    assert torch.equal(self_entropy(errors[0], 0.0), torch.zeros(16))


def test_seppo_aaf_branches_by_hand():
    # pair 0: pos = 0.3 - 0.4 < 0 -> sign -1 (DPO): inside = -5 * ((0.3 - 0.5) - (0.4 - 0.45)) = 0.75
    # pair 1: pos = 0.2 - 0.1 > 0 -> AAF flips to +1: inside = -5 * ((0.2 + 0.1) - (0.1 + 0.3)) = 0.5
    #         indicator drops the loser: inside = -5 * (0.2 - 0.1) = -0.5
    #         off keeps DPO: inside = -5 * ((0.2 - 0.1) - (0.1 - 0.3)) = -1.5
    args = (t(0.3, 0.2), t(0.5, 0.1), t(0.4, 0.1), t(0.45, 0.3))
    expected = {"sign": 0.430474, "indicator": 0.680474, "off": 1.044142}
    for mode, value in expected.items():
        loss, metrics = seppo_loss(*args, beta=10.0, aaf=mode)
        assert abs(loss.item() - value) < 1e-5, mode
    assert seppo_loss(*args, beta=10.0, aaf="sign")[1]["aaf_rate"].item() == 0.5
    assert seppo_loss(*args, beta=10.0, aaf="off")[1]["aaf_rate"].item() == 1.0


def test_seppo_without_aaf_is_diffusion_dpo():
    torch.manual_seed(1)
    errors = [torch.rand(8) for _ in range(4)]
    assert torch.allclose(seppo_loss(*errors, beta=500.0, aaf="off")[0], diffusion_dpo_loss(*errors, beta=500.0)[0])


def test_unknown_aaf_mode_is_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown AAF mode 'maybe'"):
        seppo_loss(t(0.1), t(0.1), t(0.1), t(0.1), beta=1.0, aaf="maybe")


# Per-step log-probabilities of two pairs of steps (winner, loser) for D3PO / SPO.
LP_W, LP_L, REF_W, REF_L = t(0.05, -0.3), t(0.0, 0.2), t(0.0, 0.0), t(0.02, 0.0)


def test_d3po_loss_by_hand():
    # pair 0: ratios e^0.05 and e^-0.02 lie inside [0.9, 1.1]: inside = beta (0.05 + 0.02)
    # pair 1: e^-0.3 clamps to 0.9, e^0.2 to 1.1: inside = beta (log 0.9 - log 1.1) = -0.200671 beta
    # beta 1: (log(1 + e^-0.07) + log(1 + e^0.200671)) / 2 = 0.728634; beta 10: 1.268012
    loss, metrics = d3po_loss(LP_W, LP_L, REF_W, REF_L, beta=1.0, clip_range=0.1)
    assert abs(loss.item() - 0.728634) < 1e-5
    assert metrics["implicit_acc"].item() == 0.5
    assert abs(d3po_loss(LP_W, LP_L, REF_W, REF_L, beta=10.0, clip_range=0.1)[0].item() - 1.268012) < 1e-5


def test_d3po_clamp_stops_the_gradient_outside_the_trust_region():
    lp_w = LP_W.clone().requires_grad_()
    d3po_loss(lp_w, LP_L, REF_W, REF_L, beta=1.0, clip_range=0.1)[0].backward()
    assert lp_w.grad[0] < 0 and lp_w.grad[1] == 0  # pair 1's ratio is clamped: no gradient


def test_see_d3po_by_hand():
    # gamma 0.5 adds 0.5 log pi_θ after the clamp: pair 0 inside = 10 ((0.05 + 0.025) - (-0.02 + 0))
    # pair 1 inside = 10 ((log 0.9 - 0.15) - (log 1.1 + 0.1)); mean loss 2.422319
    loss, _ = d3po_loss(LP_W, LP_L, REF_W, REF_L, beta=10.0, clip_range=0.1, gamma=0.5)
    assert abs(loss.item() - 2.422319) < 1e-5


def test_gamma_zero_is_d3po_bit_for_bit():
    torch.manual_seed(2)
    lps = [torch.randn(32) * 0.1 for _ in range(4)]
    base = d3po_loss(*lps, beta=0.1, clip_range=0.1)[0]
    assert torch.equal(base, d3po_loss(*lps, beta=0.1, clip_range=0.1, gamma=0.0)[0])


def test_ddpo_clipped_surrogate_by_hand():
    # ratios e^0.1, e^-0.2, 1 with advantages 1, -1, 2 and clip 0.05:
    # max(-1.10517, -1.05) = -1.05; max(0.81873, 0.95) = 0.95; max(-2, -2) = -2 -> mean -0.7
    loss, metrics = ddpo_loss(t(0.1, -0.2, 0.0), t(0.0, 0.0, 0.0), t(1.0, -1.0, 2.0), clip_range=0.05)
    assert abs(loss.item() + 0.7) < 1e-6
    assert abs(metrics["clip_frac"].item() - 2 / 3) < 1e-6


def test_per_prompt_advantages_by_hand():
    # prompt 0: rewards 1, 3 -> mean 2, std 1 -> -1, 1; prompt 1: equal rewards -> 0;
    # prompt 2 has one sample: the batch's mean 5.8 and std sqrt(13.36) -> -0.218870
    adv = per_prompt_advantages(t(1.0, 3.0, 10.0, 10.0, 5.0), torch.tensor([0, 0, 1, 1, 2]))
    assert torch.allclose(adv, t(-1.0, 1.0, 0.0, 0.0, -0.218870), atol=1e-5)
