"""Tables are computed from per-image score files: means, intervals over seeds and prompts, paired differences."""

import math

import pandas as pd

from diffpo.evidence.tables import score_table, to_markdown

from conftest import scores


def test_means_intervals_and_paired_differences_over_seeds_and_prompts(tmp_path):
    # base: prompt means 0.2, 0.4, 0.6 in both seeds; method: +0.1, +0.1, +0.4 (seed 0), +0.3 everywhere (seed 1)
    scores({0: [0.1, 0.3], 1: [0.4, 0.4], 2: [0.6, 0.6]}, 20.0).to_parquet(tmp_path / "base0.parquet")
    scores({0: [0.2, 0.2], 1: [0.4, 0.4], 2: [0.6, 0.6]}, 20.0, seed=1).to_parquet(tmp_path / "base1.parquet")
    scores({0: [0.3, 0.3], 1: [0.5, 0.5], 2: [1.0, 1.0]}, 21.0).to_parquet(tmp_path / "m0.parquet")
    scores({0: [0.5, 0.5], 1: [0.7, 0.7], 2: [0.9, 0.9]}, 21.0, seed=1).to_parquet(tmp_path / "m1.parquet")
    table = score_table({"base": [tmp_path / "base0.parquet", tmp_path / "base1.parquet"],
                         "sft_w": [tmp_path / "m0.parquet", tmp_path / "m1.parquet"]},
                        {"base": "Base", "sft_w": "SFT^w"}, "table1")
    base, method = table.iloc[0], table.iloc[1]
    assert math.isclose(base["gt_preference_mean"], 0.4)
    assert math.isclose(method["gt_preference_delta"], (0.6 + 0.9) / 6)  # mean of (.1, .1, .4, .3, .3, .3)
    # every resample of the paired differences lies between its smallest and largest cell
    assert 0.1 - 1e-9 <= method["gt_preference_delta_low"] < method["gt_preference_delta"] < method["gt_preference_delta_high"] <= 0.4 + 1e-9
    assert base["gt_preference_delta"] == 0 and base["gt_preference_delta_high"] == 0
    assert method["pickscore_mean"] == 21.0 and method["pickscore_low"] == 21.0
    assert method["n_seeds"] == 2 and method["n_prompts"] == 3 and method["n_images"] == 12
    assert method["paper_pickscore"] == 21.32 and base["paper_hpsv2"] == 23.79
    markdown = to_markdown(table, "T", "note")
    assert "PickScore: tiny stand-in; score = logit_scale.exp() * cos" in markdown
    assert "mean over 2 training seeds and 3 prompts" in markdown and "two-level bootstrap" in markdown
    row = method.to_dict()
    assert f"+0.250 [{row['gt_preference_delta_low']:+.3f}, {row['gt_preference_delta_high']:+.3f}]" in markdown


def test_a_method_without_a_published_number_has_an_empty_paper_cell(tmp_path):
    scores({0: [0.5, 0.5], 1: [0.5, 0.7]}, 20.0).to_parquet(tmp_path / "base.parquet")
    scores({0: [0.5, 0.5], 1: [0.5, 0.7]}, 20.0).to_parquet(tmp_path / "c.parquet")
    table = score_table({"base": [tmp_path / "base.parquet"], "continued": [tmp_path / "c.parquet"]}, {}, "table1")
    assert math.isnan(table.iloc[1]["paper_pickscore"])
    row = [line for line in to_markdown(table, "T", "n").splitlines() if line.startswith("| continued")][0]
    assert row.rstrip().endswith("|                   |")


def test_a_table_of_several_prompt_sets_has_one_block_each_with_that_sets_paper_numbers(tmp_path):
    # SePPO Table 2: the same rows on each out-of-distribution prompt set, the paper's numbers per set
    blocks = []
    for prompt_set, shift in (("hps_benchmark", 0.0), ("partiprompts", 0.1)):
        scores({0: [0.4, 0.4], 1: [0.6, 0.6]}, 20.0).to_parquet(tmp_path / f"base_{prompt_set}.parquet")
        scores({0: [0.5 + shift, 0.5], 1: [0.7, 0.7]}, 21.0).to_parquet(tmp_path / f"seppo_{prompt_set}.parquet")
        blocks.append(score_table({"base": [tmp_path / f"base_{prompt_set}.parquet"],
                                   "seppo_w": [tmp_path / f"seppo_{prompt_set}.parquet"]},
                                  {"base": "Base", "seppo_w": "SePPO^w"}, "table2", prompt_set=prompt_set))
    table = pd.concat(blocks, ignore_index=True)
    assert table["prompt_set"].tolist() == ["hps_benchmark", "hps_benchmark", "partiprompts", "partiprompts"]
    assert table["paper_pickscore"].tolist() == [20.95, 21.90, 21.38, 21.93]  # FACTS.md: SePPO Table 2, HPS / Parti
    assert math.isclose(table.iloc[1]["gt_preference_delta"], 0.1) and math.isclose(table.iloc[3]["gt_preference_delta"], 0.125)
    assert " Prompts " in to_markdown(table, "T", "n")


def test_the_dvc_metrics_headline_is_each_rows_change_with_its_interval():
    from diffpo.evidence.tables import headline

    rows = {"base": {"gt_preference_delta": 0.0, "gt_preference_delta_low": 0.0, "gt_preference_delta_high": 0.0,
                     "pickscore_delta": 0.0, "gt_preference_mean": 0.4},
            "sft_w": {"gt_preference_delta": 0.03, "gt_preference_delta_low": 0.01, "gt_preference_delta_high": 0.05,
                      "pickscore_delta": 0.2, "gt_preference_mean": 0.43}}
    assert headline(rows) == {"sft_w": {"gt_preference_delta": 0.03, "gt_preference_delta_low": 0.01,
                                        "gt_preference_delta_high": 0.05}}
    paper = {"base@x": {"pickscore_delta": 0.0}, "seppo_w@x": {"pickscore_delta": 0.4, "pickscore_delta_low": 0.1,
                                                              "pickscore_delta_high": 0.7}}
    assert headline(paper) == {"seppo_w@x": {"pickscore_delta": 0.4, "pickscore_delta_low": 0.1,
                                             "pickscore_delta_high": 0.7}}
