# Validate params.yaml (both profiles, against workflow/schemas/params.schema.yaml) before
# any rule is read, and hold the helpers that turn settings into target paths.
# params.yaml is read by diffpo's own loader rather than `configfile:` + `validate`, because
# values may be written per profile ({tiny: .., paper: ..}). The one command-line setting is the
# profile (`--config profile=paper`); any other --config key is an error (edit params.yaml).
import os
import sys

ROOT = Path(str(workflow.current_basedir)).parents[1]  # the project root: this file is workflow/rules/common.smk
sys.path.insert(0, str(ROOT / "src"))

from diffpo.settings.params import PROFILE_VARIABLE, command_line_profile, load_params, select
from diffpo.settings.configs import method_judges
from diffpo.settings.experiments import all_runs, curve_runs, prolonged_runs, resolve_run
from diffpo.settings.tuning import grid_points
from diffpo.settings.tuning import grids as tuning_grids
from diffpo.settings.stages import stage_keys, tune_keys
from diffpo.pipeline.code_inputs import code_files
from diffpo.pipeline.gpu_slots import launch_command

# `--config profile=paper` picks the profile; the jobs' own `python -m diffpo` read it from
# DIFFPO_PROFILE (diffpo.settings.params.load_params), exported here to every job Snakemake starts.
PROFILE = command_line_profile(config, ROOT / "params.yaml")
config.clear()
config.update(load_params(ROOT / "params.yaml", profile=PROFILE))
os.environ[PROFILE_VARIABLE] = config["profile"]
# What the pipeline builds itself (params.yaml `build`): the rules name these features, never the profile.
BUILDS_WORLD = config["build"]["world"]  # the synthetic world and the base's corpus
BUILDS_BASE = config["build"]["base"]  # the base model, pre-trained on that corpus
BUILDS_STAND_INS = config["build"]["stand_ins"]  # stand-in scorers, trained on the world's raters
# A method trained on the pre-training corpus (the plateau control) exists where the pipeline
# pre-trains the base on its own corpus (SD-1.5's LAION is not part of the paper profile).
METHODS = [m for m, s in config["methods"].items() if BUILDS_BASE or s.get("dataset", "preferences") != "corpus"]
# Every trained run: the methods, then the experiments' variant runs (diffpo.settings.experiments).
RUNS = METHODS + [r for r in all_runs(config) if r not in config["methods"]]
CURVE_RUNS = curve_runs(config)  # runs whose snapshots are sampled and scored along training
PROLONGED_RUNS = prolonged_runs(config)  # the longest trainings: started first (rule train's priority)
MODELS = ["base"] + RUNS
PROMPT_SET = config["sample"]["prompt_set"]
PROMPT_SETS = list(config["prompt_sets"])
SCORERS = config["scorers"]["names"]
TABLES = list(config["tables"])
SEEDS = config["seeds"]  # every trained row runs once per training seed; the base is sampled per seed
# The command the onsuccess handler runs. Rules spell it out in their shell: instead (a shell
# command reading a global variable is a lint: Snakemake cannot track it).
CLI = "python -m diffpo"


def code(command, *unexpected):
    """The package files ``python -m diffpo COMMAND`` runs (derived from the cli package's imports by
    diffpo.pipeline.code_inputs.code_files): a rule reruns when they change, in Snakemake as in DVC."""
    if unexpected:
        raise ValueError(f"code{(command, *unexpected)}: pass the rule's subcommand only, e.g. code('train')")
    return code_files(command, ROOT)


def launch(processes=False):
    """A rule's ``params.launch``: how its command starts, from the job's ``gpu`` resource, which
    only the workflow profiles set (none: the CPU; diffpo.pipeline.gpu_slots.launch_command)."""
    return lambda wildcards, resources: launch_command(resources.get("gpu", 0), processes)


def keys(stage, **wildcards):
    return stage_keys(stage, **wildcards)


def values(stage):
    """A params: entry holding the values of the keys ``stage`` reads (rerun on change)."""
    return lambda wc: select(config, stage_keys(stage, **dict(wc.items())))


def data_source():
    return "results/world" if BUILDS_WORLD else config["data"]["source"]


def base_input(path):
    """A folder of the base model that the tiny profile builds in the pipeline (an input of
    the job); none in the paper profile, which loads base.pretrained."""
    return path if BUILDS_BASE else []


def base_path(name):
    """The base model a job is given: its input ``name`` in the tiny profile (derived from
    the input, not written a second time), base.pretrained in the paper profile (a plain
    value: changing it reruns the job)."""
    return (lambda wildcards, input: input[name]) if BUILDS_BASE else config["base"]["pretrained"]


def stand_ins():
    """The trained stand-in scorers every evaluation needs (tiny profile only)."""
    return expand("results/scorers/{scorer}", scorer=SCORERS) if BUILDS_STAND_INS else []


def method_of(run):
    """The registered method a run (a method or an experiment's variant) starts from."""
    return resolve_run(config, run).method


