# diffpo workflow entry: settings, helpers and one rule file per stage.
# `snakemake --cores all results/table1.csv`; settings live in params.yaml.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/base.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/scorers.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"


rule all:
    default_target: True
    input:
        "results/table1.csv",
        "results/table4.csv",
        "results/see_dpo.csv",
        "results/scorer_accuracy.csv",
        "results/figures/training_curves.png",
        "results/world_stats.json" if TINY else [],


# Record the outputs Snakemake holds current in dvc.lock (`dvc commit` of exactly those
# stages), so that `dvc status` and `dvc repro` see finished work as done. Only warns
# where DVC is not set up.
onsuccess:
    shell("{CLI} dvc-commit --log logs/dvc_commit.log")
