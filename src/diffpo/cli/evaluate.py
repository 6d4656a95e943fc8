"""Sampling and scoring: ``evaluate`` (sample, then score), ``curve``, the world's statistics, the
stand-in scorers' training and every scorer's accuracy on held-out preferences."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from diffpo.cli import _params, _set_torch_threads
from diffpo.cli.parser import BASE, STAND_INS_HELP, TEXT_ENCODER, stage
from diffpo.errors import UserError

# diffpo.scoring.stand_ins.NAMES (a test keeps them equal), repeated here because that module imports torch
STAND_INS = ("pickscore", "hpsv2", "imagereward", "aesthetic")


def cmd_curve(args):
    p = _params(args, "curve")
    _set_torch_threads()
    import pandas as pd
    from safetensors.torch import load_file

    from diffpo.settings.configs import SampleConfig, build
    from diffpo.scoring.evaluation import decode_samples, describe, load_scorers, score_samples
    from diffpo.files import write_parquet
    from diffpo.models.loading import load_pipeline, load_sampling_scheduler
    from diffpo.models.sampling import generate
    from diffpo.data.reading import read_prompts
    from diffpo.training.snapshots import snapshot_steps

    curves = p["experiments"]["curves"]
    cfg = build(SampleConfig, {**p["sample"], "images_per_prompt": curves["images_per_prompt"]})
    prompts = read_prompts(p["prompt_sets"][p["sample"]["prompt_set"]])[: curves["prompts"]]
    pipe = load_pipeline(args.base)
    scheduler = load_sampling_scheduler(args.base, cfg.scheduler)
    scorers = load_scorers(p, args.stand_ins)
    initial = {k: v.clone() for k, v in pipe.unet.state_dict().items()}  # step 0: the base model
    snapshots = snapshot_steps(Path(args.snapshots))
    if not snapshots:
        raise UserError(f"{args.snapshots} holds no snapshots: train the run with --keep-snapshots "
                        "(add it to experiments.curves in params.yaml)")
    frames = []
    for step, path in [(0, None), *snapshots.items()]:
        pipe.unet.load_state_dict(initial if path is None else load_file(path))
        samples = generate(pipe, scheduler, prompts, cfg, args.seed)
        scores = score_samples(samples, decode_samples(samples), scorers, p["scorers"]["batch_size"], _world(p))
        frames.append(scores.assign(step=step))
        print(f"step {step}: " + ", ".join(f"{c} {scores[c].mean():.4f}" for c in scores.columns
                                          if c not in ("seed", "prompt_id", "caption", "image_index")))
    curve = pd.concat(frames, ignore_index=True)
    curve.attrs["scorers"] = describe(scorers)
    write_parquet(curve, Path(args.out))


def _world(p: dict) -> dict | None:
    """The world's rater weights: ground truth exists where the pipeline builds the world (params.yaml build)."""
    return p["world"] if p["build"]["world"] else None


def _read_pairs(source: str, split: str, size: tuple[int, int] | None = None):
    """``rated_pairs.read_pairs``, saying how many images of another size it resized."""
    from diffpo.scoring.stand_ins import read_pairs

    pairs = read_pairs(source, split, size=size)
    if pairs.resized:
        width, height = pairs.image_size
        print(f"{source} {split}: {pairs.resized} images of another size resized to {width}x{height}", file=sys.stderr)
    return pairs


def cmd_train_scorer(args):
    p = _params(args, "train_scorer", scorer=args.scorer)
    _set_torch_threads()
    from diffpo.scoring.stand_ins import train_stand_in

    stand_ins = p["scorers"]["stand_ins"]
    cfg = {"seed": stand_ins["seed"], **stand_ins[args.scorer]}
    pairs = _read_pairs(p["data"]["source"], p["data"]["split"])
    heldout = _read_pairs(p["data"]["source"], p["scorers"]["accuracy_split"], pairs.image_size)
    text = Path(args.text_encoder)
    summary = train_stand_in(args.scorer, pairs, text / "clip", text / "tokenizer", cfg, Path(args.out), heldout=heldout)
    print(json.dumps(summary, indent=2, default=str))


