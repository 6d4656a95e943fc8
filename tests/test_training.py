"""The trainer: shared noise within a pair, determinism, resume after interruption, NaN stop."""

import os
import random
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import diffpo.training.loop
import diffpo.training.sources
from diffpo import training
from diffpo.settings.configs import TrainConfig
from diffpo.models.loading import build_noise_scheduler

from conftest import SCHEDULER, dpo_config, tiny_unet


def run(cfg, cache, work, fingerprint="f"):
    unet, metrics = training.loop.train(cfg, cache, tiny_unet(), build_noise_scheduler(SCHEDULER), work, fingerprint)
    return unet.state_dict(), pd.read_csv(metrics)


def test_pair_shares_noise_and_timestep(cache, tmp_path):
    source = training.sources.DataSource(dpo_config(), cache, None, training.sources.Generators(), tmp_path)
    batch = source._batch(3, build_noise_scheduler(SCHEDULER))
    assert torch.equal(batch["noise"][:4], batch["noise"][4:])
    assert torch.equal(batch["timesteps"][:4], batch["timesteps"][4:])
    assert torch.equal(batch["embeds"][:4], batch["embeds"][4:])
    assert not torch.equal(batch["latents"][:4], batch["latents"][4:])


def test_batches_cover_every_example_once_per_epoch():
    sampler = training.sources.BatchSampler(10, 4, seed=1)
    first_epoch = np.concatenate([sampler.indices(d) for d in range(3)])[:10]
    assert sorted(first_epoch) == list(range(10))


