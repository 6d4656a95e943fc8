"""Glue between params.yaml, Snakemake and DVC.

``STAGE_PARAMS`` says which params.yaml keys each stage reads. Snakemake rules pass their
values as ``params:`` (so a change reruns exactly the jobs that read it), the CLI hands a
stage only those keys, and the generated dvc.yaml lists the same keys per stage.
dvc.yaml is generated from the Snakemake DAG (``python -m diffpo dvc-yaml``); a test
checks that the committed file is current. ``code_files`` derives a rule's code inputs from
the imports of its command's function in the cli package (diffpo/cli/); ``dvc_commit`` records
Snakemake's finished work in dvc.lock (Snakefile ``onsuccess``).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import io
from pathlib import Path
from typing import Callable

import yaml

from diffpo.config import ParamsError, select

STAGE_PARAMS: dict[str, Callable[..., list[str]]] = {
    "world": lambda: ["world"],
    "prepare": lambda: ["data.source", "data.split", "data.max_pairs"],
    "corpus": lambda: ["corpus", "world.image_size"],
    "pretrain_text_encoder": lambda: ["corpus.source", "corpus.split", "data.resolution", "pretrain.seed",
                                      "pretrain.text_encoder"],
    "pretrain_vae": lambda: ["corpus.source", "corpus.split", "data.resolution", "pretrain.seed", "pretrain.vae"],
    "encode": lambda: ["data.source", "data.split", "data.resolution", "encode"],
    "encode_corpus": lambda: ["corpus.source", "corpus.split", "data.resolution", "encode"],
    "pretrain_unet": lambda: ["pretrain.seed", "pretrain.unet", "pretrain.scheduler"],
    # judges: the scorers a method's rollouts are judged by (config.method_judges)
    # experiment: the experiment declaring a variant run (its varied setting)
    "train": lambda method, judges=(), experiment=None: (["train", f"methods.{method}"]
                                                          + [f"scorers.sources.{j}" for j in judges]
                                                          + ([f"experiments.{experiment}"] if experiment else [])),
    "train_step_scorer": lambda: ["data.source", "data.split", "scorers.accuracy_split", "scorers.stand_ins.seed",
                                  "scorers.stand_ins.step_aware"],
    "train_scorer": lambda scorer: ["data.source", "data.split", "scorers.accuracy_split", "scorers.stand_ins.seed",
                                    f"scorers.stand_ins.{scorer}"],
    "evaluate": lambda prompt_set: ["sample", f"prompt_sets.{prompt_set}", "world.alignment_weight",
                                    "world.aesthetic_weight", "scorers.names", "scorers.batch_size", "scorers.sources"],
    "world_stats": lambda: ["world.alignment_weight", "world.aesthetic_weight", "sample.prompt_set", "prompt_sets",
                            "data.source", "corpus.source", "corpus.split"],
    "scorer_accuracy": lambda: ["data.source", "world.alignment_weight", "world.aesthetic_weight", "scorers.names",
                                "scorers.batch_size", "scorers.sources", "scorers.accuracy_split"],
    # a grid point reads its method's settings except those its grid decides (tune_keys): applying
    # the selection to params.yaml leaves the sweep current
    "tune": lambda keys: keys,
    "tune_select": lambda: ["tuning"],
    "curve": lambda prompt_set: ["sample", f"prompt_sets.{prompt_set}", "experiments.curves.prompts",
                                 "experiments.curves.images_per_prompt", "world.alignment_weight",
                                 "world.aesthetic_weight", "scorers.names", "scorers.batch_size", "scorers.sources"],
    "claims": lambda: ["seeds", "sample.prompt_set", "experiments", "methods", "train"],
    "figure": lambda: ["seeds", "sample.prompt_set", "experiments", "methods", "train"],
    "table": lambda table, rows: [f"tables.{table}"] + [f"methods.{m}.label" for m in rows if m != "base"],
    "figures": lambda methods: [f"methods.{m}.label" for m in methods],
}


def tune_keys(params: dict, method: str) -> list[str]:
    """The keys a tuning grid point of ``method`` reads: its settings but those the grid
    decides, the tuning protocol, the sampling and the scoring of the tuning prompt set."""
    from diffpo.config import method_judges
    from diffpo.tuning import grid_keys

    decided = set(grid_keys(params, method))
    tuning = params["tuning"]
    metric = tuning["metric"]
    keys = [f"train.{k}" for k in params["train"] if k not in decided]
    keys += [f"methods.{method}.{k}" for k in params["methods"][method] if k not in decided]
    keys += [f"scorers.sources.{j}" for j in method_judges(params, method)]
    keys += ["tuning.prompt_set", "tuning.seed", "tuning.metric", f"tuning.grids.{method}", "sample",
             f"prompt_sets.{tuning['prompt_set']}", "world.alignment_weight", "world.aesthetic_weight",
             "scorers.batch_size"]
    return keys + ([] if metric.startswith("gt_") else [f"scorers.sources.{metric}"])


def stage_keys(stage: str, **wildcards) -> list[str]:
    """The keys ``stage`` reads; wildcards the stage does not depend on are ignored."""
    if stage not in STAGE_PARAMS:
        raise ParamsError(f"unknown stage {stage!r}")
    func = STAGE_PARAMS[stage]
    accepted = inspect.signature(func).parameters
    return func(**{k: v for k, v in wildcards.items() if k in accepted})


def stage_params(params: dict, stage: str, **wildcards) -> dict:
    """The nested sub-dictionary of ``params`` that ``stage`` may read (plus the profile)."""
    out: dict = {"profile": params["profile"]}
    for key, value in select(params, stage_keys(stage, **wildcards)).items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


# ---------------------------------------------------------------- dvc.yaml from the DAG
HEADER = (
    "# GENERATED from the Snakemake DAG by `python -m diffpo dvc-yaml` -- do not edit by hand.\n"
    "# Snakemake rules (workflow/rules/*.smk) are the source; tests/test_workflow.py checks this file is current.\n"
)


def snakemake_jobs(root: Path, targets: list[str], config: dict | None = None) -> list:
    """Every job of the DAG that builds ``targets`` from scratch, in topological order;
    ``config``: Snakemake's ``--config`` (``{"profile": "paper"}`` lists the paper DAG)."""
    return _with_dag(root, targets, True, lambda workflow, jobs: jobs, config)


