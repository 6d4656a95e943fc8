"""Shared fixtures: tiny dummy components, built in milliseconds (diffusers' get_dummy_components).

Fixtures used by several test modules live here, beside the plain helpers and constants they
share (imported as ``from conftest import ...``): no test module imports another.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing hub file must fail at once, not retry for minutes
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One torch thread per process: the two xdist workers and the end-to-end run's Snakemake jobs
# already fill the cores, and threads beyond them only spin (the suite ran faster on 2 cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import copy
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def raw_params() -> dict:
    return copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.fixture(scope="session")
def schema() -> dict:
    from diffpo.settings.params import load_schema

    return load_schema()


# ---------------------------------------------------------------- training: a latent cache, a tiny UNet, configs
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """An EncodedPairs of 24 random pairs over 5 prompts."""
    from diffpo.data.cache import write_cache

    out = tmp_path_factory.mktemp("cache")
    rng = np.random.default_rng(0)
    n, prompts = 24, 5
    prompt_index = np.arange(n) % prompts  # every prompt is used
    # Three pair shards: the trainers read random batches across shard boundaries.
    return write_cache(out, rng.standard_normal((n, 4, 4, 4)).astype(np.float32),
                       rng.standard_normal((n, 4, 4, 4)).astype(np.float32),
                       rng.standard_normal((prompts, 6, 16)).astype(np.float32), np.zeros((6, 16), np.float32),
                       pd.DataFrame({"caption": [f"prompt {i}" for i in prompt_index], "prompt_index": prompt_index}),
                       [f"prompt {i}" for i in range(prompts)], shard_pairs=10)


def tiny_unet():
    from diffpo.models.loading import build_unet

    torch.manual_seed(0)
    return build_unet(dict(block_out_channels=[8, 16], layers_per_block=1, attention_head_dim=4), 4, 4, 16)


def dpo_config(**overrides):
    from diffpo.settings.configs import TrainConfig

    values = dict(objective="diffusion_dpo", images="pairs", steps=6, batch_size=4, learning_rate=1e-3, beta=50.0,
                  checkpoint_every=2, caption_dropout=0.2, label="test")
    return TrainConfig(**{**values, **overrides})


def rollout_config(objective, **overrides):
    from diffpo.settings.configs import TrainConfig

    values = dict(objective=objective, steps=4, round_updates=2, checkpoint_every=2, batch_size=3, learning_rate=1e-2,
                  lora_rank=2, rollout_prompts=4, sampler_steps=4, guidance_scale=2.0, eta=1.0, timestep_fraction=0.5,
                  generation_batch_size=8, label=objective, beta=None if objective == "ddpo" else 1.0,
                  reward_scorer=None if objective == "spo" else "brightness", divert_start_step=1, score_gap=0.0,
                  clip_range=0.2, samples_per_prompt=2)
    return TrainConfig(**{**values, **overrides})


class Brightness:
    """A reward scorer with a known answer: the mean pixel value of an image."""

    def score(self, images, prompts, batch_size=8):
        return np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3))


def generators(**judges):
    import diffpo.training.sources
    from diffpo import training
    from diffpo.models.loading import build_noise_scheduler, build_vae

    torch.manual_seed(0)
    vae = build_vae({"block_out_channels": [8, 8], "latent_channels": 4}).eval().requires_grad_(False)
    return training.sources.Generators(scheduler=build_noise_scheduler(SCHEDULER), vae=vae, **judges)


# ---------------------------------------------------------------- reward models: a small world and a tiny CLIP
# The pipeline's contrastive CLIP, tiny (pretrain.text_encoder's keys): a couple of seconds.
CLIP_CFG = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, projection_dim=32,
                max_length=24, image_patch_size=8, steps=150, batch_size=64, learning_rate=1e-3)
FAST = {"steps": 30, "batch_size": 16, "learning_rate": 1e-3, "seed": 0}


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a whole module (``pytestmark = pytest.mark.usefixtures(...)``), restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reward_world(tmp_path_factory):
    """A small world, its pairs, and a tiny contrastive CLIP + tokenizer (build_clip / build_tokenizer,
    pre-trained briefly by the pipeline's own stage, as results/base/text is)."""
    from diffpo import world
    from diffpo.models.pretraining import pretrain_text_encoder
    from diffpo.scoring import stand_ins

    root = tmp_path_factory.mktemp("reward_models")
    config = world.WorldConfig(seed=3, n_train_pairs=400, n_validation_unique=60, n_test_unique=20,
                               n_ood_combinations=10, n_ood_phrasings=10, train_shard_size=400)
    summary = world.make_world(config, root / "world")
    pretrain_text_encoder(root / "world", "train", 32, CLIP_CFG, 0, root / "text")
    return {
        "root": root, "summary": summary, "clip": root / "text" / "clip", "tokenizer": root / "text" / "tokenizer",
        "train": stand_ins.read_pairs(root / "world", "train"),
        "val": stand_ins.read_pairs(root / "world", "validation_unique"),
    }


# ---------------------------------------------------------------- scorers: CLIP's normalisation, a tiny BPE tokenizer
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "car", "in", "the", "snow"]
PROMPTS = ["a photo of a cat", "a red car in the snow", "blue dog", "the cat in the snow"]


