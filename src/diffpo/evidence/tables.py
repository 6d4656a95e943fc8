"""Tables and figures, built from files under results/ only (never by scoring or training)."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from diffpo.evidence.intervals import METHOD, Estimate, paired_difference, summarise
from diffpo.files import atomic_path, atomic_write_text

SCORE_NAMES = {
    "gt_preference": "GT preference",
    "gt_alignment": "GT alignment",
    "gt_aesthetic": "GT aesthetics",
    "pickscore": "PickScore",
    "hpsv2": "HPSv2",
    "imagereward": "ImageReward",
    "aesthetic": "Aesthetic",
    "degradation": "Degradation ↓",
}
PAPER_NAMES = {"pickscore": "PickScore", "hpsv2": "HPSv2", "imagereward": "ImageReward", "aesthetic": "Aesthetic"}


def paper_numbers(table: str, prompt_set: str | None = None) -> tuple[list[str], dict[str, list[float]]]:
    """The paper's columns and its numbers per method (per prompt set for a table of several)."""
    data = yaml.safe_load(resources.files("diffpo.evidence").joinpath("paper_numbers.yaml").read_text())[table]
    rows = data["prompt_sets"].get(prompt_set, {}) if "prompt_sets" in data else data["rows"]
    return data["columns"], rows


DIVERSITY_NAMES = {"rmse": "RMSE ↑", "psnr": "PSNR ↓", "ssim": "SSIM ↓", "e1": "E1 ↑", "e2": "E2 ↑", "vendi": "Vendi ↑",
                   "semantic_entropy": "Semantic ↑"}


def read_runs(paths: list[Path]) -> pd.DataFrame:
    """One row's files (one per training seed), stacked; each carries its ``seed`` column."""
    frames = [pd.read_parquet(p) for p in paths]
    stacked = pd.concat(frames, ignore_index=True)
    stacked.attrs.update(frames[0].attrs)
    return stacked


def score_table(score_files: dict[str, list[Path]], labels: dict[str, str], table: str, baseline: str = "base",
                diversity_files: dict[str, list[Path]] | None = None, prompt_set: str | None = None) -> pd.DataFrame:
    """One row per method: each score's mean over seeds and prompts with its 95 % interval
    (``intervals``: two-level bootstrap over seeds and prompts), the difference to ``baseline``
    paired on (seed, prompt), the paper's numbers, and (with ``diversity_files``) each
    diversity metric likewise (SEE-DPO's comparison). With ``prompt_set`` (a table of several
    prompt sets, one block each), rows say their set and take the paper's numbers for it."""
    scores = {name: read_runs(paths) for name, paths in score_files.items()}
    columns = [c for c in SCORE_NAMES if all(c in s for s in scores.values())]
    paper_cols, paper_rows = paper_numbers(table, prompt_set)
    rows = []
    table_attrs = {"scorers": next(iter(scores.values())).attrs.get("scorers", {})}
    for name, frame in scores.items():
        row = {"method": name, "label": labels.get(name, name), **({"prompt_set": prompt_set} if prompt_set else {}),
               "n_seeds": frame["seed"].nunique(),
               "n_prompts": frame["prompt_id"].nunique(), "n_images": len(frame)}
        for col in columns:
            row.update(_estimate_columns(col, summarise(frame, col)))
            if baseline in scores:
                row.update(_estimate_columns(f"{col}_delta", paired_difference(frame, scores[baseline], col)))
        for col, value in zip(paper_cols, paper_rows.get(name, [math.nan] * len(paper_cols))):
            row[f"paper_{col}"] = value
        if diversity_files:
            diversity = read_runs(diversity_files[name])
            for col in DIVERSITY_NAMES:
                if col in diversity:  # the semantic metric needs the world's knowledge (tiny profile)
                    row.update(_estimate_columns(f"div_{col}", summarise(diversity, col)))
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(table_attrs)
    return table


def _estimate_columns(name: str, value: Estimate) -> dict[str, float]:
    """``name`` (the mean; ``X_delta`` stays ``X_delta``), ``name_low`` and ``name_high``."""
    key = name if name.endswith("_delta") else f"{name}_mean"
    return {key: value.mean, f"{name}_low": value.low, f"{name}_high": value.high}


def _fmt(mean: float, low: float, high: float, digits: int = 3, signed: bool = False) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def interval_note(table: pd.DataFrame) -> str:
    seeds, prompts = int(table["n_seeds"].min()), int(table["n_prompts"].min())
    over = f"{seeds} training seeds and {prompts} prompts" if seeds > 1 else f"{prompts} prompts (one training seed)"
    return (f"Each cell: mean over {over} (a prompt's images averaged first), with its 95 % interval in brackets "
            f"({METHOD}).")