def job_counts(jobs) -> dict[str, int]:
    """Jobs per rule, as Snakemake's dry run counts them."""
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.rule.name] = counts.get(job.rule.name, 0) + 1
    return counts


def current_jobs(root: Path, targets: list[str]) -> list:
    """The jobs of ``targets``' DAG that Snakemake would not rerun and whose outputs it made itself.

    Up to date in Snakemake's sense (modification times, params, input set, code); and every
    output has Snakemake's record (without one, Snakemake cannot see a params change) and
    still has the modification time Snakemake recorded when the job finished (not rewritten
    since, e.g. by ``dvc repro``).
    """
    def current(workflow, jobs):
        persistence = workflow.persistence
        return [job for job in jobs if job.output and not workflow.dag.needrun(job) and persistence.has_metadata(job)
                and not persistence.has_outdated_metadata(job)
                and all(_finished_by_snakemake(str(f), persistence.metadata(f)) for f in job.output)]

    return _with_dag(root, targets, False, current)


def _finished_by_snakemake(path: str, record) -> bool:
    stamp = Path(path) / ".snakemake_timestamp"  # Snakemake's modification time of a directory output
    try:
        mtime = (stamp if stamp.is_file() else Path(path)).stat().st_mtime
    except FileNotFoundError:
        return False
    return not record.incomplete and record.endtime is not None and abs(mtime - record.endtime) < 1e-6


