"""Bad input, built by fixtures: each mistake stops with an error naming the file, the row or
the key (and saying what to write instead), or is skipped and counted."""

import copy
import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from diffpo.settings.params import ParamsError, load_params
from diffpo.data.preparation import SKIP_REASONS, prepare_pairs
from diffpo.data.reading import DataError, list_shards


# ---------------------------------------------------------------- settings
def _dump(raw: dict) -> str:
    return yaml.safe_dump(raw, sort_keys=False, width=200)


@pytest.fixture(scope="module")
def bad_settings(tmp_path_factory, root) -> dict:
    """One settings file per mistake: the project's params.yaml with that one mistake, kept
    outside the project (so the schema must come with the package)."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    folder = tmp_path_factory.mktemp("settings")
    cases = {}

    def case(name, edit=None, text=None):
        changed = copy.deepcopy(raw)
        if edit:
            edit(changed)
        cases[name] = folder / f"{name}.yaml"
        cases[name].write_text(text(_dump(changed)) if text else _dump(changed))

    case("valid")
    case("float_steps", lambda r: r["train"].update(steps={"tiny": 600.0, "paper": 2000}))
    # YAML reads 3e-4 (no decimal point) as text; the dump quotes it, a user would not
    case("exponent_as_text", lambda r: r["train"].update(learning_rate="3e-4"), lambda t: t.replace("'3e-4'", "3e-4"))
    case("none_of_the_alternatives", lambda r: r["data"].update(max_pairs=0))
    case("unknown_method_key", lambda r: r["methods"]["sft_w"].update(stpes=10))
    case("missing_beta", lambda r: r["methods"]["diffusion_dpo"].pop("beta"))
    case("no_reward_scorer", lambda r: r["methods"]["d3po"].update(reward_scorer=None))
    # only the paper column breaks the rule: 100 updates between checkpoints, rounds of 3
    case("checkpoint_not_a_multiple_of_the_round", lambda r: r["methods"]["d3po"].update(
        round_updates={"tiny": 4, "paper": 3}, checkpoint_every={"tiny": 40, "paper": 100}))
    case("syntax_error", text=lambda t: t.replace("\ntrain:\n", "\ntrain: [unclosed\n", 1))
    case("duplicate_key", text=lambda t: t.replace("\ntrain:\n", "\ntrain:\n  steps: 7\n", 1))
    return cases


def _line_of(path, pattern: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if re.match(pattern, line))


def test_a_params_file_outside_the_project_is_validated(bad_settings):
    assert load_params(bad_settings["valid"])["profile"] == "tiny"


@pytest.mark.parametrize("name, message", [
    ("float_steps", r"train\.steps: 600\.0 is not an integer: write 600"),
    ("exponent_as_text", r"train\.learning_rate: '3e-4' is text to YAML, not a number: write 3\.0e-4"),
    ("none_of_the_alternatives", r"data\.max_pairs: 0 is not allowed here: write null or an integer >= 1"),
    ("unknown_method_key", r"methods\.sft_w: unknown key 'stpes'; write one of: steps, "),
    ("missing_beta", r"\(profile tiny\):\n  methods\.diffusion_dpo: Diffusion-DPO: objective diffusion_dpo needs beta"),
    ("no_reward_scorer", r"methods\.d3po: D3PO: objective d3po needs a reward_scorer"),
    ("checkpoint_not_a_multiple_of_the_round",
     r"\(profile paper\):\n  methods\.d3po: D3PO: checkpoint_every must be a multiple of round_updates"),
])
def test_a_wrong_value_names_the_file_and_key_and_what_to_write(bad_settings, name, message):
    path = bad_settings[name]
    with pytest.raises(ParamsError, match=rf"^{re.escape(str(path))} is invalid (?s:.*){message}"):
        load_params(path)


def test_a_yaml_syntax_error_names_the_file_and_line(bad_settings):
    path = bad_settings["syntax_error"]
    with pytest.raises(ParamsError) as error:
        load_params(path)
    unclosed = _line_of(path, r"train: \[unclosed")
    assert re.match(rf"{re.escape(str(path))}, line {unclosed + 1}, column \d+: ", str(error.value)), error.value
    assert "\n" not in str(error.value)


def test_a_key_given_twice_names_the_file_line_and_key(bad_settings):
    path = bad_settings["duplicate_key"]
    first = _line_of(path, "  steps: 7")
    second = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if i > first and line.startswith("  steps:"))
    with pytest.raises(ParamsError, match=rf"^{re.escape(str(path))}, line {second}, column 3: "
                                          rf"duplicate key 'steps' \(first given on line {first}\)$"):
        load_params(path)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    from diffpo.settings.params import read_yaml

    path = tmp_path / "merge.yaml"
    path.write_text("a: &base {x: 1, y: 2}\nb:\n  <<: *base\n  y: 3\n")
    assert read_yaml(path) == {"a": {"x": 1, "y": 2}, "b": {"x": 1, "y": 3}}


# ---------------------------------------------------------------- data
def _image(value: int, size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (value, 255 - value, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def _grey16(value: int) -> bytes:
    """A 16-bit greyscale PNG of one level (0-65535)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16), value, dtype=np.uint16)).save(buffer, "PNG")
    return buffer.getvalue()


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"caption": f"a red cube {i}", "jpg_0": _image(3 * i), "jpg_1": _image(3 * i + 1),
             "label_0": 1.0, "label_1": 0.0, "ranking_id": i} for i in range(start, start + n)]