def to_markdown(table: pd.DataFrame, title: str, note: str) -> str:
    view = pd.DataFrame({"Method": table["label"]})
    if "prompt_set" in table:
        view["Prompts"] = table["prompt_set"]
    for col, name in SCORE_NAMES.items():
        if f"{col}_mean" in table:
            digits = 3 if col.startswith("gt_") or col == "imagereward" else 2
            view[name] = [_fmt(m, lo, hi, digits) for m, lo, hi in
                          zip(table[f"{col}_mean"], table[f"{col}_low"], table[f"{col}_high"])]
    for col, name in DIVERSITY_NAMES.items():
        if f"div_{col}_mean" in table:
            view[name] = [_fmt(m, lo, hi, 3) for m, lo, hi in
                          zip(table[f"div_{col}_mean"], table[f"div_{col}_low"], table[f"div_{col}_high"])]
    if "gt_preference_delta" in table:
        view["Δ GT preference vs base"] = [
            _fmt(m, lo, hi, 3, signed=True) for m, lo, hi in
            zip(table["gt_preference_delta"], table["gt_preference_delta_low"], table["gt_preference_delta_high"])
        ]
    for col, name in PAPER_NAMES.items():
        if f"paper_{col}" in table:
            view[f"paper {name}"] = ["" if math.isnan(v) else f"{v:g}" for v in table[f"paper_{col}"]]
    scorers = table.attrs.get("scorers", {})
    versions = "".join(f"\n- {SCORE_NAMES[n]}: {d['version']}; score = {d['scale']}" for n, d in scorers.items())
    return f"# {title}\n\n{interval_note(table)} {note}\n{versions}\n\n{view.to_markdown(index=False)}\n"


def accuracy_markdown(table: pd.DataFrame, note: str) -> str:
    view = pd.DataFrame({
        "Scorer": table["scorer"],
        "Version": table["version"],
        "Accuracy": [f"{a:.1%} ± {s:.1%}" for a, s in zip(table["accuracy"], table["se"])],
        "Paper (Diffusion-DPO, Pick-a-Pic validation)": [PAPER_ACCURACY.get(s, "") for s in table["scorer"]],
    })
    return f"# Scorer accuracy on held-out preferences\n\n{note}\n\n{view.to_markdown(index=False)}\n"


PAPER_ACCURACY = {"pickscore": "64.2 %", "hpsv2": "59.3 %", "aesthetic": "51.4 %"}


def write_table(table: pd.DataFrame, csv_path: Path, md_path: Path, title: str, note: str) -> None:
    atomic_write_text(csv_path, table.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(md_path, to_markdown(table, title, note))


def plot_training_curves(metrics_files: dict[str, Path], labels: dict[str, str], out_stem: Path, window: int = 20) -> None:
    """Loss (and DPO implicit accuracy, where logged) against step for every method; PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: pd.read_csv(path) for name, path in metrics_files.items()}
    # SePPO's AAF rate is its Fig. 3; the online methods' mean reward shows what they optimise.
    panels = ["loss"] + [c for c in ("implicit_acc", "aaf_rate", "reward_mean") if any(c in f for f in curves.values())]
    # One colour per method across panels; the default cycle repeats after ten, and the registry has more.
    palette = plt.get_cmap("tab20" if len(curves) > 10 else "tab10").colors
    colours = {name: palette[i % len(palette)] for i, name in enumerate(curves)}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, column in zip(axes[0], panels):
        for name, frame in curves.items():
            if column in frame:
                smooth = frame[column].rolling(window, min_periods=1).mean()
                ax.plot(frame["step"], smooth, label=labels.get(name, name), color=colours[name])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"{column} (moving mean over {window} steps)")
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".png", ".pdf"):
        with atomic_path(out_stem.with_suffix(suffix)) as tmp:
            # No creation date in the PDF: a rebuilt figure is byte-identical.
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight",
                        metadata={"CreationDate": None} if suffix == ".pdf" else None)
    plt.close(fig)


# What `dvc metrics show` compares across commits: each row's change against the base model with
# its interval, on the headline score (the ground truth where the world has one, else PickScore);
# the full table is results/TABLE.csv.
HEADLINE = ("gt_preference", "pickscore")


def headline(rows: dict[str, dict]) -> dict[str, dict]:
    """``{row: {SCORE_delta, SCORE_delta_low, SCORE_delta_high}}`` for the first ``HEADLINE`` score the
    rows report; the base model's row (the baseline, zero by construction) is left out."""
    reported = [m for m in HEADLINE if all(f"{m}_delta" in r for r in rows.values())]
    if not reported:
        return {}
    keys = [f"{reported[0]}_delta{part}" for part in ("", "_low", "_high")]
    return {name: {k: r[k] for k in keys} for name, r in rows.items() if name.split("@")[0] != "base"}
