"""Losses against values worked out by hand from FACTS.md section 2."""

import torch

from diffpo.objectives import diffusion_dpo_loss, per_sample_mse, sft_loss


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
