"""SPO's step-aware preference model: starts as PickScore, learns t, trains deterministically,
round-trips through its folder, and loads SPO's released checkpoint format (a tiny random
model saved that way, checked against SPO's forward written out here in plain torch)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTextModel, CLIPTokenizer

from diffpo.scoring import stand_ins as rm
from diffpo.scoring import learned as scorers
from diffpo.scoring import step_aware as sa
from diffpo.scoring import step_aware_fit as fit
from diffpo.models.loading import MissingWeightsError, build_noise_scheduler, build_unet, build_vae, save_pipeline

from conftest import FAST, MEAN, PROMPTS, SCHEDULER, STD

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # as in test_reward_models, whose world it shares

CFG = {"steps": 4, "batch_size": 8, "learning_rate": 1e-2, "guidance_scale": 3.0, "max_timestep": 999, "seed": 0}


@pytest.fixture(scope="module")
def inputs(reward_world):
    """The PickScore stand-in (briefly trained) and a tiny base pipeline on the same world."""
    root = reward_world["root"]
    scorer, summary = rm.fit_stand_in("pickscore", reward_world["train"], reward_world["clip"],
                                      reward_world["tokenizer"], {**FAST, "steps": 5})
    rm.save_stand_in(scorer, summary, root / "pickscore")
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(reward_world["tokenizer"])
    text_encoder = CLIPTextModel.from_pretrained(root / "text" / "text_encoder")
    vae = build_vae({"block_out_channels": [8, 8], "latent_channels": 4})
    unet = build_unet({"block_out_channels": [8, 16], "layers_per_block": 1, "attention_head_dim": 4}, 16, 4,
                      text_encoder.config.hidden_size)
    save_pipeline(root / "base", tokenizer, text_encoder, vae, unet, build_noise_scheduler(SCHEDULER))
    return {"pickscore": root / "pickscore", "base": root / "base", "train": reward_world["train"],
            "val": reward_world["val"]}


@pytest.fixture(scope="module")
def trained(inputs):
    return fit.fit_step_aware(inputs["pickscore"], inputs["base"], inputs["train"], CFG, inputs["val"])


def test_zero_initialised_time_conditioning_is_exactly_the_stand_in(inputs):
    stand_in = rm.load_stand_in(inputs["pickscore"])
    scorer = sa.StepAwareScorer(stand_in.clip, stand_in.tokenizer)
    val = inputs["val"]
    pixels = rm.to_pixels(val.images_0[:16])
    with torch.no_grad():
        expected = stand_in.raw_reward(pixels, stand_in.tokenize(val.captions[:16]))
        for t in (torch.zeros(16), torch.full((16,), 999), torch.randint(0, 1000, (16,))):
            assert torch.equal(scorer.reward(pixels, val.captions[:16], t), expected)
    np.testing.assert_allclose(stand_in.score(val.images_0[:16], val.captions[:16]), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_a_pair_shares_one_timestep_and_one_noise(inputs, monkeypatch):
    calls = []
    predicted = fit.predicted_pixels

    def spy(pipe, noise_scheduler, latents, noise, timesteps, embeds, uncond, guidance_scale):
        calls.append((noise, timesteps, embeds, guidance_scale))
        return predicted(pipe, noise_scheduler, latents, noise, timesteps, embeds, uncond, guidance_scale)

    monkeypatch.setattr(fit, "predicted_pixels", spy)
    fit.fit_step_aware(inputs["pickscore"], inputs["base"], inputs["train"], {**CFG, "steps": 2, "max_timestep": 400})
    for noise, t, embeds, guidance in calls:
        b = len(t) // 2
        assert len(t) == 2 * CFG["batch_size"] and guidance == CFG["guidance_scale"]
        assert torch.equal(noise[:b], noise[b:]) and torch.equal(t[:b], t[b:]) and torch.equal(embeds[:b], embeds[b:])
        assert 0 <= t.min() and t.max() <= 400 and len(set(t[:b].tolist())) > 1  # one t per pair, not per batch
    assert not torch.equal(calls[0][0], calls[1][0])


def test_trained_model_depends_on_t_and_reports_accuracy_per_bucket(trained, inputs):
    scorer, summary = trained
    assert list(summary["heldout_accuracy_by_t"]) == ["0-249", "250-499", "500-749", "750-999"]
    assert list(summary["pickscore_accuracy_by_t"]) == list(summary["heldout_accuracy_by_t"])
    for accuracy in (*summary["heldout_accuracy_by_t"].values(), *summary["pickscore_accuracy_by_t"].values()):
        assert 0 <= accuracy <= 1
    assert summary["heldout_pairs"] == len(inputs["val"]) and np.isfinite(summary["final_loss"])
    pixels, captions = rm.to_pixels(inputs["val"].images_0[:8]), inputs["val"].captions[:8]
    with torch.no_grad():
        early, late = scorer.reward(pixels, captions, torch.zeros(8)), scorer.reward(pixels, captions, torch.full((8,), 900))
    assert (early - late).abs().min() > 0


def test_training_is_deterministic_and_the_saved_folder_loads_back_identically(trained, inputs, tmp_path):
    scorer, _ = trained
    summary = fit.train_step_aware(inputs["pickscore"], inputs["base"], inputs["train"], CFG, tmp_path / "a", inputs["val"])
    assert summary == trained[1] == json.loads((tmp_path / "a" / "scorer.json").read_text())
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"clip", "tokenizer", "time.safetensors", "scorer.json"}
    assert not list(tmp_path.glob(".a.*"))  # atomic: no temporary folder left behind
    loaded = sa.load_step_aware(tmp_path / "a")
    for name, value in scorer.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    pixels, captions = rm.to_pixels(inputs["val"].images_1[:8]), inputs["val"].captions[:8]
    t = torch.tensor([0, 100, 200, 300, 500, 700, 900, 999])
    with torch.no_grad():
        assert torch.equal(loaded.reward(pixels, captions, t), scorer.reward(pixels, captions, t))
    other, _ = fit.fit_step_aware(inputs["pickscore"], inputs["base"], inputs["train"], {**CFG, "seed": 1})
    assert not torch.equal(other.time.layers[0][1].weight, scorer.time.layers[0][1].weight)


def test_missing_folder_says_how_to_make_one(reward_world, inputs, tmp_path):
    with pytest.raises(MissingWeightsError, match="train_step_scorer"):
        sa.load_step_aware(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "scorer.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="time.safetensors"):
        sa.load_step_aware(partial)
    hps, summary = rm.fit_stand_in("hpsv2", reward_world["train"], reward_world["clip"], reward_world["tokenizer"],
                                   {**FAST, "steps": 1})
    rm.save_stand_in(hps, summary, tmp_path / "hpsv2")
    with pytest.raises(ValueError, match="starts from pickscore"):
        fit.fit_step_aware(tmp_path / "hpsv2", inputs["base"], inputs["train"], CFG)


# ------------------------------------------------------------------ SPO's released checkpoint format


def _spo_state_dict(config, seed=0) -> dict:
    """A random HFTimeConditionedCLIPModel, keyed as SPO's StepAwarePreferenceModel saves it."""
    torch.manual_seed(seed)
    model = CLIPModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(seed + 1)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.2  # noqa: E731
    h, freq = config.vision_config.hidden_size, 256
    sd.update({"model.t_embedder.mlp.0.weight": r(h, freq), "model.t_embedder.mlp.0.bias": r(h),
               "model.t_embedder.mlp.2.weight": r(h, h), "model.t_embedder.mlp.2.bias": r(h),
               "model.vision_model.adaLN_modulation.1.weight": r(2 * h, h),
               "model.vision_model.adaLN_modulation.1.bias": r(2 * h)})
    for i in range(config.vision_config.num_hidden_layers):
        sd[f"model.vision_model.encoder.layers.{i}.adaLN_modulation.1.weight"] = r(6 * h, h)
        sd[f"model.vision_model.encoder.layers.{i}.adaLN_modulation.1.bias"] = r(6 * h)
    return sd


