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
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from diffpo.errors import ParamsError
from diffpo.settings.configs import TrainConfig, build, method_settings
from diffpo.settings.experiments import check_experiments
from diffpo.settings.tuning import check_tuning

PROFILES = ("tiny", "paper")
# Package data, so that a params file anywhere is validated; workflow/schemas/params.schema.yaml
# (where Snakemake workflows keep their schemas) is a symbolic link to this one file.
SCHEMA_FILE = "params.schema.yaml"
SCHEMA_RELPATH = Path("workflow/schemas") / SCHEMA_FILE  # the link, relative to the project root


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
    return yaml.safe_load(resources.files("diffpo.settings").joinpath(SCHEMA_FILE).read_text())


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


def check_build(params: dict, profile: str, source: str = "params.yaml") -> None:
    """A base model or stand-in scorers built in the pipeline are trained on the world's corpus and raters."""
    build = params["build"]
    needs_world = [k for k in ("base", "stand_ins") if build[k]]
    if needs_world and not build["world"]:
        raise ParamsError(f"{source} is invalid (profile {profile}): build.{needs_world[0]} needs build.world "
                          "(it trains on the world's corpus or raters)")


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
    for p in PROFILES:
        check_build(resolved[p], p, source)
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
