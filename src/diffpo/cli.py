"""Command line: one thin subcommand per workflow stage (``python -m diffpo STAGE ...``).

Each subcommand reads only its stage's keys of params.yaml (diffpo.workflow.STAGE_PARAMS)
and writes its outputs atomically; ``--log`` copies everything it prints to a log file.
Subcommand NAME runs ``cmd_NAME``; ``cli_parser`` declares the options and their help.

A subcommand reads its settings first, and imports torch only after them: an unknown
method, scorer or prompt set fails at once. An error in the input (``UserError``: settings,
data, missing weights) prints its message alone and exits 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from diffpo import cli_parser
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
    from diffpo.config import load_params, method_judges
    from diffpo.workflow import stage_params

    params = load_params(args.params)
    if stage == "train":
        wildcards["judges"] = method_judges(params, wildcards["method"])
    if stage == "curve":
        wildcards["prompt_set"] = params["sample"]["prompt_set"]
    if stage == "tune":
        from diffpo.workflow import tune_keys

        wildcards["keys"] = tune_keys(params, wildcards["method"])
    return stage_params(params, stage, **wildcards)


def cmd_world(args):
    from diffpo import world

    cfg = world.WorldConfig(**_params(args, "world")["world"])
    summary = world.make_world(cfg, Path(args.out))
    print(json.dumps(summary, indent=2, default=str))


def cmd_corpus(args):
    p = _params(args, "corpus")
    from diffpo.world.corpus import make_corpus

    c = p["corpus"]
    facts = make_corpus(c["seed"], c["n_captions"], c["shard_size"], p["world"]["image_size"], Path(args.out))
    print(json.dumps(facts, indent=2))


def cmd_prepare(args):
    from diffpo.data import prepare_pairs, write_prepared

    data = _params(args, "prepare")["data"]
    prepared = prepare_pairs(data["source"], data["split"], data["max_pairs"])
    write_prepared(prepared, Path(args.pairs), Path(args.manifest))
    print(json.dumps(prepared.manifest, indent=2))


def cmd_pretrain_text_encoder(args):
    p = _params(args, "pretrain_text_encoder")
    _set_torch_threads()
    from diffpo.pretraining import pretrain_text_encoder

    summary = pretrain_text_encoder(p["corpus"]["source"], p["corpus"]["split"], p["data"]["resolution"],
                                    p["pretrain"]["text_encoder"], p["pretrain"]["seed"], Path(args.out))
    print(json.dumps(summary, indent=2))


def cmd_pretrain_vae(args):
    p = _params(args, "pretrain_vae")
    _set_torch_threads()
    from diffpo.pretraining import pretrain_vae

    summary = pretrain_vae(p["corpus"]["source"], p["corpus"]["split"], p["data"]["resolution"],
                           p["pretrain"]["vae"], p["pretrain"]["seed"], Path(args.out))
    print(json.dumps(summary, indent=2))


def cmd_encode(args):
    p = _params(args, "encode")
    _set_torch_threads()
    import pandas as pd

    from diffpo.data import encode_cache

    info = encode_cache(p["data"]["source"], p["data"]["split"], pd.read_parquet(args.pairs), args.text_encoder, args.vae,
                        Path(args.out), p["data"]["resolution"], p["encode"]["batch_size"], p["encode"]["dtype"])
    print(json.dumps(info, indent=2))


def cmd_encode_corpus(args):
    p = _params(args, "encode_corpus")
    _set_torch_threads()
    from diffpo.data import encode_cache, index_corpus

    source, split = p["corpus"]["source"], p["corpus"]["split"]
    corpus = index_corpus(source, split)
    info = encode_cache(source, split, corpus.index, args.text_encoder, args.vae, Path(args.out),
                        p["data"]["resolution"], p["encode"]["batch_size"], p["encode"]["dtype"])
    print(json.dumps({**info, "skipped": corpus.manifest["rows_skipped"]}, indent=2))


def cmd_pretrain_unet(args):
    p = _params(args, "pretrain_unet")["pretrain"]
    _set_torch_threads()
    from diffpo.files import atomic_path
    from diffpo.pretraining import pretrain_unet

    metrics = pretrain_unet(Path(args.cache), Path(args.text_encoder), Path(args.vae), p["unet"], p["scheduler"],
                            p["seed"], Path(args.work), Path(args.out))
    with atomic_path(args.metrics) as tmp:
        tmp.write_bytes(Path(metrics).read_bytes())


def cmd_train(args):
    from diffpo.config import load_params
    from diffpo.experiments import resolve_run

    run = resolve_run(load_params(args.params), args.method)
    p = _params(args, "train", method=run.method, experiment=run.experiment)
    _set_torch_threads()
    from accelerate import PartialState

    from diffpo.files import atomic_dir, atomic_path
    from diffpo.training import save_unet, snapshot_steps

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
    from diffpo.config import TrainConfig, build, method_settings
    from diffpo.data import EncodedPairs
    from diffpo.models import load_noise_scheduler, load_unet
    from diffpo.training import content_digest, run_fingerprint, train

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


def cmd_tune(args):
    p = _params(args, "tune", method=args.method)
    _set_torch_threads()
    from diffpo.files import atomic_write_text
    from diffpo.training import TrainingDiverged
    from diffpo.tuning import grid_points

    tuning = p["tuning"]
    overrides = _origin_selection(p, args) | grid_points(p, args.method)[args.point]
    start = time.time()
    try:
        unet, _ = _train_run(p, args.method, tuning["seed"], overrides, args, "tune")
    except TrainingDiverged as err:  # a result of the grid, not a failure of the sweep: never selected
        print(f"diverged: {err}", file=sys.stderr)
        result = {"score": None, "low": None, "high": None, "diverged": True}
    else:
        scores = _score_tuning_samples(p, args, unet)
        from diffpo.intervals import summarise

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

    from diffpo.tuning import select_points

    records = [json.loads(Path(f).read_text()) for f in args.origin_results]
    if {r["method"] for r in records} != {origin}:
        raise UserError(f"--origin-results: expected the grid results of {origin} (tuning.grids.{args.method}.from)")
    table = select_points(pd.DataFrame([{"method": r["method"], "point": r["point"], "score": r["score"]}
                                        for r in records]))
    chosen = int(table.loc[table["selected"], "point"].iloc[0])
    return next(r["settings"] for r in records if r["point"] == chosen)


def _score_tuning_samples(p: dict, args, unet):
    """The tuned model's images of the tuning prompt set, scored by the tuning metric."""
    from diffpo.config import SampleConfig, build
    from diffpo.evaluation import load_scorers, score_samples, decode_samples
    from diffpo.models import load_pipeline, load_sampling_scheduler
    from diffpo.sampling import generate
    from diffpo.sources import read_prompts

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
    from diffpo.tuning import select_points

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


