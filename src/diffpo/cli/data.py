"""The stages before preference training: the tiny world and corpus, the preference pairs,
the base model's pre-training and the encoded caches."""

from __future__ import annotations

import json
from pathlib import Path

from diffpo.cli import _params, _set_torch_threads


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
    from diffpo.data import prepare_pairs, write_prepared

    data = _params(args, "prepare")["data"]
    prepared = prepare_pairs(data["source"], data["split"], data["max_pairs"])
    write_prepared(prepared, Path(args.pairs), Path(args.manifest))
    print(json.dumps(prepared.manifest, indent=2))


def cmd_pretrain_text_encoder(args):
    p = _params(args, "pretrain_text_encoder")
    _set_torch_threads()
    from diffpo.pretraining import pretrain_text_encoder

    summary = pretrain_text_encoder(p["corpus"]["source"], p["corpus"]["split"], p["data"]["resolution"],
                                    p["pretrain"]["text_encoder"], p["pretrain"]["seed"], Path(args.out))
    print(json.dumps(summary, indent=2))


def cmd_pretrain_vae(args):
    p = _params(args, "pretrain_vae")
    _set_torch_threads()
    from diffpo.pretraining import pretrain_vae

    summary = pretrain_vae(p["corpus"]["source"], p["corpus"]["split"], p["data"]["resolution"],
                           p["pretrain"]["vae"], p["pretrain"]["seed"], Path(args.out))
    print(json.dumps(summary, indent=2))


def cmd_encode(args):
    p = _params(args, "encode")
    _set_torch_threads()
    import pandas as pd

    from diffpo.data import encode_cache

    info = encode_cache(p["data"]["source"], p["data"]["split"], pd.read_parquet(args.pairs), args.text_encoder, args.vae,
                        Path(args.out), p["data"]["resolution"], p["encode"]["batch_size"], p["encode"]["dtype"])
    print(json.dumps(info, indent=2))


def cmd_encode_corpus(args):
    p = _params(args, "encode_corpus")
    _set_torch_threads()
    from diffpo.data import encode_cache, index_corpus

    source, split = p["corpus"]["source"], p["corpus"]["split"]
    corpus = index_corpus(source, split)
    info = encode_cache(source, split, corpus.index, args.text_encoder, args.vae, Path(args.out),
                        p["data"]["resolution"], p["encode"]["batch_size"], p["encode"]["dtype"])
    print(json.dumps({**info, "skipped": corpus.manifest["rows_skipped"]}, indent=2))


def cmd_pretrain_unet(args):
    p = _params(args, "pretrain_unet")["pretrain"]
    _set_torch_threads()
    from diffpo.files import atomic_path
    from diffpo.pretraining import pretrain_unet

    metrics = pretrain_unet(Path(args.cache), Path(args.text_encoder), Path(args.vae), p["unet"], p["scheduler"],
                            p["seed"], Path(args.work), Path(args.out))
    with atomic_path(args.metrics) as tmp:
        tmp.write_bytes(Path(metrics).read_bytes())
