"""Loaders and tiny components: the code that loads SD-1.5 loads the tiny base, tested offline."""

import pytest
import torch
from diffusers import StableDiffusionPipeline

from diffpo import world
from diffpo.settings.configs import SampleConfig
from diffpo.models.loading import (
    MissingWeightsError,
    build_clip,
    build_noise_scheduler,
    build_tokenizer,
    build_unet,
    build_vae,
    decode_latents,
    encode_images,
    load_pipeline,
    load_sampling_scheduler,
    load_tokenizer,
    save_pipeline,
    save_tokenizer,
)
from diffpo.models.sampling import generate, initial_noise

TEXT = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, projection_dim=16,
            max_length=24, image_patch_size=8)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """A complete SD folder from tiny components (diffusers' get_dummy_components, saved)."""
    out = tmp_path_factory.mktemp("pipeline")
    torch.manual_seed(0)
    tokenizer = build_tokenizer(world.all_words(), out / "tok", 24)
    clip = build_clip(TEXT, len(tokenizer), 16)
    from transformers import CLIPTextModel

    text_encoder = CLIPTextModel(clip.config.text_config)
    vae = build_vae(dict(block_out_channels=[8, 8], latent_channels=4))
    unet = build_unet(dict(block_out_channels=[8, 16], layers_per_block=1, attention_head_dim=4), 8, 4, 16)
    save_pipeline(out / "sd", tokenizer, text_encoder, vae, unet, build_noise_scheduler(SCHEDULER))
    return out / "sd"


def test_tokenizer_spells_every_world_word_as_one_token(tmp_path):
    tokenizer = build_tokenizer(world.all_words(), tmp_path, 24)
    assert len(tokenizer) > 256
    unk = tokenizer.unk_token_id
    for word in world.all_words():
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert len(ids) == 1 and ids[0] != unk, word


def test_saved_tokenizer_does_not_depend_on_offline_mode(tmp_path):
    """Loaded under HF_HUB_OFFLINE (local_files_only=True) or not, the saved folder is the same bytes."""
    import json

    from transformers import CLIPTokenizer

    build_tokenizer(world.all_words(), tmp_path / "built", 24)
    saved = {}
    for offline in (True, False):
        tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "built", local_files_only=offline)
        assert "local_files_only" in tokenizer.init_kwargs  # what transformers would write
        save_tokenizer(tokenizer, tmp_path / str(offline))
        saved[offline] = (tmp_path / str(offline) / "tokenizer_config.json").read_text()
    assert saved[True] == saved[False]
    assert "local_files_only" not in json.loads(saved[True])


def test_saved_folder_is_a_diffusers_stable_diffusion_pipeline(tiny_pipeline):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline, safety_checker=None)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.steps_offset == 1 and not pipe.scheduler.config.set_alpha_to_one
    loaded = load_pipeline(tiny_pipeline)
    assert len(loaded.tokenizer) == len(pipe.tokenizer) > 2
    assert loaded.vae_scale_factor == 2


def test_missing_weights_name_what_and_how(tmp_path):
    (tmp_path / "sd").mkdir()
    with pytest.raises(MissingWeightsError, match=r"(?s)tokenizer.*not a complete diffusers Stable Diffusion folder"):
        load_tokenizer(tmp_path / "sd")
    with pytest.raises(MissingWeightsError, match=r"(?s)stable-diffusion-v1-5/stable-diffusion-v1-5.*Provide it offline.*base.pretrained"):
        load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")


def test_vae_round_trip_shapes(tiny_pipeline):
    pipe = load_pipeline(tiny_pipeline)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    latents = encode_images(pipe.vae, images)
    assert latents.shape == (2, 4, 8, 8)
    assert decode_latents(pipe.vae, latents).shape == (2, 16, 16, 3)


def test_sampling_noise_is_distinct_per_prompt_and_seed_and_shared_across_models(tiny_pipeline):
    per_prompt = SampleConfig(2, 5.0, 2, 0, "per_prompt", 4, "x")
    noise = initial_noise(3, per_prompt, (4, 8, 8))
    assert not torch.equal(noise[0:2], noise[2:4])  # each prompt its own noise
    assert torch.equal(initial_noise(2, per_prompt, (4, 8, 8)), noise[:4])  # prompt i's noise: not the set's size
    other_seed = initial_noise(3, per_prompt, (4, 8, 8), replicate=1)
    assert not any(torch.equal(other_seed[i], noise[j]) for i in range(6) for j in range(6))
    assert torch.equal(initial_noise(3, per_prompt, (4, 8, 8), replicate=1), other_seed)  # every model of seed 1
    once = SampleConfig(2, 5.0, 2, 0, "global", 4, "x")
    noise = initial_noise(3, once, (4, 8, 8))
    assert not torch.equal(noise[0:2], noise[2:4])
    assert not torch.equal(initial_noise(3, once, (4, 8, 8), replicate=1), noise)
    pipe = load_pipeline(tiny_pipeline)
    prompts = ["a large red circle on the left, white background", "a small blue square in the centre, black background"]
    first = generate(pipe, load_sampling_scheduler(tiny_pipeline), prompts, per_prompt)
    again = generate(pipe, load_sampling_scheduler(tiny_pipeline), prompts, per_prompt)
    assert len(first) == 4 and first["png"].tolist() == again["png"].tolist()
    assert first["prompt_id"].tolist() == [0, 0, 1, 1] and first["seed"].tolist() == [0] * 4


@pytest.mark.parametrize("sampler", ["pndm", "euler", "dpm_solver"])
def test_every_configured_sampler_runs_on_the_base_schedule(tiny_pipeline, sampler):
    cfg = SampleConfig(3, 3.0, 1, 0, "per_prompt", 2, "x", scheduler=sampler, resolution=16)
    scheduler = load_sampling_scheduler(tiny_pipeline, sampler)
    assert type(scheduler).__name__.lower().startswith(sampler.split("_")[0][:4])
    images = generate(load_pipeline(tiny_pipeline), scheduler, ["a red circle on the left, white background"], cfg)
    assert len(images) == 1


def test_unknown_sampler_is_a_clear_error(tiny_pipeline):
    with pytest.raises(ValueError, match="unknown sampler 'magic'; known: ddim, pndm"):
        load_sampling_scheduler(tiny_pipeline, "magic")
