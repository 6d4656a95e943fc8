"""Command line: one thin subcommand per workflow stage (``python -m diffpo STAGE ...``).

Each subcommand reads only its stage's keys of params.yaml (diffpo.settings.stages.STAGE_PARAMS)
and writes its outputs atomically; ``--log`` copies everything it prints to a log file.
Subcommand NAME runs ``cmd_NAME`` with the options ``options_NAME`` declares, both defined in one
module of this package: ``inputs`` (the world, the preference pairs, the base model), ``train``
(training and tuning), ``evaluate`` (sampling and scoring), ``report`` (tables, claims, figures,
DVC bookkeeping). This module holds what every command shares: ``main``, the parser's assembly
(``diffpo.cli.parser`` holds the shared options), the settings a stage reads (``_params``) and
the torch threads.

A subcommand reads its settings first, and imports torch only after them: an unknown
method, scorer or prompt set fails at once. An error in the input (``UserError``: settings,
data, missing weights) prints its message alone and exits 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time
from pathlib import Path

from diffpo.cli import parser as cli_parser
from diffpo.errors import UserError


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
            s.flush()

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


def _set_torch_threads() -> None:
    """Honour the thread count Snakemake gives a job (exported as OMP_NUM_THREADS), and flush
    subnormal floats to zero: a saturated DPO-type loss leaves gradients that small, and x86
    CPUs compute with them 4x slower (python -m diffpo benchmark: SePPO's step 4.1x its
    compute floor, 0.85x with the flush). GPUs flush them in any case."""
    import torch

    torch.set_flush_denormal(True)
    n = os.environ.get("OMP_NUM_THREADS", "")
    if n.isdigit():
        torch.set_num_threads(int(n))


def _params(args, stage: str, **wildcards) -> dict:
    """The keys of params.yaml ``stage`` reads; a name the settings do not define is a ParamsError."""
    from diffpo.settings.params import load_params
    from diffpo.settings.configs import method_judges
    from diffpo.settings.stages import stage_params

    params = load_params(args.params)
    if stage == "train":
        wildcards["judges"] = method_judges(params, wildcards["method"])
    if stage == "curve":
        wildcards["prompt_set"] = params["sample"]["prompt_set"]
    if stage == "tune":
        from diffpo.settings.stages import tune_keys

        wildcards["keys"] = tune_keys(params, wildcards["method"])
    return stage_params(params, stage, **wildcards)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: every subcommand with its help; the options of ``command`` only (every command's
    when None). Subcommand NAME runs ``cmd_NAME`` and takes the options ``options_NAME`` declares,
    both defined in one module of this package."""
    parser, sub = cli_parser.frame()
    for name, (func, options) in sorted(_commands().items()):
        cli_parser.add_command(sub, name, options, func, declare=command in (None, name))
    return parser


def _commands() -> dict:
    """Each subcommand's (``cmd_NAME``, ``options_NAME``), found in the modules of this package."""
    commands: dict = {}
    for module in _command_modules().values():
        for attr, func in vars(module).items():
            if attr.startswith("cmd_") and getattr(func, "__module__", None) == module.__name__:
                name = attr[len("cmd_"):].replace("_", "-")
                if name in commands:
                    raise RuntimeError(f"{attr} is defined in both {commands[name][0].__module__} and {module.__name__}")
                options = getattr(module, "options_" + attr[len("cmd_"):], None)
                if options is None:
                    raise RuntimeError(f"{module.__name__} defines {attr} but not options_{attr[len('cmd_'):]}")
                commands[name] = (func, options)
    return commands


def _command_modules() -> dict:
    """Every module of this package, imported by name. Their module-level statements are imports
    and constants only (tests/test_workflow.py checks): a command runs the code of its own
    module(s), which is what ``diffpo.pipeline.code_inputs.code_files`` derives."""
    return {info.name: importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)}


def _is_main_process() -> bool:
    """Under ``accelerate launch`` every rank runs the command; rank 0 (or no rank) is the main one."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)  # the subcommand: only its options are declared
    args = build_parser(chosen).parse_args(argv)
    if args.log and _is_main_process():  # one writer of the log file
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        log = open(args.log, "w")
        sys.stdout, sys.stderr = _Tee(sys.__stdout__, log), _Tee(sys.__stderr__, log)
    start = time.time()
    try:
        args.func(args)
    except UserError as err:
        if args.debug:
            raise
        print(f"diffpo {args.command}: error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"[diffpo {args.command}] done in {time.time() - start:.1f} s", file=sys.stderr)
