"""Settings: params.yaml, resolved for one profile and validated against the schema.

A value written as ``{tiny: x, paper: y}`` is the profile's column; every other value is
shared. Both profiles are validated, against the schema and against each method's own
rules (``TrainConfig``), so an error in the paper column is caught on a laptop too, and
when the settings are loaded (``snakemake -n``), not when a job starts. Errors name the
file and the key (``methods.sft_w.learning_rate``) and say what to write instead; a YAML
syntax error or a key given twice names the line.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from diffpo.errors import UserError

PROFILES = ("tiny", "paper")
# Package data, so that a params file anywhere is validated; workflow/schemas/params.schema.yaml
# (where Snakemake workflows keep their schemas) is a symbolic link to this one file.
SCHEMA_FILE = "params.schema.yaml"
SCHEMA_RELPATH = Path("workflow/schemas") / SCHEMA_FILE  # the link, relative to the project root


class ParamsError(UserError, ValueError):
    """params.yaml is malformed; the message names the file and the key."""


# ---------------------------------------------------------------- reading the file
class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last value silently). Keys a merge (``<<: *anchor``) brings in may be overridden."""

    def construct_mapping(self, node, deep=False):
        first_line: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first_line[key]})", key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """A YAML file's content; a syntax error or a duplicate key is a ParamsError naming the file and line."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except UnicodeDecodeError as err:
        raise ParamsError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ParamsError(f"{where}: {err.problem or err.context}") from err
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({err})") from err


def load_schema() -> dict:
    """The schema of params.yaml, shipped with the package."""
    return yaml.safe_load(resources.files("diffpo").joinpath(SCHEMA_FILE).read_text())


# ---------------------------------------------------------------- profiles
def _is_profile_map(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= set(PROFILES)


def resolve_profile(raw: Any, profile: str, path: str = "", source: str = "params.yaml") -> Any:
    """Replace every ``{tiny: .., paper: ..}`` map by the value of ``profile``."""
    if _is_profile_map(raw):
        missing = [p for p in PROFILES if p not in raw]
        if missing:
            raise ParamsError(f"{source}: {path}: a per-profile value must give every profile; missing {missing}")
        return copy.deepcopy(raw[profile])
    if isinstance(raw, dict):
        return {k: resolve_profile(v, profile, f"{path}.{k}" if path else str(k), source) for k, v in raw.items()}
    if isinstance(raw, list):
        return [resolve_profile(v, profile, f"{path}[{i}]", source) for i, v in enumerate(raw)]
    return raw


# ---------------------------------------------------------------- validation
# JSON Schema counts 600.0 as an integer; a step count written 600.0 would only fail deep in
# training, so an integer must be written as one.
_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _yaml_number(text: str, integer: bool) -> str | None:
    """How to write ``text``, a number YAML read as text (``3e-4``, ``"600"``), so that YAML reads a number."""
    match = re.fullmatch(r"\s*([-+]?\d+)(?:\.(\d*))?(?:[eE]([-+]?)(\d+))?\s*", text)
    if not match:
        return None
    whole, fraction, sign, exponent = match.groups()
    if integer and not fraction and not exponent:
        return str(int(whole))
    # PyYAML (YAML 1.1) reads 3e-4 and 1.0e5 as text: a float needs a decimal point and a signed exponent.
    written = f"{whole}.{fraction or 0}" + (f"e{sign or '+'}{exponent}" if exponent else "")
    return written if isinstance(yaml.safe_load(written), float) else None


def _deref(schema: dict, root: dict) -> dict:
    return root["$defs"][schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema


def _describe(schema: dict, root: dict) -> str:
    """What a (sub)schema accepts, in words: 'null or an integer >= 1'."""
    schema = _deref(schema, root)
    alternatives = [_deref(a, root) for a in schema.get("anyOf") or schema.get("oneOf") or []]
    if alternatives and all("enum" in a for a in alternatives):
        return _describe({"enum": [e for a in alternatives for e in a["enum"]]}, root)
    if alternatives:
        return " or ".join(_describe(a, root) for a in alternatives)
    if "required" in schema and "type" not in schema:
        keys = schema["required"]
        return f"a mapping with key{'s' if len(keys) > 1 else ''} " + " and ".join(keys)
    if "enum" in schema:
        return "one of: " + ", ".join("null" if e is None else str(e) for e in schema["enum"])
    words = {"null": "null", "integer": "an integer", "number": "a number", "string": "a text",
             "boolean": "true or false", "array": "a list", "object": "a mapping"}.get(schema.get("type"), "a value")
    bounds = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))
    return words + "".join(f" {symbol} {schema[key]}" for key, symbol in bounds if key in schema)