def _generators(cfg, p: dict, args):
    """What a generating method needs: DDIM, the VAE, and its judge (a scorer or SPO's step-aware
    model: the tiny profile's trained in the pipeline, the paper profile's released checkpoint)."""
    from diffpo.models import load_sampling_scheduler, load_vae
    from diffpo.training import Generators

    if cfg.losers != "reference" and cfg.data != "rollouts":
        return None, []
    generators = Generators(scheduler=load_sampling_scheduler(args.base, cfg.sampler))
    judges = []
    if cfg.data == "rollouts":
        generators.vae = load_vae(args.base).eval().requires_grad_(False)
    tiny = p["profile"] == "tiny"
    if cfg.reward_scorer:
        if tiny:
            from diffpo.reward_models import load_stand_in

            judges.append(Path(args.scorers) / cfg.reward_scorer)
            generators.reward = load_stand_in(judges[-1])
        else:
            from diffpo.scorers import build_scorer

            source = p["scorers"]["sources"][cfg.reward_scorer]
            judges.append(json.dumps(source, sort_keys=True))
            generators.reward = build_scorer(cfg.reward_scorer, **source)
    if cfg.objective == "spo":
        from diffpo.step_aware import load_released_step_aware, load_step_aware

        if tiny:
            judges.append(Path(args.scorers) / "step_aware")
            generators.step_scorer = load_step_aware(judges[-1])
        else:
            source = p["scorers"]["sources"]["step_aware"]  # local copies of its PickScore config and processor too
            judges.append(json.dumps(source, sort_keys=True))
            generators.step_scorer = load_released_step_aware(**source)
    return generators, judges


def cmd_sample(args):
    from diffpo.config import SampleConfig, build

    p = _params(args, "sample", prompt_set=args.prompt_set)
    cfg = build(SampleConfig, p["sample"])
    _set_torch_threads()
    from diffpo.files import write_parquet
    from diffpo.models import load_pipeline, load_sampling_scheduler
    from diffpo.sampling import generate
    from diffpo.sources import read_prompts

    pipe = load_pipeline(args.base, unet_source=args.unet)
    prompts = read_prompts(p["prompt_sets"][args.prompt_set])
    samples = generate(pipe, load_sampling_scheduler(args.base, cfg.scheduler), prompts, cfg, args.seed)
    write_parquet(samples, Path(args.out))
    print(f"{len(samples)} images for {len(prompts)} prompts of {args.prompt_set}")