def _with_dag(root: Path, targets: list[str], forceall: bool, visit: Callable, config: dict | None = None):
    """``visit(workflow, jobs)`` on the DAG of ``targets`` (topological order), built as
    ``snakemake --dry-run`` would (``forceall``: as if nothing existed yet)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
        StorageSettings,
        WorkflowSettings,
    )

    with _restored_environment(), SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(config=dict(config or {})),
            storage_settings=StorageSettings(),
            workflow_settings=WorkflowSettings(),
            snakefile=root / "workflow" / "Snakefile",
            workdir=root,
        )
        # An interrupted job's outputs (incomplete) count as out of date, as with --rerun-incomplete.
        dag_api = workflow_api.dag(DAGSettings(targets=set(targets), forceall=forceall, force_incomplete=True))
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(forceall=forceall, ignore_incomplete=forceall, lock_warn_only=True)
        workflow._build_dag()
        dag = workflow.dag
        return visit(workflow, list(dag.toposorted_jobs()) if hasattr(dag, "toposorted_jobs") else _toposort(dag))


@contextlib.contextmanager
def _restored_environment():
    """common.smk exports the profile to the jobs it starts (DIFFPO_PROFILE); building a DAG
    in this process must not leave it set for what runs next."""
    import os

    from diffpo.config import PROFILE_VARIABLE

    saved = os.environ.get(PROFILE_VARIABLE)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(PROFILE_VARIABLE, None)
        else:
            os.environ[PROFILE_VARIABLE] = saved


def _toposort(dag) -> list:
    order = []
    for level in dag.toposorted():
        order.extend(sorted(level, key=lambda job: (job.rule.name, str(job.output))))
    return order


def dvc_stages(jobs) -> dict:
    stages = {}
    for job in jobs:
        if not job.output or job.rule.name == "all":
            continue
        # DVC reserves "@" for foreach stages; "-" joins the wildcards instead.
        name = "-".join([job.rule.name, *map(str, job.wildcards)])
        stage: dict = {"cmd": job.shellcmd.strip()}
        deps = sorted({str(f) for f in job.input})
        if deps:
            stage["deps"] = deps
        keys = job.params.get("param_keys") if hasattr(job.params, "get") else None
        if keys is not None:
            stage["params"] = ["profile", *keys]
        # Small reports stay in git (cache: false) and are declared at the top level below.
        stage["outs"] = [{str(f): {"cache": False}} if _is_report(str(f)) else str(f) for f in job.output]
        stages[name] = stage
    return stages


def _is_report(path: str) -> bool:
    """Small outputs kept in git (tables, metrics, training logs, figures), not in DVC's cache."""
    return path.endswith((".json", ".csv", ".md", ".png", ".pdf"))


def dvc_commit(root: Path, targets: list[str] = ("all",)) -> list[str]:
    """Record Snakemake's finished work in dvc.lock, so that DVC sees it as current.

    Runs ``dvc commit --force --no-relink`` for exactly the DVC stages whose Snakemake jobs
    are current (``current_jobs``) and declared in dvc.yaml as Snakemake runs them; a stage
    whose job Snakemake would rerun (a stale output outside the last run, say) keeps its old
    dvc.lock entry, so DVC still sees it as changed. ``--no-relink`` leaves the workspace
    files (and so Snakemake's modification times) untouched. Returns warnings; without DVC
    (no .dvc/ or no dvc.yaml) it does nothing else.
    """
    import time

    root = Path(root)
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return [f"DVC is not initialised in {root} (no .dvc/ or dvc.yaml): dvc.lock not updated"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        expected = dvc_stages(current_jobs(root, list(targets)))
    declared = yaml.safe_load((root / "dvc.yaml").read_text()).get("stages", {})
    stale = sorted(name for name in expected if declared.get(name) != expected[name])
    warnings = [f"dvc.yaml does not declare {len(stale)} stage(s) as Snakemake runs them ({', '.join(stale[:5])}"
                f"{', ...' if len(stale) > 5 else ''}): not committed; regenerate it with "
                "`python -m diffpo dvc-yaml > dvc.yaml`"] if stale else []
    stages = [name for name in expected if name not in stale]
    if not stages:
        return warnings + ["no DVC stage has current Snakemake outputs: dvc.lock not updated"]
    start = time.time()
    try:
        committed = _commit_stages(root, stages)
    except ImportError as error:
        return warnings + [f"DVC is not installed ({error}): dvc.lock not updated"]
    except Exception as error:  # a DVC error (a lock held by a running dvc, a missing output): warn
        return warnings + [f"`dvc commit` failed, dvc.lock not updated: {type(error).__name__}: {error}"]
    print(f"dvc.lock: recorded {len(committed)} of {len(declared)} stages in {time.time() - start:.1f} s")
    return warnings


def _commit_stages(root: Path, names: list[str]) -> list[str]:
    """``dvc commit --force --no-relink`` of the dvc.yaml stages ``names``, in one pass: the CLI
    reads and rewrites dvc.yaml and dvc.lock once per target (about a second per stage)."""
    from dvc.repo import Repo, locked

    dvc_yaml_path = (root / "dvc.yaml").resolve()

    @locked
    def commit(repo) -> list[str]:
        stages = [s for s in repo.index.stages
                  if getattr(s, "name", None) in names and Path(s.path).resolve() == dvc_yaml_path]
        for stage in stages:
            stage.save()
            stage.commit(relink=False)
        if stages:
            stages[0].dvcfile.dump_stages(stages, update_pipeline=False)
        return [s.name for s in stages]

    with Repo(str(root)) as repo:
        return commit(repo)


def dvc_yaml(root: Path, targets: list[str]) -> str:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        stages = dvc_stages(snakemake_jobs(root, targets))
    outs = [next(iter(o)) if isinstance(o, dict) else o for s in stages.values() for o in s["outs"]]
    curves = [p for p in outs if p.endswith("metrics.csv")]
    document = {
        "stages": stages,
        "metrics": [p for p in outs if p.endswith(".json") and ("metrics" in p or "manifest" in p)],
        "plots": [
            {"training loss": {"x": "step", "y": {p: "loss" for p in curves}}},
            *({p: {"x": "step"}} for p in curves),
            *(p for p in outs if p.startswith("results/figures/") and p.endswith(".png")),
        ],
    }
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=200)


