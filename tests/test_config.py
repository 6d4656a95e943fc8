"""params.yaml: profiles, schema validation, errors that name the key."""

import pytest

from diffpo.settings.params import ParamsError, load_params, resolve_params
from diffpo.settings.configs import TrainConfig, build, method_settings
from diffpo.settings.stages import stage_params


def test_committed_params_are_valid_for_both_profiles(root):
    tiny = load_params(root / "params.yaml")
    paper = load_params(root / "params.yaml", profile="paper")
    assert tiny["profile"] == "tiny" and paper["profile"] == "paper"
    assert tiny["data"]["resolution"] == 32 and paper["data"]["resolution"] == 512
    assert paper["base"]["pretrained"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"


def test_wrong_type_names_the_key(raw_params, schema):
    raw_params["methods"]["sft_w"]["learning_rate"] = "fast"
    with pytest.raises(ParamsError, match=r"methods\.sft_w\.learning_rate: 'fast' is not of type 'number'"):
        resolve_params(raw_params, schema)


def test_misspelt_key_is_refused(raw_params, schema):
    raw_params["train"]["stpes"] = 10
    with pytest.raises(ParamsError, match="stpes"):
        resolve_params(raw_params, schema)


def test_error_in_the_other_profile_is_caught(raw_params, schema):
    raw_params["train"]["steps"] = {"tiny": 10, "paper": -1}
    with pytest.raises(ParamsError, match=r"(?s)profile paper.*train\.steps: -1"):
        resolve_params(raw_params, schema)


def test_profile_map_must_give_both_profiles(raw_params, schema):
    raw_params["train"]["steps"] = {"tiny": 10}
    with pytest.raises(ParamsError, match=r"train\.steps.*missing \['paper'\]"):
        resolve_params(raw_params, schema)


def test_unknown_objective_and_method_are_clear_errors(raw_params, schema):
    params = resolve_params(raw_params, schema)
    with pytest.raises(ParamsError, match="unknown method 'dpo'.*diffusion_dpo"):
        method_settings(params, "dpo")
    raw_params["methods"]["sft_w"]["objective"] = "magic"
    with pytest.raises(ParamsError, match=r"methods\.sft_w\.objective"):
        resolve_params(raw_params, schema)


def test_method_overrides_train_defaults(root):
    params = load_params(root / "params.yaml")
    cfg = build(TrainConfig, method_settings(params, "diffusion_dpo"))
    assert cfg.learning_rate == params["methods"]["diffusion_dpo"]["learning_rate"]
    assert cfg.steps == params["train"]["steps"] and cfg.beta == 2000


def test_a_stage_sees_only_its_keys(root):
    params = load_params(root / "params.yaml")
    view = stage_params(params, "train", method="sft_w")
    assert set(view) == {"profile", "build", "train", "methods"} and view["build"] == {"stand_ins": True}
    assert set(view["methods"]) == {"sft_w"}


def test_the_workflow_schema_is_the_package_schema(root):
    """One schema: package data (found wherever the params file is), linked from Snakemake's usual place."""
    linked = root / "workflow" / "schemas" / "params.schema.yaml"
    assert linked.is_symlink() and linked.resolve() == (root / "src" / "diffpo" / "settings" / "params.schema.yaml").resolve()
