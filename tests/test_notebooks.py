"""The notebooks: one per paper, covering every catalogued artifact of it, executed headlessly
against the committed results (what a fresh clone has). tests/test_end_to_end.py executes them
again where the per-image results exist, so that each table, figure and claim is recomputed
and checked against the pipeline's files."""

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import NOTEBOOKS, execute, outputs, text_of


def shown_ids(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return [m for c in cells if c["cell_type"] == "code" for m in re.findall(r'project\.show\("([\w-]+)"\)', "".join(c["source"]))]


@pytest.mark.parametrize("paper", NOTEBOOKS)
def test_each_notebook_shows_every_artifact_of_its_paper(root, paper):
    catalogue = yaml.safe_load((root / "workflow/artifacts.yaml").read_text())["artifacts"]
    expected = [a["id"] for a in catalogue if a["paper"] in (paper, "both")]
    assert shown_ids(root / NOTEBOOKS[paper]) == expected, "add a show() cell for each new artifact, in catalogue order"


@pytest.mark.parametrize("paper", NOTEBOOKS)
def test_notebooks_run_from_the_committed_results(root, paper):
    catalogue = {a["id"]: a for a in yaml.safe_load((root / "workflow/artifacts.yaml").read_text())["artifacts"]}
    shown = outputs(execute(root / NOTEBOOKS[paper], root / "notebooks"))
    for artifact_id, cell_outputs in shown.items():
        entry = catalogue[artifact_id]
        target = entry.get("target")
        if entry["kind"] == "figure" and (root / target).with_suffix(".csv").exists():
            assert any("image/png" in o.get("data", {}) for o in cell_outputs), artifact_id
        elif target and (root / target).exists() and entry["kind"] != "figure":
            assert (root / target).read_text().splitlines()[0] in text_of(cell_outputs), artifact_id
        else:  # not yet committed, or not built: the cell says so instead of failing
            assert re.search(r"not (in the committed results yet|built|drawn)", text_of(cell_outputs)), artifact_id
