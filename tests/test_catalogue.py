"""The workflow meets the Snakemake workflow catalogue's standards: lint-clean, formatted, one
pinned software environment for every rule (`--sdm conda`)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ENV_FILE = Path("workflow/envs/diffpo.yaml")
# Run beside the jobs, not in them: the jobs' environment need not have them.
ORCHESTRATION = {"snakemake", "dvc"}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(cwd) / "src")}  # the copy's package, never the installed one
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def assert_lint_clean(project: Path) -> None:
    result = run([sys.executable, "-m", "snakemake", "--lint"], project)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Lints for" not in output, f"snakemake --lint:\n{output[-6000:]}"
    assert "Congratulations, your workflow is in a good condition!" in output, output[-3000:]


def test_snakemake_lint_is_clean(root):
    assert_lint_clean(root)


def test_snakemake_lint_is_clean_for_the_paper_profile(root, tmp_path):
    # The paper profile declares other rules and paths (no pre-training, base.pretrained).
    for name in ("workflow", "src"):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    params = (root / "params.yaml").read_text()
    assert re.search(r"^profile: tiny$", params, re.M)
    (tmp_path / "params.yaml").write_text(re.sub(r"^profile: tiny$", "profile: paper", params, flags=re.M))
    assert_lint_clean(tmp_path)


def test_snakefiles_are_formatted(root):
    # As the catalogue checks: workflow/Snakefile and workflow/rules/*.smk, with [tool.snakefmt] of pyproject.toml.
    files = ["workflow/Snakefile", *sorted(str(p.relative_to(root)) for p in (root / "workflow/rules").glob("*.smk"))]
    result = run([sys.executable, "-m", "snakefmt", "--check", *files], root)
    assert result.returncode == 0, f"run `snakefmt workflow/`:\n{result.stdout}{result.stderr}"


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        name, sep, version = requirement.partition("==")
        assert sep and version, f"not pinned with ==: {requirement}"
        pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_rule_environment_has_the_projects_pins(root):
    tomllib = pytest.importorskip("tomllib")
    env = yaml.safe_load((root / ENV_FILE).read_text())
    assert set(env) == {"channels", "dependencies"} and env["channels"][0] == "conda-forge"
    pip = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pip) == 1 and set(pip[0]) == {"pip"}, "one pip: section"
    assert "pip" in env["dependencies"]
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"], python  # the Python the numbers were measured with (README)
    project = _pins(tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"])
    assert ORCHESTRATION <= set(project)
    assert _pins(pip[0]["pip"]) == {name: v for name, v in project.items() if name not in ORCHESTRATION}
    constraints = _pins([line for line in (root / "constraints.txt").read_text().splitlines() if line.strip()])
    assert constraints.items() <= project.items()
    # Snakemake runs this beside the file once the environment exists: it installs diffpo itself.
    deploy = root / ENV_FILE.with_suffix(".post-deploy.sh")
    assert os.access(deploy, os.X_OK) and "--no-deps --editable ." in deploy.read_text()


def test_every_rule_runs_in_the_environment(root):
    rules = [*(root / "workflow/rules").glob("*.smk"), root / "workflow/Snakefile"]
    count = 0
    for path in rules:
        text = path.read_text()
        declared = re.findall(r"^\s+rule (\w+):", text, re.M)
        envs = re.findall(r"^\s+conda:\n\s+\"([^\"]+)\"", text, re.M)
        shells = re.findall(r"^\s+shell:", text, re.M)
        assert len(envs) == len(shells), path  # lint: every rule that runs a command has one
        for env in envs:
            assert (path.parent / env).resolve() == (root / ENV_FILE).resolve(), (path, env)
        count += len(declared)
    assert count >= 14
