"""The tuning protocol: equal budgets, the selection rule, and params.yaml equal to the committed selection."""

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from diffpo.settings.params import load_params, load_schema, resolve_params
from diffpo.settings.tuning import TuningError, expected_settings, grid_points, select_points, selected_settings

ROOT = Path(__file__).resolve().parents[1]
SELECTION = ROOT / "results" / "tuning" / "selection.csv"


def test_selection_rule_takes_the_best_mean_never_a_diverged_run_and_the_earlier_of_a_tie():
    results = pd.DataFrame([
        {"method": "a", "point": 0, "score": 0.50, "setting.learning_rate": 1e-4},
        {"method": "a", "point": 1, "score": None, "setting.learning_rate": 3e-3},  # diverged
        {"method": "a", "point": 2, "score": 0.55, "setting.learning_rate": 3e-4},
        {"method": "b", "point": 1, "score": 0.40, "setting.learning_rate": 1e-3},
        {"method": "b", "point": 0, "score": 0.40, "setting.learning_rate": 1e-4},
    ])
    table = select_points(results)
    assert table.loc[table["selected"], ["method", "point"]].values.tolist() == [["a", 2], ["b", 0]]
    assert selected_settings(table) == {"a": {"learning_rate": 3e-4}, "b": {"learning_rate": 1e-4}}
    with pytest.raises(TuningError, match="every grid point of c diverged"):
        select_points(pd.DataFrame([{"method": "c", "point": 0, "score": math.nan}]))


def test_every_tuned_method_gets_the_same_budget_on_a_set_no_table_reports():
    params = load_params(ROOT / "params.yaml")
    grids = params["tuning"]["grids"]
    assert grids and all(len(grid_points(params, m)) == params["tuning"]["budget"] for m in grids)
    assert params["tuning"]["prompt_set"] != params["sample"]["prompt_set"]
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tuning"]["grids"]["sft_w"]["tiny"]["learning_rate"].append(1.0e-2)
    with pytest.raises(TuningError, match=r"tuning.grids.sft_w: 5 grid points; every method gets the same budget"):
        resolve_params(raw, load_schema())
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tuning"]["prompt_set"] = "validation_unique"
    with pytest.raises(TuningError, match="the prompt set the tables report"):
        resolve_params(raw, load_schema())


def test_grid_points_are_the_product_in_declaration_order():
    params = load_params(ROOT / "params.yaml")
    points = grid_points(params, "diffusion_dpo")
    assert points == [{"learning_rate": lr, "beta": b} for lr in (3e-5, 1e-4) for b in (2000, 5000)]
    assert grid_points(params, "see_diffusion_dpo")[0] == {"gamma": 0.1}  # lr and beta: diffusion_dpo's selection


def test_params_yaml_holds_the_committed_selection():
    """The tiny values under `methods` are the tuning's selection (inherited rows included)."""
    # A tracked file (git ls-files): missing, it is a broken checkout, never a reason to skip the check.
    name = SELECTION.relative_to(ROOT)
    assert SELECTION.is_file(), (f"{name} is missing, yet committed: `git checkout -- {name}`, or rerun the sweep "
                                 f"(`snakemake --cores all {name}`)")
    params = load_params(ROOT / "params.yaml", profile="tiny")
    expected = expected_settings(params, pd.read_csv(SELECTION))
    assert set(expected) >= set(params["tuning"]["grids"]) | set(params["tuning"]["inherit"])
    for method, settings in expected.items():
        for key, value in settings.items():
            actual = params["methods"][method].get(key, params["train"].get(key))
            # the CSV keeps 6 significant digits
            assert actual is not None and math.isclose(float(actual), float(value), rel_tol=1e-5), (
                f"params.yaml methods.{method}.{key} is {actual}; the tuning selected {value} "
                f"(results/tuning/selection.csv)")
