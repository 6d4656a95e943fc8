"""The Snakemake DAG, read through Snakemake's API: every job of a target, and the jobs Snakemake
holds current (what the DVC mirror is generated from and records)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

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


def current_jobs(root: Path, targets: list[str]) -> list[tuple]:
    """The jobs of ``targets``' DAG that Snakemake would not rerun and whose outputs it made itself,
    each with the time Snakemake finished it.

    Up to date in Snakemake's sense (modification times, params, input set, code); and every
    output has Snakemake's record (without one, Snakemake cannot see a params change) and
    still has the modification time Snakemake recorded when the job finished (not rewritten
    since, e.g. by ``dvc repro``).
    """
    def current(workflow, jobs):
        persistence = workflow.persistence
        return [(job, max(persistence.metadata(f).endtime for f in job.output)) for job in jobs
                if job.output and not workflow.dag.needrun(job) and persistence.has_metadata(job)
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

    from diffpo.settings.params import PROFILE_VARIABLE

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
