"""Where each scorer's files come from (local file or folder, or a Hugging Face hub id,
offline-friendly) and loading them with errors that say how to provide them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from diffpo.models.loading import MissingWeightsError

# Default sources: hub ids (work offline once the Hugging Face cache holds them) or resources/ paths.
PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
HPSV2_REPO = "xswu/HPSv2"
HPSV2_FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
HPSV2_TOKENIZER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
IMAGEREWARD_REPO = "THUDM/ImageReward"
IMAGEREWARD_FILE = "ImageReward.pt"
IMAGEREWARD_MED_CONFIG = "med_config.json"
IMAGEREWARD_TOKENIZER = "bert-base-uncased"
AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"
AESTHETIC_MLP = f"resources/scorers/aesthetic/{AESTHETIC_FILE}"
AESTHETIC_CLIP = "openai/clip-vit-large-patch14"
AESTHETIC_URL = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/" + AESTHETIC_FILE
)



def _offline_hint(repo: str, filename: str | None, local_dir: str) -> str:
    what = f"{repo} {filename}" if filename else repo
    if filename == AESTHETIC_FILE and "/" not in repo:
        return (
            f"Provide it offline: on a machine with internet download {AESTHETIC_URL} (or run "
            f"`huggingface-cli download <a hub mirror of it> {filename} --local-dir {local_dir}`), copy it to "
            f"{local_dir}/{filename} and point mlp_source at that path."
        )
    return (
        f"Provide it offline: on a machine with internet run `huggingface-cli download {what} "
        f"--local-dir {local_dir}`, copy {local_dir} here and point the scorer's source parameter at "
        f"{local_dir + '/' + filename if filename else local_dir} (or pre-fill the Hugging Face cache)."
    )


def resolve_file(source: str | os.PathLike, filename: str, *, what: str, repo_hint: str, local_dir: str,
                 local_files_only: bool | None = None) -> Path:
    """A local file, ``folder/filename``, or ``filename`` from hub repo ``source`` (cache only when offline)."""
    source = str(source)
    local = Path(source)
    if local.is_file():
        return local
    if local.is_dir():
        if (local / filename).is_file():
            return local / filename
        raise MissingWeightsError(
            f"cannot find the {what} file {filename!r} in folder {source!r}.\n" + _offline_hint(repo_hint, filename, local_dir)
        )
    looks_like_path = source.startswith((".", "/", "~")) or source.endswith((".pt", ".pth", ".bin", ".json", ".safetensors")) or source.count("/") > 1
    if looks_like_path:
        raise MissingWeightsError(
            f"cannot find the {what} file {filename!r}: {source!r} does not exist.\n" + _offline_hint(repo_hint, filename, local_dir)
        )
    from huggingface_hub import hf_hub_download

    if local_files_only is None:
        from huggingface_hub import constants

        local_files_only = bool(constants.HF_HUB_OFFLINE)
    try:
        return Path(hf_hub_download(repo_id=source, filename=filename, local_files_only=local_files_only))
    except Exception as err:  # noqa: BLE001 - hub errors are many; all mean "not available here"
        raise MissingWeightsError(
            f"cannot load the {what} file {filename!r} from hub repo {source!r} (offline or not cached: "
            f"{type(err).__name__}: {err}).\n" + _offline_hint(source, filename, local_dir)
        ) from err


def _from_pretrained(cls, source: str | os.PathLike, *, what: str, local_dir: str, **kwargs):
    source = str(source)
    if not Path(source).exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise MissingWeightsError(f"cannot load the {what} from {source!r}: it does not exist.\n" + _offline_hint(source, None, local_dir))
    try:
        obj = cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        raise MissingWeightsError(
            f"cannot load the {what} from {source!r} (offline or not cached: {err}).\n" + _offline_hint(source, None, local_dir)
        ) from err
    if hasattr(obj, "__len__") and what.endswith("tokenizer") and len(obj) <= 2:
        # transformers 5 may return a near-empty tokenizer for a wrong path instead of failing.
        raise MissingWeightsError(
            f"cannot load the {what} from {source!r}: it has only {len(obj)} tokens.\n" + _offline_hint(source, None, local_dir)
        )
    return obj


def _torch_load(path: Path, what: str) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise MissingWeightsError(f"cannot read the {what} checkpoint {str(path)!r}: {err}") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"the {what} checkpoint {str(path)!r} holds a {type(obj).__name__}, not a state dict")
    out = {}
    for key, value in obj.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value.float() if torch.is_tensor(value) and value.is_floating_point() else value
    return out


def _load_strict(module: nn.Module, state_dict: dict, what: str, ignore: Callable[[str], bool] = lambda k: False) -> None:
    result = module.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not ignore(k)]
    unexpected = [k for k in result.unexpected_keys if not ignore(k)]
    if missing or unexpected:
        raise ValueError(f"the {what} checkpoint does not match the architecture: missing {missing[:8]}, unexpected {unexpected[:8]}")
