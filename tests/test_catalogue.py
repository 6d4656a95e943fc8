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
ORCHESTRATION = {"snakemake", "dvc", "ruamel.yaml.clib"}  # the last: DVC's C YAML parser


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
    # As the catalogue checks: the root Snakefile, workflow/Snakefile and workflow/rules/*.smk, with [tool.snakefmt].
    files = ["Snakefile", "workflow/Snakefile", *sorted(str(p.relative_to(root)) for p in (root / "workflow/rules").glob("*.smk"))]
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
    declared = []
    for path in rules:
        text = path.read_text()
        declared += re.findall(r"^[ \t]*rule (\w+):", text, re.M)
        envs = re.findall(r"^\s+conda:\n\s+\"([^\"]+)\"", text, re.M)
        shells = re.findall(r"^\s+shell:", text, re.M)
        assert len(envs) == len(shells), path  # lint: every rule that runs a command has one
        for env in envs:
            assert (path.parent / env).resolve() == (root / ENV_FILE).resolve(), (path, env)
    # Exactly the rules Snakemake knows, in the tiny profile that defines them all (the rules of its `build`
    # features included): the checks above covered every rule, and none lives in a file they did not read.
    listed = run([sys.executable, "-m", "snakemake", "--list-rules", "--config", "profile=tiny"], root)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert sorted(declared) == sorted(listed.stdout.split())


# ---------------------------------------------------------------- config/README.md, .test/
def _listed_keys(text: str) -> set[str]:
    """The keys config/README.md documents: its sections' headings and its tables' key column."""
    return set(re.findall(r"^### `([^`]+)`$", text, re.M)) | set(re.findall(r"^\| `([^`]+)` \|", text, re.M))


def _schema_property_names(node) -> set[str]:
    """Every name declared under a `properties:` anywhere in the schema ($defs included)."""
    names = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                names |= set(value)
            names |= _schema_property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _schema_property_names(value)
    return names


REGISTRIES = ("methods", "prompt_sets", "experiments", "tuning.grids", "tuning.grids.<name>", "tuning.inherit")
DECLARED = {"experiments": {"curves"}, "tuning.grids.<name>": {"from"}}  # named keys beside a registry's entries


def _param_paths(node, prefix="", registries=REGISTRIES) -> set[str]:
    """Every dotted key of resolved params (a registry's entry names as <name>)."""
    paths = set()
    if isinstance(node, dict):
        for key, value in node.items():
            part = "<name>" if prefix in registries and key not in DECLARED.get(prefix, ()) else key
            path = f"{prefix}.{part}" if prefix else part
            paths.add(path)
            paths |= _param_paths(value, path, registries)
    return paths


def test_config_readme_is_generated_and_current(root):
    from diffpo.pipeline.catalogue import config_readme

    assert (root / "config/README.md").read_text() == config_readme(root), (
        "config/README.md is out of date: run `python -m diffpo.pipeline.catalogue config-readme > config/README.md`"
    )


def test_config_readme_lists_every_key_of_the_schema(root, schema):
    from diffpo.settings.params import PROFILES, load_params

    listed = _listed_keys((root / "config/README.md").read_text())
    # Every name the schema declares (found independently of the renderer's own walk)...
    missing = _schema_property_names(schema) - {path.rsplit(".", 1)[-1] for path in listed}
    assert not missing, f"config/README.md lacks {sorted(missing)}"
    # ...at every place params.yaml uses it, in both profiles.
    for profile in PROFILES:
        paths = _param_paths(load_params(root / "params.yaml", profile))
        assert paths <= listed, f"{profile}: config/README.md lacks {sorted(paths - listed)}"


def test_config_readme_needs_a_description_for_every_key(root, tmp_path):
    from diffpo.pipeline.catalogue import config_readme

    for name in ("params.yaml", "workflow/schemas/params.schema.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, tmp_path / name)
    schema_file = tmp_path / "workflow/schemas/params.schema.yaml"
    schema = yaml.safe_load(schema_file.read_text())
    del schema["properties"]["sample"]["properties"]["seed"]["description"]
    schema_file.write_text(yaml.safe_dump(schema, sort_keys=False))
    with pytest.raises(ValueError, match="sample.seed"):
        config_readme(tmp_path)


def test_test_configuration_is_the_tiny_profile_at_the_end_to_end_size(root, schema):
    from diffpo.pipeline.catalogue import SMOKE_RELPATH, smoke_params
    from diffpo.settings.params import resolve_params

    smoke = yaml.safe_load((root / SMOKE_RELPATH).read_text())
    params = smoke_params(yaml.safe_load((root / "params.yaml").read_text()), smoke)
    resolved = resolve_params(params, schema)  # valid in both profiles
    assert resolved["profile"] == "tiny" and list(resolved["methods"]) == list(smoke["methods"])
    assert resolved["train"]["steps"] == smoke["overrides"]["train"]["steps"]
    assert resolved["methods"]["seppo_w"]["steps"] == smoke["methods"]["seppo_w"]["steps"]
    # The rest of a method is params.yaml's: only the sizes differ.
    full = resolve_params(yaml.safe_load((root / "params.yaml").read_text()), schema)
    assert resolved["methods"]["seppo_w"]["beta"] == full["methods"]["seppo_w"]["beta"]
    objectives = {resolved["methods"][m]["objective"] for m in resolved["methods"]}
    assert {"sft", "diffusion_dpo", "seppo", "d3po", "spo"} <= objectives
    rows = {row for table in resolved["tables"].values() for row in table["rows"]}
    assert rows <= {"base", *resolved["methods"]}


def test_catalogue_settings_file(root):
    settings = yaml.safe_load((root / ".snakemake-workflow-catalog.yml").read_text())
    usage = settings["usage"]
    assert usage["software-stack-deployment"]["conda"] is True
    assert set(usage) <= {"mandatory-flags", "software-stack-deployment", "report"}
    assert (root / "workflow/Snakefile").is_file() and (root / "config/README.md").is_file()


def test_dvc_reads_yaml_with_the_c_parser():
    # Without ruamel.yaml.clib (pyproject.toml) DVC falls back to its pure-Python parser: every
    # `dvc status` and the onsuccess dvc-commit then take about twice as long.
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__name__ == "CParser", "ruamel.yaml.clib is not installed"
