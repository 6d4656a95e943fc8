"""What each stage reads of params.yaml: the keys per stage, and the sub-dictionary a job is handed.

``STAGE_PARAMS`` says which params.yaml keys each stage reads. Snakemake rules pass their
values as ``params:`` (so a change reruns exactly the jobs that read it), the CLI hands a
stage only those keys, and the generated dvc.yaml lists the same keys per stage.
"""

from __future__ import annotations

import inspect
from typing import Callable

from diffpo.errors import ParamsError
from diffpo.settings.params import select

STAGE_PARAMS: dict[str, Callable[..., list[str]]] = {
    "world": lambda: ["world"],
    "prepare": lambda: ["data.source", "data.split", "data.max_pairs"],
    "corpus": lambda: ["corpus", "world.image_size"],
    "pretrain_text_encoder": lambda: ["corpus.source", "corpus.split", "data.resolution", "pretrain.seed",
                                      "pretrain.text_encoder"],
    "pretrain_vae": lambda: ["corpus.source", "corpus.split", "data.resolution", "pretrain.seed", "pretrain.vae"],
    "encode": lambda: ["data.source", "data.split", "data.resolution", "encode"],
    "encode_corpus": lambda: ["corpus.source", "corpus.split", "data.resolution", "encode"],
    "pretrain_unet": lambda: ["pretrain.seed", "pretrain.unet", "pretrain.scheduler"],
    # judges: the scorers a method's rollouts are judged by (config.method_judges)
    # experiment: the experiment declaring a variant run (its varied setting)
    "train": lambda method, judges=(), experiment=None: (["build.stand_ins", "train", f"methods.{method}"]
                                                          + [f"scorers.sources.{j}" for j in judges]
                                                          + ([f"experiments.{experiment}"] if experiment else [])),
    "train_step_scorer": lambda: ["data.source", "data.split", "scorers.accuracy_split", "scorers.stand_ins.seed",
                                  "scorers.stand_ins.step_aware"],
    "train_scorer": lambda scorer: ["data.source", "data.split", "scorers.accuracy_split", "scorers.stand_ins.seed",
                                    f"scorers.stand_ins.{scorer}"],
    "evaluate": lambda prompt_set: ["build.world", "sample", f"prompt_sets.{prompt_set}", "world.alignment_weight",
                                    "world.aesthetic_weight", "scorers.names", "scorers.batch_size", "scorers.sources"],
    "world_stats": lambda: ["world.alignment_weight", "world.aesthetic_weight", "sample.prompt_set", "prompt_sets",
                            "data.source", "corpus.source", "corpus.split"],
    "scorer_accuracy": lambda: ["build.world", "data.source", "world.alignment_weight", "world.aesthetic_weight", "scorers.names",
                                "scorers.batch_size", "scorers.sources", "scorers.accuracy_split"],
    # a grid point reads its method's settings except those its grid decides (tune_keys): applying
    # the selection to params.yaml leaves the sweep current
    "tune": lambda keys: keys,
    "tune_select": lambda: ["tuning"],
    "curve": lambda prompt_set: ["build.world", "sample", f"prompt_sets.{prompt_set}", "experiments.curves.prompts",
                                 "experiments.curves.images_per_prompt", "world.alignment_weight",
                                 "world.aesthetic_weight", "scorers.names", "scorers.batch_size", "scorers.sources"],
    "claims": lambda: ["seeds", "sample.prompt_set", "experiments", "methods", "train"],
    "figure": lambda: ["seeds", "sample.prompt_set", "experiments", "methods", "train"],
    "table": lambda table, rows: [f"tables.{table}"] + [f"methods.{m}.label" for m in rows if m != "base"],
    "figures": lambda methods: [f"methods.{m}.label" for m in methods],
}


def tune_keys(params: dict, method: str) -> list[str]:
    """The keys a tuning grid point of ``method`` reads: its settings but those the grid
    decides, the tuning protocol, the sampling and the scoring of the tuning prompt set."""
    from diffpo.settings.configs import method_judges
    from diffpo.settings.tuning import grid_keys

    decided = set(grid_keys(params, method))
    tuning = params["tuning"]
    metric = tuning["metric"]
    keys = [f"train.{k}" for k in params["train"] if k not in decided]
    keys += [f"methods.{method}.{k}" for k in params["methods"][method] if k not in decided]
    keys += [f"scorers.sources.{j}" for j in method_judges(params, method)]
    keys += ["build.world", "build.stand_ins", "tuning.prompt_set", "tuning.seed", "tuning.metric", f"tuning.grids.{method}", "sample",
             f"prompt_sets.{tuning['prompt_set']}", "world.alignment_weight", "world.aesthetic_weight",
             "scorers.batch_size"]
    return keys + ([] if metric.startswith("gt_") else [f"scorers.sources.{metric}"])


def stage_keys(stage: str, **wildcards) -> list[str]:
    """The keys ``stage`` reads; wildcards the stage does not depend on are ignored."""
    if stage not in STAGE_PARAMS:
        raise ParamsError(f"unknown stage {stage!r}")
    func = STAGE_PARAMS[stage]
    accepted = inspect.signature(func).parameters
    return func(**{k: v for k, v in wildcards.items() if k in accepted})


def stage_params(params: dict, stage: str, **wildcards) -> dict:
    """The nested sub-dictionary of ``params`` that ``stage`` may read (plus the profile)."""
    out: dict = {"profile": params["profile"]}
    for key, value in select(params, stage_keys(stage, **wildcards)).items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