def cmd_train_step_scorer(args):
    p = _params(args, "train_step_scorer")
    _set_torch_threads()
    from diffpo.scoring.step_aware_fit import train_step_aware

    cfg = {"seed": p["scorers"]["stand_ins"]["seed"], **p["scorers"]["stand_ins"]["step_aware"]}
    pairs = _read_pairs(p["data"]["source"], p["data"]["split"])
    heldout = _read_pairs(p["data"]["source"], p["scorers"]["accuracy_split"], pairs.image_size)
    summary = train_step_aware(Path(args.pickscore), Path(args.base), pairs, cfg, Path(args.out), heldout=heldout)
    print(json.dumps(summary, indent=2, default=str))


def cmd_evaluate(args):
    """Sample a model on a prompt set, then score the images: one process, so the imports and
    the pipeline are paid once per model, seed and prompt set."""
    from diffpo.settings.configs import SampleConfig, build

    p = _params(args, "evaluate", prompt_set=args.prompt_set)
    spec = p["prompt_sets"][args.prompt_set]
    # a prompt set may set its own protocol: more images a prompt (diversity), its first N prompts
    cfg = build(SampleConfig, {**p["sample"], **{k: spec[k] for k in ("images_per_prompt",) if k in spec}})
    _set_torch_threads()
    from diffpo.scoring.diversity import diversity_table
    from diffpo.scoring.evaluation import decode_samples, describe, load_scorers, score_samples
    from diffpo.files import write_parquet
    from diffpo.models.loading import load_pipeline, load_sampling_scheduler
    from diffpo.models.sampling import generate
    from diffpo.data.reading import read_prompts

    pipe = load_pipeline(args.base, unet_source=args.unet)
    scorers = load_scorers(p, args.stand_ins)  # before sampling: missing weights fail at once
    prompts = read_prompts(spec)[: spec.get("max_prompts")]
    samples = generate(pipe, load_sampling_scheduler(args.base, cfg.scheduler), prompts, cfg, args.seed)
    write_parquet(samples, Path(args.samples))
    print(f"{len(samples)} images for {len(prompts)} prompts of {args.prompt_set}")
    images = decode_samples(samples)  # the PNGs as written: scores are those of the stored images
    scores = score_samples(samples, images, scorers, p["scorers"]["batch_size"], _world(p))
    scores.attrs["scorers"] = describe(scorers)
    write_parquet(scores, Path(args.scores))
    # Diversity between a prompt's images (SEE-DPO); needs several images per prompt.
    diversity = diversity_table(images, samples["prompt_id"].to_numpy())
    diversity.insert(0, "seed", args.seed)
    if _world(p) is not None:  # what the world knows: variety of the attributes a prompt leaves free
        from diffpo.world.ground_truth import semantic_diversity

        semantic = semantic_diversity(images, samples["caption"].tolist(), samples["prompt_id"].to_numpy())
        diversity = diversity.merge(semantic, on="prompt_id", how="left")
    write_parquet(diversity, Path(args.diversity))
    print(scores.drop(columns=["caption"]).mean(numeric_only=True).to_string())
    print(f"diversity over {len(diversity)} prompts:\n{diversity.drop(columns=['prompt_id']).mean().to_string()}")


def cmd_world_stats(args):
    p = _params(args, "world_stats")
    import pandas as pd

    from diffpo.data.preparation import list_shards
    from diffpo.files import atomic_write_text
    from diffpo.world.statistics import disjointness, world_statistics

    spec = p["prompt_sets"][p["sample"]["prompt_set"]]
    facts = world_statistics(list_shards(spec["source"], spec["split"]), pd.read_parquet(args.scores),
                             pd.read_parquet(args.diversity), p["world"]["alignment_weight"], p["world"]["aesthetic_weight"])
    preference = [s for split in ("train", "validation_unique", "test_unique", "tuning")
                  for s in list_shards(p["data"]["source"], split)]
    world = json.loads((Path(p["data"]["source"]) / "world.json").read_text())
    facts = {"prompt_set": p["sample"]["prompt_set"], **facts,
             "disjointness": disjointness(list_shards(p["corpus"]["source"], p["corpus"]["split"]), preference),
             "degradations": world["degradations"]}  # the world's table, kept with the facts that are tracked
    atomic_write_text(args.out, json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts, indent=2))


