"""Losses against values worked out by hand from FACTS.md section 2."""

import torch

from diffpo.objectives import diffusion_dpo_loss, per_sample_mse, self_entropy, seppo_loss, sft_loss


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
    assert torch.equal(self_entropy(errors[0], 0.0), errors[0])


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