def _write(folder: Path, rows: list[dict], name: str = "train-0.parquet", caption_type=pa.string()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    captions = pa.array([c.encode() if isinstance(c, str) else c for c in columns.pop("caption")], pa.binary())
    table = pa.table({"caption": captions.view(caption_type) if caption_type != pa.binary() else captions,
                      **{k: pa.array(v, pa.int64() if k == "ranking_id" else None) for k, v in columns.items()}})
    pq.write_table(table, folder / name)
    return folder / name


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory) -> dict:
    """One source folder (Pick-a-Pic layout) per kind of bad data."""
    root = tmp_path_factory.mktemp("data")
    cases = {}
    mixed = _rows(4)
    mixed[2]["jpg_1"] = _image(99, size=(24, 20))
    _write(root / "mixed_sizes", mixed)
    cases["mixed_sizes"] = root / "mixed_sizes"

    _write(root / "not_parquet", _rows(3))
    (root / "not_parquet" / "train-1.parquet").write_text("caption,jpg_0\nnot,parquet\n")
    cases["not_parquet"] = root / "not_parquet"
    whole = _write(root / "truncated", _rows(3)).read_bytes()
    (root / "truncated" / "train-0.parquet").write_bytes(whole[: len(whole) // 2])
    cases["truncated"] = root / "truncated"

    rows = _rows(8)
    rows[1]["caption"] = b"caf\xe9 au lait"      # Latin-1, not UTF-8
    rows[2]["ranking_id"] = None
    rows[3] = dict(rows[0])                        # the same ranking twice
    rows[4]["caption"] = "   "
    rows[5]["jpg_0"] = _grey16(20000)              # 16-bit: level 20000 of 65535 is 78 of 255
    _write(root / "bad_rows", rows)
    cases["bad_rows"] = root / "bad_rows"
    _write(root / "bytes_captions", _rows(3), caption_type=pa.binary())
    cases["bytes_captions"] = root / "bytes_captions"
    return cases


def test_an_image_of_another_size_is_resized_and_counted(bad_data):
    from diffpo.scoring.stand_ins import read_pairs
    from diffpo.data.reading import decode_image, fit_image

    pairs = read_pairs(bad_data["mixed_sizes"], "train")
    assert pairs.images_1.shape == (4, 16, 16, 3) and pairs.resized == 1 and pairs.image_size == (16, 16)
    expected = fit_image(decode_image(_image(99, size=(24, 20))), 16, 16)
    assert np.array_equal(pairs.images_1[2], np.asarray(expected))
    assert read_pairs(bad_data["mixed_sizes"], "train", size=(8, 8)).resized == 8


@pytest.mark.parametrize("case, shard", [("not_parquet", "train-1.parquet"), ("truncated", "train-0.parquet")])
def test_a_shard_that_is_not_whole_parquet_is_named(bad_data, case, shard):
    with pytest.raises(DataError, match=rf"{re.escape(str(bad_data[case] / shard))}: not a readable parquet file"):
        prepare_pairs(bad_data[case], "train")


def test_rows_that_cannot_be_used_are_counted_by_reason(bad_data):
    prepared = prepare_pairs(bad_data["bad_rows"], "train")
    assert prepared.manifest["rows_skipped"] == {"duplicate_row": 1, "empty_caption": 1, "invalid_label": 0,
                                                 "invalid_ranking_id": 1, "undecodable_caption": 1}
    assert prepared.manifest["pairs_out"] == 4 and prepared.index["row"].tolist() == [0, 5, 6, 7]
    assert set(prepared.manifest["rows_skipped"]) <= set(SKIP_REASONS)


def test_the_scorers_reader_skips_the_same_rows(bad_data):
    from diffpo.scoring.stand_ins import read_pairs

    pairs = read_pairs(bad_data["bad_rows"], "train")
    assert len(pairs) == 4 and pairs.skipped == {"undecodable_image": 0, "invalid_label": 0, "duplicate_row": 1,
                                                 "empty_caption": 1, "invalid_ranking_id": 1, "undecodable_caption": 1}
    assert abs(pairs.images_0[1].mean() - 78) < 0.5  # the 16-bit image, scaled to 8 bits, not clipped to white


def test_captions_stored_as_bytes_are_read_as_text(bad_data):
    prepared = prepare_pairs(bad_data["bytes_captions"], "train")
    assert prepared.index["caption"].tolist() == ["a red cube 0", "a red cube 1", "a red cube 2"]
    assert "empty_caption" not in prepared.manifest["rows_skipped"]


def test_sixteen_bit_greyscale_keeps_its_levels():
    from diffpo.data.reading import decode_image

    for level in (0, 20000, 65535):
        assert np.asarray(decode_image(_grey16(level))).tolist() == [[[round(level / 257)] * 3] * 16] * 16


def test_a_missing_source_folder_says_so_and_never_goes_to_the_hub(tmp_path, monkeypatch):
    import huggingface_hub

    def no_download(*args, **kwargs):
        raise AssertionError("a missing folder must not be looked up on the hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    for source in ("resources/pickapic_v2", tmp_path / "results" / "world"):
        with pytest.raises(DataError, match=rf"data source '{re.escape(str(source))}' does not exist \("):
            prepare_pairs(source, "train")
    (tmp_path / "shard.parquet").write_text("")
    with pytest.raises(DataError, match="is a file, not a folder of parquet shards"):
        list_shards(tmp_path / "shard.parquet", "train")


def test_only_an_explicit_hub_id_is_downloaded(tmp_path, monkeypatch):
    import huggingface_hub

    _write(tmp_path / "snapshot" / "data", _rows(2))
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kwargs: calls.append(repo_id) or str(tmp_path / "snapshot"))
    assert list_shards("hf://datasets/owner/name", "train") == [tmp_path / "snapshot" / "data" / "train-0.parquet"]
    assert calls == ["owner/name"]
