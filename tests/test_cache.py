"""The sharded encoded cache: what is written reads back exactly, prompts once, memory bounded."""

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch

from diffpo import world
from diffpo.data.cache import CacheError, CacheWriter, EncodedPairs, ShardedArray, write_cache
from diffpo.data.preparation import encode_cache, image_to_tensor, iter_pair_images, prepare_pairs
from diffpo.models.loading import (
    build_clip,
    build_noise_scheduler,
    build_tokenizer,
    build_unet,
    build_vae,
    encode_images,
    encode_prompts,
    load_text_encoder,
    load_vae,
    save_pipeline,
)

TEXT = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, projection_dim=16,
            max_length=24, image_patch_size=8)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def random_pairs(n, prompts, rng):
    prompt_index = rng.integers(0, prompts, n)
    prompt_index[:prompts] = np.arange(prompts)  # every prompt used
    return (rng.standard_normal((n, 4, 3, 3)).astype(np.float32), rng.standard_normal((n, 4, 3, 3)).astype(np.float32),
            rng.standard_normal((prompts, 5, 7)).astype(np.float32),
            pd.DataFrame({"caption": [f"p{i}" for i in prompt_index], "prompt_index": prompt_index}),
            [f"p{i}" for i in range(prompts)])


def test_sharded_cache_reads_back_what_was_written_in_any_order(tmp_path):
    rng = np.random.default_rng(0)
    w, l, embeds, pairs, captions = random_pairs(103, 9, rng)
    writer = CacheWriter(tmp_path, w.shape[1:], embeds.shape[1:], np.float32, shard_pairs=16, shard_prompts=4)
    writer.add_prompts(embeds[:5])
    writer.add_prompts(embeds[5:])
    for start in range(0, 103, 7):  # batches that straddle shard boundaries
        writer.add_pairs(w[start:start + 7], l[start:start + 7])
    info = writer.close(pairs, captions, np.zeros((5, 7), np.float32), {"note": "test"})
    assert info["pair_shards"] == [16] * 6 + [7] and info["prompt_shards"] == [4, 4, 1]
    cache = EncodedPairs(tmp_path)
    assert len(cache) == 103 and len(cache.prompt_embeds) == 9
    idx = rng.permutation(103)[:40].tolist() + [0, 0, 102]  # random, repeated, last
    assert np.array_equal(cache.latents("w", np.array(idx)), w[idx])
    assert np.array_equal(cache.latents("l", np.array(idx)), l[idx])
    assert np.array_equal(cache.embeds(np.array(idx)), embeds[pairs.prompt_index.to_numpy()[idx]])
    assert np.array_equal(cache.latents_w[10:30], w[10:30]) and np.array_equal(cache.latents_w[-1], w[-1])
    assert cache.captions() == captions


def test_writer_holds_one_shard_however_many_it_writes(tmp_path):
    rng = np.random.default_rng(1)
    shard_pairs, latent = 64, (4, 16, 16)
    shard_bytes = 2 * shard_pairs * np.prod(latent) * 4
    block = rng.standard_normal((32, *latent)).astype(np.float32)
    writer = CacheWriter(tmp_path, latent, (8, 8), np.float32, shard_pairs=shard_pairs, shard_prompts=4)
    tracemalloc.start()
    for _ in range(40):  # 20 shards, 10x what the writer may hold
        writer.add_pairs(block, block)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert writer.max_buffered_bytes < 1.1 * shard_bytes
    assert peak < 0.5 * shard_bytes  # the shard buffer was allocated before; writing allocates little
    writer.add_prompts(rng.standard_normal((1, 8, 8)).astype(np.float32))
    writer.close(pd.DataFrame({"prompt_index": np.zeros(1280, int)}), ["p"], np.zeros((8, 8)), {})
    assert len(list(tmp_path.glob("latents_w-*.npy"))) == 20


