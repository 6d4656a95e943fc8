"""The command line's parser: every subcommand and option, with its help (``python -m diffpo -h``).

What each subcommand does is in the cli package: subcommand NAME runs ``cmd_NAME`` (``-`` as
``_``) of the one module of diffpo/cli/ that defines it, the convention ``diffpo.workflow.code_files``
relies on. Paths in the help are the workflow's (tiny profile); README.md shows every stage's
command as Snakemake runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

DESCRIPTION = ("One subcommand per workflow stage; Snakemake runs them (README.md shows each stage's command). "
               "Each reads only its stage's keys of params.yaml and writes its outputs whole or not at all.")
# reward_models.NAMES (a test keeps them equal), repeated here because reward_models imports torch
STAND_INS = ("pickscore", "hpsv2", "imagereward", "aesthetic")
# What dvc.yaml declares: the default target (every artifact) and the tuning sweep, its own target.
DVC_TARGETS = ["all", "results/tuning/selection.csv"]


def named_path(text: str) -> tuple[str, Path]:
    """An argparse type for METHOD=PATH: the pair, or an error saying what is expected."""
    name, equals, path = text.partition("=")
    if not (name and equals and path):
        raise argparse.ArgumentTypeError(
            f"expected METHOD=PATH, e.g. sft_w=results/scores/sft_w/validation_unique.parquet; got {text!r}")
    return name, Path(path)


def build_parser(command: Callable[[str], Callable], tables: list[str]) -> argparse.ArgumentParser:
    """The parser; ``command(name)`` is the function subcommand ``name`` runs, ``tables`` the --table choices."""
    parser = argparse.ArgumentParser(prog="diffpo", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true",
                       help="show the traceback of an error in the input (settings, data, missing files)")
    stage = argparse.ArgumentParser(add_help=False, parents=[debug])
    stage.add_argument("--params", default="params.yaml", help="the settings file (default: %(default)s)")
    stage.add_argument("--log", help="also write everything printed to this file (by the main process only, "
                                     "under `accelerate launch`)")

    def add(name: str, help: str, *options: tuple[str, str], parents=(stage,)) -> argparse.ArgumentParser:
        """Subcommand ``name``; ``options``: its required (flag, help) pairs."""
        p = sub.add_parser(name, help=help, description=help, parents=list(parents))
        for flag, text in options:
            p.add_argument(flag, required=True, help=text)
        p.set_defaults(func=command(name))
        return p

    text_encoder = ("--text-encoder", "the text encoder: a folder (tiny: results/base/text) or a hub id")
    vae = ("--vae", "the autoencoder: a folder (tiny: results/base/autoencoder) or a hub id")
    base = ("--base", "the base Stable Diffusion pipeline: a folder (tiny: results/base/pipeline) or a hub id")
    work = ("--work", "folder of checkpoints, resumed when rerun with the same settings and data "
                      "(results/checkpoints/NAME)")
    stand_ins = "folder of the tiny profile's trained stand-in scorers (results/scorers)"

    add("world", "make the tiny profile's synthetic Pick-a-Pic: parquet shards, prompt sets, world.json",
        ("--out", "the folder to write (results/world)"))
    add("corpus", "make the tiny base model's own pre-training corpus (web-style images, loose captions)",
        ("--out", "the folder to write (results/corpus)"))
    add("prepare", "remove ties and unusable rows (counted by reason) and put the winner first",
        ("--pairs", "the prepared pair index to write (results/data/train_pairs.parquet)"),
        ("--manifest", "the counts to write: rows in, ties, rows skipped by reason, pairs out "
                       "(results/data/manifest.json)"))
    add("pretrain-text-encoder", "pre-train the tiny CLIP text encoder (with a small image tower, contrastively)",
        ("--out", "the folder to write (results/base/text)"))
    add("pretrain-vae", "pre-train the tiny autoencoder", ("--out", "the folder to write (results/base/autoencoder)"))
    add("encode", "encode every prepared pair once: VAE latents and prompt embeddings, shared by every method",
        ("--pairs", "the prepared pair index (from prepare)"), text_encoder, vae,
        ("--out", "the cache folder to write (results/cache)"))
    add("encode-corpus", "encode the pre-training corpus once (the base UNet's and the plateau control's data)",
        text_encoder, vae, ("--out", "the cache folder to write (results/cache_corpus)"))
    add("pretrain-unet", "pre-train the tiny UNet on the encoded corpus; write the whole pipeline folder",
        ("--cache", "the encoded corpus (results/cache_corpus)"), text_encoder, vae, work,
        ("--out", "the pipeline folder to write (results/base/pipeline)"),
        ("--metrics", "the per-step metrics to write (results/base/metrics.csv)"))
    train = add("train", "train one method of the registry (params.yaml methods:) or an experiment's variant run",
                ("--method", "the run: a name under methods: in params.yaml, or a variant METHOD__SETTINGVALUE "
                             "an experiment declares (params.yaml experiments:)"), base,
                ("--cache", "the encoded pairs (results/cache)"), work,
                ("--out", "the trained UNet folder to write (results/models/METHOD/seedSEED/unet)"),
                ("--metrics", "the per-step metrics to write (results/models/METHOD/seedSEED/metrics.csv)"))
    train.add_argument("--seed", type=int, required=True,
                       help="the training seed (one of params.yaml seeds): data order, noise, timesteps, LoRA init")
    train.add_argument("--snapshots", help="a folder to write the run's snapshots to (results/models/RUN/seedSEED/"
                                           "snapshots): the weights at every checkpoint with --keep-snapshots, and "
                                           "manifest.json listing their steps")
    train.add_argument("--keep-snapshots", action="store_true",
                       help="keep the policy at every checkpoint, for scores along training (experiments.curves)")
    judges = "folder of the tiny profile's trained scorers, judges of the rollouts (default: %(default)s)"
    train.add_argument("--scorers", default="results/scorers", help=judges)
    tune = add("tune", "train one grid point of a method's tuning grid (one seed) and score it on the tuning prompts",
               ("--method", "the tuned method: a name under tuning.grids in params.yaml"), base,
               ("--cache", "the encoded pairs (results/cache)"), work,
               ("--out", "the grid point's result to write (results/tuning/METHOD/POINT.json)"))
    tune.add_argument("--point", type=int, required=True, help="the grid point: its index in the grid's product")
    tune.add_argument("--scorers", default="results/scorers", help=judges)
    tune.add_argument("--origin-results", nargs="*", default=[], metavar="JSON",
                      help="the grid results of the method named by the grid's `from:` (its selection is the start)")
    select = add("tune-select", "select each tuned method's grid point by the declared rule",
                 ("--csv", "every grid point's score and the selection (results/tuning/selection.csv)"),
                 ("--md", "the same as Markdown (results/tuning/selection.md)"))
    select.add_argument("--results", nargs="+", required=True, metavar="JSON", help="every grid point's result (from tune)")
    curve = add("curve", "sample and score a run's snapshots along training (and the base model as step 0)", base,
                 ("--snapshots", "the run's snapshots (results/models/RUN/seedSEED/snapshots)"),
                 ("--out", "the per-image scores by step to write (results/curves/RUN/seedSEED.parquet)"))
    curve.add_argument("--seed", type=int, required=True, help="the run's training seed: its evaluation noise")
    curve.add_argument("--stand-ins", help=stand_ins)
    scorer = add("train-scorer", "train a tiny stand-in of a learned reward model on the world's raters",
                 text_encoder, ("--out", "the folder to write (results/scorers/SCORER)"))
    scorer.add_argument("--scorer", required=True, choices=STAND_INS, help="the reward model to stand in for")
    add("train-step-scorer", "train SPO's step-aware preference model (tiny profile)",
        ("--pickscore", "the trained PickScore stand-in (results/scorers/pickscore)"), base,
        ("--out", "the folder to write (results/scorers/step_aware)"))
    evaluate = add("evaluate", "sample a model on a prompt set, then score the images with every scorer and "
                               "the diversity of each prompt's images", base,
                   ("--prompt-set", "the prompt set: a name under prompt_sets: in params.yaml"),
                   ("--samples", "the samples to write, PNG bytes (results/samples/MODEL/seedSEED/PROMPT_SET.parquet)"),
                   ("--scores", "the per-image scores to write (results/scores/MODEL/seedSEED/PROMPT_SET.parquet)"),
                   ("--diversity", "the per-prompt diversity to write (results/diversity/MODEL/seedSEED/PROMPT_SET.parquet)"))
    evaluate.add_argument("--unet", help="a trained UNet folder replacing the base's (results/models/METHOD/seedSEED/unet)")
    evaluate.add_argument("--seed", type=int, default=0,
                          help="the training seed of the model: the evaluation noise is drawn for it and each prompt, "
                               "so every model of one seed (the base too) sees the same noise (default: %(default)s)")
    evaluate.add_argument("--stand-ins", help=stand_ins)
    add("world-stats", "the tiny world's facts that need the base model: data vs base, disjointness, degradations",
        ("--scores", "the base model's per-image scores (results/scores/base/validation_unique.parquet)"),
        ("--diversity", "the base model's per-prompt diversity (results/diversity/base/validation_unique.parquet)"),
        ("--out", "the facts to write (results/world_stats.json)"))
    accuracy = add("scorer-accuracy", "each scorer's agreement with held-out rated pairs",
                   ("--csv", "the table to write (results/scorer_accuracy.csv)"),
                   ("--md", "the same as Markdown (results/scorer_accuracy.md)"))
    accuracy.add_argument("--stand-ins", help=stand_ins)
    table = add("table", "tabulate every row's scores beside the paper's numbers",
                ("--csv", "the table to write (results/TABLE.csv)"), ("--md", "the same as Markdown (results/TABLE.md)"),
                ("--json", "the summary metrics to write (results/metrics/TABLE.json)"))
    table.add_argument("--table", required=True, choices=tables, help="which table")
    table.add_argument("--scores", nargs="+", required=True, type=named_path, metavar="METHOD=PATH",
                       help="each row's per-image scores (from evaluate), one METHOD=PATH per training seed (and, "
                            "for a table of several prompt sets, per set: the file's name, SET.parquet); "
                            "METHOD base is the base model")
    table.add_argument("--diversity", nargs="+", type=named_path, metavar="METHOD=PATH",
                       help="each row's per-prompt diversity (from evaluate; the SEE-DPO table), one per seed")
    claims = add("claims", "evaluate the papers' claims (workflow/claims.yaml) on the results, by the declared rule",
                 ("--csv", "every comparison's effect, interval and verdict (results/claims.csv)"),
                 ("--md", "the report (results/claims.md)"))
    claims.add_argument("--claims", default="workflow/claims.yaml", help="the claims (default: %(default)s)")
    claims.add_argument("--results", default="results", help="the results folder read (default: %(default)s)")
    claims.add_argument("--json", help="each claim's verdict and the counts, for DVC metrics (results/metrics/claims.json)")
    figures = add("figures", "plot every method's training curves",
                  ("--out", "the figure to write, without suffix: .png and .pdf (results/figures/training_curves)"))
    figures.add_argument("--metrics", nargs="+", required=True, type=named_path, metavar="METHOD=PATH",
                         help="each method's metrics.csv (from train)")
    figure = add("figure", "draw one figure of the papers from files under results/ only (workflow/artifacts.yaml)",
                 ("--figure", "the figure's id, e.g. seppo_fig2 (diffpo.figures.FIGURES; workflow/artifacts.yaml)"),
                 ("--out", "the figure to write, without suffix: .png, .pdf and its data .csv (results/figures/ID)"))
    figure.add_argument("--results", default="results", help="the results folder read (default: %(default)s)")
    bench = add("benchmark", "print the speed and memory of training steps and sampling", parents=(debug,))
    bench.add_argument("--params", default="params.yaml", help="the settings file (default: %(default)s)")
    bench.add_argument("--repeats", type=int, default=10, help="timed repetitions of each step (default: %(default)s)")
    bench.add_argument("--source", type=Path, help="a Pick-a-Pic-layout folder whose JPEG bytes per pair to measure")
    bench.add_argument("--split", default="train", help="the split of --source to measure (default: %(default)s)")
    bench.add_argument("--out", help="also write every figure to this JSON file (what compute-budget reads)")
    bench.set_defaults(log=None)
    budget = add("compute-budget", "write the GPU-hours and storage to reproduce each paper table at paper scale",
                 parents=(debug,))
    budget.add_argument("--params", default="params.yaml", help="the settings file; its paper profile is read "
                        "(default: %(default)s)")
    budget.add_argument("--benchmark", required=True, help="the figures of `diffpo benchmark --out`")
    budget.add_argument("--assumptions", default="config/compute_budget.yaml",
                        help="the declared paper-scale sizes and GPU figures (default: %(default)s)")
    budget.add_argument("--out", default="results/compute_budget.md", help="where to write the budget "
                        "(default: %(default)s)")
    budget.set_defaults(log=None)
    dvc = add("dvc-yaml", "print dvc.yaml generated from the Snakemake DAG", parents=(debug,))
    dvc.add_argument("--root", default=".", help="the project root (default: the current folder)")
    dvc.add_argument("--targets", nargs="+", default=DVC_TARGETS, help="the Snakemake targets (default: %(default)s)")
    dvc.add_argument("--check", action="store_true", help="fail if the committed dvc.yaml differs")
    dvc.set_defaults(log=None)
    commit = add("dvc-commit", "record Snakemake's current outputs in dvc.lock (Snakemake runs it after a run)",
                 parents=(debug,))
    commit.add_argument("--root", default=".", help="the project root (default: the current folder)")
    commit.add_argument("--targets", nargs="+", default=DVC_TARGETS, help="the Snakemake targets (default: %(default)s)")
    commit.add_argument("--log", help="also write everything printed to this file")
    docs = add("render-docs", "render the README's and docs' result blocks from results/", parents=(debug,))
    docs.add_argument("--root", default=".", help="the project root (default: the current folder)")
    docs.add_argument("--check", action="store_true", help="fail if a document disagrees with results/")
    docs.set_defaults(log=None)
    times = add("timings", "summarise a Snakemake run's wall time and its jobs' benchmarks", parents=(debug,))
    times.add_argument("--root", default=".", help="the project root (default: the current folder)")
    times.add_argument("--snakemake-log", nargs="+",
                       help="the run's log, or the logs of a run made in several parts (their wall times add up; "
                            "default: the latest in .snakemake/log)")
    times.add_argument("--out", default="results/timings.md", help="where to write the summary (default: %(default)s)")
    times.set_defaults(log=None)
    return parser
