"""The trainer: shared noise within a pair, determinism, resume after interruption, NaN stop."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from diffpo import training
from diffpo.config import TrainConfig
from diffpo.data import EncodedPairs
from diffpo.models import build_noise_scheduler, build_unet

SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> EncodedPairs:
    out = tmp_path_factory.mktemp("cache")
    rng = np.random.default_rng(0)
    n, prompts = 24, 5
    np.save(out / "latents_w.npy", rng.standard_normal((n, 4, 4, 4)).astype(np.float32))
    np.save(out / "latents_l.npy", rng.standard_normal((n, 4, 4, 4)).astype(np.float32))
    np.save(out / "prompt_embeds.npy", rng.standard_normal((prompts, 6, 16)).astype(np.float32))
    np.save(out / "empty_prompt_embed.npy", np.zeros((6, 16), np.float32))
    prompt_index = np.arange(n) % prompts  # every prompt is used
    pd.DataFrame({"caption": [f"prompt {i}" for i in prompt_index], "prompt_index": prompt_index}).to_parquet(
        out / "pairs.parquet")
    (out / "cache.json").write_text(json.dumps({"pairs": n}))
    return EncodedPairs(out)


def tiny_unet():
    torch.manual_seed(0)
    return build_unet(dict(block_out_channels=[8, 16], layers_per_block=1, attention_head_dim=4), 4, 4, 16)


def dpo_config(**overrides):
    values = dict(objective="diffusion_dpo", images="pairs", steps=6, batch_size=4, learning_rate=1e-3, beta=50.0,
                  checkpoint_every=2, caption_dropout=0.2, label="test")
    return TrainConfig(**{**values, **overrides})


def run(cfg, cache, work, fingerprint="f"):
    unet, metrics = training.train(cfg, cache, tiny_unet(), build_noise_scheduler(SCHEDULER), work, fingerprint)
    return unet.state_dict(), pd.read_csv(metrics)


def test_pair_shares_noise_and_timestep(cache, tmp_path):
    source = training.DataSource(dpo_config(), cache, None, training.Generators(), tmp_path)
    batch = source._batch(3, build_noise_scheduler(SCHEDULER))
    assert torch.equal(batch["noise"][:4], batch["noise"][4:])
    assert torch.equal(batch["timesteps"][:4], batch["timesteps"][4:])
    assert torch.equal(batch["embeds"][:4], batch["embeds"][4:])
    assert not torch.equal(batch["latents"][:4], batch["latents"][4:])


def test_batches_cover_every_example_once_per_epoch():
    sampler = training.BatchSampler(10, 4, seed=1)
    first_epoch = np.concatenate([sampler.indices(d) for d in range(3)])[:10]
    assert sorted(first_epoch) == list(range(10))


def test_resume_after_interruption_gives_the_same_weights(cache, tmp_path, monkeypatch):
    cfg = dpo_config()
    reference, reference_metrics = run(cfg, cache, tmp_path / "straight")

    calls = {"n": 0}
    forward = training._forward

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # during step 6, after the checkpoint of step 4
            raise KeyboardInterrupt
        return forward(*args, **kwargs)

    monkeypatch.setattr(training, "_forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, cache, tmp_path / "resumed")
    monkeypatch.setattr(training, "_forward", forward)
    resumed, metrics = run(cfg, cache, tmp_path / "resumed")
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key
    assert metrics["step"].tolist() == list(range(1, 7))
    pd.testing.assert_frame_equal(metrics, reference_metrics)


def test_checkpoints_of_another_configuration_are_not_resumed(cache, tmp_path):
    run(dpo_config(steps=4), cache, tmp_path, fingerprint="old")
    _, metrics = run(dpo_config(steps=2), cache, tmp_path, fingerprint="new")
    assert metrics["step"].tolist() == [1, 2]


def test_sft_on_winners_lowers_the_loss(cache, tmp_path):
    cfg = TrainConfig(objective="sft", images="winners", steps=30, batch_size=8, learning_rate=3e-3, label="sft",
                      checkpoint_every=30)
    _, metrics = run(cfg, cache, tmp_path)
    assert metrics["loss"].tail(5).mean() < metrics["loss"].head(5).mean()


def test_nan_loss_stops_with_a_clear_error(cache, tmp_path, monkeypatch):
    monkeypatch.setitem(training.OBJECTIVES, "sft", training.Objective(
        reference=False, loss=lambda cfg, p, r, extra: (p.mean() * float("nan"), {})))
    cfg = TrainConfig(objective="sft", images="both", steps=3, batch_size=4, learning_rate=1e-3, label="sft")
    with pytest.raises(training.TrainingDiverged, match="loss is nan at step 0"):
        run(cfg, cache, tmp_path)
