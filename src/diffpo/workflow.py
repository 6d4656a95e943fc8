"""Glue between params.yaml, Snakemake and DVC.

``STAGE_PARAMS`` says which params.yaml keys each stage reads. Snakemake rules pass their
values as ``params:`` (so a change reruns exactly the jobs that read it), the CLI hands a
stage only those keys, and the generated dvc.yaml lists the same keys per stage.
dvc.yaml is generated from the Snakemake DAG (``python -m diffpo dvc-yaml``); a test
checks that the committed file is current.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from pathlib import Path
from typing import Callable

import yaml

from diffpo.config import ParamsError, select

STAGE_PARAMS: dict[str, Callable[..., list[str]]] = {
    "world": lambda: ["world"],
    "prepare": lambda: ["data.source", "data.split", "data.max_pairs"],
    "pretrain_text_encoder": lambda: ["data.source", "data.split", "data.resolution", "pretrain.seed", "pretrain.text_encoder"],
    "pretrain_vae": lambda: ["data.source", "data.split", "data.resolution", "pretrain.seed", "pretrain.vae"],
    "encode": lambda: ["data.source", "data.split", "data.resolution", "encode"],
    "pretrain_unet": lambda: ["pretrain.seed", "pretrain.unet", "pretrain.scheduler"],
    # judges: the scorers a method's rollouts are judged by (config.method_judges)
    "train": lambda method, judges=(): ["train", f"methods.{method}"] + [f"scorers.sources.{j}" for j in judges],
    "train_step_scorer": lambda: ["data.source", "data.split", "scorers.accuracy_split", "scorers.stand_ins.seed",
                                  "scorers.stand_ins.step_aware"],
    "sample": lambda prompt_set: ["sample", f"prompt_sets.{prompt_set}"],
    "train_scorer": lambda scorer: ["data.source", "data.split", "scorers.accuracy_split", "scorers.stand_ins.seed",
                                    f"scorers.stand_ins.{scorer}"],
    "evaluate": lambda: ["world.alignment_weight", "world.aesthetic_weight", "scorers.names", "scorers.batch_size",
                         "scorers.sources"],
    "scorer_accuracy": lambda: ["data.source", "world.alignment_weight", "world.aesthetic_weight", "scorers.names",
                                "scorers.batch_size", "scorers.sources", "scorers.accuracy_split"],
    "table": lambda table, rows: [f"tables.{table}"] + [f"methods.{m}.label" for m in rows if m != "base"],
    "figures": lambda methods: [f"methods.{m}.label" for m in methods],
}


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


def snakemake_jobs(root: Path, targets: list[str]) -> list:
    """Every job of the DAG that builds ``targets`` from scratch, in topological order."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import DAGSettings, OutputSettings, ResourceSettings, StorageSettings, WorkflowSettings

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            storage_settings=StorageSettings(),
            workflow_settings=WorkflowSettings(),
            snakefile=root / "Snakefile",
            workdir=root,
        )
        dag_api = workflow_api.dag(DAGSettings(targets=set(targets), forceall=True))
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        return list(workflow.dag.toposorted_jobs()) if hasattr(workflow.dag, "toposorted_jobs") else _toposort(workflow.dag)


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
    return path.endswith((".json", ".csv", ".md"))


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
        ],
    }
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=200)
