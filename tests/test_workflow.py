"""The workflow declarations: dvc.yaml is generated from the Snakemake DAG and is current."""

from diffpo.settings.stages import stage_keys
from diffpo.pipeline.dvc import dvc_yaml, expand_stages


def test_committed_dvc_yaml_is_current(root):
    from diffpo.cli.parser import DVC_TARGETS

    assert (root / "dvc.yaml").read_text() == dvc_yaml(root, DVC_TARGETS), (
        "dvc.yaml is out of date: run `python -m diffpo dvc-yaml > dvc.yaml`"
    )


def test_each_method_stage_reads_only_its_own_method(root):
    import yaml

    from diffpo.settings.params import load_params
    from diffpo.settings.configs import method_judges

    from conftest import dvc_stage

    stages = expand_stages(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
    params = load_params(root / "params.yaml")
    for method in params["methods"]:
        judges = [f"scorers.sources.{j}" for j in method_judges(params, method)]
        for seed in params["seeds"]:
            assert dvc_stage(stages, "train", f"{method}-{seed}")["params"] == [
                "profile", "build.stand_ins", "train", f"methods.{method}", *judges]
    assert dvc_stage(stages, "train", "d3po-0")["params"][-1] == "scorers.sources.pickscore"
    assert "results/scorers/step_aware" in dvc_stage(stages, "train", "spo-0")["deps"]
    # a variant run reads its method's keys and its experiment's; a grid point not the keys its grid decides
    assert dvc_stage(stages, "train", "see_diffusion_dpo__gamma-0.5-1")["params"][-1] == "experiments.gamma"
    tune = dvc_stage(stages, "tune", "diffusion_dpo-0")["params"]
    assert "methods.diffusion_dpo.label" in tune and not {"methods.diffusion_dpo.beta", "train.learning_rate"} & set(tune)
    assert stage_keys("evaluate", model="sft_w", prompt_set="x") == stage_keys("evaluate", prompt_set="x")


def test_every_stage_logs_and_writes_under_results(root):
    import yaml

    for name, stage in expand_stages(yaml.safe_load((root / "dvc.yaml").read_text())["stages"]).items():
        assert "--log logs/" in stage["cmd"], name
        for out in stage["outs"]:
            path = next(iter(out)) if isinstance(out, dict) else out
            assert path.startswith("results/"), (name, path)


def test_seeds_expand_every_trained_row_and_its_evaluation(root):
    from diffpo.settings.params import load_params
    from diffpo.settings.experiments import curve_runs, prolonged_runs
    from diffpo.pipeline.dag import job_counts, snakemake_jobs

    for profile in ("tiny", "paper"):
        params = load_params(root / "params.yaml", profile=profile)
        seeds, rows = params["seeds"], params["tables"]["table1"]["rows"]
        trained = [r for r in rows if r != "base"]
        counts = job_counts(snakemake_jobs(root, ["results/table1.csv"], {"profile": profile}))
        assert counts["train"] == len(trained) * len(seeds), (profile, counts)
        assert counts["evaluate"] == (len(trained) + 1) * len(seeds) and "sample" not in counts, (profile, counts)
        assert counts["table"] == 1 and "tune" not in counts
    tiny = load_params(root / "params.yaml")
    jobs = snakemake_jobs(root, ["all"])
    counts = job_counts(jobs)
    assert counts["curve"] == len(curve_runs(tiny)) * len(tiny["seeds"]) and counts["claims"] == 1
    # the prolonged trainings, the longest jobs, are started first (rule train's priority)
    first = {job.wildcards.method for job in jobs if job.rule.name == "train"
             and job.rule.expand_priority(job.wildcards_dict, job.input, 1) > 0}
    assert first and first == set(prolonged_runs(tiny))
    sweep = job_counts(snakemake_jobs(root, ["results/tuning/selection.csv"]))
    assert sweep["tune"] == len(tiny["tuning"]["grids"]) * tiny["tuning"]["budget"] and "evaluate" not in sweep


# ---------------------------------------------------------------- code inputs derived from the cli package
def test_every_rule_depends_on_the_code_its_command_runs(root):
    import re

    from diffpo.pipeline.code_inputs import code_files
    from diffpo.pipeline.dag import snakemake_jobs

    jobs = [job for job in snakemake_jobs(root, ["all"]) if job.output]
    assert {job.rule.name for job in jobs} >= {"prepare", "encode", "train", "evaluate", "table"}
    runs = {}  # each subcommand's files, derived once (the DAG has hundreds of jobs of a few commands)
    for job in jobs:
        found = re.search(r"-m diffpo ([a-z][\w-]*)", job.shellcmd)
        assert found, f"{job.rule.name}: no `python -m diffpo COMMAND` in {job.shellcmd!r}"
        command = found.group(1)
        if command not in runs:
            runs[command] = set(code_files(command, root))
        missing = runs[command] - {str(f) for f in job.input}
        assert not missing, f"{job.rule.name} runs {sorted(missing)} but does not depend on them"
    train = code_files("train", root)
    assert {"src/diffpo/scoring/step_aware.py", "src/diffpo/scoring/stand_ins.py", "src/diffpo/methods/objectives.py",
            "src/diffpo/methods/rollouts.py"} <= set(train)
    # ``from diffpo.scoring.learned import Scorer`` runs the package's __init__, which imports every family
    assert {f"src/diffpo/scoring/learned/{m}.py" for m in ("__init__", "interface", "weights", "pickscore", "hpsv2",
                                                   "imagereward", "aesthetic", "registry")} <= set(train)
    # the loop imports the reference and the sources (the package's __init__ runs first, and imports nothing)
    assert {f"src/diffpo/training/{m}.py" for m in ("__init__", "loop", "reference", "sources")} <= set(train)
    assert "src/diffpo/scoring/diversity.py" in code_files("evaluate", root)
    assert "src/diffpo/evidence/paper_numbers.yaml" in code_files("table", root)
    assert "src/diffpo/evidence/paper_numbers.yaml" not in train
    assert not [f for f in code_files("evaluate", root) if f.startswith("src/diffpo/training/")]


def test_every_subcommand_has_derivable_code(root):
    from diffpo.cli import build_parser
    from diffpo.pipeline.code_inputs import code_files

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        func = sub.get_default("func")
        assert func.__name__ == "cmd_" + name.replace("-", "_"), name
        home = "src/" + func.__module__.replace(".", "/") + ".py"  # the cli module defining it
        assert {home, "src/diffpo/cli/__init__.py", "src/diffpo/__main__.py", "src/diffpo/__init__.py"} <= set(
            code_files(name, root)), name


def test_a_command_does_not_depend_on_another_commands_module(root):
    from diffpo.pipeline.code_inputs import code_files

    evaluate, train, tune = (set(code_files(c, root)) for c in ("evaluate", "train", "tune"))
    assert "src/diffpo/cli/evaluate.py" in evaluate and "src/diffpo/cli/train.py" not in evaluate
    assert "src/diffpo/cli/train.py" in train and "src/diffpo/cli/evaluate.py" not in train
    # tune scores its samples with a helper of the evaluation module, and imports it where it uses it
    assert {"src/diffpo/cli/train.py", "src/diffpo/cli/evaluate.py"} <= tune
    assert not {"src/diffpo/cli/inputs.py", "src/diffpo/cli/report.py"} & (evaluate | train | tune)


def test_cli_modules_hold_only_imports_constants_and_definitions_at_module_level(root):
    """build_parser imports every module of the cli package; what a module runs when imported
    (its module level) is then run by every command, and code_files counts it for its own only."""
    import ast

    for path in sorted((root / "src" / "diffpo" / "cli").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                ast.literal_eval(node.value)  # a constant; raises otherwise
            else:
                assert isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)) or (
                    isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)), (
                    f"{path.name}:{node.lineno}: module-level {type(node).__name__}")


