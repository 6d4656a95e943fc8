"""The image trainer on clips: SFT and SePPO on random 5-D latents (B, C, F, H, W) with a tiny
motion-module UNet (diffusers' UNetMotionModel, the video family's denoiser) built from a config."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import SCHEDULER, tiny_unet
from diffpo.data.cache import write_cache
from diffpo.models.loading import build_noise_scheduler
from diffpo.models.motion import build_motion_unet
from diffpo.settings.configs import TrainConfig
from diffpo.training.loop import train
from diffpo.training.sources import Generators

FRAMES = 3
ADAPTER = dict(motion_layers_per_block=1, motion_num_attention_heads=2, motion_max_seq_length=8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    rng = np.random.default_rng(0)
    n, prompts = 12, 3
    prompt_index = np.arange(n) % prompts
    return write_cache(tmp_path_factory.mktemp("clips"), rng.standard_normal((n, 4, FRAMES, 4, 4)).astype(np.float32),
                       rng.standard_normal((n, 4, FRAMES, 4, 4)).astype(np.float32),
                       rng.standard_normal((prompts, 6, 16)).astype(np.float32), np.zeros((6, 16), np.float32),
                       pd.DataFrame({"caption": [f"clip {i}" for i in prompt_index], "prompt_index": prompt_index}),
                       [f"clip {i}" for i in range(prompts)])


def motion_unet():
    torch.manual_seed(0)
    return build_motion_unet(tiny_unet(), ADAPTER)


def test_a_clip_is_denoised_with_one_text_condition_per_clip():
    unet = motion_unet()
    out = unet(torch.randn(2, 4, FRAMES, 4, 4), torch.tensor([10, 500]), torch.randn(2, 6, 16)).sample
    assert out.shape == (2, 4, FRAMES, 4, 4)


@pytest.mark.parametrize("cfg", [
    TrainConfig(objective="sft", images="winners", steps=2, batch_size=2, learning_rate=1e-3, checkpoint_every=2,
                label="sft"),
    TrainConfig(objective="seppo", images="winners", losers="reference", reference="uniform", aaf="sign", steps=4,
                round_updates=2, batch_size=2, learning_rate=1e-3, beta=10.0, checkpoint_every=2, sampler_steps=2,
                guidance_scale=2.0, generation_batch_size=4, label="seppo"),
], ids=["sft", "seppo"])
def test_the_image_trainer_trains_a_motion_unet_on_clips(cfg, clips, tmp_path):
    unet = motion_unet()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    generators = Generators(scheduler=build_noise_scheduler(SCHEDULER)) if cfg.losers == "reference" else None
    trained, metrics = train(cfg, clips, unet, build_noise_scheduler(SCHEDULER), tmp_path / "work", "clips", generators)
    log = pd.read_csv(metrics)
    assert len(log) == cfg.steps and np.isfinite(log["loss"]).all()
    after = trained.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("motion_modules" in k for k in moved) and any("motion_modules" not in k for k in moved)
    if cfg.objective == "seppo":  # the reference generated each pair's loser clip (the AAF rate is logged)
        assert log["aaf_rate"].between(0, 1).all()
