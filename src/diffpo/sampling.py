"""Sampling with classifier-free guidance (DDIM by default), seeded per prompt or once per run."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from diffpo.config import SampleConfig
from diffpo.models import Pipeline, decode_latents, encode_prompts


def initial_noise(n_prompts: int, cfg: SampleConfig, shape: tuple[int, ...]) -> torch.Tensor:
    """Starting latents, drawn on the CPU in float32 so every device starts from the same noise.

    ``per_prompt`` (Diffusion-DPO's evaluation): the generator is reset to ``seed`` for each
    prompt, so every model and prompt set sees the same noise for image j of a prompt.
    ``global`` (SePPO's released script): one generator seeded once for the whole run.
    """
    generator = torch.Generator().manual_seed(cfg.seed)
    noise = []
    for _ in range(n_prompts):
        if cfg.seed_policy == "per_prompt":
            generator.manual_seed(cfg.seed)
        noise.append(torch.randn((cfg.images_per_prompt, *shape), generator=generator))
    return torch.cat(noise)


@torch.no_grad()
def denoise(
    pipe: Pipeline,
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
    device = pipe.unet.device
    dtype = pipe.unet.dtype
    scheduler.set_timesteps(num_inference_steps, device=device)
    latents = latents.to(device, dtype) * scheduler.init_noise_sigma
    context = torch.cat([uncond_embeds.expand_as(prompt_embeds), prompt_embeds]).to(device, dtype)
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps_uncond, eps_text = pipe.unet(model_input, t, context).sample.chunk(2)
        eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)
        latents = scheduler.step(eps, t, latents).prev_sample
    return latents


def generate(pipe: Pipeline, scheduler, prompts: list[str], cfg: SampleConfig) -> pd.DataFrame:
    """``images_per_prompt`` images for every prompt, as a table with PNG bytes."""
    size = cfg.resolution // pipe.vae_scale_factor if cfg.resolution else pipe.unet.config.sample_size
    shape = (pipe.unet.config.in_channels, size, size)
    noise = initial_noise(len(prompts), cfg, shape)
    embeds = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts)
    uncond = encode_prompts(pipe.tokenizer, pipe.text_encoder, [""])
    prompt_of = np.repeat(np.arange(len(prompts)), cfg.images_per_prompt)
    rows = []
    for start in tqdm(range(0, len(noise), cfg.batch_size), desc="sample", mininterval=10):
        sel = slice(start, start + cfg.batch_size)
        clean = denoise(pipe, scheduler, noise[sel], embeds[prompt_of[sel]], uncond, cfg.num_inference_steps, cfg.guidance_scale)
        for j, image in enumerate(decode_latents(pipe.vae, clean).numpy()):
            k = start + j
            rows.append(
                {
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