def _fake_package(tmp_path):
    files = {
        "__init__.py": "",
        "__main__.py": "from diffpo.cli import main\n",
        "cli/__init__.py": (
            "import json\n"
            "from diffpo import config  # module level: every command\n\n"
            "def _params():\n    from diffpo.settings import s\n\n"
            "def _unused():\n    from diffpo.unused import u\n\n"
            "def build_parser():\n    pass\n\n"
            "def main():\n    build_parser()\n"
        ),
        "cli/go.py": (
            "from diffpo.cli import _params\n"
            "from diffpo.cli.shared import _shared as shared_helper\n\n"
            "def _helper():\n    from diffpo.helpers import h\n\n"
            "def _not_go():\n    from diffpo.unused import u\n\n"
            "def cmd_go(args):\n    from diffpo.engine import run\n    _helper()\n    _params()\n    shared_helper()\n"
        ),
        "cli/shared.py": (
            "def _shared():\n    from diffpo.shared_dep import x\n\n"
            "def _not_shared():\n    from diffpo.unused import u\n"
        ),
        "cli/other.py": (
            "from .shared import _shared  # relative, at module level: shared.py runs, none of its functions\n\n"
            "def cmd_other(args):\n    from diffpo.other import x\n"
        ),
        "config.py": "import yaml\n",
        "settings.py": "",
        "helpers.py": "",
        "shared_dep.py": "",
        "unused.py": "",
        "other.py": "",
        "engine.py": (
            "import numpy\n\n"
            "def run():\n"
            "    from diffpo.lazy import thing  # function-local\n"
            "    from diffpo.sub import feature\n"
            "    return open('table.yaml')\n"
        ),
        "lazy.py": "from . import sibling\nthing = 1\n",
        "sibling.py": "",
        "sub/__init__.py": "from diffpo.sub.impl import feature\n",
        "sub/impl.py": "from .deep import d\nfeature = 1\n",
        "sub/deep.py": "",
        "sub/extra.py": "",
        "table.yaml": "a: 1\n",
        "other.yaml": "b: 2\n",
    }
    package = tmp_path / "src" / "diffpo"
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_code_closure_follows_local_relative_and_subpackage_imports(tmp_path):
    import pytest

    from diffpo.pipeline.code_inputs import code_digest, code_files

    package = _fake_package(tmp_path)
    assert [f.removeprefix("src/diffpo/") for f in code_files("go", tmp_path)] == [
        "__init__.py", "__main__.py", "cli/__init__.py", "cli/go.py", "cli/shared.py", "config.py", "engine.py",
        "helpers.py", "lazy.py", "settings.py", "shared_dep.py", "sibling.py", "sub/__init__.py", "sub/deep.py",
        "sub/impl.py", "table.yaml",
    ]
    assert [f.removeprefix("src/diffpo/") for f in code_files("other", tmp_path)] == [
        "__init__.py", "__main__.py", "cli/__init__.py", "cli/other.py", "cli/shared.py", "config.py", "other.py",
    ]
    with pytest.raises(ValueError, match="cmd_missing"):
        code_files("missing", tmp_path)
    before = code_digest("go", package)
    for unused in ("unused.py", "cli/other.py"):  # another command's module, a function go does not call
        (package / unused).write_text((package / unused).read_text() + "changed = True\n")
        assert code_digest("go", package) == before
    (package / "sub" / "deep.py").write_text("d = 2\n")
    assert code_digest("go", package) != before
    (package / "cli" / "twice.py").write_text("def cmd_go(args):\n    pass\n")
    with pytest.raises(ValueError, match="2 of its modules define cmd_go"):
        code_files("go", tmp_path)


