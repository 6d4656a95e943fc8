"""Reports and the workflow's bookkeeping: tables, claims, figures, the benchmark and the compute
budget, dvc.yaml and dvc.lock, the rendered documents and the timings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from diffpo.cli import _params, _set_torch_threads
from diffpo.cli.parser import DVC_TARGETS, named_path, stage


TABLES = {
    "table1": ("Table 1: preference optimisation methods",
               "Paper: SePPO Table 1 (SD-1.5, Pick-a-Pic validation_unique)"),
    "table2": ("Table 2: out-of-distribution prompts",
               "Paper: SePPO Table 2 (SD-1.5; the HPSv2 benchmark's prompts and PartiPrompts: in the tiny profile, "
               "prompts of attribute combinations the training data never pairs, and other phrasings). Diffusion-RPO, "
               "a row of the paper's table, is not one of diffpo's methods"),
    "controls": ("Controls of Table 1: more training, and data without preferences",
                 "Paper: SePPO Table 1's numbers for the base and SFT^w; the controls are diffpo's own, with no paper "
                 "row. A preference method shows the value of the preference signal only where it beats the row of data "
                 "without preferences too"),
    "table4": ("Table 4: SePPO ablations (AAF and reference strategy)",
               "Paper: SePPO Table 4 (SD-1.5, Pick-a-Pic validation_unique)"),
    "see_dpo": ("SEE-DPO: base methods and their self-entropy-enhanced variants",
                "Paper: SEE-DPO's tables are not available to this project, only relative claims (SEE-SPO vs SPO: "
                "PickScore +1.8 %, HPS +7.9 %, ImageReward +206.3 %; every SEE model more diverse on all six "
                "metrics), so no paper cells. Diversity: between the images of one prompt (docs/metrics.md); "
                "↑/↓: the direction that means more diverse"),
}


def cmd_table(args):
    import pandas as pd

    from diffpo.evidence.tables import headline, score_table, write_table
    from diffpo.files import atomic_write_text

    rows = list(dict.fromkeys(name for name, _ in args.scores))
    p = _params(args, "table", table=args.table, rows=rows)
    diversity = _grouped(args.diversity) if args.diversity else None
    labels = {"base": "Base model", **{m: p["methods"][m]["label"] for m in rows if m != "base"}}
    prompt_sets = p["tables"][args.table].get("prompt_sets")
    if prompt_sets:  # one block of rows per prompt set: a score file's set is its name (SET.parquet)
        from diffpo.errors import UserError

        unknown = sorted({Path(f).name for _, f in args.scores if Path(f).stem not in prompt_sets})
        if unknown:
            raise UserError(f"--scores: {', '.join(unknown)} name none of tables.{args.table}.prompt_sets "
                            f"({', '.join(prompt_sets)}): a score file's name is its prompt set, SET.parquet")
        if args.diversity:
            raise UserError(f"--diversity: table {args.table} reports several prompt sets and has no diversity columns")
        table = pd.concat([score_table(_grouped([(n, f) for n, f in args.scores if Path(f).stem == prompt_set]), labels,
                                       args.table, prompt_set=prompt_set) for prompt_set in prompt_sets],
                          ignore_index=True)
    else:
        table = score_table(_grouped(args.scores), labels, args.table, diversity_files=diversity)
    title, paper = TABLES[args.table]
    note = (
        "Δ is paired with the base model on the same training seeds, prompts and evaluation noise. In the tiny profile, GT columns are the world's hidden raters and "
        "the learned-scorer columns are stand-ins of the same families trained in the pipeline, so their scale "
        f"is not the paper's. {paper}; an empty paper cell means the paper reports no number for that row. Scorers:"
    )
    write_table(table, Path(args.csv), Path(args.md), title, note)
    rows = {"@".join(filter(None, [r["method"], r.get("prompt_set")])): r for r in table.to_dict("records")}
    atomic_write_text(args.json, json.dumps(headline(rows), indent=2) + "\n")
    print(Path(args.md).read_text())


def cmd_claims(args):
    p = _params(args, "claims")
    from diffpo.evidence.claims import ResultFiles, claims_markdown, evaluate_claims, load_claims
    from diffpo.files import atomic_write_text

    files = ResultFiles(Path(args.results), p["seeds"], p["sample"]["prompt_set"])
    table = evaluate_claims(load_claims(Path(args.claims)), p, files)
    atomic_write_text(args.csv, table.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(args.md, claims_markdown(table, p["seeds"], p["sample"]["prompt_set"]))
    if args.json:  # for `dvc metrics show` / `dvc metrics diff`: each claim's verdict and the counts
        verdicts = dict(zip(table["claim"], table["claim_verdict"]))
        counts = {v: sum(1 for x in verdicts.values() if x == v) for v in dict.fromkeys(verdicts.values())}
        atomic_write_text(args.json, json.dumps({"counts": counts, "verdicts": verdicts}, indent=2) + "\n")
    print(Path(args.md).read_text())


def _grouped(named_paths) -> dict[str, list[Path]]:
    """METHOD=PATH arguments, one per training seed, grouped by method (in order)."""
    out: dict[str, list[Path]] = {}
    for name, path in named_paths:
        out.setdefault(name, []).append(path)
    return out


def cmd_figures(args):
    from diffpo.evidence.tables import plot_training_curves

    methods = [name for name, _ in args.metrics]
    p = _params(args, "figures", methods=methods)
    labels = {m: p["methods"][m]["label"] for m in methods}
    files = dict(args.metrics)
    plot_training_curves(files, labels, Path(args.out))


def cmd_figure(args):
    p = _params(args, "figure")
    from diffpo.evidence.claims import ResultFiles
    from diffpo.evidence.figures import draw

    files = ResultFiles(Path(args.results), p["seeds"], p["sample"]["prompt_set"])
    draw(args.figure, p, files, Path(args.out))
    print(f"wrote {args.out}.png, {args.out}.pdf and its data {args.out}.csv")


def cmd_benchmark(args):
    from diffpo.settings.params import load_params

    params = load_params(args.params)
    _set_torch_threads()
    from diffpo.pipeline.benchmark import report, run

    figures = run(params, repeats=args.repeats, source=args.source, split=args.split)
    if args.out:
        from diffpo.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(figures, indent=2) + "\n")
    print(report(figures))


def cmd_compute_budget(args):
    from diffpo.pipeline.budget import compute_budget
    from diffpo.settings.params import load_params, read_yaml
    from diffpo.files import atomic_write_text

    text = compute_budget(load_params(args.params, profile="paper"), json.loads(Path(args.benchmark).read_text()),
                          read_yaml(Path(args.assumptions)), args.benchmark)
    atomic_write_text(args.out, text)
    print(text)


def cmd_dvc_yaml(args):
    from diffpo.pipeline.dvc import dvc_yaml

    text = dvc_yaml(Path(args.root).resolve(), args.targets)
    if args.check:
        current = (Path(args.root) / "dvc.yaml").read_text()
        if current != text:
            sys.exit("dvc.yaml is out of date: run `python -m diffpo dvc-yaml > dvc.yaml`")
        print("dvc.yaml is current")
    else:
        sys.stdout.write(text)


def cmd_dvc_commit(args):
    from diffpo.pipeline.dvc import dvc_commit

    for warning in dvc_commit(Path(args.root), args.targets):
        print(f"warning: {warning}", file=sys.stderr)


def cmd_render_docs(args):
    from diffpo.evidence.rendering import render_documents

    stale = render_documents(Path(args.root), check=args.check)
    if args.check and stale:
        sys.exit(f"out of date with results/: {', '.join(stale)}; run `python -m diffpo render-docs`")
    print("documents agree with results/" if args.check else f"rendered: {', '.join(stale) or 'nothing changed'}")


def cmd_timings(args):
    from diffpo.files import atomic_write_text
    from diffpo.evidence.rendering import timings_markdown

    # The latest log of a run that executed jobs (building a DAG, as dvc-commit does, logs too).
    logs = [log for log in sorted(Path(args.root, ".snakemake/log").glob("*.snakemake.log")) if "Finished jobid" in log.read_text()]
    chosen = [Path(log) for log in args.snakemake_log] if args.snakemake_log else logs[-1:]
    if not chosen:
        sys.exit("no Snakemake log in .snakemake/log: run the workflow first")
    atomic_write_text(args.out, timings_markdown(Path(args.root), chosen))
    print(Path(args.out).read_text())


# ---------------------------------------------------------------- options (diffpo.cli.parser)
def options_table(p):
    """tabulate every row's scores beside the paper's numbers"""
    stage(p, ("--csv", "the table to write (results/TABLE.csv)"), ("--md", "the same as Markdown (results/TABLE.md)"),
          ("--json", "the headline to write for DVC metrics: each row's change against the base with its "
                     "interval, on the ground truth or PickScore (results/metrics/TABLE.json)"))
    p.add_argument("--table", required=True, choices=sorted(TABLES), help="which table")
    p.add_argument("--scores", nargs="+", required=True, type=named_path, metavar="METHOD=PATH",
                   help="each row's per-image scores (from evaluate), one METHOD=PATH per training seed (and, "
                        "for a table of several prompt sets, per set: the file's name, SET.parquet); "
                        "METHOD base is the base model")
    p.add_argument("--diversity", nargs="+", type=named_path, metavar="METHOD=PATH",
                   help="each row's per-prompt diversity (from evaluate; the SEE-DPO table), one per seed")


def options_claims(p):
    """evaluate the papers' claims (workflow/claims.yaml) on the results, by the declared rule"""
    stage(p, ("--csv", "every comparison's effect, interval and verdict (results/claims.csv)"),
          ("--md", "the report (results/claims.md)"))
    p.add_argument("--claims", default="workflow/claims.yaml", help="the claims (default: %(default)s)")
    p.add_argument("--results", default="results", help="the results folder read (default: %(default)s)")
    p.add_argument("--json", help="each claim's verdict and the counts, for DVC metrics (results/metrics/claims.json)")


