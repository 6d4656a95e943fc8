"""The claims evaluator on synthetic results whose verdicts are known, and the committed claims file."""

import numpy as np
import pandas as pd
import pytest
import yaml

from diffpo.evidence.claims import (ClaimsError, ResultFiles, combine, evaluate_claims, load_claims, required_files,
                           verdict)
from diffpo.evidence.intervals import Estimate

SEEDS = [0, 1, 2]
PROMPTS = 40


def write_run(root, run, values, diversity=None, prompt_set="v"):
    """Per-image scores (two images a prompt) of ``run`` for every seed: gt_preference = values[s, p]."""
    for s in SEEDS:
        rows = [{"seed": s, "prompt_id": p, "image_index": i, "gt_preference": values[s, p]}
                for p in range(PROMPTS) for i in range(2)]
        path = root / "scores" / run / f"seed{s}" / f"{prompt_set}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(path)
        div = pd.DataFrame({"seed": s, "prompt_id": range(PROMPTS),
                            "psnr": (diversity if diversity is not None else np.zeros((3, PROMPTS)))[s]})
        path = root / "diversity" / run / f"seed{s}" / f"{prompt_set}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        div.to_parquet(path)


PARAMS = {
    "methods": {m: {} for m in ("better", "worse", "same", "ref")},
    "train": {"gamma": 0.0},
    "sample": {"prompt_set": "v"},
    "experiments": {"sweep": {"methods": ["ref"], "vary": "gamma", "values": [0.0, 1.0, 2.0]}},
}


@pytest.fixture
def results(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.3, 0.7, (3, PROMPTS))
    noise = lambda: rng.normal(0, 0.02, (3, PROMPTS))
    write_run(tmp_path, "ref", ref, diversity=ref)
    write_run(tmp_path, "better", ref + 0.05 + noise(), diversity=ref - 0.5)  # lower PSNR: more diverse
    write_run(tmp_path, "worse", ref - 0.05 + noise())
    write_run(tmp_path, "same", ref + noise())
    write_run(tmp_path, "ref__gamma1", ref + 0.1 + noise())
    write_run(tmp_path, "ref__gamma2", ref + 0.2 + noise())
    return ResultFiles(tmp_path, SEEDS, "v")


def claim(id, **comparison):
    return {"id": id, "paper": "P", "text": id, **comparison}


def test_each_verdict_by_the_declared_rule(results):
    claims = [
        claim("up", compare=[{"a": "better", "b": "ref", "relation": "greater"}]),
        claim("down", compare=[{"a": "worse", "b": "ref", "relation": "greater"}]),
        claim("unclear", compare=[{"a": "same", "b": "ref", "relation": "greater"}]),
        claim("equal", compare=[{"a": "same", "b": "ref", "relation": "equivalent", "margin": 0.02}]),
        claim("not_equal", compare=[{"a": "better", "b": "ref", "relation": "equivalent", "margin": 0.02}]),
        claim("noninferior", compare=[{"a": "same", "b": "ref", "relation": "at_least", "margin": 0.02}]),
        claim("diverse", compare=[{"a": "better", "b": "ref", "metric": "psnr", "relation": "greater"}]),
        claim("trend", trend=[{"experiment": "sweep", "metric": "gt_preference", "relation": "greater"}]),
        claim("mixed", compare=[{"a": "better", "b": ["ref", "same"], "relation": "greater"},
                                {"a": "same", "b": "ref", "relation": "greater"}]),
    ]
    table = evaluate_claims(claims, PARAMS, results)
    verdicts = dict(zip(table["claim"], table["claim_verdict"]))
    assert verdicts == {"up": "reproduced", "down": "contradicted", "unclear": "inconclusive",
                        "equal": "reproduced", "not_equal": "contradicted", "noninferior": "reproduced",
                        "diverse": "reproduced", "trend": "reproduced", "mixed": "inconclusive"}
    up = table[table["claim"] == "up"].iloc[0]
    assert up["effect"] == pytest.approx(0.05, abs=0.005) and up["low"] < 0.05 < up["high"]
    assert (up["n_seeds"], up["n_prompts"]) == (3, PROMPTS) and up["runs"] == "better ref"
    trend = table[table["claim"] == "trend"].iloc[0]
    assert trend["effect"] == pytest.approx(0.1, abs=0.005)  # +0.1 per unit of gamma
    assert len(table[table["claim"] == "mixed"]) == 3  # a list in b expands into one comparison each


def test_relations_at_their_boundaries():
    interval = lambda low, high: Estimate((low + high) / 2, low, high, 3, 10)
    assert verdict(interval(0.01, 0.02), "greater") == "reproduced"
    assert verdict(interval(-0.01, 0.02), "greater") == "inconclusive"
    assert verdict(interval(-0.02, -0.01), "at_least", margin=0.005) == "contradicted"
    assert verdict(interval(-0.004, 0.01), "at_least", margin=0.005) == "reproduced"
    assert verdict(interval(-0.01, -0.001), "at_most", margin=0.0) == "reproduced"
    assert verdict(interval(0.03, 0.05), "equivalent", margin=0.02) == "contradicted"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"
    assert combine(["reproduced", "contradicted", "inconclusive"]) == "contradicted"


def test_missing_results_and_unknown_runs_are_clear_errors(results):
    skipped = evaluate_claims([claim("x", compare=[{"a": "nobody", "b": "ref", "relation": "greater"}])], PARAMS, results)
    assert skipped["claim_verdict"].tolist() == ["not evaluated"] and "unknown run 'nobody'" in skipped["comparison"][0]
    with pytest.raises(ClaimsError, match="missing result files: .*/seed0/w.parquet"):
        evaluate_claims([claim("x", compare=[{"a": "better", "b": "ref", "prompt_set": "w",
                                              "relation": "greater"}])], PARAMS, results)
    with pytest.raises(ClaimsError, match="unknown relation"):
        evaluate_claims([claim("x", compare=[{"a": "better", "b": "ref", "relation": "bigger"}])], PARAMS, results)
    # a slope over an experiment reduced to one value (as the test configuration's) is not evaluated, not a crash
    one_value = {**PARAMS, "experiments": {"sweep": {**PARAMS["experiments"]["sweep"], "values": [1.0]}}}
    trend = evaluate_claims([claim("t", trend={"experiment": "sweep", "relation": "greater"})], one_value, results)
    assert trend["claim_verdict"].tolist() == ["not evaluated"] and "a trend needs two or more" in trend["comparison"][0]


def test_the_committed_claims_name_runs_the_workflow_builds(root):
    from diffpo.settings.params import load_params

    params = load_params(root / "params.yaml")
    claims = load_claims(root / "workflow" / "claims.yaml")
    ids = {c["id"] for c in claims}
    assert {"seppo_beats_sft", "uniform_reference_best", "more_checkpoints_help", "negative_gamma_poor",
            "see_delays_reward_hacking", "see_spo_scores_higher", "larger_gamma_more_diverse"} <= ids
    from diffpo.evidence.claims import comparisons

    for c in claims:  # every claim names runs the settings define: none is skipped
        assert comparisons(c, params), c["id"]
    files = required_files(claims, params, ResultFiles(root / "results", params["seeds"], "validation_unique"))
    assert any("curves/d3po__steps180" in f for f in files) and any("partiprompts" in f for f in files)
    bad = yaml.safe_load((root / "workflow" / "claims.yaml").read_text())
    bad["claims"].append(dict(bad["claims"][0]))
    path = root / "tmp_claims.yaml"
    try:
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ClaimsError, match="given twice"):
            load_claims(path)
    finally:
        path.unlink()
