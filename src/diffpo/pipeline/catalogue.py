"""What the Snakemake workflow catalogue asks of a workflow, made from the project's own files.

``config/README.md`` is rendered from ``workflow/schemas/params.schema.yaml`` (every key, its
type and meaning) and ``params.yaml`` (its value in each profile), so nothing is written
twice; tests/test_catalogue.py checks that the committed file is current and lists every key.
``.test/params.yaml`` holds the sizes of the end-to-end test; ``smoke_params`` applies them
to params.yaml (the test does, and so can anyone who wants the workflow at that size).

    python -m diffpo.pipeline.catalogue config-readme > config/README.md   # after editing the schema or params.yaml
    python -m diffpo.pipeline.catalogue smoke-params > params.yaml          # in a scratch copy: the test's size
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from diffpo.settings.params import PROFILES, SCHEMA_RELPATH

README_RELPATH = Path("config/README.md")
SMOKE_RELPATH = Path(".test/params.yaml")
ENTRY = "<name>"  # a path segment standing for any entry of a registry (methods, prompt_sets)
REGISTRY_ENTRY = {"methods": "method", "prompt_sets": "prompt set"}


# ---------------------------------------------------------------- the schema's keys
@dataclass(frozen=True)
class Key:
    path: str          # dotted, ENTRY for a registry's entry: methods.<name>.beta
    spec: dict         # the key's schema, $refs resolved
    required: bool

    @property
    def description(self) -> str:
        return self.spec.get("description", "")


def resolve(spec: dict, schema: dict) -> dict:
    """``spec`` with its ``$ref`` (``#/$defs/...``) merged in; the spec's own keywords win."""
    while isinstance(spec, dict) and "$ref" in spec:
        ref = spec["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, not {ref!r}")
        target: Any = schema
        for part in ref[2:].split("/"):
            target = target[part]
        own = {k: v for k, v in spec.items() if k != "$ref"}
        merged = {**target, **own}
        # Both schemas apply: the keys either declares, and what either requires.
        if "properties" in target and "properties" in own:
            merged["properties"] = {**target["properties"], **own["properties"]}
        if "required" in target and "required" in own:
            merged["required"] = list(dict.fromkeys([*target["required"], *own["required"]]))
        spec = merged
    return spec


def resolve_all(spec: Any, schema: dict) -> Any:
    """``spec`` with every ``$ref`` in it resolved, at any depth."""
    if isinstance(spec, list):
        return [resolve_all(s, schema) for s in spec]
    if not isinstance(spec, dict):
        return spec
    return {k: resolve_all(v, schema) for k, v in resolve(spec, schema).items()}


def schema_keys(schema: dict) -> list[Key]:
    """Every key params.yaml may hold, in the schema's order, parents before their children."""
    keys: list[Key] = []

    def walk(spec: dict, prefix: str) -> None:
        spec = resolve(spec, schema)
        required = set(spec.get("required", []))
        for name, child in spec.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            child = resolve(child, schema)
            keys.append(Key(path, resolve_all(child, schema), name in required))
            walk(child, path)
        entry = spec.get("additionalProperties")
        if isinstance(entry, dict):  # a registry: any name, each entry of this schema
            keys.append(Key(f"{prefix}.{ENTRY}", resolve_all(entry, schema), True))
            walk(entry, f"{prefix}.{ENTRY}")

    walk(schema, "")
    return keys


def type_of(spec: dict) -> str:
    """A short human reading of a key's schema: ``integer ≥ 1``, ``one of `a`, `b```..."""
    if spec.get("type") == "object" or "properties" in spec or isinstance(spec.get("additionalProperties"), dict):
        return "mapping"
    if "enum" in spec:
        return "one of " + ", ".join(f"`{_flow(v)}`" for v in spec["enum"])
    for word in ("oneOf", "anyOf"):
        if word in spec:
            return " or ".join(type_of(option) for option in spec[word])
    kind = spec.get("type")
    if kind == "null":
        return "`null`"
    if kind in ("integer", "number"):
        low = ("≥", spec["minimum"]) if "minimum" in spec else (">", spec["exclusiveMinimum"]) \
            if "exclusiveMinimum" in spec else None
        if low and "maximum" in spec:
            return f"{kind} in {'[' if low[0] == '≥' else '('}{low[1]}, {spec['maximum']}]"
        return f"{kind} {low[0]} {low[1]}" if low else kind
    if kind == "array":
        items = type_of(spec.get("items", {})) if spec.get("items") else "values"
        size = f", at least {spec['minItems']}" if spec.get("minItems", 0) > 1 else ""
        unique = ", no repeats" if spec.get("uniqueItems") else ""
        return f"list of {items}{size}{unique}"
    return kind or "any"


# ---------------------------------------------------------------- config/README.md
MAPPING = """\
## Where the configuration lives

The catalogue's convention is a `config/config.yaml`, validated against a schema, documented
in `config/README.md`, with a small test configuration under `.test/`. diffpo keeps its
settings in **`params.yaml` at the project root** instead, because DVC reads parameters from
there: each stage of `dvc.yaml` lists the `params.yaml` keys it depends on, and `dvc params
diff` and `dvc exp run -S key=value` edit and compare them. The convention maps onto it so:

| catalogue convention | diffpo |
|---|---|
| `config/config.yaml` | `params.yaml` (project root), read by `workflow/rules/common.smk` before any rule |
| a schema validated with `snakemake.utils.validate` | `workflow/schemas/params.schema.yaml`, validated by `diffpo.settings.params.load_params` for **both** profiles (a value may be written per profile, which Snakemake's `validate` cannot check) |
| `--config key=value`, `--configfile` | not used: what they set is overwritten by `params.yaml`. Edit `params.yaml`, or `dvc exp run -S key=value` |
| `config/README.md` | this file, generated from the schema's `description:` fields and `params.yaml` |
| `.test/config/config.yaml` and `--directory .test` | `.test/params.yaml`: the end-to-end test's sizes, applied over `params.yaml` in a copy of the project (below). The working directory must be the project root, so `--directory` is not used |

Each stage reads only its own keys (`diffpo.settings.stages.STAGE_PARAMS`): editing a key reruns only
the jobs that read it, in Snakemake as in DVC.

## Profiles

`profile` picks the column of every value written as `{tiny: ..., paper: ...}`; every other
value is shared. **tiny** (default) runs the whole pipeline on the synthetic world on 2 CPU
cores; **paper** loads SD-1.5 and Pick-a-Pic v2 from local copies with the papers' recipes.
The tables below give each key's value in both profiles (`params.yaml` sets `profile: tiny`).

## The test configuration

`.test/params.yaml` gives the end-to-end test's sizes (`tests/test_end_to_end.py` reads them
from it): a few steps of everything, three training methods of different kinds and short
tables. To run the workflow at that size, in a scratch copy of the project:

```bash
python -m diffpo.pipeline.catalogue smoke-params > params.smoke.yaml && mv params.smoke.yaml params.yaml
python -m diffpo dvc-yaml > dvc.yaml   # the stages follow the smaller method registry
snakemake --cores 2
```
"""


def config_readme(root: Path) -> str:
    """config/README.md: every key of the schema, with its type, its value in each profile and its meaning."""
    root = Path(root)
    schema = yaml.safe_load((root / SCHEMA_RELPATH).read_text())
    raw = yaml.safe_load((root / "params.yaml").read_text())
    keys = schema_keys(schema)
    undescribed = [k.path for k in keys if not k.description]
    if undescribed:
        raise ValueError(f"{SCHEMA_RELPATH}: add a description: to {', '.join(undescribed)}")
    lines = [
        "# Configuration",
        "",
        f"<!-- GENERATED from {SCHEMA_RELPATH.as_posix()} and params.yaml by "
        "`python -m diffpo.pipeline.catalogue config-readme > config/README.md` -- do not edit by hand; "
        "tests/test_catalogue.py checks that this file is current. -->",
        "",
        "All of diffpo's settings are in `params.yaml`. This file lists every key of its schema: "
        "its type, its value in each profile, and what it means.",
        "",
        MAPPING,
        "## Keys",
    ]
    for section in [k for k in keys if "." not in k.path]:
        rows = [k for k in keys if k.path.startswith(section.path + ".")]
        lines += ["", f"### `{section.path}`", ""] + ([_sentence(section.description), ""] if rows else [])
        rows = rows or [section]  # a single value: its own row
        lines += ["| key | type | tiny | paper | meaning |", "|---|---|---|---|---|"]
        for key in rows:
            mapping = type_of(key.spec) == "mapping"  # its keys have their own rows
            if key.path == "profile":  # the profile a column is about
                tiny, paper = (f"`{profile}`" for profile in PROFILES)
            else:
                tiny, paper = ("—", "—") if mapping else (_default(raw, key.path, profile) for profile in PROFILES)
            meaning = _cell(key.description) + ("" if key.required else " *(optional)*")
            lines.append(f"| `{key.path}` | {_cell(type_of(key.spec))} | {tiny} | {paper} | {meaning} |")
        if section.path in REGISTRY_ENTRY:
            lines += ["", *_registry(raw, section.path)]
    return "\n".join(lines).rstrip() + "\n"


def _registry(raw: dict, section: str) -> list[str]:
    """The entries params.yaml defines in a registry, with the keys each sets."""
    entries = raw[section]
    if section == "methods":
        out = [f"Methods defined in `params.yaml` ({len(entries)}); the settings a method does not set are "
               "`train`'s, or the trainer's defaults:", "",
               "| method | label | objective | images | also sets |", "|---|---|---|---|---|"]
        for name, entry in entries.items():
            rest = [k for k in entry if k not in ("label", "objective", "images")]
            out.append(f"| `{name}` | {_cell(_flow(entry['label']))} | `{_flow(entry['objective'])}` | "
                       f"`{_flow(entry['images'])}` | {', '.join(f'`{k}`' for k in rest) or '—'} |")
        return out
    out = [f"Prompt sets defined in `params.yaml` ({len(entries)}):", "", "| prompt set | tiny | paper |", "|---|---|---|"]
    for name in entries:
        out.append(f"| `{name}` | {_default(raw, f'{section}.{name}', 'tiny')} | {_default(raw, f'{section}.{name}', 'paper')} |")
    return out


def _default(raw: dict, path: str, profile: str) -> str:
    node: Any = raw
    for part in path.split("."):
        if part == ENTRY:
            top, leaf = path.split(".")[0], path.split(".")[-1]
            entry = REGISTRY_ENTRY.get(top, {"tuning": "method", "experiments": "experiment"}.get(top, "entry"))
            inherited = path.startswith("methods.") and leaf in raw.get("train", {})
            return f"per {entry}" + (f", else `train.{leaf}`" if inherited else "")
        if _is_profile_map(node):
            node = node[profile]
        if not isinstance(node, dict) or part not in node:
            return "—"
        node = node[part]
    if _is_profile_map(node):
        node = node[profile]
    return _cell(f"`{_flow(node)}`")


def _is_profile_map(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= set(PROFILES)


def _flow(value: Any) -> str:
    if isinstance(value, str):
        return value
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sentence(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- .test/params.yaml
def merge(base: Any, override: Any) -> Any:
    """``override`` over ``base``: a mapping replaces only the keys it names (recursively);
    any other value, a per-profile value included, is replaced whole."""
    if isinstance(override, dict) and isinstance(base, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base.get(key), value)
        return out
    return copy.deepcopy(override)


def smoke_params(raw: dict, smoke: dict) -> dict:
    """params.yaml (``raw``, unresolved) at the end-to-end test's size: ``smoke['overrides']``
    merged in, only the methods ``smoke['methods']`` names (each with its overrides), and the
    sections ``smoke['tuning']``, ``smoke['experiments']`` and ``smoke['tables']`` in place of params.yaml's."""
    params = merge(raw, smoke["overrides"])
    unknown = [m for m in smoke["methods"] if m not in params["methods"]]
    if unknown:
        raise ValueError(f"{SMOKE_RELPATH}: methods {unknown} are not in params.yaml")
    params["methods"] = {m: merge(params["methods"][m], o or {}) for m, o in smoke["methods"].items()}
    params["tables"] = copy.deepcopy(smoke["tables"])
    params["tuning"] = copy.deepcopy(smoke["tuning"])
    params["experiments"] = copy.deepcopy(smoke["experiments"])
    return params


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffpo.pipeline.catalogue", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=".", help="the project root")
    sub = parser.add_subparsers(dest="command", required=True)
    readme = sub.add_parser("config-readme", help="print config/README.md, rendered from the schema and params.yaml")
    readme.add_argument("--check", action="store_true", help="fail if the committed config/README.md differs")
    sub.add_parser("smoke-params", help="print params.yaml at the end-to-end test's size (.test/params.yaml)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.command == "config-readme":
        text = config_readme(root)
        if args.check:
            if (root / README_RELPATH).read_text() != text:
                sys.exit(f"{README_RELPATH} is out of date: run `python -m diffpo.pipeline.catalogue config-readme > {README_RELPATH}`")
            print(f"{README_RELPATH} is current")
        else:
            sys.stdout.write(text)
    else:
        raw = yaml.safe_load((root / "params.yaml").read_text())
        smoke = yaml.safe_load((root / SMOKE_RELPATH).read_text())
        sys.stdout.write(yaml.safe_dump(smoke_params(raw, smoke), sort_keys=False))


if __name__ == "__main__":
    main()
