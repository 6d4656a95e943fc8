"""Settings: params.yaml, resolved for one profile and validated against the schema.

A value written as ``{tiny: x, paper: y}`` is the profile's column; every other value is
shared. Both profiles are validated, so an error in the paper column is caught on a
laptop too. Errors name the key (``methods.sft_w.learning_rate``) and the profile.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jsonschema
import yaml

PROFILES = ("tiny", "paper")
SCHEMA_RELPATH = Path("workflow/schemas/params.schema.yaml")


class ParamsError(ValueError):
    """params.yaml is malformed; the message names the key."""


def _is_profile_map(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= set(PROFILES)


def resolve_profile(raw: Any, profile: str, path: str = "") -> Any:
    """Replace every ``{tiny: .., paper: ..}`` map by the value of ``profile``."""
    if _is_profile_map(raw):
        missing = [p for p in PROFILES if p not in raw]
        if missing:
            raise ParamsError(f"params.yaml: {path}: a per-profile value must give every profile; missing {missing}")
        return copy.deepcopy(raw[profile])
    if isinstance(raw, dict):
        return {k: resolve_profile(v, profile, f"{path}.{k}" if path else str(k)) for k, v in raw.items()}
    if isinstance(raw, list):
        return [resolve_profile(v, profile, f"{path}[{i}]") for i, v in enumerate(raw)]
    return raw


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate(params: dict, schema: dict, profile: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {_key_path(e)}: {e.message}" for e in errors]
        raise ParamsError(f"params.yaml is invalid (profile {profile}):\n" + "\n".join(lines))


def load_schema(root: Path) -> dict:
    return yaml.safe_load((root / SCHEMA_RELPATH).read_text())


def load_params(path: str | Path = "params.yaml", profile: str | None = None) -> dict:
    """Read, check both profiles, and return the settings of the active (or given) profile."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the project root or pass --params")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return resolve_params(raw, load_schema(path.resolve().parent), profile)


def resolve_params(raw: dict, schema: dict, profile: str | None = None) -> dict:
    active = profile or raw.get("profile")
    if active not in PROFILES:
        raise ParamsError(f"params.yaml: profile: {active!r} is not one of {list(PROFILES)}")
    resolved = {}
    for p in PROFILES:
        resolved[p] = resolve_profile(raw, p)
        resolved[p]["profile"] = p
        validate(resolved[p], schema, p)
    return resolved[active]


def select(params: dict, keys: list[str]) -> dict:
    """The values of dotted ``keys`` only: what one stage may read."""
    out = {}
    for key in keys:
        node: Any = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ParamsError(f"params.yaml: {key} is missing")
            node = node[part]
        out[key] = node
    return out


def method_settings(params: dict, method: str) -> dict:
    """A method's training settings: ``train`` defaults overridden by ``methods.<name>``."""
    methods = params["methods"]
    if method not in methods:
        raise ParamsError(f"unknown method {method!r}; params.yaml defines: {', '.join(sorted(methods))}")
    return {**params["train"], **methods[method]}


def build(cls, values: dict):
    """Construct a config dataclass from a validated section, ignoring keys it does not use."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class TrainConfig:
    """One training run (FACTS.md section 2 recipe; tiny values scaled down)."""

    objective: str
    images: str
    steps: int
    batch_size: int
    learning_rate: float
    gradient_accumulation_steps: int = 1
    lr_warmup_fraction: float = 0.0
    lr_schedule: str = "constant_with_warmup"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    caption_dropout: float = 0.0
    checkpoint_every: int = 100
    mixed_precision: str = "no"
    seed: int = 0
    beta: float | None = None
    gamma: float = 0.0  # SEE-DPO's self-entropy weight; 0 is the base method
    label: str = ""

    def __post_init__(self):
        if self.objective == "diffusion_dpo" and self.beta is None:
            raise ParamsError("a diffusion_dpo method needs beta")
        if self.objective == "diffusion_dpo" and self.images != "pairs":
            raise ParamsError(f"objective diffusion_dpo trains on pairs, not images: {self.images!r}")
        if self.objective == "sft" and self.images == "pairs":
            raise ParamsError("objective sft trains on images (winners or both), not pairs")


@dataclass(frozen=True)
class SampleConfig:
    """The sampling protocol (FACTS.md section 4); ``resolution`` None means the model's own."""

    num_inference_steps: int
    guidance_scale: float
    images_per_prompt: int
    seed: int
    seed_policy: str
    batch_size: int
    prompt_set: str
    scheduler: str = "ddim"
    resolution: int | None = None