def test_incomplete_or_old_caches_are_clear_errors(tmp_path):
    rng = np.random.default_rng(2)
    w, l, embeds, pairs, captions = random_pairs(20, 3, rng)
    writer = CacheWriter(tmp_path / "short", w.shape[1:], embeds.shape[1:], np.float32, shard_pairs=8)
    writer.add_prompts(embeds)
    writer.add_pairs(w[:10], l[:10])
    with pytest.raises(CacheError, match="10 latent pairs for 20 pair rows"):
        writer.close(pairs, captions, np.zeros((5, 7)), {})
    write_cache(tmp_path / "ok", w, l, embeds, np.zeros((5, 7)), pairs, captions, shard_pairs=8)
    (tmp_path / "ok" / "latents_l-00001.npy").unlink()
    with pytest.raises(CacheError, match="missing shards"):
        EncodedPairs(tmp_path / "ok")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "cache.json").write_text(json.dumps({"pairs": 20}))
    with pytest.raises(CacheError, match="re-run the encode stage"):
        EncodedPairs(tmp_path / "old")
    with pytest.raises(IndexError):
        ShardedArray([tmp_path / "ok" / "latents_w-00000.npy"])[[8]]


@pytest.fixture(scope="module")
def world_and_pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("encode")
    world.make_world(world.WorldConfig(seed=5, n_train_pairs=90, n_validation_unique=8, n_test_unique=8,
                                       n_ood_combinations=4, n_ood_phrasings=4, train_shard_size=40, n_corrupt_rows=1,
                                       n_invalid_label_rows=1), out / "world")
    torch.manual_seed(0)
    tokenizer = build_tokenizer(world.all_words(), out / "tok", 24)
    from transformers import CLIPTextModel

    text_encoder = CLIPTextModel(build_clip(TEXT, len(tokenizer), 16).config.text_config)
    vae = build_vae(dict(block_out_channels=[8, 8], latent_channels=4))
    unet = build_unet(dict(block_out_channels=[8, 16], layers_per_block=1, attention_head_dim=4), 8, 4, 16)
    save_pipeline(out / "sd", tokenizer, text_encoder, vae, unet, build_noise_scheduler(SCHEDULER))
    return out / "world", out / "sd"


def test_encode_writes_shards_that_read_back_what_the_models_give(world_and_pipeline, tmp_path):
    source, sd = world_and_pipeline
    prepared = prepare_pairs(source, "train")
    # 4 x 8 x 8 float32 latents: a pair is 2 KiB; 40 KiB shards hold 20 pairs
    info = encode_cache(source, "train", prepared.index, sd, sd, tmp_path / "cache", 16, 16, "float32",
                        shard_bytes=20 * 2048)
    cache = EncodedPairs(tmp_path / "cache")
    n = len(prepared.index)
    assert len(cache) == n and len(info["pair_shards"]) == -(-n // 20) and max(info["pair_shards"]) == 20
    assert len(cache.prompt_embeds) == prepared.index["caption"].nunique() < n  # deduplicated
    tokenizer, text_encoder = load_text_encoder(sd)
    vae = load_vae(sd)
    stored = pd.read_parquet(tmp_path / "cache" / "pairs.parquet")
    images = {pos: (w, l) for pos, w, l in iter_pair_images(source, "train", prepared.index)}
    for i in [0, 7, 21, n - 1]:  # rows of several shards
        row = stored.iloc[i]
        match = prepared.index[(prepared.index["shard"] == row["shard"]) & (prepared.index["row"] == row["row"])].index[0]
        w, l = images[match]
        expected = encode_images(vae, torch.from_numpy(np.stack([image_to_tensor(w, 16), image_to_tensor(l, 16)])))
        np.testing.assert_allclose(cache.latents("w", np.array([i]))[0], expected[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(cache.latents("l", np.array([i]))[0], expected[1].numpy(), atol=1e-5)
        prompt = encode_prompts(tokenizer, text_encoder, [row["caption"]])[0].numpy()
        np.testing.assert_allclose(cache.embeds(np.array([i]))[0], prompt, atol=1e-5)
        assert cache.captions()[cache.prompt_index[i]] == row["caption"]
