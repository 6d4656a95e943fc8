"""Give each concurrent Snakemake job its own GPUs on one machine (``python -m diffpo.pipeline.gpu_slots``).

Snakemake's ``--resources gpu=N`` keeps the *number* of GPUs in use at most N, but it does not
say *which* GPUs a job may use: it sets no ``CUDA_VISIBLE_DEVICES``, so every job would start
on GPU 0. This launcher takes ``--gpus K`` free slots, each an exclusive ``flock`` on
``{slots_dir}/gpu-{i}.lock`` (released by the kernel when the job ends, even if it is
killed), sets ``CUDA_VISIBLE_DEVICES`` to them and runs the job's command::

    python -m diffpo.pipeline.gpu_slots --gpus 8 -- accelerate launch --num_processes 8 -m diffpo train ...

It changes nothing (runs the command as it is) when K is 0, or when ``CUDA_VISIBLE_DEVICES`` is
already set (a SLURM allocation sets it). The machine's GPUs are ``DIFFPO_GPUS`` (e.g.
``0,1,2,3``), else those ``nvidia-smi -L`` lists. A job asking for more slots than are free
waits (Snakemake's resource count makes that rare: only jobs started outside it compete).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = ".snakemake/gpu-slots"


def machine_gpus(env: dict | None = None) -> list[str]:
    """The GPU ids jobs may share out: ``DIFFPO_GPUS``, else every GPU ``nvidia-smi -L`` lists."""
    env = os.environ if env is None else env
    if env.get("DIFFPO_GPUS"):
        return [g.strip() for g in env["DIFFPO_GPUS"].split(",") if g.strip()]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def try_acquire(slots_dir: Path, gpus: list[str], count: int) -> tuple[list[str], list] | None:
    """``count`` GPUs whose lock files this process now holds (with the open files), or None if too few are free."""
    slots_dir.mkdir(parents=True, exist_ok=True)
    taken, handles = [], []
    for gpu in gpus:
        handle = open(slots_dir / f"gpu-{gpu}.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        taken.append(gpu)
        handles.append(handle)
        if len(taken) == count:
            return taken, handles
    for handle in handles:  # too few: hold none, so two waiting jobs cannot starve each other
        release(handle)
    return None


def release(*handles) -> None:
    for handle in handles:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def acquire(slots_dir: Path, gpus: list[str], count: int, poll_s: float = 2.0, timeout_s: float | None = None):
    """Wait until ``count`` slots are free and take them; returns (gpu ids, handles)."""
    if count > len(gpus):
        raise SystemExit(f"gpu_slots: {count} GPUs asked for, this machine has {len(gpus)} ({','.join(gpus) or 'none'}); "
                         f"set DIFFPO_GPUS or lower the rule's gpu resource")
    start = time.monotonic()
    while (got := try_acquire(slots_dir, gpus, count)) is None:
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"gpu_slots: {count} of {len(gpus)} GPUs not free after {timeout_s:.0f} s")
        time.sleep(poll_s)
    return got


def job_environment(gpus: list[str], env: dict | None = None) -> dict:
    env = dict(os.environ if env is None else env)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


def launch_command(gpus: int, processes: bool = False) -> str:
    """How a rule starts ``-m diffpo ...``, from the job's ``gpu`` resource (set by the workflow
    profile, workflow/profiles/*): plain ``python`` on the CPU, as the tiny profile's commands
    (and Snakemake's and DVC's records of them) are; on GPUs through this launcher, which gives
    the job its own GPUs; with ``processes``, one process per GPU (``accelerate launch``)."""
    if gpus <= 0:
        return "python"
    python = f"accelerate launch --num_processes {gpus}" if processes and gpus > 1 else "python"
    return f"python -m diffpo.pipeline.gpu_slots --gpus {gpus} -- {python}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffpo.pipeline.gpu_slots", description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, required=True, help="how many GPUs the job needs (the rule's gpu resource)")
    parser.add_argument("--slots-dir", type=Path, default=Path(os.environ.get("DIFFPO_GPU_SLOTS_DIR", DEFAULT_DIR)),
                        help="the folder of the lock files shared by every job (default: %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the job's command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    if args.gpus == 0 or os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return subprocess.call(command)
    taken, handles = acquire(args.slots_dir, machine_gpus(), args.gpus)
    print(f"gpu_slots: CUDA_VISIBLE_DEVICES={','.join(taken)}", file=sys.stderr)
    try:
        return subprocess.call(command, env=job_environment(taken))
    finally:
        release(*handles)


if __name__ == "__main__":
    sys.exit(main())
