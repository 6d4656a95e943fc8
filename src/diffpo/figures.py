"""The papers' figures, drawn from files under results/ only (never by training or scoring).

One small function per figure (``FIGURES``); each reads its runs through
``claims.ResultFiles`` and draws means over training seeds with 95 % bands from the
two-level bootstrap of ``diffpo.intervals`` (over seeds and prompts; over seeds only for a
training log). ``required_files`` lists what a figure reads, for the workflow's inputs.
Every figure is written as PNG and PDF (without a creation date: a rebuild is byte-identical).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from diffpo.claims import DIVERSITY, ClaimsError, ResultFiles, _read, _table
from diffpo.experiments import experiment_runs
from diffpo.files import atomic_path
from diffpo.intervals import estimate, seed_prompt_matrix

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


def _band(ax, points: pd.DataFrame, label: str, x: str = "step") -> None:
    line, = ax.plot(points[x], points["mean"], marker="o" if len(points) < 12 else None, label=label)
    ax.fill_between(points[x], points["low"], points["high"], alpha=0.2, color=line.get_color())


# ---------------------------------------------------------------- SePPO
def seppo_fig2(params: dict, files: ResultFiles):
    """GT preference over training for the three reference strategies (SePPO Fig. 2)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for run in ("seppo_w", "seppo_w_ref_latest", "seppo_w_ref_initial"):
        _band(ax, curve_points(files, run, "gt_preference"), _label(params, run))
    ax.set(xlabel="optimizer step", ylabel="GT preference", title="Reference strategy over training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def seppo_fig3(params: dict, files: ResultFiles):
    """SePPO^w's AAF rate and its score over training, beside SFT^w's score (SePPO Fig. 3)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    _band(left, log_points(files, "seppo_w", "aaf_rate"), _label(params, "seppo_w"))
    left.set(xlabel="optimizer step", ylabel="AAF rate (moving mean, 20 steps)", title="AAF rate")
    for run in ("seppo_w", "sft_w"):
        _band(right, curve_points(files, run, "gt_preference"), _label(params, run))
    right.set(xlabel="optimizer step", ylabel="GT preference", title="Score over training")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def seppo_fig6(params: dict, files: ResultFiles):
    """GT preference against the number of reference checkpoints K (SePPO Fig. 6)."""
    plt = _plt()
    rows = []
    for method, value, run in experiment_runs(params, "checkpoints"):
        steps = params["methods"][method].get("steps", params["train"]["steps"])
        estimate_ = estimate(_table(files, run.name, "gt_preference", None).to_numpy())
        rows.append({"K": steps // value, "mean": estimate_.mean, "low": estimate_.low, "high": estimate_.high})
    points = pd.DataFrame(rows).sort_values("K")
    fig, ax = plt.subplots(figsize=(5, 3.8))
    _band(ax, points, _label(params, "seppo_w"), x="K")
    ax.set(xlabel="reference checkpoints K", ylabel="GT preference", title="Number of checkpoints")
    ax.set_xticks(points["K"])
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------- SEE-DPO
def see_gamma(params: dict, files: ResultFiles):
    """Each metric against the self-entropy weight gamma (SEE-Diffusion-DPO; gamma 0: the base objective)."""
    plt = _plt()
    metrics = ["gt_preference", "vendi", "e2", "semantic_entropy", "degradation"]
    runs = experiment_runs(params, "gamma")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4))
    for ax, metric in zip(axes, metrics):
        rows = []
        for _, value, run in runs:
            e = estimate(_table(files, run.name, metric, None).to_numpy())
            rows.append({"gamma": value, "mean": e.mean, "low": e.low, "high": e.high})
        _band(ax, pd.DataFrame(rows), _label(params, runs[0][0]), x="gamma")
        ax.axvline(0, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="γ", title=NAMES.get(metric, metric))
        ax.grid(alpha=0.3)
    return fig


def see_reward_hacking(params: dict, files: ResultFiles):
    """The learned reward and the ground truth over prolonged training, gamma = 0 against gamma > 0."""
    plt = _plt()
    runs = [run for _, _, run in experiment_runs(params, "reward_hacking")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("pickscore", "gt_preference")):
        for run in runs:
            _band(ax, curve_points(files, run.name, metric), _label(params, run.method))
        ax.set(xlabel="optimizer step", ylabel=NAMES[metric], title=NAMES[metric])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------- image grids
def image_grid(rows: list[str], prompts: int = 4, seeds_shown: int = 2):
    """Samples of ``rows`` (one row each) for the same prompts and noise: the first ``prompts``
    prompts, images of the first training seed (SePPO Figs. 4 and 7; SEE-DPO's seed grids)."""

    def draw(params: dict, files: ResultFiles):
        from diffpo.sampling import from_png

        plt = _plt()
        fig, axes = plt.subplots(len(rows), prompts * seeds_shown, figsize=(1.1 * prompts * seeds_shown, 1.2 * len(rows)),
                                 squeeze=False)
        for i, run in enumerate(rows):
            samples = pd.read_parquet(files.samples(run)[0])
            for j in range(prompts):
                chosen = samples[samples["prompt_id"] == j].sort_values("image_index").head(seeds_shown)
                for k, png in enumerate(chosen["png"]):
                    ax = axes[i][j * seeds_shown + k]
                    ax.imshow(from_png(png), interpolation="nearest")
                    if i == 0 and k == 0:
                        ax.set_title(chosen["caption"].iloc[0][:28], fontsize=5, loc="left")
            axes[i][0].set_ylabel("Base model" if run == "base" else _label(params, run), fontsize=6, rotation=0,
                                  ha="right", va="center")
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        return fig

    draw.runs = rows
    return draw


FIGURES: dict[str, Callable] = {
    "seppo_fig2": seppo_fig2,
    "seppo_fig3": seppo_fig3,
    "seppo_fig6": seppo_fig6,
    "see_gamma": see_gamma,
    "see_reward_hacking": see_reward_hacking,
    "seppo_grid": image_grid(["base", "sft_w", "diffusion_dpo", "spo", "seppo_w"]),
    "see_grid": image_grid(["base", "diffusion_dpo", "see_diffusion_dpo", "spo", "see_spo"]),
}


def draw(figure: str, params: dict, files: ResultFiles, out: Path) -> None:
    if figure not in FIGURES:
        raise ClaimsError(f"unknown figure {figure!r}; known: {', '.join(FIGURES)}")
    _save(FIGURES[figure](params, files), out)


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
    from diffpo.experiments import curve_runs

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