def _spo_reward(sd, config, pixels, ids, t, size):
    """SPO's get_preference_score + HFTimeConditionedCLIPModel, from the checkpoint's own keys."""
    h, w = pixels.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    x = F.interpolate(pixels, size=(new_h, new_w), mode="bicubic", align_corners=False)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))  # torchvision CenterCrop
    x = ((x[..., top:top + size, left:left + size] / 2 + 0.5).clamp(0, 1) - MEAN) / STD

    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    t_freq = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    lin = lambda name, v: F.linear(v, sd[f"model.{name}.weight"], sd[f"model.{name}.bias"])  # noqa: E731
    c = lin("t_embedder.mlp.2", F.silu(lin("t_embedder.mlp.0", t_freq)))

    clip = CLIPModel(config)
    clip.load_state_dict({k[len("model."):]: v for k, v in sd.items() if "adaLN" not in k and "t_embedder" not in k})
    clip.eval()
    vision = clip.vision_model

    def modulate(v, shift, scale):
        return v * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)

    hidden = vision.pre_layrnorm(vision.embeddings(x))
    for i, layer in enumerate(vision.encoder.layers):
        mods = lin(f"vision_model.encoder.layers.{i}.adaLN_modulation.1", F.silu(c)).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        residual = hidden
        hidden = layer.self_attn(hidden_states=modulate(layer.layer_norm1(hidden), shift_msa, scale_msa))[0]
        hidden = residual + hidden * gate_msa.unsqueeze(1)
        residual = hidden
        hidden = layer.mlp(modulate(layer.layer_norm2(hidden), shift_mlp, scale_mlp))
        hidden = residual + hidden * gate_mlp.unsqueeze(1)
    shift, scale = lin("vision_model.adaLN_modulation.1", F.silu(c)).chunk(2, dim=1)
    image = clip.visual_projection(vision.post_layernorm(hidden[:, 0]) * (1 + scale) + shift)
    text = clip.get_text_features(input_ids=ids).pooler_output
    image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    return clip.logit_scale.exp() * (image * text).sum(-1)


