"""Data preparation: tie removal, winner first, counted skips, the manifest, bad input."""

import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffpo import world
from diffpo.data.preparation import DataError, label_outcome, list_shards, prepare_pairs, remove_ties

SMALL = dict(seed=3, n_train_pairs=400, n_validation_unique=20, n_test_unique=20, n_ood_combinations=10,
             n_ood_phrasings=10, train_shard_size=150, n_corrupt_rows=3, n_invalid_label_rows=2)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return out, world.make_world(world.WorldConfig(**SMALL), out)


def test_label_outcomes():
    assert label_outcome(1.0, 0.0) == "0"
    assert label_outcome(0.0, 1.0) == "1"
    assert label_outcome(0.5, 0.5) == "tie"
    for bad in [(1.0, 1.0), (0.7, 0.3), (0.5, 0.0), (float("nan"), 1.0)]:
        assert label_outcome(*bad) == "invalid"


def test_remove_ties_counts_by_reason():
    labels = pd.DataFrame({"label_0": [1, 0, 0.5, 0.5, 1, 0.2], "label_1": [0, 1, 0.5, 0.5, 1, 0.8]})
    keep, counts = remove_ties(labels)
    assert keep.tolist() == [True, True, False, False, False, False]
    assert counts == {"kept": 2, "tie": 2, "invalid_label": 2}


def test_prepare_matches_what_the_world_injected(small_world):
    out, summary = small_world
    train = pq.read_table(list_shards(out, "train")).to_pandas()
    ties = int(((train.label_0 == 0.5) & (train.label_1 == 0.5)).sum())
    bad = summary["splits"]["train"]["bad_rows"]
    prepared = prepare_pairs(out, "train")
    m = prepared.manifest
    assert m["rows_in"] == 400
    assert m["ties_removed"] == ties > 0
    assert m["rows_skipped"] == {"invalid_label": len(bad["invalid_label_rows"]),
                                 "undecodable_image": len(bad["corrupt_jpg_rows"])}
    assert m["pairs_out"] == 400 - ties - 5 == len(prepared.index)
    assert m["unique_prompts"] == prepared.index.caption.nunique()


def test_winner_is_first(small_world):
    out, _ = small_world
    prepared = prepare_pairs(out, "train")
    train = pq.read_table(list_shards(out, "train")).to_pandas().set_index("ranking_id")
    for row in prepared.index.head(50).itertuples():
        source = train.loc[row.ranking_id]
        winner_side = "1" if source.label_1 == 1.0 else "0"
        assert row.uid_w == source[f"image_{winner_side}_uid"]
        assert row.model_w == source[f"model_{winner_side}"]
        assert row.swapped == (winner_side == "1")


def test_missing_columns_is_a_clear_error(tmp_path):
    pd.DataFrame({"caption": ["x"], "jpg_0": [b""], "label_0": [1.0]}).to_parquet(tmp_path / "train-0.parquet")
    with pytest.raises(DataError, match=r"missing columns \['jpg_1', 'label_1'\]"):
        prepare_pairs(tmp_path, "train")


def test_unknown_hub_dataset_says_how_to_provide_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="local folder"):
        list_shards("hf://datasets/nobody/no-such-dataset", "train")


def test_max_pairs_limits_the_output(small_world):
    out, _ = small_world
    assert len(prepare_pairs(out, "train", max_pairs=25).index) == 25


def test_prompt_sets_from_every_supported_format(tmp_path, small_world):
    from diffpo.data.reading import read_prompts

    out, _ = small_world
    assert len(read_prompts({"source": str(out), "split": "validation_unique"})) == 20
    assert len(read_prompts({"file": str(out / "prompts" / "ood_combinations.parquet")})) == 10
    (tmp_path / "parti.tsv").write_text("Prompt\tCategory\na red cube\tObjects\na blue dog\tAnimals\n")
    assert read_prompts({"file": str(tmp_path / "parti.tsv")}) == ["a red cube", "a blue dog"]
    bench = tmp_path / "hps"
    bench.mkdir()
    (bench / "photo.json").write_text('["p1", "p2"]')
    (bench / "anime.json").write_text('["a1"]')
    assert read_prompts({"file": str(bench)}) == ["a1", "p1", "p2"]
    with pytest.raises(DataError, match="PartiPrompts.tsv"):
        read_prompts({"file": str(tmp_path / "missing.tsv")})
