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
