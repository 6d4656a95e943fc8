"""GPU-slot assignment for concurrent local jobs, tested on CPU with lock files."""

import os
import subprocess
import sys
import time

import pytest

from diffpo.pipeline import gpu_slots


def test_jobs_get_disjoint_gpus_and_free_them(tmp_path):
    gpus = ["0", "1", "2", "3"]
    first, h1 = gpu_slots.try_acquire(tmp_path, gpus, 2)
    second, h2 = gpu_slots.try_acquire(tmp_path, gpus, 1)
    assert first == ["0", "1"] and second == ["2"]
    assert gpu_slots.try_acquire(tmp_path, gpus, 2) is None  # one free, two asked: none held
    third, h3 = gpu_slots.try_acquire(tmp_path, gpus, 1)
    assert third == ["3"]  # the failed attempt did not keep GPU 3
    gpu_slots.release(*h1)
    again, h4 = gpu_slots.try_acquire(tmp_path, gpus, 2)
    assert again == ["0", "1"]
    gpu_slots.release(*h2, *h3, *h4)


def test_machine_gpus():
    assert gpu_slots.machine_gpus({"DIFFPO_GPUS": "2, 5,7"}) == ["2", "5", "7"]
    with pytest.raises(SystemExit, match="3 GPUs asked for, this machine has 2"):
        gpu_slots.acquire(".", ["0", "1"], 3)


def _launch(tmp_path, gpus, out, env_extra, sleep=0.0, session=False):
    env = {**os.environ, "DIFFPO_GPU_SLOTS_DIR": str(tmp_path / "slots"), **env_extra}
    env.pop("CUDA_VISIBLE_DEVICES", None) if "CUDA_VISIBLE_DEVICES" not in env_extra else None
    child = (f"import os, time; open({str(out)!r}, 'w').write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')); "
             f"time.sleep({sleep})")
    return subprocess.Popen([sys.executable, "-m", "diffpo.pipeline.gpu_slots", "--gpus", str(gpus), "--", sys.executable, "-c",
                             child], env=env, start_new_session=session)


def test_concurrent_launchers_see_disjoint_devices(tmp_path):
    outs = [tmp_path / f"job{i}" for i in range(3)]
    jobs = [_launch(tmp_path, 2, out, {"DIFFPO_GPUS": "0,1,2,3,4,5"}, sleep=1.5) for out in outs]
    assert [job.wait(timeout=60) for job in jobs] == [0, 0, 0]
    seen = [set(out.read_text().split(",")) for out in outs]
    assert all(len(s) == 2 for s in seen) and len(set.union(*seen)) == 6


def test_a_job_waits_for_a_busy_gpu_and_a_killed_holder_frees_it(tmp_path):
    env = {"DIFFPO_GPUS": "0"}
    holder = _launch(tmp_path, 1, tmp_path / "holder", env, sleep=60, session=True)
    for _ in range(100):
        if (tmp_path / "holder").exists():
            break
        time.sleep(0.1)
    waiter = _launch(tmp_path, 1, tmp_path / "waiter", env)
    time.sleep(1.0)
    assert waiter.poll() is None  # still waiting for GPU 0
    os.killpg(holder.pid, 9)  # the launcher and its job, as Snakemake ends a job
    holder.wait()
    assert waiter.wait(timeout=30) == 0 and (tmp_path / "waiter").read_text() == "0"


def test_no_gpus_or_an_allocation_runs_the_command_unchanged(tmp_path):
    job = _launch(tmp_path, 0, tmp_path / "cpu", {"DIFFPO_GPUS": "0"})
    assert job.wait(timeout=30) == 0 and (tmp_path / "cpu").read_text() == "unset"
    job = _launch(tmp_path, 2, tmp_path / "slurm", {"DIFFPO_GPUS": "0,1", "CUDA_VISIBLE_DEVICES": "6,7"})
    assert job.wait(timeout=30) == 0 and (tmp_path / "slurm").read_text() == "6,7"


def test_a_job_starts_through_the_launcher_only_with_gpus():
    from diffpo.pipeline.gpu_slots import launch_command

    assert launch_command(0) == launch_command(0, processes=True) == "python"  # the tiny profile's commands
    assert launch_command(1, processes=True) == "python -m diffpo.pipeline.gpu_slots --gpus 1 -- python"
    assert launch_command(8) == "python -m diffpo.pipeline.gpu_slots --gpus 8 -- python"
    assert launch_command(8, processes=True) == ("python -m diffpo.pipeline.gpu_slots --gpus 8 -- "
                                                 "accelerate launch --num_processes 8")
