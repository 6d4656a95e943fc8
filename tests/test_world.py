"""Tests of the synthetic Pick-a-Pic-like preference world (diffpo.world)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from diffpo import world
from diffpo.world import (GENERATOR_STYLES, OOD_TEMPLATES, SCHEMA, TEMPLATES, Attributes, GeneratorStyle,
                          WorldConfig, aesthetic_score, alignment_score, all_combinations, all_words,
                          decode_jpeg, encode_jpeg, make_caption, make_world, parse_caption,
                          preference_score, rate_pairs, render_batch)

SMALL = dict(seed=7, n_train_pairs=300, n_validation_unique=40, n_test_unique=40, n_ood_combinations=30,
             n_ood_phrasings=30, train_shard_size=128)
CLEAN = GeneratorStyle("clean", 0, 0, 0, 0, 1.0, 1.0, 0.0, 0.0)


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
    for path in shards + [out / "validation_unique-00000-of-00001.parquet",
                          out / "test_unique-00000-of-00001.parquet"]:
        assert pq.read_schema(path).remove_metadata() == SCHEMA
    train, val, test = (read_split(out, s) for s in ("train", "validation_unique", "test_unique"))
    assert (len(train), len(val), len(test)) == (300, 40, 40)
    for split in (val, test):
        assert split.caption.is_unique and (split.num_example_per_prompt == 1).all()
        assert not set(split.caption) & set(train.caption)
    assert (train.groupby("caption").size() == train.groupby("caption").num_example_per_prompt.first()).all()
    everything = [train, val, test]
    uids = np.concatenate([np.concatenate([s.image_0_uid, s.image_1_uid]) for s in everything])
    assert len(set(uids)) == len(uids)
    assert len(set(np.concatenate([s.ranking_id for s in everything]))) == 380
    assert set(train.model_0) | set(train.model_1) == {s.name for s in GENERATOR_STYLES}
    assert train.are_different.all() and train.has_label.all()
    for name, n in (("ood_combinations", 30), ("ood_phrasings", 30)):
        prompts = pq.read_table(out / "prompts" / f"{name}.parquet").to_pandas()
        assert list(prompts.columns) == ["caption", "prompt_id"] and len(prompts) == n
        assert prompts.caption.is_unique and prompts.prompt_id.dtype == np.int64


def test_every_caption_parses_back_and_uses_the_vocabulary():
    vocabulary = set(all_words())
    assert "," in vocabulary and all(w == w.lower() for w in vocabulary)
    for attrs in all_combinations():
        for template in TEMPLATES + OOD_TEMPLATES:
            caption = make_caption(attrs, template)
            assert parse_caption(caption) == attrs
            assert set(caption.replace(",", " , ").split()) <= vocabulary
    with pytest.raises(ValueError):
        parse_caption("a red blue circle on the left, white background")


def test_heldout_combinations_stay_out_of_the_splits(built):
    out, summary = built
    heldout = {Attributes(**a) for a in summary["heldout_combinations"]}
    assert len(heldout) == round(0.15 * len(all_combinations()))
    for split in ("train", "validation_unique", "test_unique"):
        assert not {parse_caption(c) for c in read_split(out, split).caption} & heldout
    ood = pq.read_table(out / "prompts" / "ood_combinations.parquet").to_pandas()
    assert {parse_caption(c) for c in ood.caption} <= heldout
    phrasings = pq.read_table(out / "prompts" / "ood_phrasings.parquet").to_pandas()
    in_templates = {make_caption(a, t) for a in all_combinations() for t in TEMPLATES}
    assert not {parse_caption(c) for c in phrasings.caption} & heldout
    assert not set(phrasings.caption) & in_templates


def test_clean_renders_align_and_wrong_colour_does_not():
    rng = np.random.default_rng(0)
    combos = all_combinations()
    captions = [make_caption(a, TEMPLATES[0]) for a in combos]
    images = np.stack([decode_jpeg(encode_jpeg(i)) for i in render_batch(combos, [CLEAN] * len(combos), rng)])
    assert images.shape == (len(combos), 32, 32, 3) and images.dtype == np.uint8
    clean = alignment_score(images, captions)
    assert clean.min() > 0.9
    colours = list(world.COLOURS)
    wrong = [dataclasses.replace(a, colour=colours[(colours.index(a.colour) + 1) % 6]) for a in combos]
    assert (alignment_score(images, [make_caption(a, TEMPLATES[0]) for a in wrong]) < clean - 0.15).all()
    blank = np.full((2, 32, 32, 3), 245, np.uint8)
    empty = alignment_score(blank, captions[:2])
    assert np.isfinite(empty).all() and (empty < 0.5).all()


def test_faded_and_dark_renders_look_worse():
    rng = np.random.default_rng(1)
    combos = all_combinations()
    crisp = aesthetic_score(render_batch(combos, [CLEAN] * len(combos), rng))
    for style in (dataclasses.replace(CLEAN, contrast=0.45, saturation=0.5),
                  dataclasses.replace(CLEAN, exposure=-0.3)):
        assert aesthetic_score(render_batch(combos, [style] * len(combos), rng)).mean() < crisp.mean() - 0.15
    assert ((crisp >= 0) & (crisp <= 1)).all()


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
