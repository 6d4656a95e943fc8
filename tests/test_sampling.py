"""The log-probability DDIM step against an independently computed Gaussian density."""

import torch
from torch.distributions import Normal

from diffpo.models.loading import build_noise_scheduler
from diffpo.models.sampling import ddim_step_with_logprob

SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def test_logprob_step_matches_diffusers_mean_and_a_gaussian_density():
    scheduler = build_noise_scheduler(SCHEDULER)
    scheduler.set_timesteps(20)
    torch.manual_seed(0)
    x_t, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    for t in (int(scheduler.timesteps[0]), int(scheduler.timesteps[10]), int(scheduler.timesteps[-1])):
        x_prev, log_prob = ddim_step_with_logprob(scheduler, eps, t, x_t, eta=1.0, generator=torch.Generator().manual_seed(1))
        # diffusers' own DDIM step with zero noise gives the mean; its variance gives the std
        mean = scheduler.step(eps, t, x_t, eta=1.0, variance_noise=torch.zeros_like(x_t)).prev_sample
        std = scheduler._get_variance(t, t - 50) ** 0.5
        expected = Normal(mean, std).log_prob(x_prev).mean(dim=(1, 2, 3))
        assert torch.allclose(log_prob, expected, atol=1e-4), t
        # given x_prev, the same density is returned (training re-evaluates rollouts)
        _, again = ddim_step_with_logprob(scheduler, eps, t, x_t, eta=1.0, x_prev=x_prev)
        assert torch.equal(again, log_prob)


def test_the_sampled_step_is_most_likely_at_its_mean():
    scheduler = build_noise_scheduler(SCHEDULER)
    scheduler.set_timesteps(20)
    x_t, eps = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    t = int(scheduler.timesteps[5])
    mean = scheduler.step(eps, t, x_t, eta=1.0, variance_noise=torch.zeros_like(x_t)).prev_sample
    _, at_mean = ddim_step_with_logprob(scheduler, eps, t, x_t, x_prev=mean)
    _, off_mean = ddim_step_with_logprob(scheduler, eps, t, x_t, x_prev=mean + 0.1)
    assert (at_mean > off_mean).all()


def test_per_sample_timesteps_equal_one_step_each():
    scheduler = build_noise_scheduler(SCHEDULER)
    scheduler.set_timesteps(10)
    torch.manual_seed(3)
    x_t, eps, x_prev = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)
    ts = scheduler.timesteps[[0, 4, 9]]
    _, batched = ddim_step_with_logprob(scheduler, eps, ts, x_t, x_prev=x_prev)
    for i, t in enumerate(ts):
        _, single = ddim_step_with_logprob(scheduler, eps[i : i + 1], int(t), x_t[i : i + 1], x_prev=x_prev[i : i + 1])
        assert torch.allclose(batched[i], single[0], atol=1e-6)
