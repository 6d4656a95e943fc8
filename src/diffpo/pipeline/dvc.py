"""The DVC mirror of the Snakemake workflow: dvc.yaml generated from the DAG, and Snakemake's
finished work recorded in dvc.lock (Snakefile ``onsuccess``, ``python -m diffpo dvc-commit``).

dvc.yaml is generated from the Snakemake DAG (``python -m diffpo dvc-yaml``); a test checks that
the committed file is current.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import yaml

from diffpo.files import atomic_path
from diffpo.pipeline.dag import current_jobs, snakemake_jobs

HEADER = (
    "# GENERATED from the Snakemake DAG by `python -m diffpo dvc-yaml` -- do not edit by hand.\n"
    "# Snakemake rules (workflow/rules/*.smk) are the source; tests/test_workflow.py checks this file is current.\n"
)


def job_stages(jobs, root: Path) -> dict[str, tuple[str, str, dict, dict]]:
    """Each job's DVC stage as Snakemake runs it: ``{rule-wildcards: (rule, wildcards key, stage, wildcards)}``.

    A package folder whose every file the job depends on is one dependency (DVC hashes a folder's
    files, .dvcignore leaving out bytecode): the same files as Snakemake's, in one entry.
    """
    packages = _package_files(Path(root))
    stages = {}
    for job in jobs:
        if not job.output or job.rule.name == "all":
            continue
        key = "-".join(map(str, job.wildcards))
        stage: dict = {"cmd": job.shellcmd.strip()}
        deps = _folded(sorted({str(f) for f in job.input}), packages)
        if deps:
            stage["deps"] = deps
        keys = job.params.get("param_keys") if hasattr(job.params, "get") else None
        if keys is not None:
            stage["params"] = ["profile", *keys]
        # Small reports stay in git (cache: false) and are declared at the top level below.
        stage["outs"] = [{str(f): {"cache": False}} if _is_report(str(f)) else str(f) for f in job.output]
        wildcards = {name: str(value) for name, value in job.wildcards.items()}
        stages[_stage_key(job)] = (job.rule.name, key, stage, wildcards)
    return stages


def _stage_key(job) -> str:
    """A job's name as a plain stage: ``RULE-WILDCARDS`` (DVC reserves "@" for foreach stages)."""
    return "-".join([job.rule.name, *map(str, job.wildcards)])