def cmd_scorer_accuracy(args):
    p = _params(args, "scorer_accuracy")
    _set_torch_threads()
    from diffpo.evidence.tables import accuracy_markdown
    from diffpo.scoring.evaluation import load_scorers, scorer_accuracy
    from diffpo.files import atomic_write_text
    from diffpo.data.rated_pairs import PairStream

    split = p["scorers"]["accuracy_split"]
    pairs = PairStream(p["data"]["source"], split, batch_pairs=256)  # streamed: Pick-a-Pic's validation is ~32 GB decoded
    table = scorer_accuracy(pairs, load_scorers(p, args.stand_ins), _world(p))
    who = "the tiny world's raters; scorers are stand-ins trained in the pipeline" if _world(p) else "Pick-a-Pic raters"
    note = (f"Agreement with held-out preferences ({who}) on the {split} pairs of {p['data']['source']}: "
            f"{table['n_pairs'].iloc[0]} decided pairs, {table['ties_excluded'].iloc[0]} ties excluded; "
            f"± is the binomial standard error. Skipped rows: {pairs.skipped}."
            + (f" Images resized to {pairs.image_size[0]}x{pairs.image_size[1]}: {pairs.resized}." if pairs.resized else ""))
    atomic_write_text(args.csv, table.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(args.md, accuracy_markdown(table, note))
    print(Path(args.md).read_text())


# ---------------------------------------------------------------- options (diffpo.cli.parser)
def options_curve(p):
    """sample and score a run's snapshots along training (and the base model as step 0)"""
    stage(p, BASE, ("--snapshots", "the run's snapshots (results/models/RUN/seedSEED/snapshots)"),
          ("--out", "the per-image scores by step to write (results/curves/RUN/seedSEED.parquet)"))
    p.add_argument("--seed", type=int, required=True, help="the run's training seed: its evaluation noise")
    p.add_argument("--stand-ins", help=STAND_INS_HELP)


def options_train_scorer(p):
    """train a tiny stand-in of a learned reward model on the world's raters"""
    stage(p, TEXT_ENCODER, ("--out", "the folder to write (results/scorers/SCORER)"))
    p.add_argument("--scorer", required=True, choices=STAND_INS, help="the reward model to stand in for")


def options_train_step_scorer(p):
    """train SPO's step-aware preference model (tiny profile)"""
    stage(p, ("--pickscore", "the trained PickScore stand-in (results/scorers/pickscore)"), BASE,
          ("--out", "the folder to write (results/scorers/step_aware)"))


def options_evaluate(p):
    """sample a model on a prompt set, then score the images with every scorer and the diversity of each prompt's images"""
    stage(p, BASE, ("--prompt-set", "the prompt set: a name under prompt_sets: in params.yaml"),
          ("--samples", "the samples to write, PNG bytes (results/samples/MODEL/seedSEED/PROMPT_SET.parquet)"),
          ("--scores", "the per-image scores to write (results/scores/MODEL/seedSEED/PROMPT_SET.parquet)"),
          ("--diversity", "the per-prompt diversity to write (results/diversity/MODEL/seedSEED/PROMPT_SET.parquet)"))
    p.add_argument("--unet", help="a trained UNet folder replacing the base's (results/models/METHOD/seedSEED/unet)")
    p.add_argument("--seed", type=int, default=0,
                   help="the training seed of the model: the evaluation noise is drawn for it and each prompt, "
                        "so every model of one seed (the base too) sees the same noise (default: %(default)s)")
    p.add_argument("--stand-ins", help=STAND_INS_HELP)


def options_world_stats(p):
    """the tiny world's facts that need the base model: data vs base, disjointness, degradations"""
    stage(p, ("--scores", "the base model's per-image scores (results/scores/base/validation_unique.parquet)"),
          ("--diversity", "the base model's per-prompt diversity (results/diversity/base/validation_unique.parquet)"),
          ("--out", "the facts to write (results/world_stats.json)"))


def options_scorer_accuracy(p):
    """each scorer's agreement with held-out rated pairs"""
    stage(p, ("--csv", "the table to write (results/scorer_accuracy.csv)"),
          ("--md", "the same as Markdown (results/scorer_accuracy.md)"))
    p.add_argument("--stand-ins", help=STAND_INS_HELP)