def training_cache(run):
    """The encoded data a run trains on: the preference pairs, or the base's own corpus."""
    corpus = config["methods"][method_of(run)].get("dataset", "preferences") == "corpus"
    return "results/cache_corpus" if corpus else "results/cache"


def unet_of(model, seed):
    return [] if model == "base" else [f"results/models/{model}/seed{seed}/unet"]


def table_rows(table):
    """The table's rows, led by the base model (the baseline of every paired difference)."""
    rows = config["tables"][table]["rows"]
    unknown = [r for r in rows if r not in MODELS]
    if unknown:
        raise ValueError(f"params.yaml: tables.{table}.rows: unknown methods {unknown}; defined: {MODELS}")
    return rows if "base" in rows else ["base"] + rows


def judges(run):
    """The trained scorers judging a run's own samples (tiny profile; the paper's are loaded)."""
    return [f"results/scorers/{j}" for j in method_judges(config, method_of(run))] if BUILDS_STAND_INS else []


def train_keys(run):
    """The keys a run's training reads: its method's, its judges' and its experiment's."""
    spec = resolve_run(config, run)
    return keys("train", method=spec.method, judges=method_judges(config, spec.method), experiment=spec.experiment)


def scores(model, seed, prompt_set=PROMPT_SET):
    return f"results/scores/{model}/seed{seed}/{prompt_set}.parquet"


def diversity(model, seed, prompt_set=PROMPT_SET):
    return f"results/diversity/{model}/seed{seed}/{prompt_set}.parquet"


def diversity_set(table):
    """The prompt set of a table's diversity columns (none for a table without them)."""
    return config["tables"][table].get("diversity_prompt_set")


def per_seed(files, models, prompt_set=PROMPT_SET):
    """``files(model, seed)`` for every model and training seed, as the table command's
    METHOD=PATH arguments (one per seed) and as the rule's input list (none without a prompt set)."""
    if prompt_set is None:
        return [], ""
    pairs = [(m, files(m, s, prompt_set)) for m in models for s in SEEDS]
    return [path for _, path in pairs], " ".join(f"{m}={path}" for m, path in pairs)


def table_scores(table):
    """A table's score files: per_seed over its prompt sets (default: the reported set)."""
    pairs = [per_seed(scores, table_rows(table), prompt_set) for prompt_set in table_sets(table)]
    return [path for paths, _ in pairs for path in paths], " ".join(args for _, args in pairs)


def table_sets(table):
    """The prompt sets a table reports (default: the reported set, sample.prompt_set)."""
    sets = config["tables"][table].get("prompt_sets", [PROMPT_SET])
    unknown = [s for s in sets if s not in PROMPT_SETS]
    if unknown:
        raise ValueError(
            f"params.yaml: tables.{table}.prompt_sets: unknown prompt sets {unknown}; defined: {PROMPT_SETS}"
        )
    return sets


def claims_inputs():
    """Every result file workflow/claims.yaml reads (diffpo.evidence.claims.required_files)."""
    from diffpo.evidence.claims import ResultFiles, load_claims, required_files

    files = ResultFiles(Path("results"), SEEDS, PROMPT_SET)
    return required_files(load_claims(ROOT / "workflow" / "claims.yaml"), config, files)


# ---------------------------------------------------------------- tuning (rules/tuning.smk)
def tuned_methods():
    return list(tuning_grids(config))


def grid_results(method):
    """Every grid point's result file of ``method`` (none for a method without a grid)."""
    if method is None:
        return []
    n = len(grid_points(config, method))
    return [f"results/tuning/{method}/point{i}.json" for i in range(n)]


def grid_origin(method):
    return config["tuning"]["grids"][method].get("from")


def tuning_metric_scorer():
    """The stand-in scorer the tuning metric reads (none for a ground-truth metric)."""
    metric = config["tuning"]["metric"]
    return [] if metric.startswith("gt_") or not BUILDS_STAND_INS else [f"results/scorers/{metric}"]


# ---------------------------------------------------------------- figures (workflow/artifacts.yaml)
def figure_ids():
    """The figures the catalogue lists whose runs these settings define (diffpo.evidence.figures draws each)."""
    import yaml

    from diffpo.evidence.figures import available

    artifacts = yaml.safe_load((ROOT / "workflow" / "artifacts.yaml").read_text())["artifacts"]
    return [a["figure"] for a in artifacts if a["kind"] == "figure" and available(a["figure"], config)]


def figure_inputs(figure):
    from diffpo.evidence.claims import ResultFiles
    from diffpo.evidence.figures import required_files

    return required_files(figure, config, ResultFiles(Path("results"), SEEDS, PROMPT_SET))


def artifact_caption(target):
    """The caption workflow/artifacts.yaml gives the artifact written to ``target`` (the report's)."""
    import yaml

    artifacts = yaml.safe_load((ROOT / "workflow" / "artifacts.yaml").read_text())["artifacts"]
    found = [a for a in artifacts if a.get("target") == target]
    return f"{found[0]['reproduces']}. {found[0]['caption']}" if found else ""
