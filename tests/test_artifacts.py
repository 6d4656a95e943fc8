"""Tables are computed from per-image score files: means, standard errors, paired differences."""

import math

import numpy as np
import pandas as pd

from diffpo.artifacts import score_table, to_markdown


def scores(values_by_prompt: dict[int, list[float]], pickscore: float) -> pd.DataFrame:
    rows = [{"prompt_id": p, "caption": f"p{p}", "image_index": i, "gt_preference": v, "gt_alignment": v,
             "gt_aesthetic": v, "pickscore": pickscore}
            for p, values in values_by_prompt.items() for i, v in enumerate(values)]
    frame = pd.DataFrame(rows)
    frame.attrs["scorers"] = {"pickscore": {"version": "tiny stand-in", "scale": "logit_scale.exp() * cos"}}
    return frame


def test_means_standard_errors_and_paired_differences(tmp_path):
    # base: prompt means 0.2, 0.4, 0.6; method: +0.1, +0.1, +0.4 on the same prompts
    scores({0: [0.1, 0.3], 1: [0.4, 0.4], 2: [0.6, 0.6]}, 20.0).to_parquet(tmp_path / "base.parquet")
    scores({0: [0.3, 0.3], 1: [0.5, 0.5], 2: [1.0, 1.0]}, 21.0).to_parquet(tmp_path / "m.parquet")
    table = score_table({"base": tmp_path / "base.parquet", "sft_w": tmp_path / "m.parquet"},
                        {"base": "Base", "sft_w": "SFT^w"}, "table1")
    base, method = table.iloc[0], table.iloc[1]
    assert math.isclose(base["gt_preference_mean"], 0.4)
    assert math.isclose(base["gt_preference_se"], 0.2 / math.sqrt(3))  # sd of (0.2, 0.4, 0.6) is 0.2
    assert math.isclose(method["gt_preference_delta"], 0.2)
    assert math.isclose(method["gt_preference_delta_se"], np.std([0.1, 0.1, 0.4], ddof=1) / math.sqrt(3))
    assert method["pickscore_mean"] == 21.0 and method["n_prompts"] == 3 and method["n_images"] == 6
    assert method["paper_pickscore"] == 21.32 and base["paper_hpsv2"] == 23.79
    markdown = to_markdown(table, "T", "note")
    assert "PickScore: tiny stand-in; score = logit_scale.exp() * cos" in markdown
    assert "+0.200 ± 0.100" in markdown


def test_a_method_without_a_published_number_has_an_empty_paper_cell(tmp_path):
    scores({0: [0.5, 0.5], 1: [0.5, 0.7]}, 20.0).to_parquet(tmp_path / "base.parquet")
    scores({0: [0.5, 0.5], 1: [0.5, 0.7]}, 20.0).to_parquet(tmp_path / "c.parquet")
    table = score_table({"base": tmp_path / "base.parquet", "continued": tmp_path / "c.parquet"}, {}, "table1")
    assert math.isnan(table.iloc[1]["paper_pickscore"])
    row = [line for line in to_markdown(table, "T", "n").splitlines() if line.startswith("| continued")][0]
    assert row.rstrip().endswith("|                   |")
