"""Sampling with classifier-free guidance (DDIM by default), seeded per prompt or once per run."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from diffpo.settings.configs import SampleConfig
from diffpo.models.devices import model_dtype
from diffpo.models.loading import Pipeline, decode_latents, encode_prompts


def initial_noise(n_prompts: int, cfg: SampleConfig, shape: tuple[int, ...], replicate: int = 0) -> torch.Tensor:
    """Starting latents, drawn on the CPU in float32 so every device starts from the same noise.

    ``replicate`` is the training seed of the model sampled: each seed gets its own noise, and
    every model of that seed (the base included) the same, so differences stay paired.
    ``per_prompt`` (Diffusion-DPO's evaluation seeds per prompt): prompt i's images come from a
    generator seeded by (seed, replicate, i), distinct per prompt and seed and independent of
    the batch size. ``global`` (SePPO's released script): one generator seeded once by
    (seed, replicate) for the whole run.
    """
    generator = torch.Generator().manual_seed(noise_seed(cfg.seed, replicate))
    noise = []
    for prompt in range(n_prompts):
        if cfg.seed_policy == "per_prompt":
            generator.manual_seed(noise_seed(cfg.seed, replicate, prompt))
        noise.append(torch.randn((cfg.images_per_prompt, *shape), generator=generator))
    return torch.cat(noise)


def noise_seed(*parts: int) -> int:
    """A 63-bit generator seed from integers (numpy's SeedSequence: no two tuples collide in practice)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def guided_eps(unet, latents: torch.Tensor, t, prompt_embeds: torch.Tensor, uncond_embeds: torch.Tensor,
               guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance, in one batched forward: eps_u + g (eps_c - eps_u).

    The same function drives sampling and the per-step log-probabilities of training, so a
    policy is trained under the guidance it is sampled with (FACTS.md section 2).
    """
    dtype = model_dtype(unet)  # not unet.dtype: a DDP-wrapped UNet has none
    context = torch.cat([uncond_embeds.expand_as(prompt_embeds), prompt_embeds]).to(latents.device, dtype)
    t = torch.cat([t, t]) if torch.is_tensor(t) and t.ndim else t
    eps_uncond, eps_text = unet(torch.cat([latents, latents]).to(dtype), t, context).sample.chunk(2)
    return (eps_uncond + guidance_scale * (eps_text - eps_uncond)).float()


@torch.no_grad()
def denoise(
    unet,
    scheduler,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor,
    num_inference_steps: int,
    guidance_scale: float,
) -> torch.Tensor:
    """The reverse process with classifier-free guidance; returns clean latents.

    Any diffusers scheduler (DDIM with eta = 0, PNDM, Euler, DPM-Solver) drives the loop.
    """
    device = unet.device
    scheduler.set_timesteps(num_inference_steps, device=device)
    latents = latents.to(device, unet.dtype) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        eps = guided_eps(unet, model_input, t, prompt_embeds.to(device), uncond_embeds.to(device), guidance_scale)
        latents = scheduler.step(eps.to(latents.dtype), t, latents).prev_sample
    return latents


def ddim_step_with_logprob(
    scheduler,
    eps: torch.Tensor,
    t: int | torch.Tensor,
    x_t: torch.Tensor,
    eta: float = 1.0,
    x_prev: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step (FACTS.md section 2, as D3PO / SPO / DDPO use it) and its log-probability.

    std_t = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)),
    mean  = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev - std_t^2) * eps,
    log p(x_prev | x_t) = mean over C, H, W of the Gaussian log-density (a MEAN, as the
    published beta and clip values assume). ``x_prev`` given: its log-probability under the
    step (training); otherwise a sample is drawn (rollout). ``t``: one timestep or one per
    sample. Needs eta > 0.
    """
    step = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    t = torch.as_tensor(t, device="cpu").long().reshape(-1)
    prev = t - step
    alphas = scheduler.alphas_cumprod.to(torch.float32)
    a_t = alphas[t]
    a_prev = torch.where(prev >= 0, alphas[prev.clamp(min=0)], torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32))
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    a_t, a_prev = a_t.reshape(shape).to(x_t.device), a_prev.reshape(shape).to(x_t.device)
    std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    x0_hat = (x_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    mean = a_prev**0.5 * x0_hat + (1 - a_prev - std**2) ** 0.5 * eps
    if x_prev is None:  # ``noise`` given: the step's noise, drawn by the caller (one generator per chain)
        noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype) if noise is None else noise
        x_prev = mean + std * noise.to(x_t.device, x_t.dtype)
    log_prob = -((x_prev.detach() - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return x_prev, log_prob.mean(dim=tuple(range(1, x_t.ndim)))


def predicted_x0(scheduler, eps: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), per sample."""
    a_t = scheduler.alphas_cumprod.to(torch.float32)[torch.as_tensor(t).long().reshape(-1)]
    a_t = a_t.reshape((-1,) + (1,) * (x_t.ndim - 1)).to(x_t.device)
    return (x_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5


def generate(pipe: Pipeline, scheduler, prompts: list[str], cfg: SampleConfig, replicate: int = 0) -> pd.DataFrame:
    """``images_per_prompt`` images for every prompt, as a table with PNG bytes; ``replicate``:
    the training seed of the model, recorded in a ``seed`` column (see ``initial_noise``)."""
    size = cfg.resolution // pipe.vae_scale_factor if cfg.resolution else pipe.unet.config.sample_size
    shape = (pipe.unet.config.in_channels, size, size)
    noise = initial_noise(len(prompts), cfg, shape, replicate)
    embeds = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)
    uncond = encode_prompts(pipe.tokenizer, pipe.text_encoder, [""])
    prompt_of = np.repeat(np.arange(len(prompts)), cfg.images_per_prompt)
    rows = []
    for start in tqdm(range(0, len(noise), cfg.batch_size), desc="sample", mininterval=10):
        sel = slice(start, start + cfg.batch_size)
        clean = denoise(pipe.unet, scheduler, noise[sel], embeds[prompt_of[sel]], uncond, cfg.num_inference_steps, cfg.guidance_scale)
        for j, image in enumerate(decode_latents(pipe.vae, clean).numpy()):
            k = start + j
            rows.append(
                {
                    "seed": replicate,
                    "prompt_id": int(prompt_of[k]),
                    "caption": prompts[prompt_of[k]],
                    "image_index": int(k % cfg.images_per_prompt),
                    "png": to_png(image),
                }
            )
    return pd.DataFrame(rows)


def to_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def from_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
