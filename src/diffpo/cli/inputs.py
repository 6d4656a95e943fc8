"""The stages before preference training: the tiny world and corpus, the preference pairs,
the base model's pre-training and the encoded caches."""

from __future__ import annotations

import json
from pathlib import Path

from diffpo.cli import _params, _set_torch_threads
from diffpo.cli.parser import TEXT_ENCODER, VAE, WORK, stage


def cmd_world(args):
    from diffpo import world

    cfg = world.WorldConfig(**_params(args, "world")["world"])
    summary = world.make_world(cfg, Path(args.out))
    print(json.dumps(summary, indent=2, default=str))


def cmd_corpus(args):
    p = _params(args, "corpus")
    from diffpo.world.corpus import make_corpus

    c = p["corpus"]
    facts = make_corpus(c["seed"], c["n_captions"], c["shard_size"], p["world"]["image_size"], Path(args.out))
    print(json.dumps(facts, indent=2))


def cmd_prepare(args):
    from diffpo.data.preparation import prepare_pairs, write_prepared

    data = _params(args, "prepare")["data"]
    prepared = prepare_pairs(data["source"], data["split"], data["max_pairs"])
    write_prepared(prepared, Path(args.pairs), Path(args.manifest))
    print(json.dumps(prepared.manifest, indent=2))


def cmd_pretrain_text_encoder(args):
    p = _params(args, "pretrain_text_encoder")
    _set_torch_threads()
    from diffpo.models.pretraining import pretrain_text_encoder

    summary = pretrain_text_encoder(p["corpus"]["source"], p["corpus"]["split"], p["data"]["resolution"],
                                    p["pretrain"]["text_encoder"], p["pretrain"]["seed"], Path(args.out))
    print(json.dumps(summary, indent=2))


def cmd_pretrain_vae(args):
    p = _params(args, "pretrain_vae")
    _set_torch_threads()
    from diffpo.models.pretraining import pretrain_vae

    summary = pretrain_vae(p["corpus"]["source"], p["corpus"]["split"], p["data"]["resolution"],
                           p["pretrain"]["vae"], p["pretrain"]["seed"], Path(args.out))
    print(json.dumps(summary, indent=2))


def cmd_encode(args):
    p = _params(args, "encode")
    _set_torch_threads()
    import pandas as pd

    from diffpo.data.preparation import encode_cache

    info = encode_cache(p["data"]["source"], p["data"]["split"], pd.read_parquet(args.pairs), args.text_encoder, args.vae,
                        Path(args.out), p["data"]["resolution"], p["encode"]["batch_size"], p["encode"]["dtype"])
    print(json.dumps(info, indent=2))


def cmd_encode_corpus(args):
    p = _params(args, "encode_corpus")
    _set_torch_threads()
    from diffpo.data.preparation import encode_cache, index_corpus

    source, split = p["corpus"]["source"], p["corpus"]["split"]
    corpus = index_corpus(source, split)
    info = encode_cache(source, split, corpus.index, args.text_encoder, args.vae, Path(args.out),
                        p["data"]["resolution"], p["encode"]["batch_size"], p["encode"]["dtype"])
    print(json.dumps({**info, "skipped": corpus.manifest["rows_skipped"]}, indent=2))


def cmd_pretrain_unet(args):
    p = _params(args, "pretrain_unet")["pretrain"]
    _set_torch_threads()
    from diffpo.files import atomic_path
    from diffpo.training.base_unet import pretrain_unet

    metrics = pretrain_unet(Path(args.cache), Path(args.text_encoder), Path(args.vae), p["unet"], p["scheduler"],
                            p["seed"], Path(args.work), Path(args.out))
    with atomic_path(args.metrics) as tmp:
        tmp.write_bytes(Path(metrics).read_bytes())


# ---------------------------------------------------------------- options (diffpo.cli.parser)
def options_world(p):
    """make the tiny profile's synthetic Pick-a-Pic: parquet shards, prompt sets, world.json"""
    stage(p, ("--out", "the folder to write (results/world)"))


def options_corpus(p):
    """make the tiny base model's own pre-training corpus (web-style images, loose captions)"""
    stage(p, ("--out", "the folder to write (results/corpus)"))


def options_prepare(p):
    """remove ties and unusable rows (counted by reason) and put the winner first"""
    stage(p, ("--pairs", "the prepared pair index to write (results/data/train_pairs.parquet)"),
          ("--manifest", "the counts to write: rows in, ties, rows skipped by reason, pairs out "
                         "(results/data/manifest.json)"))


def options_pretrain_text_encoder(p):
    """pre-train the tiny CLIP text encoder (with a small image tower, contrastively)"""
    stage(p, ("--out", "the folder to write (results/base/text)"))


def options_pretrain_vae(p):
    """pre-train the tiny autoencoder"""
    stage(p, ("--out", "the folder to write (results/base/autoencoder)"))


def options_encode(p):
    """encode every prepared pair once: VAE latents and prompt embeddings, shared by every method"""
    stage(p, ("--pairs", "the prepared pair index (from prepare)"), TEXT_ENCODER, VAE,
          ("--out", "the cache folder to write (results/cache)"))


def options_encode_corpus(p):
    """encode the pre-training corpus once (the base UNet's and the plateau control's data)"""
    stage(p, TEXT_ENCODER, VAE, ("--out", "the cache folder to write (results/cache_corpus)"))


def options_pretrain_unet(p):
    """pre-train the tiny UNet on the encoded corpus; write the whole pipeline folder"""
    stage(p, ("--cache", "the encoded corpus (results/cache_corpus)"), TEXT_ENCODER, VAE, WORK,
          ("--out", "the pipeline folder to write (results/base/pipeline)"),
          ("--metrics", "the per-step metrics to write (results/base/metrics.csv)"))
