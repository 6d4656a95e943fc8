"""The generating methods in the one trainer: SePPO's checkpoint pool and reference
strategies, SPIN-Diffusion, and the rollout methods (D3PO, SPO, DDPO) with LoRA."""

import numpy as np
import pandas as pd
import pytest
import torch

import diffpo.training.loop
import diffpo.training.reference
import diffpo.training.sources
from diffpo import training
from diffpo.methods import objectives
from diffpo.settings.params import ParamsError
from diffpo.settings.configs import TrainConfig
from diffpo.models.loading import build_noise_scheduler

from conftest import SCHEDULER, Brightness, generators, rollout_config, tiny_unet


class StepBrightness:
    """A step-aware judge with a known answer: brightness of the predicted image, sharper at small t."""

    def reward(self, pixels, prompts, timesteps):
        return pixels.mean(dim=(1, 2, 3)) * 50.0 / (1.0 + timesteps.float() / 1000)


def seppo_config(**overrides):
    values = dict(objective="seppo", images="winners", losers="reference", reference="uniform", aaf="sign",
                  steps=6, round_updates=2, batch_size=4, learning_rate=1e-3, beta=50.0, checkpoint_every=1,
                  sampler_steps=2, guidance_scale=2.0, generation_batch_size=5, label="seppo")
    return TrainConfig(**{**values, **overrides})


def run(cfg, cache, work, gens, fingerprint="f"):
    unet, metrics = training.loop.train(cfg, cache, tiny_unet(), build_noise_scheduler(SCHEDULER), work, fingerprint, gens)
    return unet, pd.read_csv(metrics)


@pytest.mark.parametrize("strategy,expected", [("initial", [0, 0, 0, 0, 0, 0]), ("latest", [0, 0, 2, 2, 4, 4])])
def test_reference_strategies_pick_from_the_pool(cache, tmp_path, strategy, expected):
    _, metrics = run(seppo_config(reference=strategy), cache, tmp_path, generators())
    assert metrics["reference_step"].tolist() == expected
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == [f"step-{s:07d}.safetensors" for s in (0, 2, 4)]
    assert metrics["aaf_rate"].between(0, 1).all()


def test_uniform_reference_draws_from_every_earlier_checkpoint(cache, tmp_path):
    _, metrics = run(seppo_config(steps=16, round_updates=2), cache, tmp_path, generators())
    chosen = metrics["reference_step"].to_numpy().reshape(-1, 2)[:, 0]
    rounds = np.arange(len(chosen)) * 2
    assert (chosen <= rounds).all() and len(set(chosen)) > 2  # neither always the initial nor the latest
    assert not (chosen == rounds).all()


def test_the_first_step_of_a_round_starts_at_the_reference(cache, tmp_path):
    # latest: the round's reference is the policy itself, so its first loss is exactly log 2
    _, metrics = run(seppo_config(reference="latest"), cache, tmp_path, generators())
    assert np.allclose(metrics["loss"].to_numpy()[::2], np.log(2), atol=1e-6)