def cmd_curve(args):
    p = _params(args, "curve")
    _set_torch_threads()
    import pandas as pd
    from safetensors.torch import load_file

    from diffpo.config import SampleConfig, build
    from diffpo.evaluation import decode_samples, describe, load_scorers, score_samples
    from diffpo.files import write_parquet
    from diffpo.models import load_pipeline, load_sampling_scheduler
    from diffpo.sampling import generate
    from diffpo.sources import read_prompts
    from diffpo.training import snapshot_steps

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
    """The world's rater weights: ground truth exists in the tiny profile only."""
    return p["world"] if p["profile"] == "tiny" else None


def _read_pairs(source: str, split: str, size: tuple[int, int] | None = None):
    """``reward_models.read_pairs``, saying how many images of another size it resized."""
    from diffpo.reward_models import read_pairs

    pairs = read_pairs(source, split, size=size)
    if pairs.resized:
        width, height = pairs.image_size
        print(f"{source} {split}: {pairs.resized} images of another size resized to {width}x{height}", file=sys.stderr)
    return pairs


def cmd_train_scorer(args):
    p = _params(args, "train_scorer", scorer=args.scorer)
    _set_torch_threads()
    from diffpo.reward_models import train_stand_in

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
    from diffpo.step_aware import train_step_aware

    cfg = {"seed": p["scorers"]["stand_ins"]["seed"], **p["scorers"]["stand_ins"]["step_aware"]}
    pairs = _read_pairs(p["data"]["source"], p["data"]["split"])
    heldout = _read_pairs(p["data"]["source"], p["scorers"]["accuracy_split"], pairs.image_size)
    summary = train_step_aware(Path(args.pickscore), Path(args.base), pairs, cfg, Path(args.out), heldout=heldout)
    print(json.dumps(summary, indent=2, default=str))


def cmd_evaluate(args):
    p = _params(args, "evaluate")
    _set_torch_threads()
    import pandas as pd

    from diffpo.diversity import diversity_table
    from diffpo.evaluation import decode_samples, describe, load_scorers, score_samples
    from diffpo.files import write_parquet

    samples = pd.read_parquet(args.samples)
    images = decode_samples(samples)
    scorers = load_scorers(p, args.stand_ins)
    scores = score_samples(samples, images, scorers, p["scorers"]["batch_size"], _world(p))
    scores.attrs["scorers"] = describe(scorers)
    write_parquet(scores, Path(args.out))
    # Diversity between a prompt's images (SEE-DPO); needs several images per prompt.
    diversity = diversity_table(images, samples["prompt_id"].to_numpy())
    diversity.insert(0, "seed", int(samples["seed"].iloc[0]))  # one training seed per sample file
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

    from diffpo.data import list_shards
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
    from diffpo.artifacts import accuracy_markdown
    from diffpo.evaluation import load_scorers, scorer_accuracy
    from diffpo.files import atomic_write_text
    from diffpo.rated_pairs import PairStream

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


TABLES = {
    "table1": ("Table 1: preference optimisation methods",
               "Paper: SePPO Table 1 (SD-1.5, Pick-a-Pic validation_unique)"),
    "table4": ("Table 4: SePPO ablations (AAF and reference strategy)",
               "Paper: SePPO Table 4 (SD-1.5, Pick-a-Pic validation_unique)"),
    "see_dpo": ("SEE-DPO: base methods and their self-entropy-enhanced variants",
                "Paper: SEE-DPO's tables are not available to this project, only relative claims (SEE-SPO vs SPO: "
                "PickScore +1.8 %, HPS +7.9 %, ImageReward +206.3 %; every SEE model more diverse on all six "
                "metrics), so no paper cells. Diversity: between the images of one prompt (docs/metrics.md); "
                "↑/↓: the direction that means more diverse"),
}


