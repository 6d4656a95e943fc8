"""Preference training and its tuning: ``train``, a grid point of the sweep (``tune``) and the
selection among the points (``tune-select``)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from diffpo.cli import _params, _set_torch_threads
from diffpo.cli.parser import BASE, JUDGES_HELP, WORK, stage
from diffpo.errors import UserError


def cmd_train(args):
    from diffpo.settings.params import load_params
    from diffpo.settings.experiments import resolve_run

    run = resolve_run(load_params(args.params), args.method)
    p = _params(args, "train", method=run.method, experiment=run.experiment)
    _set_torch_threads()
    from accelerate import PartialState

    from diffpo.files import atomic_dir, atomic_path
    from diffpo.training.loop import save_unet
    from diffpo.training.snapshots import snapshot_steps

    unet, metrics = _train_run(p, run.method, args.seed, run.overrides, args, "train", args.keep_snapshots)
    if PartialState().is_main_process:  # one writer under `accelerate launch`
        save_unet(unet, Path(args.out))
        with atomic_path(args.metrics) as tmp:
            tmp.write_bytes(Path(metrics).read_bytes())
        if args.snapshots:
            kept = snapshot_steps(Path(args.work) / "snapshots") if args.keep_snapshots else {}
            with atomic_dir(Path(args.snapshots)) as tmp:
                for step, path in kept.items():
                    shutil.copyfile(path, tmp / path.name)
                (tmp / "manifest.json").write_text(json.dumps({"run": args.method, "seed": args.seed,
                                                               "steps": sorted(kept)}, indent=2) + "\n")


def _train_run(p: dict, method: str, seed: int, overrides: dict, args, command: str, snapshots: bool = False):
    """Train ``method`` with training seed ``seed`` (and ``overrides`` of its settings) from
    ``args.base`` on ``args.cache``, resuming a checkpoint in ``args.work`` made by the same
    code, settings, weights and data; returns the UNet and its metrics file."""
    from diffpo.settings.configs import TrainConfig, build, method_settings
    from diffpo.data.preparation import EncodedPairs
    from diffpo.models.loading import load_noise_scheduler, load_unet
    from diffpo.training.loop import content_digest, run_fingerprint, train

    cfg = build(TrainConfig, {**method_settings(p, method, overrides), "seed": seed})
    cache = EncodedPairs(args.cache)
    unet = load_unet(args.base)
    generators, judges = _generators(cfg, p, args)
    base_unet = Path(args.base) / "unet"
    init = content_digest(base_unet) if base_unet.exists() else args.base
    init += "".join(content_digest(j) if Path(j).is_dir() else str(j) for j in judges)  # a retrained judge: no resume
    init += "+snapshots" if snapshots else ""  # a run asked for snapshots never resumes one that kept none
    fingerprint = run_fingerprint(cfg, init, Path(args.cache), command)
    return train(cfg, cache, unet, load_noise_scheduler(args.base), Path(args.work), fingerprint, generators,
                 snapshots=snapshots)


def _generators(cfg, p: dict, args):
    """What a generating method needs: DDIM, the VAE, and its judge (a scorer or SPO's step-aware
    model: trained in the pipeline where it builds stand-ins (params.yaml build), else the released checkpoint)."""
    from diffpo.models.loading import load_sampling_scheduler, load_vae
    from diffpo.training.sources import Generators

    if cfg.losers != "reference" and cfg.data != "rollouts":
        return None, []
    generators = Generators(scheduler=load_sampling_scheduler(args.base, cfg.sampler))
    judges = []
    if cfg.data == "rollouts":
        generators.vae = load_vae(args.base).eval().requires_grad_(False)
    stand_ins = p["build"]["stand_ins"]
    if cfg.reward_scorer:
        if stand_ins:
            from diffpo.scoring.stand_ins import load_stand_in

            judges.append(Path(args.scorers) / cfg.reward_scorer)
            generators.reward = load_stand_in(judges[-1])
        else:
            from diffpo.scoring.learned import build_scorer

            source = p["scorers"]["sources"][cfg.reward_scorer]
            judges.append(json.dumps(source, sort_keys=True))
            generators.reward = build_scorer(cfg.reward_scorer, **source)
    if cfg.objective == "spo":
        from diffpo.scoring.step_aware import load_released_step_aware, load_step_aware

        if stand_ins:
            judges.append(Path(args.scorers) / "step_aware")
            generators.step_scorer = load_step_aware(judges[-1])
        else:
            source = p["scorers"]["sources"]["step_aware"]  # local copies of its PickScore config and processor too
            judges.append(json.dumps(source, sort_keys=True))
            generators.step_scorer = load_released_step_aware(**source)
    return generators, judges


def cmd_tune(args):
    p = _params(args, "tune", method=args.method)
    _set_torch_threads()
    from diffpo.files import atomic_write_text
    from diffpo.training.sources import TrainingDiverged
    from diffpo.settings.tuning import grid_points, grids

    tuning = p["tuning"]
    if args.method not in grids(p):
        raise UserError(f"{args.method} has no tuning grid in this profile (params.yaml tuning.grids)")
    points = grid_points(p, args.method)
    if not 0 <= args.point < len(points):
        raise UserError(f"--point {args.point}: {args.method}'s grid has points 0 to {len(points) - 1}")
    overrides = _origin_selection(p, args) | points[args.point]
    start = time.time()
    from accelerate import PartialState

    try:
        unet, _ = _train_run(p, args.method, tuning["seed"], overrides, args, "tune")
        if not PartialState().is_main_process:  # under `accelerate launch`: one process scores and writes
            return
    except TrainingDiverged as err:  # a result of the grid, not a failure of the sweep: never selected
        print(f"diverged: {err}", file=sys.stderr)
        result = {"score": None, "low": None, "high": None, "diverged": True}
    else:
        scores = _score_tuning_samples(p, args, unet)
        from diffpo.evidence.intervals import summarise

        value = summarise(scores, tuning["metric"])
        result = {"score": value.mean, "low": value.low, "high": value.high, "diverged": False,
                  "n_prompts": value.n_prompts}
    record = {"method": args.method, "point": args.point, "settings": overrides, "metric": tuning["metric"],
              "prompt_set": tuning["prompt_set"], "seed": tuning["seed"], **result}
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"{args.method} point {args.point}: {time.time() - start:.0f} s", file=sys.stderr)


def _origin_selection(p: dict, args) -> dict:
    """The settings selected for the grid's ``from`` method, by the selection rule, from its points' results."""
    origin = p["tuning"]["grids"][args.method].get("from")
    if origin is None:
        return {}
    import pandas as pd

    from diffpo.settings.tuning import select_points

    records = [json.loads(Path(f).read_text()) for f in args.origin_results]
    if {r["method"] for r in records} != {origin}:
        raise UserError(f"--origin-results: expected the grid results of {origin} (tuning.grids.{args.method}.from)")
    table = select_points(pd.DataFrame([{"method": r["method"], "point": r["point"], "score": r["score"]}
                                        for r in records]))
    chosen = int(table.loc[table["selected"], "point"].iloc[0])
    return next(r["settings"] for r in records if r["point"] == chosen)


def _score_tuning_samples(p: dict, args, unet):
    """The tuned model's images of the tuning prompt set, scored by the tuning metric."""
    from diffpo.cli.evaluate import _world
    from diffpo.settings.configs import SampleConfig, build
    from diffpo.scoring.evaluation import load_scorers, score_samples, decode_samples
    from diffpo.models.loading import load_pipeline, load_sampling_scheduler
    from diffpo.models.sampling import generate
    from diffpo.data.reading import read_prompts

    cfg = build(SampleConfig, p["sample"])
    pipe = load_pipeline(args.base)
    pipe.unet = unet.eval()
    prompts = read_prompts(p["prompt_sets"][p["tuning"]["prompt_set"]])
    samples = generate(pipe, load_sampling_scheduler(args.base, cfg.scheduler), prompts, cfg, p["tuning"]["seed"])
    metric = p["tuning"]["metric"]
    scorers = {} if metric.startswith("gt_") else {metric: load_scorers({**p, "scorers": {**p["scorers"], "names": [metric]}},
                                                                        args.scorers)[metric]}
    return score_samples(samples, decode_samples(samples), scorers, p["scorers"]["batch_size"], _world(p))