def options_figures(p):
    """plot every method's training curves"""
    stage(p, ("--out", "the figure to write, without suffix: .png and .pdf (results/figures/training_curves)"))
    p.add_argument("--metrics", nargs="+", required=True, type=named_path, metavar="METHOD=PATH",
                   help="each method's metrics.csv (from train)")


def options_figure(p):
    """draw one figure of the papers from files under results/ only (workflow/artifacts.yaml)"""
    stage(p, ("--figure", "the figure's id, e.g. seppo_fig2 (diffpo.evidence.figures.FIGURES; workflow/artifacts.yaml)"),
          ("--out", "the figure to write, without suffix: .png, .pdf and its data .csv (results/figures/ID)"))
    p.add_argument("--results", default="results", help="the results folder read (default: %(default)s)")


def options_benchmark(p):
    """print the speed and memory of training steps and sampling"""
    p.add_argument("--params", default="params.yaml", help="the settings file (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=10, help="timed repetitions of each step (default: %(default)s)")
    p.add_argument("--source", type=Path, help="a Pick-a-Pic-layout folder whose JPEG bytes per pair to measure")
    p.add_argument("--split", default="train", help="the split of --source to measure (default: %(default)s)")
    p.add_argument("--out", help="also write every figure to this JSON file (what compute-budget reads)")
    p.set_defaults(log=None)


def options_compute_budget(p):
    """write the GPU-hours and storage to reproduce each paper table at paper scale"""
    p.add_argument("--params", default="params.yaml", help="the settings file; its paper profile is read "
                   "(default: %(default)s)")
    p.add_argument("--benchmark", required=True, help="the figures of `diffpo benchmark --out`")
    p.add_argument("--assumptions", default="config/compute_budget.yaml",
                   help="the declared paper-scale sizes and GPU figures (default: %(default)s)")
    p.add_argument("--out", default="results/compute_budget.md", help="where to write the budget "
                   "(default: %(default)s)")
    p.set_defaults(log=None)


def options_dvc_yaml(p):
    """print dvc.yaml generated from the Snakemake DAG"""
    p.add_argument("--root", default=".", help="the project root (default: the current folder)")
    p.add_argument("--targets", nargs="+", default=DVC_TARGETS, help="the Snakemake targets (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="fail if the committed dvc.yaml differs")
    p.set_defaults(log=None)


def options_dvc_commit(p):
    """record Snakemake's current outputs in dvc.lock (Snakemake runs it after a run)"""
    p.add_argument("--root", default=".", help="the project root (default: the current folder)")
    p.add_argument("--targets", nargs="+", default=DVC_TARGETS, help="the Snakemake targets (default: %(default)s)")
    p.add_argument("--log", help="also write everything printed to this file")


def options_render_docs(p):
    """render the README's and docs' result blocks from results/"""
    p.add_argument("--root", default=".", help="the project root (default: the current folder)")
    p.add_argument("--check", action="store_true", help="fail if a document disagrees with results/")
    p.set_defaults(log=None)


def options_timings(p):
    """summarise a Snakemake run's wall time and its jobs' benchmarks"""
    p.add_argument("--root", default=".", help="the project root (default: the current folder)")
    p.add_argument("--snakemake-log", nargs="+",
                   help="the run's log, or the logs of a run made in several parts (their wall times add up; "
                        "default: the latest in .snakemake/log)")
    p.add_argument("--out", default="results/timings.md", help="where to write the summary (default: %(default)s)")
    p.set_defaults(log=None)