def cmd_table(args):
    from diffpo.artifacts import score_table, write_table
    from diffpo.files import atomic_write_text

    rows = list(dict.fromkeys(name for name, _ in args.scores))
    p = _params(args, "table", table=args.table, rows=rows)
    files = _grouped(args.scores)
    diversity = _grouped(args.diversity) if args.diversity else None
    labels = {"base": "Base model", **{m: p["methods"][m]["label"] for m in rows if m != "base"}}
    table = score_table(files, labels, args.table, diversity_files=diversity)
    title, paper = TABLES[args.table]
    note = (
        "Δ is paired with the base model on the same training seeds, prompts and evaluation noise. In the tiny profile, GT columns are the world's hidden raters and "
        "the learned-scorer columns are stand-ins of the same families trained in the pipeline, so their scale "
        f"is not the paper's. {paper}; an empty paper cell means the paper reports no number for that row. Scorers:"
    )
    write_table(table, Path(args.csv), Path(args.md), title, note)
    summary = {r["method"]: {k: r[k] for k in r if k.endswith(("_mean", "_low", "_high", "_delta"))}
               for r in table.to_dict("records")}
    atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    print(Path(args.md).read_text())


def cmd_claims(args):
    p = _params(args, "claims")
    from diffpo.claims import ResultFiles, claims_markdown, evaluate_claims, load_claims
    from diffpo.files import atomic_write_text

    files = ResultFiles(Path(args.results), p["seeds"], p["sample"]["prompt_set"])
    table = evaluate_claims(load_claims(Path(args.claims)), p, files)
    atomic_write_text(args.csv, table.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(args.md, claims_markdown(table, p["seeds"], p["sample"]["prompt_set"]))
    print(Path(args.md).read_text())


def _grouped(named_paths) -> dict[str, list[Path]]:
    """METHOD=PATH arguments, one per training seed, grouped by method (in order)."""
    out: dict[str, list[Path]] = {}
    for name, path in named_paths:
        out.setdefault(name, []).append(path)
    return out


def cmd_figures(args):
    from diffpo.artifacts import plot_training_curves

    methods = [name for name, _ in args.metrics]
    p = _params(args, "figures", methods=methods)
    labels = {m: p["methods"][m]["label"] for m in methods}
    files = dict(args.metrics)
    plot_training_curves(files, labels, Path(args.out))


def cmd_benchmark(args):
    from diffpo.config import load_params

    params = load_params(args.params)
    _set_torch_threads()
    from diffpo.benchmark import report, run

    figures = run(params, repeats=args.repeats, source=args.source, split=args.split)
    if args.out:
        from diffpo.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(figures, indent=2) + "\n")
    print(report(figures))


def cmd_compute_budget(args):
    from diffpo.budget import compute_budget
    from diffpo.config import load_params, read_yaml
    from diffpo.files import atomic_write_text

    text = compute_budget(load_params(args.params, profile="paper"), json.loads(Path(args.benchmark).read_text()),
                          read_yaml(Path(args.assumptions)), args.benchmark)
    atomic_write_text(args.out, text)
    print(text)


def cmd_dvc_yaml(args):
    from diffpo.workflow import dvc_yaml

    text = dvc_yaml(Path(args.root).resolve(), args.targets)
    if args.check:
        current = (Path(args.root) / "dvc.yaml").read_text()
        if current != text:
            sys.exit("dvc.yaml is out of date: run `python -m diffpo dvc-yaml > dvc.yaml`")
        print("dvc.yaml is current")
    else:
        sys.stdout.write(text)


def cmd_dvc_commit(args):
    from diffpo.workflow import dvc_commit

    for warning in dvc_commit(Path(args.root), args.targets):
        print(f"warning: {warning}", file=sys.stderr)


def cmd_render_docs(args):
    from diffpo.reporting import render_documents

    stale = render_documents(Path(args.root), check=args.check)
    if args.check and stale:
        sys.exit(f"out of date with results/: {', '.join(stale)}; run `python -m diffpo render-docs`")
    print("documents agree with results/" if args.check else f"rendered: {', '.join(stale) or 'nothing changed'}")


def cmd_timings(args):
    from diffpo.files import atomic_write_text
    from diffpo.reporting import timings_markdown

    # The latest log of a run that executed jobs (building a DAG, as dvc-commit does, logs too).
    logs = [log for log in sorted(Path(args.root, ".snakemake/log").glob("*.snakemake.log")) if "Finished jobid" in log.read_text()]
    log = Path(args.snakemake_log) if args.snakemake_log else (logs[-1] if logs else None)
    if log is None:
        sys.exit("no Snakemake log in .snakemake/log: run the workflow first")
    atomic_write_text(args.out, timings_markdown(Path(args.root), log))
    print(Path(args.out).read_text())


def build_parser() -> argparse.ArgumentParser:
    return cli_parser.build_parser(lambda name: globals()["cmd_" + name.replace("-", "_")], sorted(TABLES))


def _is_main_process() -> bool:
    """Under ``accelerate launch`` every rank runs the command; rank 0 (or no rank) is the main one."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
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
