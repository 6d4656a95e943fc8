"""The papers' qualitative claims, evaluated by one declared rule (workflow/claims.yaml).

A claim is one or more *comparisons*. Each comparison is an effect (a difference paired on
training seed and prompt, or a trend's slope) with a 95 % interval from the two-level
bootstrap of ``diffpo.evidence.intervals``, and a relation the paper asserts:

- ``greater`` (effect > 0): reproduced when the interval lies above 0, contradicted when it
  lies below 0, otherwise inconclusive;
- ``at_least`` (effect >= -margin): reproduced when the interval lies above -margin,
  contradicted when it lies below -margin;
- ``at_most`` (effect <= margin): reproduced when the interval lies below margin,
  contradicted when it lies above margin;
- ``equivalent`` (|effect| <= margin): reproduced when the interval lies inside
  [-margin, margin], contradicted when it lies wholly outside.

A claim is reproduced when every comparison is, contradicted when any is, and otherwise
inconclusive. Effects are read from files under results/ only (``ResultFiles``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from diffpo.errors import UserError
from diffpo.evidence.intervals import METHOD, Estimate, estimate, seed_prompt_matrix

RELATIONS = ("greater", "at_least", "at_most", "equivalent")
VERDICTS = ("reproduced", "contradicted", "inconclusive")
NOT_EVALUATED = "not evaluated"  # these settings do not define what the claim compares
# For a metric where lower means better or more diverse, a comparison flips its sign, so that
# "more diverse" and "better" always read as a positive effect.
LOWER_IS_MORE = {"psnr", "ssim", "degradation"}
RULE = (
    "Each comparison's effect is a difference paired on training seed and prompt (or a trend's slope over "
    f"the varied setting), with a 95 % interval from a {METHOD}. Relations: **greater**: reproduced if the "
    "interval lies above 0, contradicted if below 0; **at least** (≥ −margin): reproduced if above −margin, "
    "contradicted if below −margin; **at most** (≤ margin): reproduced if below margin, contradicted if above "
    "margin; **equivalent** (|effect| ≤ margin): reproduced if inside [−margin, margin], contradicted if wholly "
    "outside. Anything else is inconclusive. A claim of several comparisons is reproduced if all are, "
    "contradicted if any is, inconclusive otherwise. For PSNR, SSIM and the degradation diagnostic (lower means "
    "more diverse or cleaner) the effect's sign is flipped, so a positive effect always means the claimed "
    "direction."
)


class ClaimsError(UserError, ValueError):
    """workflow/claims.yaml names a run, metric or relation the results cannot give."""


class NotEvaluable(ClaimsError):
    """The settings do not define what a claim compares (a reduced registry or experiment, e.g.
    the test configuration's): the claim is reported as not evaluated, with the reason."""


class UnknownRun(NotEvaluable):
    """A claim names a run the settings do not define."""


def verdict(value: Estimate, relation: str, margin: float = 0.0) -> str:
    if relation == "greater":
        return "reproduced" if value.low > 0 else "contradicted" if value.high < 0 else "inconclusive"
    if relation == "at_least":
        return "reproduced" if value.low > -margin else "contradicted" if value.high < -margin else "inconclusive"
    if relation == "at_most":
        return "reproduced" if value.high < margin else "contradicted" if value.low > margin else "inconclusive"
    if relation == "equivalent":
        if -margin < value.low and value.high < margin:
            return "reproduced"
        return "contradicted" if value.low > margin or value.high < -margin else "inconclusive"
    raise ClaimsError(f"unknown relation {relation!r}; known: {', '.join(RELATIONS)}")


def combine(verdicts: list[str]) -> str:
    if verdicts and all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "contradicted" if "contradicted" in verdicts else "inconclusive"


@dataclass
class ResultFiles:
    """Where the evaluator reads each run's results (the workflow's layout under ``root``)."""

    root: Path
    seeds: list[int]
    prompt_set: str

    def scores(self, run: str, prompt_set: str | None = None) -> list[Path]:
        return [self.root / "scores" / run / f"seed{s}" / f"{prompt_set or self.prompt_set}.parquet" for s in self.seeds]

    def diversity(self, run: str, prompt_set: str | None = None) -> list[Path]:
        return [self.root / "diversity" / run / f"seed{s}" / f"{prompt_set or self.prompt_set}.parquet" for s in self.seeds]

    def samples(self, run: str, prompt_set: str | None = None) -> list[Path]:
        return [self.root / "samples" / run / f"seed{s}" / f"{prompt_set or self.prompt_set}.parquet" for s in self.seeds]

    def curve(self, run: str) -> list[Path]:
        return [self.root / "curves" / run / f"seed{s}.parquet" for s in self.seeds]

    def training_log(self, run: str) -> list[Path]:
        return [self.root / "models" / run / f"seed{s}" / "metrics.csv" for s in self.seeds]


def _read(paths: list[Path]) -> pd.DataFrame:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ClaimsError(f"missing result files: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}; "
                          "build them with `snakemake --cores all results/claims.md`")
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def _table(files: ResultFiles, run: str, metric: str, prompt_set: str | None) -> pd.DataFrame:
    """Seeds x prompts of ``metric`` for ``run`` (a score, or a diversity metric)."""
    frame = _read(files.diversity(run, prompt_set) if metric in DIVERSITY else files.scores(run, prompt_set))
    if metric not in frame:
        raise ClaimsError(f"{run}: no metric {metric!r} in its results")
    return seed_prompt_matrix(frame, metric)


DIVERSITY = {"rmse", "psnr", "ssim", "e1", "e2", "vendi", "semantic_entropy"}


def _sign(metric: str) -> float:
    return -1.0 if metric in LOWER_IS_MORE else 1.0


def difference(files: ResultFiles, a: str, b: str, metric: str, prompt_set: str | None = None) -> Estimate:
    """a minus b on the same (seed, prompt) cells, signed so that positive is the claimed direction."""
    ta, tb = _table(files, a, metric, prompt_set), _table(files, b, metric, prompt_set)
    seeds, prompts = ta.index.intersection(tb.index), ta.columns.intersection(tb.columns)
    return estimate(_sign(metric) * (ta.loc[seeds, prompts] - tb.loc[seeds, prompts]).to_numpy())


def trend(files: ResultFiles, runs: list[str], xs: list[float], metric: str, prompt_set: str | None = None) -> Estimate:
    """The least-squares slope of ``metric`` against x per (seed, prompt) cell, with its interval."""
    tables = [_table(files, r, metric, prompt_set) for r in runs]
    seeds, prompts = tables[0].index, tables[0].columns
    for t in tables[1:]:
        seeds, prompts = seeds.intersection(t.index), prompts.intersection(t.columns)
    values = np.stack([t.loc[seeds, prompts].to_numpy() for t in tables])  # x, seed, prompt
    x = np.asarray(xs, dtype=float)
    centred = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    return estimate(_sign(metric) * np.einsum("x,xsp->sp", centred, values))


def along_training(files: ResultFiles, run: str, metric: str, start: str = "first", end: str = "last") -> Estimate:
    """A score at the last snapshot minus at the first (or at the best) of a run's curve."""
    frame = _read(files.curve(run))
    steps = sorted(frame["step"].unique())

    def at(which: str) -> pd.DataFrame:
        if which in ("first", "last"):
            return seed_prompt_matrix(frame[frame["step"] == (steps[0] if which == "first" else steps[-1])], metric)
        if which == "best":  # each seed's best snapshot by its mean over prompts
            per_step = frame.groupby(["seed", "step"])[metric].mean().unstack("step")
            best = per_step.idxmax(axis=1)
            cells = [seed_prompt_matrix(frame[(frame["seed"] == s) & (frame["step"] == t)], metric) for s, t in best.items()]
            return pd.concat(cells)
        raise ClaimsError(f"along training: unknown point {which!r}; use first, last or best")

    a, b = at(end), at(start)
    prompts = a.columns.intersection(b.columns)
    return estimate(_sign(metric) * (a.loc[:, prompts] - b.loc[a.index, prompts]).to_numpy())


def training_log_change(files: ResultFiles, run: str, column: str) -> Estimate:
    """The mean of a training log's column over the last third of the steps minus the first third
    (one cell per seed: an interval over seeds only)."""
    changes = []
    for path in files.training_log(run):
        if not path.exists():
            raise ClaimsError(f"missing training log {path}")
        log = pd.read_csv(path)
        if column not in log:
            raise ClaimsError(f"{path}: no column {column!r}")
        third = max(1, len(log) // 3)
        changes.append(log[column].iloc[-third:].mean() - log[column].iloc[:third].mean())
    return estimate(np.asarray(changes, dtype=float).reshape(-1, 1))


EFFECTS: dict[str, Callable] = {"difference": difference, "trend": trend, "along_training": along_training,
                                "training_log": training_log_change}


# ---------------------------------------------------------------- claims.yaml
@dataclass
class Comparison:
    kind: str            # a key of EFFECTS
    description: str
    relation: str
    margin: float
    runs: list[str]
    compute: Callable[[ResultFiles], Estimate]
    needs: Callable[[ResultFiles], list[Path]]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _run(params: dict, ref) -> str:
    """A run named in claims.yaml: a method, ``base``, or {experiment, method?, value?}."""
    if isinstance(ref, str):
        if ref != "base" and ref not in params["methods"]:
            raise UnknownRun(f"unknown run {ref!r}: not base nor a method of params.yaml")
        return ref
    from diffpo.settings.experiments import experiment_runs

    if ref.get("experiment") not in (params.get("experiments") or {}):
        raise UnknownRun(f"unknown experiment in {ref!r}")
    runs = [(m, v, r) for m, v, r in experiment_runs(params, ref["experiment"])
            if ref.get("method", m) == m and ("value" not in ref or v == ref["value"])]
    if len(runs) != 1:
        raise (UnknownRun if not runs else ClaimsError)(f"{ref!r} names {len(runs)} runs of experiment {ref['experiment']}; name one "
                          "(add method: or value:)")
    return runs[0][2].name


def load_claims(path: Path) -> list[dict]:
    """The claims of ``path``; each needs an id, a paper and a text, and ids are unique."""
    from diffpo.settings.params import read_yaml

    document = read_yaml(Path(path)) if Path(path).is_file() else None
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        raise ClaimsError(f"{path}: expected a mapping with a list `claims`")
    seen = set()
    for i, claim in enumerate(document["claims"]):
        missing = [k for k in ("id", "paper", "text") if k not in claim]
        if missing:
            raise ClaimsError(f"{path}: claims[{i}] lacks {missing}")
        if claim["id"] in seen:
            raise ClaimsError(f"{path}: claim id {claim['id']!r} given twice")
        seen.add(claim["id"])
    return document["claims"]


def comparisons(claim: dict, params: dict) -> list[Comparison]:
    """A claim's comparisons, lists in a, b, metric and prompt_set expanded into their product."""
    out = []
    default_set = params["sample"]["prompt_set"]
    for spec in claim.get("compare", []):
        for b_ref in _as_list(spec["b"]):
            for metric in _as_list(spec.get("metric", "gt_preference")):
                for prompt_set in _as_list(spec.get("prompt_set", default_set)):
                    a, b = _run(params, spec["a"]), _run(params, b_ref)
                    out.append(Comparison(
                        "difference", f"{a} − {b}, {metric}, {prompt_set}", spec["relation"], spec.get("margin", 0.0),
                        [a, b], lambda f, a=a, b=b, m=metric, s=prompt_set: difference(f, a, b, m, s),
                        lambda f, a=a, b=b, m=metric, s=prompt_set: [
                            p for r in (a, b) for p in (f.diversity(r, s) if m in DIVERSITY else f.scores(r, s))]))
    for spec in _as_list(claim.get("trend", [])):
        from diffpo.settings.experiments import experiment_runs

        if spec["experiment"] not in (params.get("experiments") or {}):
            raise UnknownRun(f"unknown experiment {spec['experiment']!r}")
        entries = experiment_runs(params, spec["experiment"])
        runs = [r.name for _, _, r in entries]
        xs = list(range(len(entries))) if spec.get("x", "value") == "position" else [float(v) for _, v, _ in entries]
        if len(set(xs)) < 2:  # a slope needs two settings (a reduced experiment, e.g. the test configuration's)
            raise NotEvaluable(f"experiment {spec['experiment']!r} runs {len(set(xs))} value(s); a trend needs two or more")
        for metric in _as_list(spec.get("metric", "gt_preference")):
            out.append(Comparison(
                "trend", f"slope of {metric} against {spec['experiment']} ({spec.get('x', 'value')})",
                spec["relation"], spec.get("margin", 0.0), runs,
                lambda f, r=runs, x=xs, m=metric: trend(f, r, x, m),
                lambda f, r=runs, m=metric: [p for run in r for p in (f.diversity(run) if m in DIVERSITY else f.scores(run))]))
    for spec in _as_list(claim.get("along_training", [])):
        run = _run(params, spec["run"])
        for metric in _as_list(spec.get("metric", "gt_preference")):
            start, end = spec.get("start", "first"), spec.get("end", "last")
            out.append(Comparison(
                "along_training", f"{run}: {metric} at the {end} snapshot − at the {start}", spec["relation"],
                spec.get("margin", 0.0), [run], lambda f, r=run, m=metric, s=start, e=end: along_training(f, r, m, s, e),
                lambda f, r=run: f.curve(r)))
    for spec in _as_list(claim.get("training_log", [])):
        run = _run(params, spec["run"])
        out.append(Comparison(
            "training_log", f"{run}: {spec['column']}, last third of training − first third (over seeds)",
            spec["relation"], spec.get("margin", 0.0), [run],
            lambda f, r=run, c=spec["column"]: training_log_change(f, r, c), lambda f, r=run: f.training_log(r)))
    if not out:
        raise ClaimsError(f"claim {claim.get('id')!r} has no comparison (compare, trend, along_training, training_log)")
    for c in out:
        if c.relation not in RELATIONS:
            raise ClaimsError(f"claim {claim.get('id')!r}: unknown relation {c.relation!r}; known: {', '.join(RELATIONS)}")
    return out


def required_files(claims: list[dict], params: dict, files: ResultFiles) -> list[str]:
    """Every result file the claims read (the workflow's inputs of results/claims.csv)."""
    paths = [str(p) for claim in claims for c in _evaluable(claim, params) for p in c.needs(files)]
    return list(dict.fromkeys(paths))


def _evaluable(claim: dict, params: dict) -> list[Comparison]:
    """A claim's comparisons, or none where it names a run the settings do not define."""
    try:
        return comparisons(claim, params)
    except NotEvaluable:
        return []


def evaluate_claims(claims: list[dict], params: dict, files: ResultFiles) -> pd.DataFrame:
    """One row per comparison: effect, interval, its verdict, and the verdict of its claim."""
    rows = []
    for claim in claims:
        try:
            found = comparisons(claim, params)
        except NotEvaluable as reason:
            rows.append({"claim": claim["id"], "paper": claim["paper"], "text": claim["text"],
                         "comparison": f"not evaluated: {reason}", "verdict": NOT_EVALUATED,
                         "claim_verdict": NOT_EVALUATED})
            continue
        parts = []
        for c in found:
            value = c.compute(files)
            parts.append({"claim": claim["id"], "paper": claim["paper"], "text": claim["text"],
                          "comparison": c.description, "relation": c.relation, "margin": c.margin,
                          "effect": value.mean, "low": value.low, "high": value.high, "n_seeds": value.n_seeds,
                          "n_prompts": value.n_prompts, "verdict": verdict(value, c.relation, c.margin),
                          "runs": " ".join(c.runs)})
        overall = combine([p["verdict"] for p in parts])
        rows += [{**p, "claim_verdict": overall} for p in parts]
    return pd.DataFrame(rows)


def claims_markdown(table: pd.DataFrame, seeds: list[int], prompt_set: str) -> str:
    lines = ["# The papers' claims, tested", "",
             f"Evaluated on the results of {len(seeds)} training seeds ({', '.join(map(str, seeds))}); prompt set "
             f"`{prompt_set}` unless a comparison names another. Built by `snakemake --cores all results/claims.md` "
             "from workflow/claims.yaml; never edited by hand.", "", f"**Rule.** {RULE}", ""]
    summary = table.drop_duplicates("claim")
    counts = summary["claim_verdict"].value_counts()
    skipped = f", {counts[NOT_EVALUATED]} not evaluated (the settings do not define what they compare)" if NOT_EVALUATED in counts else ""
    lines += ["**Summary:** " + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS) + skipped + ".", ""]
    lines += ["| Paper | Claim | Verdict |", "|:--|:--|:--|"]
    lines += [f"| {r['paper']} | {r['text']} | **{r['claim_verdict']}** |" for r in summary.to_dict("records")]
    lines += ["", "## Comparisons", ""]
    for claim_id, group in table.groupby("claim", sort=False):
        first = group.iloc[0]
        lines += [f"### {first['text']} — {first['claim_verdict']}", "", f"{first['paper']}; id `{claim_id}`.", "",
                  "| Comparison | Relation | Effect [95 % interval] | Seeds × prompts | Verdict |",
                  "|:--|:--|:--|:--|:--|"]
        for r in group.to_dict("records"):
            if r["verdict"] == NOT_EVALUATED:
                lines.append(f"| {r['comparison']} | | | | {NOT_EVALUATED} |")
                continue
            relation = r["relation"].replace("_", " ") + (f" (margin {r['margin']:g})" if r["margin"] else "")
            lines.append(f"| {r['comparison']} | {relation} | {r['effect']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] "
                         f"| {r['n_seeds']} × {r['n_prompts']} | {r['verdict']} |")
        lines.append("")
    return "\n".join(lines)
