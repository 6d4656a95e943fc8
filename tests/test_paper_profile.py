"""The paper profile, ready for GPUs: its DAG, the recipes, the profile chosen on the command
line, device placement, the DDP dtype, and the GPU smoke script at tiny size."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from diffpo.models import devices
from diffpo.training import recipes
from diffpo.settings.params import PROFILE_VARIABLE, ParamsError, command_line_profile, load_params
from diffpo.settings.configs import TrainConfig, build, method_settings
from diffpo.pipeline.dag import job_counts, snakemake_jobs


def test_paper_dag_lists_every_rule_with_its_job_count_quickly(root):
    start = time.perf_counter()
    counts = job_counts(snakemake_jobs(root, ["all"], {"profile": "paper"}))
    assert time.perf_counter() - start < 10
    paper = load_params(root / "params.yaml", profile="paper")
    # no tiny-profile stages: nothing is pre-trained, the world and stand-in scorers do not exist
    assert set(counts) == {"prepare", "encode", "train", "evaluate", "scorer_accuracy", "training_curves",
                           "table", "curve", "claims", "figure", "all"}
    assert counts["table"] == len(paper["tables"]) and counts["prepare"] == counts["encode"] == counts["claims"] == 1
    assert counts["train"] % len(paper["seeds"]) == 0 and counts["evaluate"] % len(paper["seeds"]) == 0
    assert os.environ.get(PROFILE_VARIABLE) is None  # building the DAG leaves the environment as it was


def test_snakemake_honours_the_profile_and_refuses_other_config(root):
    assert command_line_profile({}) is None and command_line_profile({"profile": "paper"}) == "paper"
    with pytest.raises(ParamsError, match=r"--config train: only `--config profile=tiny\|paper`"):
        command_line_profile({"profile": "paper", "train": "x"})
    with pytest.raises(ParamsError, match="not one of"):
        command_line_profile({"profile": "large"})
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--config", "steps=3"], cwd=root,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root / "src")})
    assert dry.returncode != 0 and "--config steps: only `--config profile=tiny|paper`" in dry.stdout + dry.stderr


def test_jobs_read_the_profile_snakemake_exports(root, monkeypatch):
    monkeypatch.setenv(PROFILE_VARIABLE, "paper")
    assert load_params(root / "params.yaml")["profile"] == "paper"
    assert load_params(root / "params.yaml", profile="tiny")["profile"] == "tiny"


@pytest.mark.parametrize("processes,expected", [(8, 256), (16, 128), (1, 2048)])
def test_effective_batch_of_2048_pairs_on_any_number_of_gpus(root, processes, expected):
    cfg = build(TrainConfig, method_settings(load_params(root / "params.yaml", profile="paper"), "diffusion_dpo"))
    resolved = recipes.resolve(cfg, processes)
    assert resolved.gradient_accumulation_steps == expected
    assert recipes.effective_batch(resolved, processes) == 2048


def test_an_effective_batch_that_does_not_divide_is_an_error():
    with pytest.raises(recipes.RecipeError, match="not a multiple of processes x batch_size = 3 x 1"):
        recipes.accumulation_steps(2048, 3, 1)
    with pytest.raises(ParamsError, match="either gradient_accumulation_steps or effective_batch"):
        TrainConfig(objective="sft", steps=1, batch_size=1, learning_rate=1.0, effective_batch=8)


def test_online_methods_keep_their_own_recipes(root):
    paper = load_params(root / "params.yaml", profile="paper")
    for method in ("d3po", "see_d3po", "spo", "see_spo", "ddpo"):
        cfg = build(TrainConfig, method_settings(paper, method))
        assert (cfg.mixed_precision, cfg.gradient_accumulation_steps, cfg.effective_batch) == ("fp16", 1, None), method
    assert build(TrainConfig, method_settings(paper, "spo")).batch_size == 10


def test_tiny_profile_training_settings_are_unchanged(root):
    tiny = load_params(root / "params.yaml", profile="tiny")
    for method in tiny["methods"]:
        cfg = build(TrainConfig, method_settings(tiny, method))
        assert (cfg.gradient_accumulation_steps, cfg.effective_batch, cfg.mixed_precision, cfg.weight_decay,
                cfg.gradient_checkpointing, cfg.optimizer) == (1, None, "no", 0.01, False, "adamw"), method


def test_dtype_is_read_through_a_ddp_wrapper():
    class Wrapper(torch.nn.Module):  # what DistributedDataParallel looks like: .module, no .dtype
        def __init__(self, module):
            super().__init__()
            self.module = module

    inner = torch.nn.Linear(2, 2).to(torch.bfloat16)
    wrapped = Wrapper(inner)
    assert not hasattr(wrapped, "dtype")
    assert devices.model_dtype(wrapped) == torch.bfloat16 and devices.unwrap(wrapped) is inner


def test_loaded_models_are_placed_on_the_accelerator(tmp_path, monkeypatch):
    from diffpo.models import loading as models

    models.build_vae({"block_out_channels": [8, 8], "latent_channels": 4}).save_pretrained(tmp_path / "vae")
    moved = []
    monkeypatch.setattr(models, "device", lambda: moved.append(1) or torch.device("meta"))
    vae = models.load_vae(tmp_path)
    assert moved and next(vae.parameters()).device.type == "meta"


def test_8bit_adam_without_bitsandbytes_is_a_clear_error():
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    with pytest.raises(devices.MissingExtraError, match=r"pip install -e .\[gpu\]"):
        devices.make_optimizer(torch.nn.Linear(2, 2).parameters(), "adamw_8bit", 1e-3, 0.0)


def test_gradient_checkpointing_and_attention_options_apply():
    from diffusers.models.attention_processor import AttnProcessor

    from diffpo.models.loading import build_unet

    unet = build_unet(dict(block_out_channels=[8, 16], layers_per_block=1, attention_head_dim=4), 4, 4, 16)
    devices.configure_unet(unet, gradient_checkpointing=True, attention="eager")
    assert unet.is_gradient_checkpointing
    assert all(isinstance(p, AttnProcessor) for p in unet.attn_processors.values())


def test_gpu_smoke_refuses_without_cuda_and_runs_tiny(root):
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}  # the script's `python`: this one
    refused = subprocess.run([str(root / "scripts/gpu_smoke.sh")], capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and "needs a GPU" in refused.stderr and "--tiny" in refused.stderr
    tiny = subprocess.run([str(root / "scripts/gpu_smoke.sh"), "--tiny"], capture_output=True, text=True, env=env)
    assert tiny.returncode == 0, tiny.stderr[-2000:]
    report = json.loads(tiny.stdout[tiny.stdout.index("{"):])
    for method in ("diffusion_dpo", "seppo", "d3po"):
        assert report[method]["pairs_per_s"] > 0
    assert report["sampling"]["images_per_s"] > 0 and report["scoring"]["finite"]


def test_paper_see_dpo_diversity_has_its_own_multi_image_protocol(root):
    """The paper profile evaluates with one image a prompt (SePPO's protocol); the SEE-DPO table's
    diversity columns come from a prompt set with several images a prompt."""
    paper = load_params(root / "params.yaml", profile="paper")
    assert paper["sample"]["images_per_prompt"] == 1
    diversity_set = paper["tables"]["see_dpo"]["diversity_prompt_set"]
    assert paper["prompt_sets"][diversity_set]["images_per_prompt"] > 1
    jobs = snakemake_jobs(root, ["results/see_dpo.csv"], {"profile": "paper"})
    table = next(job for job in jobs if job.rule.name == "table")
    assert f"/{diversity_set}.parquet" in table.shellcmd.split("--diversity", 1)[1]
    sampled = {job.wildcards["prompt_set"] for job in jobs if job.rule.name == "evaluate"}
    assert sampled == {paper["sample"]["prompt_set"], diversity_set}


@pytest.mark.parametrize("profile_dir", ["slurm", "local-gpus"])
def test_the_cluster_profiles_give_resources_to_exactly_the_paper_rules(root, profile_dir):
    """GPU counts live in the workflow profiles only: each profile configures every rule of the paper
    DAG (the tuning sweep included) and no other, the rules that start through the GPU launcher get
    GPUs there, and no rule sets a GPU count itself."""
    import yaml


    declared = yaml.safe_load((root / "workflow/profiles" / profile_dir / "config.yaml").read_text())["set-resources"]
    listed = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules", "--config", "profile=paper"], cwd=root,
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr[-3000:]
    rules = set(listed.stdout.split()) - {"all"}
    assert set(declared) == rules, f"{profile_dir}: configured, no such rule: {sorted(set(declared) - rules)}; " \
                                   f"rule not configured: {sorted(rules - set(declared))}"
    blocks = re.split(r"^\s*rule (\w+):", "".join(p.read_text() for p in (root / "workflow/rules").glob("*.smk")), flags=re.M)
    launched = {name for name, body in zip(blocks[1::2], blocks[2::2]) if "{params.launch}" in body} & rules
    assert {name for name, res in declared.items() if res.get("gpu", 0)} == launched
    assert {"train", "tune", "evaluate", "encode"} <= launched
    jobs = snakemake_jobs(root, ["all", "results/tuning/selection.csv"], {"profile": "paper"})
    assert not [job.rule.name for job in jobs if "gpu" in job.rule.resources]