# ---------------------------------------------------------------- the code each command runs
# A rule's code inputs and a training run's checkpoint fingerprint are the package files its
# command runs. In the cli package (diffpo/cli/): the module defining the command's function
# ``cmd_NAME``, the definitions it refers to there, those it imports from other modules of the
# package (transitively), every module-level statement of the modules so reached, and the
# package's ``main`` and ``build_parser`` (cli/__init__.py). build_parser imports every module
# of the package by name (importlib), to find ``cmd_NAME``; their module level is imports and
# constants only (a test checks), so a command does not depend on another command's module.
# Then every package module those definitions import, transitively (module-level and
# function-local imports alike), and the package data files (paper_numbers.yaml) they name.
PACKAGE = "diffpo"
CLI = f"{PACKAGE}.cli"
ALWAYS_RUN = ("main", "build_parser")  # cli/__init__.py functions every command runs


def code_files(command: str, root: Path) -> list[str]:
    """The files ``python -m diffpo COMMAND`` runs, relative to the project ``root`` (``src/diffpo/...``)."""
    root = Path(root)
    return [str(p.relative_to(root)) for p in command_sources(command, root / "src" / PACKAGE)]


def code_digest(command: str, package_dir: Path | None = None) -> str:
    """A digest of the files ``command`` runs, read where the package is imported from by default."""
    import hashlib

    if package_dir is None:
        import diffpo

        package_dir = Path(diffpo.__file__).parent
    digest = hashlib.sha256()
    for path in command_sources(command, package_dir):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def command_sources(command: str, package_dir: Path) -> list[Path]:
    """Sorted paths of the package files that subcommand ``command`` (e.g. ``pretrain-unet``) runs."""
    package_dir = Path(package_dir)
    cli = _CliPackage(package_dir)
    entry = "cmd_" + command.replace("-", "_")
    homes = [name for name in cli.commands if entry in cli.defs[name]]
    if len(homes) != 1:
        where = f"{len(homes)} of its modules define" if homes else "no module of it defines"
        raise ValueError(f"unknown diffpo subcommand {command!r}: {cli.directory} has {where} {entry}()")
    pending = [f"{PACKAGE}.__main__"]  # modules outside the cli package that run
    loaded: set[str] = set()  # modules of the cli package that run

    def load(module: str) -> None:  # a cli module runs: its module-level statements
        if module not in loaded:
            loaded.add(module)
            for node in cli.trees[module].body:
                if not isinstance(node, _DEFINITIONS):
                    follow(node, module)

    def follow(node: ast.AST, module: str) -> None:  # the modules a node imports
        for imported in _imported(node, module, package_dir, module == CLI):
            if imported in cli.trees:
                load(imported)
            else:
                pending.append(imported)

    used, todo = set(), [(CLI, name) for name in ALWAYS_RUN if name in cli.defs[CLI]] + [(homes[0], entry)]
    while todo:  # the command's function and the definitions it refers to, in its module or imported from another
        module, name = todo.pop()
        if (module, name) in used:
            continue
        used.add((module, name))
        load(module)
        node = cli.defs[module][name]
        follow(node, module)
        for ref in {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}:
            if ref in cli.defs[module]:
                todo.append((module, ref))
            elif ref in cli.aliases[module]:
                todo.append(cli.aliases[module][ref])
    files: set[Path] = set()
    while pending:  # every package module those import, transitively
        module = pending.pop()
        if module in cli.trees:  # a cli module imported from outside the package (__main__): its module level
            load(module)
            continue
        path = _module_file(module, package_dir)
        if path is None or path in files:
            continue
        files.add(path)
        pending += _parents(module)
        pending += _imported(_parse(path), _module_name(path, package_dir), package_dir, path.name == "__init__.py")
    files |= {cli.files[module] for module in loaded}
    sources = [p for p in files if p.suffix == ".py"]
    return sorted(files | set(_data_files(sources, package_dir)))


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class _CliPackage:
    """The modules of the cli package, parsed: their top-level definitions, and the names they
    import from one another (``from diffpo.cli.evaluation import _world``: _world there)."""

    def __init__(self, package_dir: Path):
        self.directory = package_dir / "cli"
        self.files = {CLI: self.directory / "__init__.py"}
        self.files |= {f"{CLI}.{p.stem}": p for p in sorted(self.directory.glob("*.py")) if p.stem != "__init__"}
        self.commands = [name for name in self.files if name != CLI]  # where ``cmd_NAME`` may be
        self.trees = {name: _parse(path) for name, path in self.files.items()}
        self.defs = {name: {n.name: n for n in tree.body if isinstance(n, _DEFINITIONS)}
                     for name, tree in self.trees.items()}
        self.aliases: dict[str, dict[str, tuple[str, str]]] = {}
        for name, tree in self.trees.items():
            self.aliases[name] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    base = _absolute(node, name, name == CLI)
                    for alias in node.names:
                        if alias.name in self.defs.get(base, {}):
                            self.aliases[name][alias.asname or alias.name] = (base, alias.name)


