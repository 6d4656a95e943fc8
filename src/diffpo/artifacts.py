"""Tables and figures, built from files under results/ only (never by scoring or training)."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from diffpo.evaluation import mean_and_se, per_prompt
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


def paper_numbers(table: str) -> tuple[list[str], dict[str, list[float]]]:
    data = yaml.safe_load(resources.files("diffpo").joinpath("paper_numbers.yaml").read_text())[table]
    return data["columns"], data["rows"]


DIVERSITY_NAMES = {"rmse": "RMSE ↑", "psnr": "PSNR ↓", "ssim": "SSIM ↓", "e1": "E1 ↑", "e2": "E2 ↑", "vendi": "Vendi ↑",
                   "semantic_entropy": "Semantic ↑"}


def score_table(score_files: dict[str, Path], labels: dict[str, str], table: str, baseline: str = "base",
                diversity_files: dict[str, Path] | None = None) -> pd.DataFrame:
    """One row per method: mean and standard error over prompts of each score, the paired
    difference to ``baseline`` on the same prompts and seeds, the paper's numbers, and (with
    ``diversity_files``) each diversity metric's mean over prompts (SEE-DPO's comparison)."""
    scores = {name: pd.read_parquet(path) for name, path in score_files.items()}
    columns = [c for c in SCORE_NAMES if all(c in s for s in scores.values())]
    base_prompts = per_prompt(scores[baseline], columns) if baseline in scores else None
    paper_cols, paper_rows = paper_numbers(table)
    rows = []
    table_attrs = {"scorers": next(iter(scores.values())).attrs.get("scorers", {})}
    for name, frame in scores.items():
        prompts = per_prompt(frame, columns)
        row = {"method": name, "label": labels.get(name, name), "n_prompts": len(prompts), "n_images": len(frame)}
        for col in columns:
            row[f"{col}_mean"], row[f"{col}_se"] = mean_and_se(prompts[col])
        if base_prompts is not None:
            for col in columns:
                diff = (prompts[col] - base_prompts[col]).dropna()
                row[f"{col}_delta"], row[f"{col}_delta_se"] = mean_and_se(diff) if name != baseline else (0.0, 0.0)
        for col, value in zip(paper_cols, paper_rows.get(name, [math.nan] * len(paper_cols))):
            row[f"paper_{col}"] = value
        if diversity_files:
            diversity = pd.read_parquet(diversity_files[name])
            for col in DIVERSITY_NAMES:
                if col in diversity:  # the semantic metric needs the world's knowledge (tiny profile)
                    row[f"div_{col}_mean"], row[f"div_{col}_se"] = mean_and_se(diversity[col])
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(table_attrs)
    return table


def _fmt(mean: float, se: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{mean:.{digits}f} ± {se:.{digits}f}" if not math.isnan(se) else f"{mean:.{digits}f}"


def to_markdown(table: pd.DataFrame, title: str, note: str) -> str:
    view = pd.DataFrame({"Method": table["label"]})
    for col, name in SCORE_NAMES.items():
        if f"{col}_mean" in table:
            digits = 3 if col.startswith("gt_") or col == "imagereward" else 2
            view[name] = [_fmt(m, s, digits) for m, s in zip(table[f"{col}_mean"], table[f"{col}_se"])]
    for col, name in DIVERSITY_NAMES.items():
        if f"div_{col}_mean" in table:
            view[name] = [_fmt(m, s, 3) for m, s in zip(table[f"div_{col}_mean"], table[f"div_{col}_se"])]
    if "gt_preference_delta" in table:
        view["Δ GT preference vs base"] = [
            f"{m:+.3f} ± {s:.3f}" for m, s in zip(table["gt_preference_delta"], table["gt_preference_delta_se"])
        ]
    for col, name in PAPER_NAMES.items():
        if f"paper_{col}" in table:
            view[f"paper {name}"] = ["" if math.isnan(v) else f"{v:g}" for v in table[f"paper_{col}"]]
    scorers = table.attrs.get("scorers", {})
    versions = "".join(f"\n- {SCORE_NAMES[n]}: {d['version']}; score = {d['scale']}" for n, d in scorers.items())
    return f"# {title}\n\n{note}\n{versions}\n\n{view.to_markdown(index=False)}\n"


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