def cmd_tune_select(args):
    p = _params(args, "tune_select")
    import pandas as pd

    from diffpo.files import atomic_write_text
    from diffpo.settings.tuning import select_points

    records = [json.loads(Path(f).read_text()) for f in args.results]
    table = select_points(pd.DataFrame([
        {"method": r["method"], "point": r["point"], "score": r["score"], "low": r["low"], "high": r["high"],
         "diverged": r["diverged"], **{f"setting.{k}": v for k, v in r["settings"].items()}} for r in records]))
    atomic_write_text(args.csv, table.to_csv(index=False, float_format="%.6g"))
    t = p["tuning"]
    note = (f"Every tuned method: {t['budget']} grid points, training seed {t['seed']}, scored by the mean "
            f"{t['metric']} on the prompt set `{t['prompt_set']}` (no table reports it), with a 95 % interval over "
            "its prompts. Rule: the highest mean; a diverged run (empty score) is never chosen; a tie goes to the "
            "earlier point. Rows that inherit a selection: "
            + ", ".join(f"{row} ← {origin}" for row, origin in t["inherit"].items()) + ".")
    view = table.assign(score=[("diverged" if d else f"{s:.4f} [{lo:.4f}, {hi:.4f}]")
                               for s, lo, hi, d in zip(table["score"], table["low"], table["high"], table["diverged"])],
                        selected=["✔" if x else "" for x in table["selected"]]).drop(columns=["low", "high", "diverged"])
    atomic_write_text(args.md, f"# Tuning: every grid point and the selection\n\n{note}\n\n"
                               f"{view.to_markdown(index=False)}\n")
    print(Path(args.md).read_text())


