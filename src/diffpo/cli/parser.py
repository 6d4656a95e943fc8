"""The command line's shared options and the parser's frame; each subcommand declares its own options.

Subcommand NAME runs ``cmd_NAME`` (``-`` as ``_``) and its options are declared by ``options_NAME``
beside it, in the one module of diffpo/cli/ that defines both (the convention
``diffpo.pipeline.code_inputs.code_files`` relies on): editing a command's help or options reruns
that command's jobs only. The first line of ``options_NAME``'s docstring is the command's help.
Paths in the help are the workflow's (tiny profile); README.md shows every stage's command as
Snakemake runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = ("One subcommand per workflow stage; Snakemake runs them (README.md shows each stage's command). "
               "Each reads only its stage's keys of params.yaml and writes its outputs whole or not at all.")
# What dvc.yaml declares: the default target (every artifact) and the tuning sweep, its own target.
DVC_TARGETS = ["all", "results/tuning/selection.csv"]

# Options several commands share: (flag, help).
TEXT_ENCODER = ("--text-encoder", "the text encoder: a folder (tiny: results/base/text) or a hub id")
VAE = ("--vae", "the autoencoder: a folder (tiny: results/base/autoencoder) or a hub id")
BASE = ("--base", "the base Stable Diffusion pipeline: a folder (tiny: results/base/pipeline) or a hub id")
WORK = ("--work", "folder of checkpoints, resumed when rerun with the same settings and data (results/checkpoints/NAME)")
STAND_INS_HELP = "folder of the tiny profile's trained stand-in scorers (results/scorers)"
JUDGES_HELP = "folder of the tiny profile's trained scorers, judges of the rollouts (default: %(default)s)"


def named_path(text: str) -> tuple[str, Path]:
    """An argparse type for METHOD=PATH: the pair, or an error saying what is expected."""
    name, equals, path = text.partition("=")
    if not (name and equals and path):
        raise argparse.ArgumentTypeError(
            f"expected METHOD=PATH, e.g. sft_w=results/scores/sft_w/validation_unique.parquet; got {text!r}")
    return name, Path(path)


def stage(parser: argparse.ArgumentParser, *required: tuple[str, str]) -> argparse.ArgumentParser:
    """A workflow stage's options: --params and --log, then its ``required`` (flag, help) pairs."""
    parser.add_argument("--params", default="params.yaml", help="the settings file (default: %(default)s)")
    parser.add_argument("--log", help="also write everything printed to this file (by the main process only, "
                                      "under `accelerate launch`)")
    return require(parser, *required)


def require(parser: argparse.ArgumentParser, *options: tuple[str, str]) -> argparse.ArgumentParser:
    """Required options, given as (flag, help) pairs."""
    for flag, text in options:
        parser.add_argument(flag, required=True, help=text)
    return parser


def summary(options) -> str:
    """A command's help: the first paragraph of its ``options_NAME`` docstring, on one line."""
    return " ".join((options.__doc__ or "").strip().split("\n\n")[0].split())


def frame() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The top-level parser and its subcommand list."""
    parser = argparse.ArgumentParser(prog="diffpo", description=DESCRIPTION)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def add_command(sub, name: str, options, func, declare: bool) -> None:
    """Subcommand ``name``: its help always, its options (``options``) when ``declare``."""
    text = summary(options)
    parser = sub.add_parser(name, help=text, description=text)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error in the input (settings, data, missing files)")
    if declare:
        options(parser)
    parser.set_defaults(func=func)