def _clip_tokenizer():
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    tokens = list(alphabet) + [c + "</w>" for c in alphabet]
    merges = []
    for word in WORDS:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        cur = symbols[0]
        for sym in symbols[1:]:
            merge = (cur, sym)
            if merge not in merges:
                merges.append(merge)
            cur += sym
            if cur not in tokens:
                tokens.append(cur)
    tokens += ["<|startoftext|>", "<|endoftext|>"]  # eot has the highest id, as in the real vocab
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)


@pytest.fixture(scope="module")
def clip_tok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip_tokenizer")
    _clip_tokenizer().save_pretrained(path)
    return path


# ---------------------------------------------------------------- tables: a per-image score file
def scores(values_by_prompt: dict[int, list[float]], pickscore: float, seed: int = 0) -> pd.DataFrame:
    rows = [{"seed": seed, "prompt_id": p, "caption": f"p{p}", "image_index": i, "gt_preference": v,
             "gt_alignment": v, "gt_aesthetic": v, "pickscore": pickscore}
            for p, values in values_by_prompt.items() for i, v in enumerate(values)]
    frame = pd.DataFrame(rows)
    frame.attrs["scorers"] = {"pickscore": {"version": "tiny stand-in", "scale": "logit_scale.exp() * cos"}}
    return frame


# ---------------------------------------------------------------- notebooks, executed headlessly
NOTEBOOKS = {"SePPO": "notebooks/seppo.ipynb", "SEE-DPO": "notebooks/see_dpo.ipynb"}


def execute(path: Path, cwd: Path):
    """Runs every cell of ``path`` in a fresh kernel; returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def outputs(notebook) -> dict[str, list[dict]]:
    """Each show() cell's outputs, by artifact id."""
    found = {}
    for cell in notebook.cells:
        match = re.search(r'project\.show\("([\w-]+)"\)', cell.source) if cell.cell_type == "code" else None
        if match:
            found[match.group(1)] = cell.outputs
    return found


def text_of(cell_outputs: list[dict]) -> str:
    return "\n".join(o.get("data", {}).get("text/markdown", "") for o in cell_outputs)


def dvc_stage_name(stages: dict, rule: str, key: str) -> str:
    """The DVC name of a job's stage in dvc.yaml's expanded ``stages``: ``RULE@KEY`` (or ``RULE-N@KEY``,
    a rule's other shapes) of a foreach stage, or ``RULE-KEY`` for a job alone in its shape."""
    found = [n for n in stages if n == f"{rule}-{key}" or (n.endswith("@" + key) and re.fullmatch(
        rf"{re.escape(rule)}(-\d+)?", n.split("@")[0]))]
    assert len(found) == 1, (rule, key, found)
    return found[0]


def dvc_stage(stages: dict, rule: str, key: str) -> dict:
    return stages[dvc_stage_name(stages, rule, key)]
