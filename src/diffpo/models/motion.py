"""The video family's denoiser: diffusers' motion-module UNet (AnimateDiff), called as an image UNet is.

The trainer, the objectives, the reference pool and the samplers call a denoiser as
``unet(latents, timesteps, prompt_embeds)``. A clip's latents are (B, C, F, H, W), and
``UNetMotionModel`` wants one text condition per frame (``AnimateDiffPipeline`` repeats the prompt
embeddings F times before calling it); this subclass repeats them itself, so the image code runs
on clips unchanged.
"""

from __future__ import annotations

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel


class FrameConditionedMotionModel(UNetMotionModel):
    """``UNetMotionModel`` taking one text condition per clip, repeated over its frames."""

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, *args, **kwargs):
        frames = sample.shape[2]
        return super().forward(sample, timestep, encoder_hidden_states.repeat_interleave(frames, dim=0),
                               *args, **kwargs)


def build_motion_unet(unet: UNet2DConditionModel, adapter: dict) -> FrameConditionedMotionModel:
    """An image UNet with a new motion module of ``adapter``'s settings (diffusers' ``MotionAdapter``
    keys), the way AnimateDiff extends SD-1.5: the image weights are the UNet's."""
    motion = MotionAdapter(block_out_channels=tuple(unet.config.block_out_channels),
                           motion_norm_num_groups=unet.config.norm_num_groups, **adapter)
    return FrameConditionedMotionModel.from_unet2d(unet, motion)