def test_checkpoint_fingerprint_covers_the_code(tmp_path, monkeypatch):
    import numpy as np

    import diffpo.pipeline.code_inputs
    from diffpo.settings.configs import TrainConfig
    from diffpo.training.loop import run_fingerprint

    import pandas as pd

    from diffpo.data.cache import write_cache

    zeros = np.zeros((2, 4, 2, 2), np.float32)
    write_cache(tmp_path, zeros, zeros, np.zeros((2, 3, 8), np.float32), np.zeros((3, 8), np.float32),
                pd.DataFrame({"caption": ["a", "b"], "prompt_index": [0, 1]}), ["a", "b"])
    cfg = TrainConfig(objective="sft", steps=1, batch_size=1, learning_rate=1e-4)
    real = run_fingerprint(cfg, "init", tmp_path, "train")
    assert real != run_fingerprint(cfg, "init", tmp_path, "pretrain-unet")
    monkeypatch.setattr(diffpo.pipeline.code_inputs, "code_digest", lambda command: "fixed code")
    assert run_fingerprint(cfg, "init", tmp_path, "train") != real


def test_dvc_commit_only_warns_without_dvc(tmp_path):
    from diffpo.pipeline.dvc import dvc_commit

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    warnings = dvc_commit(tmp_path)
    assert len(warnings) == 1 and "not initialised" in warnings[0]
    assert not (tmp_path / "dvc.lock").exists()