def test_seppo_resumes_mid_round_bit_for_bit(cache, tmp_path, monkeypatch):
    cfg = seppo_config(checkpoint_every=3)
    straight, _ = run(cfg, cache, tmp_path / "straight", generators())
    calls = {"n": 0}
    forward = training.sources._forward

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # in step 5, inside the round begun at step 4 (checkpoint at step 3)
            raise KeyboardInterrupt
        return forward(*args, **kwargs)

    monkeypatch.setattr(training.sources, "_forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, cache, tmp_path / "resumed", generators())
    monkeypatch.setattr(training.sources, "_forward", forward)
    resumed, _ = run(cfg, cache, tmp_path / "resumed", generators())
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_spin_diffusion_is_dpo_against_the_previous_iteration(cache, tmp_path):
    cfg = seppo_config(objective="diffusion_dpo", aaf="off", reference="latest", steps=6, round_updates=2)
    _, metrics = run(cfg, cache, tmp_path, generators())
    assert metrics["reference_step"].tolist() == [0, 0, 2, 2, 4, 4]
    assert "aaf_rate" not in metrics


@pytest.mark.parametrize("objective", ["d3po", "ddpo", "spo"])
def test_rollout_methods_train_lora_and_return_a_plain_unet(cache, tmp_path, objective):
    gens = generators(reward=Brightness(), step_scorer=StepBrightness())
    unet, metrics = run(rollout_config(objective), cache, tmp_path, gens)
    assert metrics["step"].tolist() == [1, 2, 3, 4] and np.isfinite(metrics["loss"]).all()
    assert not any("lora" in k for k in unet.state_dict())
    base = tiny_unet().state_dict()
    changed = [k for k, v in unet.state_dict().items() if not torch.equal(v, base[k])]
    assert changed and all("attn" in k for k in changed)  # only the adapted attention weights moved
    if objective == "d3po":
        # LoRA starts at the base model: the first step's policy/reference ratio is 1, the loss log 2
        assert abs(metrics["loss"][0] - np.log(2)) < 1e-6


def test_merged_lora_unet_computes_what_the_adapted_one_did(cache):
    cfg = rollout_config("d3po", lora_rank=2)
    unet = tiny_unet()
    training.reference.add_lora(unet, cfg)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    x, t, ctx = torch.randn(2, 4, 4, 4), torch.tensor([10, 500]), torch.randn(2, 6, 16)
    with torch.no_grad():
        adapted = unet(x, t, ctx).sample
        merged = training.reference.merge_lora(unet)(x, t, ctx).sample
    assert torch.allclose(adapted, merged, atol=1e-5)


def test_see_with_gamma_zero_trains_exactly_like_the_base_method(cache, tmp_path, monkeypatch):
    gens = generators(reward=Brightness())
    with monkeypatch.context() as patch:  # the base method: D3PO's loss without the SEE term at all
        patch.setattr(objectives, "self_entropy", lambda policy_term, gamma: 0.0)
        base, _ = run(rollout_config("d3po"), cache, tmp_path / "base", gens)
    gammas = []
    self_entropy = objectives.self_entropy

    def spy(policy_term, gamma):
        gammas.append(gamma)
        return self_entropy(policy_term, gamma)

    monkeypatch.setattr(objectives, "self_entropy", spy)
    see, _ = run(rollout_config("d3po", gamma=0.0, label="SEE-D3PO"), cache, tmp_path / "see", gens)
    assert gammas and set(gammas) == {0.0}  # the SEE term was computed, with the run's gamma
    for key, value in base.state_dict().items():
        assert torch.equal(value, see.state_dict()[key]), key
    # The comparison is not vacuous: the run's gamma reaches the term, and a gamma other than 0 trains other weights.
    gammas.clear()
    other, _ = run(rollout_config("d3po", gamma=0.5, label="SEE-D3PO"), cache, tmp_path / "see_0.5", gens)
    assert gammas and set(gammas) == {0.5}
    assert any(not torch.equal(value, other.state_dict()[key]) for key, value in base.state_dict().items())


def test_rollouts_of_d3po_share_their_initial_noise(cache, tmp_path):
    gens = generators(reward=Brightness())
    cfg = rollout_config("d3po")
    one_process = type("A", (), {"process_index": 0, "num_processes": 1, "device": torch.device("cpu"),
                                 "gather": staticmethod(lambda t: t)})()
    source = training.sources.RolloutSource(cfg, cache, one_process, gens)
    source.begin_round(0, tiny_unet(), None)
    latents = source.data["traj"].latents
    assert torch.equal(latents[:4, 0], latents[4:, 0]) and not torch.equal(latents[:4, -1], latents[4:, -1])
    winners = source.data["rewards"][source.data["winner"]]
    assert (winners >= source.data["rewards"][source.data["loser"]]).all()


@pytest.mark.parametrize("overrides,message", [
    (dict(objective="dpo"), "unknown objective 'dpo'"),
    (dict(losers="data"), "SePPO's losers are generated"),
    (dict(reference="best"), "reference 'best'"),
    (dict(round_updates=0), "round_updates > 0"),
    (dict(lora_rank=4), "set lora_rank: 0"),
])
def test_inconsistent_method_settings_are_refused(overrides, message):
    with pytest.raises(ParamsError, match=message):
        seppo_config(**overrides)


def test_rollouts_need_a_judge_and_round_aligned_checkpoints():
    with pytest.raises(ParamsError, match="needs a reward_scorer"):
        rollout_config("ddpo", reward_scorer=None)
    with pytest.raises(ParamsError, match="multiple of round_updates"):
        rollout_config("d3po", checkpoint_every=3)