# ---------------------------------------------------------------- options (diffpo.cli.parser)
def options_train(p):
    """train one method of the registry (params.yaml methods:) or an experiment's variant run"""
    stage(p, ("--method", "the run: a name under methods: in params.yaml, or a variant METHOD__SETTINGVALUE "
                          "an experiment declares (params.yaml experiments:)"), BASE,
          ("--cache", "the encoded pairs (results/cache)"), WORK,
          ("--out", "the trained UNet folder to write (results/models/METHOD/seedSEED/unet)"),
          ("--metrics", "the per-step metrics to write (results/models/METHOD/seedSEED/metrics.csv)"))
    p.add_argument("--seed", type=int, required=True,
                   help="the training seed (one of params.yaml seeds): data order, noise, timesteps, LoRA init")
    p.add_argument("--snapshots", help="a folder to write the run's snapshots to (results/models/RUN/seedSEED/"
                                       "snapshots): the weights at every checkpoint with --keep-snapshots, and "
                                       "manifest.json listing their steps")
    p.add_argument("--keep-snapshots", action="store_true",
                   help="keep the policy at every checkpoint, for scores along training (experiments.curves)")
    p.add_argument("--scorers", default="results/scorers", help=JUDGES_HELP)


def options_tune(p):
    """train one grid point of a method's tuning grid (one seed) and score it on the tuning prompts"""
    stage(p, ("--method", "the tuned method: a name under tuning.grids in params.yaml"), BASE,
          ("--cache", "the encoded pairs (results/cache)"), WORK,
          ("--out", "the grid point's result to write (results/tuning/METHOD/POINT.json)"))
    p.add_argument("--point", type=int, required=True, help="the grid point: its index in the grid's product")
    p.add_argument("--scorers", default="results/scorers", help=JUDGES_HELP)
    p.add_argument("--origin-results", nargs="*", default=[], metavar="JSON",
                   help="the grid results of the method named by the grid's `from:` (its selection is the start)")


def options_tune_select(p):
    """select each tuned method's grid point by the declared rule"""
    stage(p, ("--csv", "every grid point's score and the selection (results/tuning/selection.csv)"),
          ("--md", "the same as Markdown (results/tuning/selection.md)"))
    p.add_argument("--results", nargs="+", required=True, metavar="JSON", help="every grid point's result (from tune)")
