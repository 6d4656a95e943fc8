"""Tests of the synthetic Pick-a-Pic-like preference world (diffpo.world)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from diffpo import world
from diffpo.world import (CORPUS_SCHEMA, FREE_ATTRIBUTES, GENERATOR_STYLES, OOD_TEMPLATES, SCHEMA, TEMPLATES,
                          Attributes, WorldConfig, all_combinations, all_words, corpus_caption, decode_jpeg,
                          leave_free, make_caption, make_corpus, make_world, parse_caption, preference_score,
                          rate_pairs, render_batch)
from diffpo.world.statistics import disjointness

SMALL = dict(seed=7, n_train_pairs=300, n_validation_unique=40, n_test_unique=40, n_tuning=40, n_ood_combinations=30,
             n_ood_phrasings=30, train_shard_size=128)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("world")
    return out, make_world(WorldConfig(**SMALL), out)


def read_split(out: Path, split: str):
    return pq.read_table(sorted(out.glob(f"{split}-*.parquet"))).to_pandas()


def test_same_seed_gives_identical_bytes(built, tmp_path):
    out, _ = built
    make_world(WorldConfig(**SMALL), tmp_path)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for name in files:
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_config_round_trips_through_a_params_dict(built):
    out, summary = built
    saved = json.loads((out / "world.json").read_text())
    assert WorldConfig(**saved["config"]) == WorldConfig(**SMALL)
    assert saved["splits"]["train"]["rows"] == summary["splits"]["train"]["rows"]


def test_schema_and_split_sizes(built):
    out, _ = built
    shards = sorted(out.glob("train-*.parquet"))
    assert [p.name for p in shards] == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    for path in shards + [out / f"{split}-00000-of-00001.parquet" for split in ("validation_unique", "test_unique", "tuning")]:
        assert pq.read_schema(path).remove_metadata() == SCHEMA
    train, val, test, tuning = (read_split(out, s) for s in ("train", "validation_unique", "test_unique", "tuning"))
    assert (len(train), len(val), len(test), len(tuning)) == (300, 40, 40, 40)
    for split in (val, test, tuning):
        assert split.caption.is_unique and (split.num_example_per_prompt == 1).all()
        assert not set(split.caption) & set(train.caption)
    # the tuning split chooses settings: it shares no prompt with the splits tables report
    assert not set(tuning.caption) & (set(val.caption) | set(test.caption))
    assert (train.groupby("caption").size() == train.groupby("caption").num_example_per_prompt.first()).all()
    everything = [train, val, test, tuning]
    uids = np.concatenate([np.concatenate([s.image_0_uid, s.image_1_uid]) for s in everything])
    assert len(set(uids)) == len(uids)
    assert len(set(np.concatenate([s.ranking_id for s in everything]))) == 420
    assert set(train.model_0) | set(train.model_1) == {s.name for s in GENERATOR_STYLES}
    assert train.are_different.all() and train.has_label.all()
    for name, n in (("ood_combinations", 30), ("ood_phrasings", 30)):
        prompts = pq.read_table(out / "prompts" / f"{name}.parquet").to_pandas()
        assert list(prompts.columns) == ["caption", "prompt_id"] and len(prompts) == n
        assert prompts.caption.is_unique and prompts.prompt_id.dtype == np.int64


def test_every_caption_parses_back_and_uses_the_vocabulary():
    vocabulary = set(all_words())
    assert "," in vocabulary and all(w == w.lower() for w in vocabulary)
    rng = np.random.default_rng(0)
    for attrs in all_combinations():
        for template in TEMPLATES + OOD_TEMPLATES:
            free = tuple(f for f in FREE_ATTRIBUTES if rng.random() < 0.5)
            for request in (attrs, leave_free(attrs, free)):
                caption = make_caption(request, template)
                assert parse_caption(caption) == request, caption
                assert set(caption.replace(",", " , ").split()) <= vocabulary
        loose = leave_free(attrs, ("colour", "background"))
        caption = corpus_caption(loose, rng)
        assert parse_caption(caption) == loose and set(caption.replace(",", " , ").split()) <= vocabulary
    with pytest.raises(ValueError):
        parse_caption("a red blue circle on the left, white background")
    with pytest.raises(ValueError):  # a prompt always names colour and shape
        make_caption(leave_free(all_combinations()[0], ("shape",)), TEMPLATES[0])


def compatible(request: Attributes, combination: Attributes) -> bool:
    return all(getattr(request, f) in (None, getattr(combination, f)) for f in request.named())


def test_prompts_leave_attributes_free_and_heldout_combinations_out(built):
    out, summary = built
    heldout = [Attributes(**a) for a in summary["heldout_combinations"]]
    seen = [a for a in all_combinations() if a not in set(heldout)]
    assert len(heldout) == round(0.15 * len(all_combinations()))
    captions = [c for split in ("train", "validation_unique", "test_unique", "tuning") for c in read_split(out, split).caption]
    requests = {parse_caption(c) for c in captions}
    assert all(r.colour and r.shape for r in requests)
    free = np.mean([len(r.free()) for r in requests]) / len(FREE_ATTRIBUTES)
    assert 0.2 < free < 0.4  # free_attribute_probability 0.3
    assert not {r for r in requests if not r.free()} & set(heldout)
    assert all(any(compatible(r, a) for a in seen) for r in requests)
    ood = pq.read_table(out / "prompts" / "ood_combinations.parquet").to_pandas()
    assert all(any(compatible(parse_caption(c), a) for a in heldout) for c in ood.caption)
    phrasings = pq.read_table(out / "prompts" / "ood_phrasings.parquet").to_pandas()
    in_templates = {make_caption(leave_free(a, f), t) for a in all_combinations() for t in TEMPLATES
                    for f in ((), ("background",), ("size",), ("position",))}
    assert not set(phrasings.caption) & in_templates


def test_generators_rank_as_designed(built):
    _, summary = built
    rng = np.random.default_rng(2)
    combos = all_combinations()
    captions = [make_caption(a, TEMPLATES[1]) for a in combos]
    means = {s.name: preference_score(render_batch(combos, [s] * len(combos), rng), captions).mean()
             for s in GENERATOR_STYLES}
    recorded = summary["splits"]["train"]["mean_utility"]
    for table in (means, recorded):
        assert all(table["gen-crisp"] > table[name] + 0.05 for name in table if name != "gen-crisp")


def test_corpus_is_loose_web_data_disjoint_from_the_preference_data(built, tmp_path):
    out, _ = built
    facts = make_corpus(seed=7, n_captions=200, shard_size=120, image_size=32, out_dir=tmp_path)
    shards = sorted(tmp_path.glob("corpus-*.parquet"))
    assert [p.name for p in shards] == facts["shards"] == ["corpus-00000-of-00002.parquet", "corpus-00001-of-00002.parquet"]
    assert all(pq.read_schema(p).remove_metadata() == CORPUS_SCHEMA for p in shards)
    corpus = pq.read_table(shards).to_pandas()
    assert len(corpus) == 200
    assert set(corpus.model_0) | set(corpus.model_1) <= {"web-photo", "web-washed", "web-dark", "web-blurry"}
    requests = [parse_caption(c) for c in corpus.caption]
    # loose captions: every attribute is sometimes left out, shape and colour included
    for field in ("colour", "shape", "background", "size", "position"):
        named = np.mean([getattr(r, field) is not None for r in requests])
        assert 0.2 < named < 0.95, field
    preference = sorted(out.glob("*.parquet"))
    assert disjointness(shards, preference) == {"corpus_images": 400, "preference_images": 840,
                                                "shared_uids": 0, "shared_content": 0}
    # the check can fail: a corpus that copied a preference image is caught
    assert disjointness(shards + preference[:1], preference)["shared_content"] > 0


def test_labels_follow_utility_at_the_recorded_rate(built):
    out, summary = built
    train = read_split(out, "train")
    facts = summary["splits"]["train"]
    bad = set(facts["bad_rows"]["corrupt_jpg_rows"]) | set(facts["bad_rows"]["invalid_label_rows"])
    rows = train.drop(index=sorted(bad))
    images = [np.stack([decode_jpeg(b) for b in rows[f"jpg_{k}"]]) for k in (0, 1)]
    u0, u1 = (preference_score(i, list(rows.caption)) for i in images)
    decided = rows.label_0.to_numpy() != 0.5
    agreement = ((rows.label_0.to_numpy() == 1) == (u0 > u1))[decided].mean()
    assert 0.7 < facts["rater_agreement"] < 0.9
    assert abs(agreement - facts["rater_agreement"]) < 0.02
    ties = rows.label_0 == 0.5
    assert (rows.best_image_uid[ties] == "").all()
    winners = np.where(rows.label_0[~ties] == 1, rows.image_0_uid[~ties], rows.image_1_uid[~ties])
    assert (rows.best_image_uid[~ties].to_numpy() == winners).all()


def test_tie_fraction_hits_target():
    rng = np.random.default_rng(3)
    u0, u1 = rng.random(20000), rng.random(20000)
    labels, tie = rate_pairs(u0, u1, 0.1, 0.10, rng)
    assert abs(tie.mean() - 0.10) < 0.01
    assert np.abs(u0 - u1)[tie].mean() < np.abs(u0 - u1)[~tie].mean()
    assert set(np.unique(labels)) == {0.0, 0.5, 1.0}


def test_bad_rows_are_present_as_recorded(built):
    out, summary = built
    train = read_split(out, "train")
    bad = summary["splits"]["train"]["bad_rows"]
    assert len(bad["corrupt_jpg_rows"]) == 3 and len(bad["invalid_label_rows"]) == 2
    for i, row in train.iterrows():
        if i in bad["corrupt_jpg_rows"]:
            with pytest.raises(ValueError, match="undecodable"):
                decode_jpeg(row[bad["corrupt_jpg_columns"][bad["corrupt_jpg_rows"].index(i)]])
        else:
            assert decode_jpeg(row.jpg_0).shape == decode_jpeg(row.jpg_1).shape == (32, 32, 3)
        valid = (row.label_0, row.label_1) in {(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)}
        assert valid == (i not in bad["invalid_label_rows"])
    with pytest.raises(ValueError):
        decode_jpeg(b"not a jpeg")


def test_interval_by_hand():
    from diffpo.world.statistics import Z95, interval

    facts = interval(np.array([1.0, 2.0, 3.0, np.nan]))  # NaN: a prompt without the quantity
    se = 1 / np.sqrt(3)  # std (ddof 1) of 1, 2, 3 is 1
    assert facts["mean"] == 2.0 and facts["n_prompts"] == 3 and np.isclose(facts["se"], se)
    assert np.allclose(facts["ci95"], [2 - Z95 * se, 2 + Z95 * se])


def test_data_versus_base_gap_is_paired_by_prompt(built):
    from diffpo.world.statistics import data_vs_base

    out, _ = built
    shards = sorted(out.glob("validation_unique-*.parquet"))
    split = read_split(out, "validation_unique")
    images = [np.stack([decode_jpeg(b) for b in split[f"jpg_{k}"]]) for k in (0, 1)]
    u0, u1 = (preference_score(i, list(split.caption)) for i in images)
    # a "base model" scoring 0.5 below image 0 of every prompt, with two samples per prompt
    base = pd.DataFrame({"caption": np.repeat(split.caption, 2), "gt_preference": np.repeat(u0 - 0.5, 2),
                         "degradation": 0.0})
    facts = data_vs_base(shards, base, 0.6, 0.4)
    assert facts["prompts"] == 40
    assert np.isclose(facts["random_data_image_minus_base"]["mean"], np.mean((u1 - u0) / 2 + 0.5))
    decided = split.label_0.to_numpy() != 0.5
    winner = np.where(split.label_0 == 1, u0, u1)
    assert np.isclose(facts["winner_minus_base"]["mean"], np.mean((winner - u0 + 0.5)[decided]))