def test_resume_after_interruption_gives_the_same_weights(cache, tmp_path, monkeypatch):
    cfg = dpo_config()
    reference, reference_metrics = run(cfg, cache, tmp_path / "straight")

    calls = {"n": 0}
    forward = training.sources._forward

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # during step 6, after the checkpoint of step 4
            raise KeyboardInterrupt
        return forward(*args, **kwargs)

    monkeypatch.setattr(training.sources, "_forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, cache, tmp_path / "resumed")
    monkeypatch.setattr(training.sources, "_forward", forward)
    resumed, metrics = run(cfg, cache, tmp_path / "resumed")
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key
    assert metrics["step"].tolist() == list(range(1, 7))
    pd.testing.assert_frame_equal(metrics, reference_metrics)


def test_checkpoints_of_another_configuration_are_not_resumed(cache, tmp_path):
    run(dpo_config(steps=4), cache, tmp_path, fingerprint="old")
    _, metrics = run(dpo_config(steps=2), cache, tmp_path, fingerprint="new")
    assert metrics["step"].tolist() == [1, 2]


def test_sft_on_winners_lowers_the_loss(cache, tmp_path):
    cfg = TrainConfig(objective="sft", images="winners", steps=30, batch_size=8, learning_rate=3e-3, label="sft",
                      checkpoint_every=30)
    _, metrics = run(cfg, cache, tmp_path)
    assert metrics["loss"].tail(5).mean() < metrics["loss"].head(5).mean()


def test_nan_loss_stops_with_a_clear_error(cache, tmp_path, monkeypatch):
    monkeypatch.setitem(training.loop.OBJECTIVES, "sft", training.loop.Objective(
        reference=False, loss=lambda cfg, p, r, extra: (p.mean() * float("nan"), {})))
    cfg = TrainConfig(objective="sft", images="both", steps=3, batch_size=4, learning_rate=1e-3, label="sft")
    with pytest.raises(training.sources.TrainingDiverged, match="loss is nan at step 0"):
        run(cfg, cache, tmp_path)


# ---------------------------------------------------------------- faults: torn files, kills, temporaries
def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    header = "step,lr,loss\n"
    for torn in ("3,0.1,0.", "3,0.1\n", "1"):  # no newline, too few fields, a step number alone
        path = tmp_path / "metrics.csv"
        path.write_text(header + "1,0.1,0.5\n2,0.1,0.4\n" + torn)
        training.loop._truncate_metrics(path, 2)
        assert path.read_text() == header + "1,0.1,0.5\n2,0.1,0.4\n", torn
    path.write_text("step,l")  # killed while writing the header: start again
    training.loop._truncate_metrics(path, 0)
    assert path.read_text() == ""


def test_training_writes_only_safetensors_and_loads_states_weights_only(root):
    """Weights are safetensors; torch.save only writes the optimizer and scheduler states of a
    checkpoint, and every torch.load (those, and the scorers' original checkpoints) is weights_only."""
    import ast

    saves = []
    for path in sorted((root / "src" / "diffpo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                assert any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in node.keywords), (
                    f"{path}:{node.lineno}: torch.load without weights_only=True")
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.save":
                saves.append((path.name, ast.unparse(node.args[1])))
    assert saves == [("loop.py", "tmp / 'optimizer.pt'"), ("loop.py", "tmp / 'lr_scheduler.pt'")]


SEPPO = dict(objective="seppo", images="winners", losers="reference", reference="uniform", steps=6, batch_size=4,
             learning_rate=1e-3, beta=50.0, round_updates=3, checkpoint_every=2, sampler_steps=2, guidance_scale=3.0,
             generation_batch_size=16, label="seppo")
# Where a kill lands, by category; in SEPPO's run (6 updates, rounds of 3, checkpoints after
# updates 2, 4 and 6): (event, its n-th occurrence in the killed process).
KILL_POINTS = {
    "before the first checkpoint": [("update", 1), ("update", 2), ("pool", 1)],
    "mid-round (resumed from a checkpoint inside a round)": [("update", 3), ("update", 5), ("update", 6)],
    "inside a checkpoint write": [("checkpoint", 1), ("checkpoint", 2), ("checkpoint", 3)],
    "inside the final save": [("final save", 1)],
    "between the renames replacing a finished output": [("swap", 1)],
    "elsewhere": [("update", 4), ("pool", 2)],
}


def _job(cfg, cache, folder):
    """What ``python -m diffpo train`` does: train, then save the UNet and copy the metrics."""
    from diffpo.files import atomic_path

    scheduler = build_noise_scheduler(SCHEDULER)
    unet, metrics = training.loop.train(cfg, cache, tiny_unet(), scheduler, folder / "work", "f",
                                   training.sources.Generators(scheduler=build_noise_scheduler(SCHEDULER)))
    training.loop.save_unet(unet, folder / "out" / "unet")
    with atomic_path(folder / "out" / "metrics.csv") as tmp:
        tmp.write_bytes(metrics.read_bytes())


def _arm(event: str, n: int) -> None:
    """Make this (forked) process SIGKILL itself at the ``n``-th ``event``: nothing is cleaned up."""
    from diffusers import UNet2DConditionModel

    count = [0]

    def reached():
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    forward, save_file, save_pretrained, replace = (training.sources._forward, training.sources.save_file,
                                                    UNet2DConditionModel.save_pretrained, os.replace)

    def before_update(*args):
        reached()
        return forward(*args)

    def after_weights_written(tensors, path):  # into the pool file's or the checkpoint's temporary
        save_file(tensors, path)
        if (".step-" if event == "pool" else ".checkpoint-") in str(path):
            reached()

    def after_unet_written(self, *args, **kwargs):  # into the output's temporary folder, not yet renamed
        save_pretrained(self, *args, **kwargs)
        reached()

    def after_rename(src, dst):  # the finished output renamed aside, the new one not yet in
        replace(src, dst)
        if Path(dst).name.startswith(".unet."):
            reached()

    if event == "update":
        training.sources._forward = before_update
    elif event in ("pool", "checkpoint"):
        training.sources.save_file = after_weights_written  # the pool
        training.loop.save_file = after_weights_written  # checkpoints
    elif event == "final save":
        UNet2DConditionModel.save_pretrained = after_unet_written
    elif event == "swap":
        os.replace = after_rename


def _killed(event: str, n: int, job) -> bool:
    """Run ``job`` in a forked process killed at the ``n``-th ``event``; whether the kill came."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            _arm(event, n)
            job()
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.fixture
def one_thread():
    """One torch thread: a forked child must not use the parent's OpenMP pool (and runs compare bitwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _outputs(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked process")
def test_killed_anywhere_resumes_to_the_same_bytes_and_leaves_no_temporary(cache, tmp_path, one_thread):
    cfg = TrainConfig(**SEPPO)
    _job(cfg, cache, tmp_path / "straight")
    expected = _outputs(tmp_path / "straight" / "out")
    rng = random.Random(12)  # ten kill points: one of each category, the rest anywhere
    points = [rng.choice(points) for points in KILL_POINTS.values()]
    points += rng.sample([p for ps in KILL_POINTS.values() for p in ps if p not in points], 10 - len(points))
    for event, n in points:
        folder = tmp_path / f"{event}-{n}"
        if event == "swap":
            _job(cfg, cache, folder)  # a finished output, replaced by a rerun
        assert _killed(event, n, lambda: _job(cfg, cache, folder)), (event, n)
        if event == "swap":  # between the two renames the finished output waits aside, whole
            unet = {Path(p.name): data for p, data in expected.items() if p.parts[0] == "unet"}
            assert unet in [_outputs(p) for p in (folder / "out").glob(".unet.*.tmp")]
        _job(cfg, cache, folder)
        assert _outputs(folder / "out") == expected, (event, n)
        assert not list(folder.rglob("*.tmp")), (event, n)
