"""Declared experiments: runs that vary one setting of a registered method.

``experiments.<name>`` in params.yaml names methods, the setting it varies and its values.
Each (method, value) is a *run*, trained once per seed like a table row: the method's own
run where the value equals the method's setting (never trained twice), else a variant named
``<method>__<setting><value>`` (``seppo_w__round_updates120``). ``curves`` names the runs
whose snapshots are sampled and scored along training (SePPO Figs. 2-3; reward hacking).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffpo.errors import ParamsError, UserError
from diffpo.settings.configs import TrainConfig, build, method_settings

SEPARATOR = "__"


class ExperimentError(UserError, ValueError):
    """params.yaml's experiments section is inconsistent; the message names the key."""


@dataclass(frozen=True)
class Run:
    name: str                 # the id in paths: results/models/<name>/seed<s>/
    method: str               # the registered method it starts from
    overrides: dict = field(default_factory=dict)  # the varied setting, for a variant
    experiment: str | None = None  # the experiment that declares a variant


def value_text(value) -> str:
    """A setting's value as it appears in a run's name: 120, -0.5, 1 (for 1.0), 0.25."""
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _setting(params: dict, method: str, key: str):
    return params["methods"][method].get(key, params["train"].get(key))


def experiment_runs(params: dict, name: str) -> list[tuple[str, object, Run]]:
    """(method, value, run) for every method and value of experiment ``name``, in order."""
    spec = params["experiments"][name]
    out = []
    for method in spec["methods"]:
        for value in spec["values"]:
            if value == _setting(params, method, spec["vary"]):
                run = Run(method, method)
            else:
                run = Run(f"{method}{SEPARATOR}{spec['vary']}{value_text(value)}", method, {spec["vary"]: value}, name)
            out.append((method, value, run))
    return out


def variant_runs(params: dict) -> dict[str, Run]:
    """Every variant run the experiments declare, by name."""
    runs = {}
    for name in params.get("experiments", {}) or {}:
        if name == "curves":
            continue
        for _, _, run in experiment_runs(params, name):
            if run.experiment is not None:
                runs[run.name] = run
    return runs


def all_runs(params: dict) -> list[str]:
    """Every trained run: each registered method, then each experiment's variants."""
    return list(params["methods"]) + list(variant_runs(params))


def resolve_run(params: dict, name: str) -> Run:
    """The run ``name`` (a method or a declared variant); an unknown name is an error naming the options."""
    if name in params["methods"]:
        return Run(name, name)
    variants = variant_runs(params)
    if name not in variants:
        raise ExperimentError(f"unknown run {name!r}: not a method of params.yaml nor a variant its experiments "
                              f"declare ({', '.join(sorted(variants)) or 'none'})")
    return variants[name]


def curve_runs(params: dict) -> list[str]:
    """The runs evaluated along training: ``experiments.curves.methods`` and every run of the
    experiments ``experiments.curves.experiments`` names."""
    spec = (params.get("experiments") or {}).get("curves")
    if not spec:
        return []
    runs = list(spec["methods"])
    for name in spec.get("experiments", []):
        runs += [run.name for _, _, run in experiment_runs(params, name)]
    return list(dict.fromkeys(runs))


def prolonged_runs(params: dict) -> list[str]:
    """Variant runs trained for more steps than their method: the longest jobs of a run. The
    workflow starts them first, so that a run does not end on one of them with a core idle."""
    return [name for name, run in variant_runs(params).items()
            if run.overrides.get("steps", 0) > _setting(params, run.method, "steps")]


def check_experiments(params: dict, source: str = "params.yaml") -> None:
    problems = []
    experiments = params.get("experiments") or {}
    for name, spec in experiments.items():
        if name == "curves":
            unknown = [m for m in spec["methods"] if m not in params["methods"]]
            unknown += [e for e in spec.get("experiments", []) if e not in experiments or e == "curves"]
            if unknown:
                problems.append(f"experiments.curves: unknown methods or experiments {unknown}")
            continue
        unknown = [m for m in spec["methods"] if m not in params["methods"]]
        if unknown:
            problems.append(f"experiments.{name}.methods: unknown methods {unknown}")
            continue
        for _, _, run in experiment_runs(params, name):
            try:
                build(TrainConfig, method_settings(params, run.method, run.overrides))
            except ParamsError as err:
                problems.append(f"experiments.{name}: run {run.name}: {err}")
    if problems:
        raise ExperimentError(f"{source} is invalid (profile {params['profile']}):\n" + "\n".join(f"  {p}" for p in problems))
