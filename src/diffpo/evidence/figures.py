"""The papers' figures, drawn from files under results/ only (never by training or scoring).

One small data function per figure (``FIGURES``); each reads its runs through
``claims.ResultFiles`` and returns means over training seeds with 95 % bands from the
two-level bootstrap of ``diffpo.evidence.intervals`` (over seeds and prompts; over seeds only for a
training log). ``required_files`` lists what a figure reads, for the workflow's inputs.
Each figure is a data function (a tidy table) and a plot of it: ``draw`` writes the PNG, the PDF
(without a creation date: a rebuild is byte-identical) and the data as CSV, so the notebooks
redraw every figure from committed files and check it against the per-image results when present.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from diffpo.evidence.claims import DIVERSITY, ClaimsError, ResultFiles, _read, _table
from diffpo.settings.experiments import experiment_runs
from diffpo.files import atomic_path
from diffpo.evidence.intervals import estimate, seed_prompt_matrix

NAMES = {"gt_preference": "GT preference", "pickscore": "PickScore (learned reward)", "vendi": "Vendi ↑",
         "e2": "E2 ↑", "semantic_entropy": "Semantic diversity ↑", "degradation": "Degradation ↓",
         "aaf_rate": "AAF rate"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(params: dict, run: str) -> str:
    return params["methods"].get(run, {}).get("label", run)


def _save(fig, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".png", ".pdf"):
        with atomic_path(out.with_suffix(suffix)) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight",
                        metadata={"CreationDate": None} if suffix == ".pdf" else None)
    _plt().close(fig)


def curve_points(files: ResultFiles, run: str, metric: str) -> pd.DataFrame:
    """Per snapshot step: the mean over seeds and prompts and its 95 % interval."""
    frame = _read(files.curve(run))
    rows = []
    for step, at in frame.groupby("step"):
        value = estimate(seed_prompt_matrix(at, metric).to_numpy())
        rows.append({"step": step, "mean": value.mean, "low": value.low, "high": value.high})
    return pd.DataFrame(rows)


def log_points(files: ResultFiles, run: str, column: str, window: int = 20) -> pd.DataFrame:
    """A training log's column per step (moving mean over ``window`` steps), mean and interval over seeds."""
    logs = []
    for path in files.training_log(run):
        if not path.exists():
            raise ClaimsError(f"missing training log {path}")
        log = pd.read_csv(path)
        logs.append(log.set_index("step")[column].rolling(window, min_periods=1).mean())
    matrix = pd.concat(logs, axis=1).dropna()
    rows = []
    for step, values in matrix.iterrows():
        value = estimate(values.to_numpy().reshape(-1, 1))
        rows.append({"step": step, "mean": value.mean, "low": value.low, "high": value.high})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- figure data
# A figure's data is one tidy table, written beside its PNG and PDF (results/figures/ID.csv), so
# that a clone redraws it without the per-image results: a plot's rows are (panel, series, x,
# mean, low, high); an image grid's are (row, label, prompt, image, caption, png as base64).
def _points(panel: str, series: str, points: pd.DataFrame, x: str = "step") -> pd.DataFrame:
    return pd.DataFrame({"panel": panel, "series": series, "x": points[x].astype(float),
                         "mean": points["mean"], "low": points["low"], "high": points["high"]})


def _run_estimate(files: ResultFiles, run: str, metric: str) -> dict:
    value = estimate(_table(files, run, metric, None).to_numpy())
    return {"mean": value.mean, "low": value.low, "high": value.high}


def seppo_fig2(params: dict, files: ResultFiles) -> pd.DataFrame:
    """GT preference over training for the three reference strategies (SePPO Fig. 2)."""
    return pd.concat([_points("score", _label(params, run), curve_points(files, run, "gt_preference"))
                      for run in ("seppo_w", "seppo_w_ref_latest", "seppo_w_ref_initial")], ignore_index=True)


def seppo_fig3(params: dict, files: ResultFiles) -> pd.DataFrame:
    """SePPO^w's AAF rate and its score over training, beside SFT^w's score (SePPO Fig. 3)."""
    aaf = _points("aaf_rate", _label(params, "seppo_w"), log_points(files, "seppo_w", "aaf_rate"))
    scores = [_points("score", _label(params, run), curve_points(files, run, "gt_preference")) for run in ("seppo_w", "sft_w")]
    return pd.concat([aaf, *scores], ignore_index=True)


