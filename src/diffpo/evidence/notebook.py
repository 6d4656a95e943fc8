"""What the notebooks (notebooks/seppo.ipynb, notebooks/see_dpo.ipynb) show: every catalogued
artifact of a paper (workflow/artifacts.yaml), from files under results/ alone.

Each artifact is shown from its committed file (a table's Markdown, a figure's data CSV,
claims.md). Where the per-image results it was computed from are present as well (after
``dvc pull`` or a run of the workflow), it is recomputed from them with the pipeline's own
functions and checked against the committed file, so a notebook never shows numbers the
pipeline would not produce. Nothing here trains, samples or scores.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from diffpo.evidence.claims import ResultFiles
from diffpo.settings.params import load_params


@dataclass
class Shown:
    """An artifact as a notebook shows it: a Markdown text or a figure, and how it was checked."""

    id: str
    markdown: str | None = None
    figure: object | None = None
    checked: str = ""  # "recomputed from the per-image results and equal", or why it was not

    def _ipython_display_(self) -> None:
        from IPython.display import Image, Markdown, display

        if self.markdown is not None:
            display(Markdown(self.markdown))
        if self.figure is not None:  # as a PNG: whatever matplotlib backend the kernel has
            buffer = io.BytesIO()
            self.figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
            display(Image(data=buffer.getvalue()))
        display(Markdown(f"*{self.checked}*"))


class Project:
    """A diffpo checkout: its settings, its catalogue and its results folder."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else find_root(Path.cwd())
        self.params = load_params(self.root / "params.yaml")
        self.catalogue = yaml.safe_load((self.root / "workflow/artifacts.yaml").read_text())["artifacts"]
        self.files = ResultFiles(self.root / "results", self.params["seeds"], self.params["sample"]["prompt_set"])

    def artifact(self, artifact_id: str) -> dict:
        for entry in self.catalogue:
            if entry["id"] == artifact_id:
                return entry
        raise KeyError(f"no artifact {artifact_id!r} in workflow/artifacts.yaml")

    def show(self, artifact_id: str) -> Shown:
        entry = self.artifact(artifact_id)
        target = entry.get("target")
        if not target:
            return Shown(artifact_id, checked=entry.get("status", "not built"))
        path = self.root / target
        if entry["kind"] == "figure":
            return self._figure(entry["figure"], path.with_suffix(".csv"))
        if not path.exists():
            return Shown(artifact_id, checked=f"not in the committed results yet: build it with "
                                             f"`snakemake --cores all {target}`")
        if entry["kind"] == "table" and path.stem in self.params["tables"]:
            return Shown(artifact_id, path.read_text(), checked=self._check_table(path.stem, path.with_suffix(".csv")))
        if entry["kind"] == "report" and path.stem == "claims":
            return Shown(artifact_id, path.read_text(), checked=self._check_claims(path.with_suffix(".csv")))
        return Shown(artifact_id, path.read_text(), checked="shown as committed")

    # ------------------------------------------------------------ checks against the per-image results
    def _present(self, paths) -> bool:
        return all(Path(p).exists() for p in paths)

    def _figure(self, figure: str, data_path: Path) -> Shown:
        from diffpo.evidence.figures import available, figure_data, plot, read_data, required_files

        if not available(figure, self.params):
            return Shown(figure, checked="not drawn: these settings do not define its runs")
        committed = read_data(data_path) if data_path.exists() else None
        if self._present(required_files(figure, self.params, self.files)):
            recomputed = figure_data(figure, self.params, self.files)
            if committed is not None:
                pd.testing.assert_frame_equal(committed, recomputed, check_dtype=False, rtol=1e-8)
                checked = "recomputed from the per-image results: equal to the committed data"
            else:
                checked = "drawn from the per-image results (no committed data yet)"
            return Shown(figure, figure=plot(figure, recomputed), checked=checked)
        if committed is None:
            return Shown(figure, checked=f"not in the committed results yet: build it with "
                                         f"`snakemake --cores all {data_path.with_suffix('.png').relative_to(self.root)}`")
        return Shown(figure, figure=plot(figure, committed),
                     checked=f"drawn from the committed data ({data_path.relative_to(self.root)}); the per-image "
                             "results are not present (`dvc pull`), so it was not recomputed")

    def _check_table(self, table: str, csv_path: Path) -> str:
        from diffpo.evidence.tables import score_table

        settings = self.params["tables"][table]
        rows = list(dict.fromkeys(["base", *settings["rows"]]))
        prompt_sets = settings.get("prompt_sets")
        scores = {s: {run: self.files.scores(run, s) for run in rows} for s in prompt_sets or [None]}
        diversity_set = settings.get("diversity_prompt_set")
        diversity = {run: self.files.diversity(run, diversity_set) for run in rows} if diversity_set else None
        needed = [p for per_run in scores.values() for paths in per_run.values() for p in paths]
        if not self._present(needed + [p for paths in (diversity or {}).values() for p in paths]):
            return "shown as committed; the per-image scores are not present (`dvc pull`), so it was not recomputed"
        labels = {"base": "Base model", **{m: self.params["methods"][m]["label"] for m in rows if m != "base"}}
        recomputed = pd.concat([score_table(per_run, labels, table, diversity_files=diversity, prompt_set=s)
                                for s, per_run in scores.items()], ignore_index=True)
        committed = pd.read_csv(csv_path)
        pd.testing.assert_frame_equal(committed, recomputed[committed.columns], check_dtype=False, rtol=1e-5)
        return "recomputed from the per-image scores: equal to the committed table"

    def _check_claims(self, csv_path: Path) -> str:
        from diffpo.evidence.claims import ClaimsError, evaluate_claims, load_claims

        try:
            recomputed = evaluate_claims(load_claims(self.root / "workflow/claims.yaml"), self.params, self.files)
        except ClaimsError:
            return "shown as committed; the per-image results are not present (`dvc pull`), so it was not re-evaluated"
        committed = pd.read_csv(csv_path)
        recomputed = pd.read_csv(io.StringIO(recomputed.to_csv(index=False, float_format="%.6g")))  # as the rule writes it
        pd.testing.assert_frame_equal(committed, recomputed, check_dtype=False)
        return "re-evaluated from the per-image results: the same effects, intervals and verdicts"


