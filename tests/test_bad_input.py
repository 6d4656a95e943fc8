"""Bad input, built by fixtures: each mistake stops with an error naming the file, the row or
the key (and saying what to write instead), or is skipped and counted."""

import copy
import re

import pytest
import yaml

from diffpo.config import ParamsError, load_params


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
    case("duplicate_key", text=lambda t: t.replace("\ntrain:\n", "\ntrain:\n  seed: 7\n", 1))
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
    first = _line_of(path, "  seed: 7")
    second = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if i > first and line == "  seed: 0")
    with pytest.raises(ParamsError, match=rf"^{re.escape(str(path))}, line {second}, column 3: "
                                          rf"duplicate key 'seed' \(first given on line {first}\)$"):
        load_params(path)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    from diffpo.config import read_yaml

    path = tmp_path / "merge.yaml"
    path.write_text("a: &base {x: 1, y: 2}\nb:\n  <<: *base\n  y: 3\n")
    assert read_yaml(path) == {"a": {"x": 1, "y": 2}, "b": {"x": 1, "y": 3}}