def _message(error: jsonschema.ValidationError, root: dict) -> str:
    """The validator's message, with what to write instead where it does not say."""
    value = error.instance
    if "propertyNames" in error.absolute_schema_path:
        return f"unknown key {value!r}; write {_describe(error.schema, root)}"
    if error.validator == "type" and isinstance(value, str):
        written = _yaml_number(value, integer=error.validator_value == "integer")
        if written:
            return f"{value!r} is text to YAML, not a number: write {written}"
    if error.validator == "type" and error.validator_value == "integer" and isinstance(value, float):
        fix = f"write {int(value)}" if value.is_integer() else "write a whole number"
        return f"{value!r} is not an integer: {fix}"
    if error.validator in ("anyOf", "oneOf"):
        return f"{value!r} is not allowed here: write {_describe(error.schema, root)}"
    return error.message


def validate(params: dict, schema: dict, profile: str, source: str = "params.yaml") -> None:
    errors = sorted(_Validator(schema).iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {_key_path(e)}: {_message(e, schema)}" for e in errors]
        raise ParamsError(f"{source} is invalid (profile {profile}):\n" + "\n".join(lines))


def check_methods(params: dict, profile: str, source: str = "params.yaml") -> None:
    """Every method's own rules (``TrainConfig``), checked with the settings rather than when its
    training job starts, so that ``snakemake -n`` reports a method that cannot run."""
    problems = []
    for name in params["methods"]:
        try:
            build(TrainConfig, method_settings(params, name))
        except ParamsError as err:
            problems.append(f"  methods.{name}: {err}")
    if problems:
        raise ParamsError(f"{source} is invalid (profile {profile}):\n" + "\n".join(problems))


# Snakemake's `--config profile=...` reaches the jobs' own `python -m diffpo` through this variable.
PROFILE_VARIABLE = "DIFFPO_PROFILE"


def command_line_profile(overrides: dict, params_path: str | Path = "params.yaml") -> str | None:
    """The profile asked for with Snakemake's ``--config`` (``overrides``: the config Snakemake
    holds before params.yaml is read), or None. Any other key cannot be honoured (a value may
    be per profile, and each job reads params.yaml itself): a one-line error, never ignored."""
    others = sorted(k for k in overrides if k != "profile")
    if others:
        raise ParamsError(f"--config {', '.join(others)}: only `--config profile=tiny|paper` can be given on the command "
                          f"line; set other values in {params_path} (or `dvc exp run -S KEY=VALUE`)")
    profile = overrides.get("profile")
    if profile is not None and profile not in PROFILES:
        raise ParamsError(f"--config profile={profile}: not one of {list(PROFILES)}")
    return profile


def load_params(path: str | Path = "params.yaml", profile: str | None = None) -> dict:
    """Read, check both profiles, and return the settings of the given profile, else of
    ``$DIFFPO_PROFILE`` (set by Snakemake's ``--config profile=...``), else params.yaml's ``profile``."""
    import os

    profile = profile or os.environ.get(PROFILE_VARIABLE) or None
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the project root or pass --params")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return resolve_params(raw, load_schema(), profile, source=str(path))


def resolve_params(raw: dict, schema: dict, profile: str | None = None, source: str = "params.yaml") -> dict:
    active = profile or raw.get("profile")
    if active not in PROFILES:
        where = f"profile {active!r} (from {PROFILE_VARIABLE} or --config)" if profile else f"{source}: profile: {active!r}"
        raise ParamsError(f"{where} is not one of {list(PROFILES)}")
    resolved = {}
    for p in PROFILES:
        resolved[p] = resolve_profile(raw, p, source=source)
        resolved[p]["profile"] = p
        validate(resolved[p], schema, p, source)
    from diffpo.experiments import check_experiments
    from diffpo.tuning import check_tuning

    for p in PROFILES:
        check_methods(resolved[p], p, source)
        check_tuning(resolved[p], source)
        check_experiments(resolved[p], source)
    return resolved[active]


def select(params: dict, keys: list[str]) -> dict:
    """The values of dotted ``keys`` only: what one stage may read."""
    out = {}
    for key in keys:
        node: Any = params
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                parent = ".".join(parts[:depth]) or "the top level"
                defined = f"; {parent} defines: {', '.join(sorted(map(str, node)))}" if isinstance(node, dict) else ""
                raise ParamsError(f"params.yaml: {key} is missing{defined}")
            node = node[part]
        out[key] = node
    return out


def method_settings(params: dict, method: str, overrides: dict | None = None) -> dict:
    """A method's training settings: ``train`` defaults overridden by ``methods.<name>``, then
    by ``overrides`` (a tuning grid point, an experiment's variant)."""
    methods = params["methods"]
    if method not in methods:
        raise ParamsError(f"unknown method {method!r}; params.yaml defines: {', '.join(sorted(methods))}")
    return {**params["train"], **methods[method], **(overrides or {})}


def method_judges(params: dict, method: str) -> list[str]:
    """The scorers that judge a method's own samples during training (rollout rewards, SPO's
    step-aware model): a training job depends on them."""
    settings = method_settings(params, method)
    judges = [settings["reward_scorer"]] if settings.get("reward_scorer") else []
    return judges + (["step_aware"] if settings["objective"] == "spo" else [])


def build(cls, values: dict):
    """Construct a config dataclass from a validated section, ignoring keys it does not use."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


OBJECTIVE_DATA = {
    # objective: where its examples come from
    "sft": "images",          # images of the pairs (winners, both, or a random side)
    "diffusion_dpo": "pairs",  # (winner, loser): the loser from the data, or generated by the reference
    "seppo": "pairs",          # winner from the data, loser generated by the reference checkpoint
    "d3po": "rollouts",        # two chains per prompt from one noise, judged by a reward scorer
    "spo": "rollouts",         # branching chains judged step by step by a step-aware model
    "ddpo": "rollouts",        # chains scored by a reward scorer, PPO
}
REFERENCE_STRATEGIES = ("initial", "latest", "uniform")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: a method of the registry (params.yaml ``methods``) over ``train`` defaults.

    FACTS.md section 2 gives each method's recipe; the tiny profile scales the numbers down.
    A *round* is ``round_updates`` optimizer steps that share what a model generated at its
    start: SePPO's reference checkpoint and its samples (a checkpoint joins the pool every
    round), SPIN-Diffusion's iteration, or a batch of rollouts of the online methods.
    """

    objective: str
    steps: int
    batch_size: int
    learning_rate: float
    images: str = "winners"       # winners | both | random | pairs
    losers: str = "data"          # data | reference (generated by the round's reference checkpoint)
    reference: str = "initial"    # the reference checkpoint: initial | latest | uniform over the pool
    aaf: str = "sign"             # SePPO's anchor-based adaptive flipper: sign | indicator | off
    round_updates: int = 0
    gradient_accumulation_steps: int | None = 1  # None: derived from effective_batch (diffpo.recipes)
    effective_batch: int | None = None  # examples per optimizer update over all processes
    lr_warmup_fraction: float = 0.0
    lr_schedule: str = "constant_with_warmup"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    caption_dropout: float = 0.0
    checkpoint_every: int = 100
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    attention: str = "sdpa"       # sdpa (PyTorch's fused attention) | eager (diffpo.devices)
    optimizer: str = "adamw"      # adamw | adamw_8bit (bitsandbytes, the `gpu` extra)
    seed: int = 0
    beta: float | None = None
    gamma: float = 0.0            # SEE-DPO's self-entropy weight; 0 is the base method
    lora_rank: int = 0            # 0: every UNet weight is trained; > 0: LoRA adapters (peft)
    lora_targets: tuple = ("to_q", "to_k", "to_v", "to_out.0")
    # Generation during training (reference losers, rollouts): a DDIM sampler.
    sampler: str = "ddim"
    sampler_steps: int = 20
    guidance_scale: float = 5.0
    eta: float = 1.0              # rollouts need eta > 0 for a per-step density
    generation_batch_size: int = 256
    generation_precision: str = "no"  # SePPO / SPIN losers: "bf16" autocast or "no" (the policy's dtype)
    rollout_prompts: int = 0      # prompts per round (online methods)
    samples_per_prompt: int = 1   # DDPO: chains per prompt, for per-prompt advantages
    timestep_fraction: float = 1.0  # share of a chain's steps trained on per update
    clip_range: float = 0.1       # D3PO / SPO ratio clamp epsilon; DDPO's PPO clip range
    reward_scorer: str | None = None  # D3PO / DDPO: the scorer that judges final images
    num_candidates: int = 4       # SPO
    divert_start_step: int = 4    # SPO
    score_gap: float = 0.3        # SPO
    max_preference_timestep: int = 750  # SPO
    label: str = ""

    def __post_init__(self):
        if not isinstance(self.lora_targets, tuple):
            object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        name = self.label or self.objective
        data = OBJECTIVE_DATA.get(self.objective)
        if data is None:
            raise ParamsError(f"{name}: unknown objective {self.objective!r}; known: {', '.join(OBJECTIVE_DATA)}")
        if (self.effective_batch is None) == (self.gradient_accumulation_steps is None):
            raise ParamsError(f"{name}: give either gradient_accumulation_steps or effective_batch (the other null), "
                              f"not {'both' if self.effective_batch else 'neither'}")
        if self.effective_batch is not None and self.effective_batch % self.batch_size:
            raise ParamsError(f"{name}: effective_batch {self.effective_batch} is not a multiple of batch_size {self.batch_size}")
        if self.objective != "sft" and self.objective != "ddpo" and self.beta is None:
            raise ParamsError(f"{name}: objective {self.objective} needs beta")
        if data == "images" and self.images not in ("winners", "both", "random"):
            raise ParamsError(f"{name}: objective sft trains on images (winners, both or random), not {self.images!r}")
        if data == "pairs":
            if self.objective == "seppo" and self.losers != "reference":
                raise ParamsError(f"{name}: SePPO's losers are generated by the reference (losers: reference)")
            if self.losers == "data" and self.images != "pairs":
                raise ParamsError(f"{name}: losers from the data need images: pairs, not {self.images!r}")
            if self.losers == "reference" and self.images not in ("winners", "random"):
                raise ParamsError(f"{name}: generated losers need winners from the data (images: winners or random)")
            if self.losers == "reference" and self.lora_rank:
                raise ParamsError(f"{name}: generated losers come from full checkpoints of the pool; set lora_rank: 0")
        if self.losers == "reference" or data == "rollouts":
            if self.round_updates <= 0:
                raise ParamsError(f"{name}: generating during training needs round_updates > 0")
            if self.sampler != "ddim":
                raise ParamsError(f"{name}: generation during training uses the DDIM sampler, not {self.sampler!r}")
        if self.reference not in REFERENCE_STRATEGIES:
            raise ParamsError(f"{name}: reference {self.reference!r} is not one of {list(REFERENCE_STRATEGIES)}")
        if data == "rollouts":
            if self.rollout_prompts <= 0 or self.eta <= 0:
                raise ParamsError(f"{name}: rollouts need rollout_prompts > 0 and eta > 0")
            if self.checkpoint_every % self.round_updates:
                # a resumed run must begin at a round: its rollouts came from the policy of that moment
                raise ParamsError(f"{name}: checkpoint_every must be a multiple of round_updates")
            if self.objective in ("d3po", "ddpo") and not self.reward_scorer:
                raise ParamsError(f"{name}: objective {self.objective} needs a reward_scorer")
            if self.objective == "spo" and self.divert_start_step >= self.sampler_steps:
                raise ParamsError(f"{name}: divert_start_step must be below sampler_steps")

    @property
    def data(self) -> str:
        return OBJECTIVE_DATA[self.objective]


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
