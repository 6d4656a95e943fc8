"""Data parallelism on the CPU: two processes (gloo, as `accelerate launch --num_processes 2 --cpu`
starts them) train the same weights as one process with the same global batch, under bf16
autocast and gradient accumulation derived from the effective batch (diffpo.training.recipes)."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import diffpo.training.loop
from diffpo import training
from diffpo.settings.configs import TrainConfig
from diffpo.models.loading import build_noise_scheduler

from conftest import SCHEDULER, Brightness, dpo_config, generators, rollout_config, tiny_unet


METHODS = ["diffusion_dpo", "d3po"]


def _configs():
    return {
        # 8 pairs per update: one process accumulates 4 micro-steps of 2, two processes 2 each
        "diffusion_dpo": dpo_config(steps=3, batch_size=2, gradient_accumulation_steps=None, effective_batch=8,
                                    mixed_precision="bf16", checkpoint_every=3),
        # the online method: the round's rollouts are one global set, gathered from every process
        "d3po": rollout_config("d3po", batch_size=2, gradient_accumulation_steps=None, effective_batch=4,
                               mixed_precision="bf16"),
    }


def _train(method: str, cache_dir, work, rollout_prompts: int) -> dict:
    from diffpo.data.preparation import EncodedPairs

    torch.set_num_threads(1)
    cfg = _configs()[method]
    if method == "d3po":
        cfg = TrainConfig(**{**cfg.__dict__, "rollout_prompts": rollout_prompts})
    gens = generators(reward=Brightness()) if method == "d3po" else None
    unet, _ = training.loop.train(cfg, EncodedPairs(cache_dir), tiny_unet(), build_noise_scheduler(SCHEDULER), work, "f", gens)
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def _worker(rank: int, world: int, port: int, cache_dir, work, out, rollout_prompts: int):
    """Trains each method in turn (one start-up, about 9 s of imports, serves both)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    from accelerate import PartialState

    state = PartialState(cpu=True)
    assert state.num_processes == world and state.backend == "gloo"
    for method in METHODS:
        weights = _train(method, cache_dir, work / method, rollout_prompts)
        if state.is_main_process:
            torch.save(weights, out / f"{method}.pt")
        state.wait_for_everyone()
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory) -> dict[str, Path]:
    """Each method's final weights from two processes and from one, trained in fresh processes:
    accelerate's state is per process, and this test's bf16 would clash with a state another
    test left behind in the pytest process."""
    root = tmp_path_factory.mktemp("distributed")
    out = {"two": root / "two", "one": root / "one"}
    for folder in out.values():
        folder.mkdir()
    mp.start_processes(_worker, args=(2, _free_port(), cache.cache_dir, root / "work_two", out["two"], 2), nprocs=2,
                       start_method="spawn")
    # one process: the same 8 (4) examples per update, 4 (2) micro-steps; the same 4 rollout prompts
    mp.start_processes(_worker, args=(1, _free_port(), cache.cache_dir, root / "work_one", out["one"], 4), nprocs=1,
                       start_method="spawn")
    return out


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(trained, method):
    one, two = (torch.load(trained[n] / f"{method}.pt", weights_only=True) for n in ("one", "two"))
    start = tiny_unet().state_dict()
    moved = [k for k in one if not torch.equal(one[k], start[k])]
    assert moved, "training changed nothing: the comparison would prove nothing"
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