def seppo_fig6(params: dict, files: ResultFiles) -> pd.DataFrame:
    """GT preference against the number of reference checkpoints K (SePPO Fig. 6)."""
    rows = []
    for method, value, run in experiment_runs(params, "checkpoints"):
        steps = params["methods"][method].get("steps", params["train"]["steps"])
        rows.append({"x": steps // value, **_run_estimate(files, run.name, "gt_preference")})
    points = pd.DataFrame(rows).sort_values("x")
    return _points("score", _label(params, "seppo_w"), points, x="x")


GAMMA_METRICS = ["gt_preference", "vendi", "e2", "semantic_entropy", "degradation"]


def see_gamma(params: dict, files: ResultFiles) -> pd.DataFrame:
    """Each metric against the self-entropy weight gamma (SEE-Diffusion-DPO; gamma 0: the base objective)."""
    runs = experiment_runs(params, "gamma")
    frames = []
    for metric in GAMMA_METRICS:
        points = pd.DataFrame([{"x": value, **_run_estimate(files, run.name, metric)} for _, value, run in runs])
        frames.append(_points(metric, _label(params, runs[0][0]), points, x="x"))
    return pd.concat(frames, ignore_index=True)


def see_reward_hacking(params: dict, files: ResultFiles) -> pd.DataFrame:
    """The learned reward and the ground truth over prolonged training, gamma = 0 against gamma > 0."""
    runs = [run for _, _, run in experiment_runs(params, "reward_hacking")]
    return pd.concat([_points(metric, _label(params, run.method), curve_points(files, run.name, metric))
                      for metric in ("pickscore", "gt_preference") for run in runs], ignore_index=True)


def image_grid(rows: list[str], prompts: int = 4, seeds_shown: int = 2) -> Callable:
    """Samples of ``rows`` (one row each) for the same prompts and noise: the first ``prompts``
    prompts, images of the first training seed (SePPO Figs. 4 and 7; SEE-DPO's seed grids)."""

    def data(params: dict, files: ResultFiles) -> pd.DataFrame:
        records = []
        for i, run in enumerate(rows):
            samples = pd.read_parquet(files.samples(run)[0])
            for j in range(prompts):
                chosen = samples[samples["prompt_id"] == j].sort_values("image_index").head(seeds_shown)
                for k, (caption, png) in enumerate(zip(chosen["caption"], chosen["png"])):
                    records.append({"row": i, "label": "Base model" if run == "base" else _label(params, run),
                                    "prompt": j, "image": k, "caption": caption,
                                    "png": base64.b64encode(png).decode("ascii")})
        return pd.DataFrame(records)

    data.runs = rows
    return data


FIGURES: dict[str, Callable[[dict, ResultFiles], pd.DataFrame]] = {
    "seppo_fig2": seppo_fig2,
    "seppo_fig3": seppo_fig3,
    "seppo_fig6": seppo_fig6,
    "see_gamma": see_gamma,
    "see_reward_hacking": see_reward_hacking,
    "seppo_grid": image_grid(["base", "sft_w", "diffusion_dpo", "spo", "seppo_w"]),
    "see_grid": image_grid(["base", "diffusion_dpo", "see_diffusion_dpo", "spo", "see_spo"]),
}


# ---------------------------------------------------------------- drawing
@dataclass(frozen=True)
class Panel:
    """One panel of a plotted figure: which rows of the data it draws and how it is labelled."""

    panel: str
    title: str
    xlabel: str
    ylabel: str = ""
    integer_x: bool = False      # ticks at the data's x values (K)
    zero_line: bool = False      # a dotted line at x = 0 (gamma)


_STEP = "optimizer step"
_GT = NAMES["gt_preference"]
PANELS: dict[str, list[Panel]] = {
    "seppo_fig2": [Panel("score", "Reference strategy over training", _STEP, _GT)],
    "seppo_fig3": [Panel("aaf_rate", "AAF rate", _STEP, "AAF rate (moving mean, 20 steps)"),
                   Panel("score", "Score over training", _STEP, _GT)],
    "seppo_fig6": [Panel("score", "Number of checkpoints", "reference checkpoints K", _GT, integer_x=True)],
    "see_gamma": [Panel(m, NAMES[m], "γ", zero_line=True) for m in GAMMA_METRICS],
    "see_reward_hacking": [Panel(m, NAMES[m], _STEP, NAMES[m]) for m in ("pickscore", "gt_preference")],
}


def _plot_panels(data: pd.DataFrame, panels: list[Panel]):
    plt = _plt()
    width = 3.6 if len(panels) > 2 else 5.0
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + 0.5, 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        rows = data[data["panel"] == panel.panel]
        for series, points in rows.groupby("series", sort=False):
            line, = ax.plot(points["x"], points["mean"], marker="o" if len(points) < 12 else None, label=series)
            ax.fill_between(points["x"], points["low"], points["high"], alpha=0.2, color=line.get_color())
        if panel.integer_x:
            ax.set_xticks(sorted(rows["x"].unique()))
        if panel.zero_line:
            ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)
        ax.grid(alpha=0.3)
        if rows["series"].nunique() > 1 or len(panels) <= 2:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot_grid(data: pd.DataFrame):
    from diffpo.models.sampling import from_png

    plt = _plt()
    n_rows, n_cols = data["row"].max() + 1, (data["prompt"].max() + 1) * (data["image"].max() + 1)
    per_prompt = data["image"].max() + 1
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.1 * n_cols, 1.2 * n_rows), squeeze=False)
    for cell in data.itertuples():
        ax = axes[cell.row][cell.prompt * per_prompt + cell.image]
        ax.imshow(from_png(base64.b64decode(cell.png)), interpolation="nearest")
        if cell.row == 0 and cell.image == 0:
            ax.set_title(cell.caption[:28], fontsize=5, loc="left")
        if cell.prompt == 0 and cell.image == 0:
            ax.set_ylabel(cell.label, fontsize=6, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot(figure: str, data: pd.DataFrame):
    """Draws a figure from its data (what ``figure_data`` returns, or the committed CSV)."""
    return _plot_panels(data, PANELS[figure]) if figure in PANELS else _plot_grid(data)


def figure_data(figure: str, params: dict, files: ResultFiles) -> pd.DataFrame:
    if figure not in FIGURES:
        raise ClaimsError(f"unknown figure {figure!r}; known: {', '.join(FIGURES)}")
    return FIGURES[figure](params, files)


def draw(figure: str, params: dict, files: ResultFiles, out: Path) -> pd.DataFrame:
    """Writes the figure's PNG, PDF and data (OUT.png, OUT.pdf, OUT.csv); returns the data."""
    data = figure_data(figure, params, files)
    with atomic_path(out.with_suffix(".csv")) as tmp:
        data.to_csv(tmp, index=False, float_format="%.10g")
    _save(plot(figure, data), out)
    return data


def read_data(path: Path) -> pd.DataFrame:
    """A figure's data as written by ``draw`` (OUT.csv)."""
    return pd.read_csv(path, keep_default_na=False)


# What each figure needs the settings to define: the runs evaluated along training, the
# experiments, the methods sampled (a reduced registry, e.g. the test configuration, lacks some).
NEEDS = {
    "seppo_fig2": {"curves": ["seppo_w", "seppo_w_ref_latest", "seppo_w_ref_initial"]},
    "seppo_fig3": {"curves": ["seppo_w", "sft_w"]},
    "seppo_fig6": {"experiments": ["checkpoints"]},
    "see_gamma": {"experiments": ["gamma"]},
    "see_reward_hacking": {"experiments": ["reward_hacking"], "curves_of": ["reward_hacking"]},
}


def available(figure: str, params: dict) -> bool:
    """Whether the settings define every run the figure draws."""
    from diffpo.settings.experiments import curve_runs

    need = NEEDS.get(figure, {})
    experiments = params.get("experiments") or {}
    if not set(need.get("curves", [])) <= set(curve_runs(params)):
        return False
    if not set(need.get("experiments", [])) <= set(experiments):
        return False
    traced = [r.name for name in need.get("curves_of", []) for _, _, r in experiment_runs(params, name)]
    if not set(traced) <= set(curve_runs(params)):
        return False
    runs = getattr(FIGURES[figure], "runs", [])
    return all(r == "base" or r in params["methods"] for r in runs)


def required_files(figure: str, params: dict, files: ResultFiles) -> list[str]:
    """The files a figure reads (the workflow's inputs of its rule)."""
    def scores(run: str, metric: str = "gt_preference") -> list[Path]:
        return files.diversity(run) if metric in DIVERSITY else files.scores(run)

    needs: dict[str, Callable[[], list[Path]]] = {
        "seppo_fig2": lambda: [p for r in ("seppo_w", "seppo_w_ref_latest", "seppo_w_ref_initial") for p in files.curve(r)],
        "seppo_fig3": lambda: files.training_log("seppo_w") + files.curve("seppo_w") + files.curve("sft_w"),
        "seppo_fig6": lambda: [p for _, _, r in experiment_runs(params, "checkpoints") for p in scores(r.name)],
        "see_gamma": lambda: [p for _, _, r in experiment_runs(params, "gamma") for m in ("gt_preference", "vendi")
                              for p in scores(r.name, m)],
        "see_reward_hacking": lambda: [p for _, _, r in experiment_runs(params, "reward_hacking") for p in files.curve(r.name)],
    }
    if figure in needs:
        return [str(p) for p in dict.fromkeys(needs[figure]())]
    return [str(files.samples(run)[0]) for run in FIGURES[figure].runs]