@pytest.fixture(scope="module")
def released(tmp_path_factory, clip_tok_dir):
    tok = CLIPTokenizer.from_pretrained(clip_tok_dir)
    config = scorers.pickscore_config(tiny=True, vocab_size=len(tok))
    sd = _spo_state_dict(config)
    root = tmp_path_factory.mktemp("spo_release")
    (root / "ckpt").mkdir()
    torch.save(sd, root / "ckpt" / sa.RELEASED_FILE)
    config.save_pretrained(root / "PickScore_v1")
    tok.save_pretrained(root / "processor")
    size = config.vision_config.image_size
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(root / "processor")
    return sd, config, root, tok


def test_released_checkpoint_matches_spo_forward(released):
    sd, config, root, tok = released
    scorer = sa.load_released_step_aware(root / "ckpt", root / "PickScore_v1", root / "processor")
    torch.manual_seed(3)
    pixels = torch.rand(4, 3, 24, 40) * 2.4 - 1.2  # not at model size, not square, beyond [-1, 1]
    t = torch.tensor([0, 250, 600, 999])
    ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        got = scorer.reward(pixels, PROMPTS, t)
        expected = _spo_reward(sd, config, pixels, ids, t, config.vision_config.image_size)
        other_t = scorer.reward(pixels, PROMPTS, torch.tensor([999, 600, 250, 0]))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - other_t).abs().max() > 1e-2  # the time conditioning is live
    same = sa.load_released_step_aware(root / "ckpt" / sa.RELEASED_FILE, config, root / "processor")  # file + config
    with torch.no_grad():
        torch.testing.assert_close(same.reward(pixels, PROMPTS, t), got, rtol=0, atol=0)


def test_released_checkpoint_errors_are_clear(released, tmp_path):
    sd, config, root, _ = released
    with pytest.raises(MissingWeightsError, match=sa.RELEASED_FILE):
        sa.load_released_step_aware(sa.RELEASED_REPO, config, root / "processor")  # hub id, not cached offline
    with pytest.raises(MissingWeightsError, match=sa.RELEASED_FILE):
        sa.load_released_step_aware(tmp_path, config, root / "processor")
    broken = {k: v for k, v in sd.items() if "layers.0.adaLN" not in k}
    torch.save(broken, tmp_path / sa.RELEASED_FILE)
    with pytest.raises(ValueError, match="adaLN|layers.0"):
        sa.load_released_step_aware(tmp_path, config, root / "processor")