def _package_files(root: Path) -> dict[str, set[str]]:
    """Every folder of the package (relative to ``root``) and the files under it, bytecode aside."""
    package = root / "src" / "diffpo"
    files = {p.relative_to(root).as_posix() for p in package.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    folders = {d.relative_to(root).as_posix() for d in package.rglob("*") if d.is_dir() and d.name != "__pycache__"}
    return {folder: {f for f in files if f.startswith(folder + "/")} for folder in folders}


def _folded(deps: list[str], packages: dict[str, set[str]]) -> list[str]:
    """``deps`` with each package folder all of whose files are listed as that folder (the outermost)."""
    listed = set(deps)
    whole = [folder for folder, files in packages.items() if files and files <= listed]
    outermost = [f for f in whole if not any(f.startswith(other + "/") for other in whole)]
    covered = set().union(*(packages[f] for f in outermost)) if outermost else set()
    return sorted((listed - covered) | set(outermost))


def dvc_stages(jobs, root: Path) -> tuple[dict, dict[str, str]]:
    """dvc.yaml's ``stages``, and the DVC name of each job's stage (``job_stages``' keys).

    The jobs of one rule whose stages have the same shape (as many deps, params and outs) form
    one ``foreach`` stage, ``RULE@WILDCARDS``: what they share, the rule's code dependencies
    above all, is written once in its ``do`` template, and each item holds only what differs
    (``${item.cmd}``, ``${item.dep3}``, ...). The largest group of a rule is named after it, the
    others ``RULE-2``, ``RULE-3`` by size; a job alone in its shape is a plain stage ``RULE-WILDCARDS``.
    """
    by_rule: dict[str, dict[tuple, list[str]]] = {}
    singles = job_stages(jobs, root)
    for name, (rule, _, stage, _) in singles.items():
        shape = (len(stage.get("deps", [])), len(stage.get("params", [])) if "params" in stage else None,
                 tuple(isinstance(o, dict) for o in stage["outs"]))
        by_rule.setdefault(rule, {}).setdefault(shape, []).append(name)
    document, names = {}, {}
    for rule, shapes in by_rule.items():
        groups = sorted(shapes.values(), key=lambda members: (-len(members), members[0]))
        numbered = 0
        for members in groups:
            if len(members) == 1:
                document[members[0]] = singles[members[0]][2]
                names[members[0]] = members[0]
                continue
            numbered += 1
            group = rule if numbered == 1 else f"{rule}-{numbered}"
            document[group] = _foreach([singles[m] for m in members])
            names.update({m: f"{group}@{singles[m][1]}" for m in members})
    return document, names


def _foreach(members: list[tuple]) -> dict:
    """One ``foreach`` stage of same-shaped stages: each item holds its job's wildcards; a value is
    written once as a template of them (``results/models/${item.method}/seed${item.seed}/unet``)
    where one template gives every item's value, and is an item field of its own where not."""
    items: dict[str, dict] = {key: dict(wildcards) for _, key, _, wildcards in members}
    stages = [stage for _, _, stage, _ in members]

    def field(name: str, values: list[str]) -> str:
        if all(v == values[0] for v in values):
            return values[0]
        templates = {_template(v, wildcards) for v, (_, _, _, wildcards) in zip(values, members)}
        if len(templates) == 1 and None not in templates:  # None: a value its wildcards do not give back
            return templates.pop()
        keys = [key for _, key, _, _ in members]
        same = [f for f in items[keys[0]] if all(items[k].get(f) == v for k, v in zip(keys, values))]
        if same:  # a field already holds these values (a path in the command and in deps, say)
            return "${item.%s}" % same[0]
        for key, value in zip(keys, values):
            items[key][name] = value
        return "${item.%s}" % name

    commands = [s["cmd"] for s in stages]
    words = [c.split(" ") for c in commands]
    if len({len(w) for w in words}) == 1 and len({_template(c, m[3]) for c, m in zip(commands, members)}) > 1:
        # a command differing beyond the wildcards (an option one run has): templated word by word
        do: dict = {"cmd": " ".join(field(f"arg{i}", [w[i] for w in words]) for i in range(len(words[0])))}
    else:
        do = {"cmd": field("cmd", commands)}
    if "deps" in stages[0]:
        do["deps"] = [field(f"dep{i}", [s["deps"][i] for s in stages]) for i in range(len(stages[0]["deps"]))]
    if "params" in stages[0]:
        do["params"] = [field(f"param{i}", [s["params"][i] for s in stages]) for i in range(len(stages[0]["params"]))]
    outs = []
    for i, out in enumerate(stages[0]["outs"]):
        paths = [next(iter(s["outs"][i])) if isinstance(out, dict) else s["outs"][i] for s in stages]
        path = field(f"out{i}", paths)
        outs.append({path: out[next(iter(out))]} if isinstance(out, dict) else path)
    do["outs"] = outs
    return {"foreach": {key: _Item(item) for key, item in items.items()}, "do": do}


def _template(value: str, wildcards: dict[str, str]) -> str | None:
    """``value`` with each wildcard's value, where it stands alone (or after "seed"/"point"), as
    ``${item.NAME}``; None unless filling the template gives ``value`` back."""
    template = value.replace("$", "$$") if "$" in value else value
    for name, text in sorted(wildcards.items(), key=lambda kv: -len(kv[1])):
        pattern = r"(?:(?<![A-Za-z0-9])|(?<=seed)|(?<=point))" + re.escape(text) + r"(?![A-Za-z0-9])"
        template = re.sub(pattern, "${item.%s}" % name, template)
    filled = template
    for name, text in wildcards.items():
        filled = filled.replace("${item.%s}" % name, text)
    return template if filled == value and "$$" not in template else None


def expand_stages(document: dict) -> dict[str, dict]:
    """dvc.yaml's stages as DVC expands them: ``RULE@KEY`` for each item of a ``foreach`` stage."""
    def fill(value, item: dict):
        if isinstance(value, str):
            for name, text in item.items():
                value = value.replace("${item.%s}" % name, text)
            return value
        if isinstance(value, list):
            return [fill(v, item) for v in value]
        if isinstance(value, dict):
            return {fill(k, item): fill(v, item) for k, v in value.items()}
        return value

    stages = {}
    for name, stage in document.items():
        if "foreach" in stage:
            stages.update({f"{name}@{key}": fill(stage["do"], {k: str(v) for k, v in item.items()})
                           for key, item in stage["foreach"].items()})
        else:
            stages[name] = stage
    return stages


def _is_report(path: str) -> bool:
    """Small outputs kept in git (tables, metrics, training logs, figures), not in DVC's cache."""
    return path.endswith((".json", ".csv", ".md", ".png", ".pdf"))


def dvc_commit(root: Path, targets: list[str] = ("all",)) -> list[str]:
    """Record Snakemake's finished work in dvc.lock, so that DVC sees it as current.

    Runs ``dvc commit --force --no-relink`` for the DVC stages whose Snakemake jobs are current
    (``current_jobs``) and declared in dvc.yaml as Snakemake runs them, and whose work is new: a
    stage whose outputs (Snakemake's end time) and dvc.lock entry are what they were when this
    last recorded it is skipped (``COMMITS``), so a run that rebuilt little records little. A
    stage whose job Snakemake would rerun (a stale output outside the last run, say) keeps its
    old dvc.lock entry, so DVC still sees it as changed. ``--no-relink`` leaves the workspace
    files (and so Snakemake's modification times) untouched. Returns warnings; without DVC
    (no .dvc/ or no dvc.yaml) it does nothing else.
    """
    import json
    import time

    root = Path(root)
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return [f"DVC is not initialised in {root} (no .dvc/ or dvc.yaml): dvc.lock not updated"]
    declared = expand_stages(yaml.load((root / "dvc.yaml").read_text(), Loader=_LOADER).get("stages", {}))
    names = {_job_key(name): name for name in declared}  # RULE-WILDCARDS: the stage's name in dvc.yaml
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        jobs = current_jobs(root, list(targets))
    finished = {_stage_key(job): endtime for job, endtime in jobs}
    expected = {names.get(key, key): (stage, finished[key])
                for key, (_, _, stage, _) in job_stages([job for job, _ in jobs], root).items()}
    stale = sorted(name for name, (stage, _) in expected.items() if declared.get(name) != stage)
    warnings = [f"dvc.yaml does not declare {len(stale)} stage(s) as Snakemake runs them ({', '.join(stale[:5])}"
                f"{', ...' if len(stale) > 5 else ''}): not committed; regenerate it with "
                "`python -m diffpo dvc-yaml > dvc.yaml`"] if stale else []
    recordable = [name for name in expected if name not in stale]
    if not recordable:
        return warnings + ["no DVC stage has current Snakemake outputs: dvc.lock not updated"]
    marks_path = root / COMMITS
    marks = json.loads(marks_path.read_text()) if marks_path.is_file() else {}
    locked = _lock_digests(root)
    mark = {name: [expected[name][1], locked.get(name), _digest(expected[name][0])] for name in recordable}
    new = [name for name in recordable if marks.get(name) != mark[name]]
    start = time.time()
    if new:
        try:
            _commit_stages(root, new)
        except ImportError as error:
            return warnings + [f"DVC is not installed ({error}): dvc.lock not updated"]
        except Exception as error:  # a DVC error (a lock held by a running dvc, a missing output): warn
            return warnings + [f"`dvc commit` failed, dvc.lock not updated: {type(error).__name__}: {error}"]
        locked = _lock_digests(root)
    # the stage as dvc.yaml declares it too: a regenerated dvc.yaml (a folder dependency that changed
    # shape, say) makes DVC record the stage again though Snakemake reran nothing
    marks.update({name: [expected[name][1], locked.get(name), _digest(expected[name][0])] for name in recordable})
    marks_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(marks_path) as tmp:
        tmp.write_text(json.dumps(marks, indent=0, sort_keys=True) + "\n")
    print(f"dvc.lock: recorded {len(new)} of {len(declared)} stages in {time.time() - start:.1f} s "
          f"({len(recordable) - len(new)} more current and recorded before)")
    return warnings


# What dvc_commit last recorded, per stage: Snakemake's end time of its outputs, its dvc.lock entry's
# digest and its dvc.yaml declaration's (in DVC's own scratch folder, which git ignores).
COMMITS = Path(".dvc/tmp/diffpo-commits.json")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # dvc.lock is megabytes: libyaml's parser where installed


def _job_key(name: str) -> str:
    """A DVC stage's Snakemake job: ``RULE-WILDCARDS`` (``RULE-N@KEY`` and ``RULE@KEY`` are RULE's jobs)."""
    group, at, key = name.partition("@")
    return f"{re.sub(r'-[0-9]+$', '', group)}-{key}" if at else name


def _lock_digests(root: Path) -> dict[str, str]:
    path = root / "dvc.lock"
    stages = (yaml.load(path.read_text(), Loader=_LOADER) or {}).get("stages", {}) if path.is_file() else {}
    return {name: _digest(entry) for name, entry in stages.items()}


def _digest(entry) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
        stages, _ = dvc_stages(snakemake_jobs(root, targets), root)
    outs = [next(iter(o)) if isinstance(o, dict) else o for s in expand_stages(stages).values() for o in s["outs"]]
    curves = [p for p in outs if p.endswith("metrics.csv")]
    document = {
        "stages": stages,
        "metrics": [p for p in outs if p.endswith(".json") and ("metrics" in p or "manifest" in p)],
        "plots": [
            {"training loss": {"x": "step", "y": {p: "loss" for p in curves}}},
            *(p for p in outs if p.startswith("results/figures/") and p.endswith(".png")),
        ],
    }
    return HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=200)


class _Item(dict):
    """A foreach item: written on one line."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Item, lambda dumper, item: dumper.represent_mapping(
    "tag:yaml.org,2002:map", item.items(), flow_style=True))
