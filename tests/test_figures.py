"""Every catalogued figure draws from synthetic result files of the layout the workflow writes."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from diffpo.evidence.claims import ResultFiles
from diffpo.settings.params import load_params
from diffpo.evidence.figures import FIGURES, available, curve_points, draw, figure_data, plot, read_data, required_files

PROMPTS = 6


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path, rng):
    """A synthetic result file of the kind its path names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = int(path.parent.name.removeprefix("seed")) if path.parent.name.startswith("seed") else int(path.stem[4:])
    images = [{"seed": seed, "prompt_id": p, "image_index": i, "caption": f"prompt {p}"} for p in range(PROMPTS)
              for i in range(2)]
    if path.name == "metrics.csv":
        pd.DataFrame({"step": range(1, 41), "aaf_rate": np.linspace(0.2, 0.6, 40) + rng.normal(0, 0.01, 40)}).to_csv(path)
    elif "curves" in path.parts:
        frames = [pd.DataFrame(images).assign(step=step, gt_preference=rng.uniform(0.4, 0.6, len(images)) + step / 1000,
                                              pickscore=rng.normal(0, 1, len(images)))
                  for step in (0, 20, 40)]
        pd.concat(frames).to_parquet(path)
    elif "diversity" in path.parts:
        pd.DataFrame({"seed": seed, "prompt_id": range(PROMPTS), **{m: rng.uniform(0, 1, PROMPTS) for m in
                      ("vendi", "e2", "semantic_entropy", "psnr", "ssim", "rmse", "e1")}}).to_parquet(path)
    elif "samples" in path.parts:
        pd.DataFrame(images).assign(png=[_png(20 * p % 256) for p in range(len(images))]).to_parquet(path)
    else:  # per-image scores
        pd.DataFrame(images).assign(gt_preference=rng.uniform(0.4, 0.6, len(images)),
                                    degradation=rng.uniform(0.4, 0.5, len(images))).to_parquet(path)


@pytest.fixture
def results(root, tmp_path):
    params = load_params(root / "params.yaml")
    files = ResultFiles(tmp_path, params["seeds"], params["sample"]["prompt_set"])
    rng = np.random.default_rng(0)
    for figure in FIGURES:
        needed = required_files(figure, params, files)
        for path in map(Path, needed):
            if not path.exists():
                _write(path, rng)
    return params, files


def test_every_catalogued_figure_draws_png_pdf_and_its_data_reproducibly(root, results, tmp_path):
    params, files = results
    catalogue = yaml.safe_load((root / "workflow/artifacts.yaml").read_text())["artifacts"]
    figures = [a["figure"] for a in catalogue if a["kind"] == "figure"]
    assert set(figures) == set(FIGURES) and all(available(f, params) for f in figures)
    for figure in figures:
        out = tmp_path / "figures" / figure
        drawn = draw(figure, params, files, out)
        first = out.with_suffix(".pdf").read_bytes()
        assert out.with_suffix(".png").stat().st_size > 1000 and first.startswith(b"%PDF")
        # the written data is what the figure draws, and redraws the same figure (the notebooks' path)
        data = read_data(out.with_suffix(".csv"))
        pd.testing.assert_frame_equal(data, drawn, check_dtype=False, rtol=1e-9)
        redrawn = tmp_path / "redrawn.pdf"
        plot(figure, data).savefig(redrawn, metadata={"CreationDate": None})
        assert redrawn.stat().st_size > 1000
        if figure == "seppo_fig3":  # one redraw: no date or random state in the file
            draw(figure, params, files, out)
            assert out.with_suffix(".pdf").read_bytes() == first, f"{figure}: a redraw differs"


def test_curve_points_are_the_bootstrap_of_each_step(results):
    params, files = results
    points = curve_points(files, "seppo_w", "gt_preference")
    assert points["step"].tolist() == [0, 20, 40]
    assert (points["low"] <= points["mean"]).all() and (points["mean"] <= points["high"]).all()


def test_a_figure_whose_runs_the_settings_lack_is_not_available(root):
    params = load_params(root / "params.yaml")
    params["experiments"] = {k: v for k, v in params["experiments"].items() if k != "checkpoints"}
    assert not available("seppo_fig6", params) and available("see_gamma", params)


def test_figure_data_carries_each_series_with_its_interval(results):
    params, files = results
    gamma = figure_data("see_gamma", params, files)
    assert sorted(gamma["panel"].unique()) == sorted(["gt_preference", "vendi", "e2", "semantic_entropy", "degradation"])
    assert sorted(gamma["x"].unique()) == sorted(params["experiments"]["gamma"]["values"])
    assert ((gamma["low"] <= gamma["mean"]) & (gamma["mean"] <= gamma["high"])).all()
    fig6 = figure_data("seppo_fig6", params, files)
    assert fig6["x"].tolist() == [1, 3, 6]  # K = steps / round_updates
    grid = figure_data("seppo_grid", params, files)
    assert len(grid) == 5 * 4 * 2 and grid["label"].iloc[0] == "Base model"