def _imported(node: ast.AST, importer: str, package_dir: Path, is_package: bool) -> set[str]:
    """The package modules an AST node imports (a ``from P import x`` also names P.x, if x is a module)."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            out.update(a.name for a in n.names if _ours(a.name))
        elif isinstance(n, ast.ImportFrom):
            base = _absolute(n, importer, is_package)
            if _ours(base):
                out.add(base)
                out.update(f"{base}.{a.name}" for a in n.names if _module_file(f"{base}.{a.name}", package_dir))
    return out


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, a relative one resolved from the importing module's package."""
    if not node.level:
        return node.module or ""
    anchor = importer.split(".") if is_package else importer.split(".")[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def _ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _module_file(module: str, package_dir: Path) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for path in (package_dir / rel.with_suffix(".py") if rel.parts else None, package_dir / rel / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


def _module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir).with_suffix("").parts
    return ".".join([PACKAGE, *(parts[:-1] if parts[-1] == "__init__" else parts)])


def _parse(path: Path) -> ast.Module:
    return _parse_text(path.read_text(), str(path))


@functools.lru_cache(maxsize=256)
def _parse_text(text: str, filename: str) -> ast.Module:  # each rule's code(): the same files again
    return ast.parse(text, filename)


def _data_files(sources: list[Path], package_dir: Path) -> list[Path]:
    """Package data files (not Python) whose file name appears in a string of one of ``sources``."""
    data = [p for p in package_dir.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts]
    if not data:
        return []
    strings = [n.value for s in sources for n in ast.walk(_parse(s)) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return [p for p in data if any(p.name in s for s in strings)]