def find_root(start: Path) -> Path:
    """The checkout containing ``start`` (the folder with params.yaml and workflow/)."""
    for folder in (start, *start.parents):
        if (folder / "params.yaml").is_file() and (folder / "workflow").is_dir():
            return folder
    raise FileNotFoundError(f"no diffpo checkout (params.yaml and workflow/) at or above {start}")


# ---------------------------------------------------------------- the notebooks themselves
# Written from the catalogue by `python -m diffpo render-docs` (a test fails when they are not
# current), so a new artifact in workflow/artifacts.yaml gets its cell in its paper's notebook.
NOTEBOOKS = {"SePPO": "notebooks/seppo.ipynb", "SEE-DPO": "notebooks/see_dpo.ipynb"}
_INTRO = """# {paper}: every table and figure, from `results/` alone

Each artifact of {paper} in `workflow/artifacts.yaml` (and those of both papers), regenerated from files under \
`results/`: nothing here trains, samples or scores, and no GPU is needed.

**Getting the files.** A clone already has what this notebook draws from: the tables (`results/*.csv`, `.md`), \
the claims, and each figure's data (`results/figures/ID.csv`), committed with `dvc.lock`. The per-image results \
they were computed from (scores, samples, curves) live in DVC's cache: `dvc pull` fetches them from a remote \
(README, "DVC"), or `snakemake --cores all` rebuilds everything. When they are present, every table, figure and \
claim below is recomputed from them with the pipeline's own functions and checked against the committed file; \
the line under each artifact says which was done.

Run it from the project root or from `notebooks/`, with the project installed \
(`pip install -c constraints.txt -e ".[notebooks]"`)."""
_SETUP = "from diffpo.evidence.notebook import Project\n\nproject = Project()  # the checkout around the working directory\nproject.root"


def notebook_json(catalogue: list[dict], paper: str) -> str:
    """The notebook of ``paper`` (nbformat 4.5): an introduction, then a heading and a show() cell per artifact."""
    cells = [("markdown", _INTRO.format(paper=paper)), ("code", _SETUP)]
    for entry in catalogue:
        if entry["paper"] in (paper, "both"):
            target = f" → `{entry['target']}`" if entry.get("target") else ""
            caption = f"\n\n{entry['caption']}" if entry.get("caption") else ""
            cells += [("markdown", f"## {entry['reproduces']}\n\n`{entry['id']}`{target}{caption}"),
                      ("code", f'project.show("{entry["id"]}")')]
    stem = Path(NOTEBOOKS[paper]).stem
    document = {
        "cells": [{"cell_type": kind, "id": f"{stem}-{i:02d}", "metadata": {}, "source": source.splitlines(keepends=True),
                   **({"execution_count": None, "outputs": []} if kind == "code" else {})}
                  for i, (kind, source) in enumerate(cells)],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