def test_a_file_is_listed_by_no_more_stages_than_run_it(root):
    """dvc.yaml lists a package file (or its whole folder) as a stage's dependency only where the
    stage's command runs it (its imports, diffpo.pipeline.code_inputs): an edit reruns its users
    only. The DAG and DVC tooling is run by no stage, and the trainer does not import it."""
    import collections
    import re

    import yaml

    from diffpo.pipeline.code_inputs import code_files

    stages = expand_stages(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
    package = [p.relative_to(root).as_posix() for p in (root / "src/diffpo").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    listed, run = collections.Counter(), collections.Counter()
    commands: dict[str, list[str]] = {}
    for stage in stages.values():
        deps = stage.get("deps", [])
        listed.update(f for f in package if any(f == d or f.startswith(d + "/") for d in deps))
        command = re.search(r"-m diffpo ([a-z][\w-]*)", stage["cmd"]).group(1)
        run.update(commands.setdefault(command, code_files(command, root)))
    over = {f: (listed[f], run[f]) for f in package if listed[f] > run[f]}
    assert not over, f"listed by more stages than run it (listed, run): {over}"
    assert listed == run, {f: (listed[f], run[f]) for f in package if listed[f] != run[f]}
    tooling = ["src/diffpo/pipeline/dvc.py", "src/diffpo/pipeline/dag.py", "src/diffpo/pipeline/catalogue.py", "src/diffpo/pipeline/gpu_slots.py",
               "src/diffpo/pipeline/benchmark.py", "src/diffpo/pipeline/budget.py"]
    assert {f: listed[f] for f in tooling} == dict.fromkeys(tooling, 0)
    users = sum(1 for s in stages.values() if re.search(r"-m diffpo (train|tune|train-step-scorer) ", s["cmd"]))
    assert listed["src/diffpo/scoring/step_aware.py"] == users
    assert not set(tooling) & set(code_files("train", root))


def test_the_private_snakemake_api_the_dag_is_read_through_is_the_pinned_versions(root):
    """pipeline/dag.py builds a DAG as `snakemake --dry-run` does, through Snakemake's private
    ``WorkflowApi._workflow``, ``Workflow._prepare_dag`` and ``Workflow._build_dag``: the public API
    runs a workflow but returns no DAG. pyproject.toml pins snakemake; an upgrade that moves them
    fails here first."""
    import inspect
    import re
    from importlib.metadata import version

    from snakemake.api import WorkflowApi
    from snakemake.workflow import Workflow

    pinned = re.search(r'"snakemake==([^"]+)"', (root / "pyproject.toml").read_text()).group(1)
    assert version("snakemake") == pinned
    assert isinstance(inspect.getattr_static(WorkflowApi, "_workflow"), property)
    assert callable(Workflow._prepare_dag) and callable(Workflow._build_dag)


def test_a_foreach_stage_expands_back_to_every_jobs_stage():
    """dvc.yaml's foreach templating is lossless: values its wildcards give are templated, values they
    do not (one run's extra option, another cache) become item fields; DVC's expansion gives each back."""
    from diffpo.pipeline.dvc import _foreach

    def job(method, seed, cache, extra):
        stage = {"cmd": f"python -m diffpo train --method {method} --seed {seed} --cache {cache} {extra} --log "
                        f"logs/train/{method}/seed{seed}.log",
                 "deps": [cache, "src/diffpo/settings"], "params": ["profile", f"methods.{method}"],
                 "outs": [f"results/models/{method}/seed{seed}/unet", {f"results/models/{method}/seed{seed}/m.csv":
                                                                       {"cache": False}}]}
        return ("train", f"{method}-{seed}", stage, {"method": method, "seed": str(seed)})

    # a "$" no template may hold: each run's value is its own item field
    members = [job("sft_w", 0, "results/cache", "--tag=$a"), job("plateau", 1, "results/cache_corpus", "--tag=$b"),
               job("seppo_w", 10, "results/cache", "--tag=$a")]
    stage = _foreach(members)
    assert "results/models/${item.method}/seed${item.seed}/unet" in stage["do"]["outs"]
    assert None not in stage["do"]["deps"] and "src/diffpo/settings" in stage["do"]["deps"]
    assert expand_stages({"train": stage}) == {f"train@{key}": s for _, key, s, _ in members}
