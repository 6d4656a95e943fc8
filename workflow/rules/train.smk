# Preference training: one job per run (a method of the registry, params.yaml `methods`,
# or an experiment's variant, `experiments`) and training seed (`seeds`). The runs that
# `experiments.curves` names keep their snapshots, scored along training (rule curve).


rule train:
    input:
        code("train"),
        base=base_input("results/base/pipeline"),
        cache=lambda wc: training_cache(wc.method),
        judges=lambda wc: judges(wc.method),
    output:
        unet=directory("results/models/{method}/seed{seed}/unet"),
        metrics="results/models/{method}/seed{seed}/metrics.csv",
        snapshots=directory("results/models/{method}/seed{seed}/snapshots"),
    log:
        "logs/train/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method="|".join(RUNS),
        seed=r"\d+",
    priority: lambda wc: 1 if wc.method in PROLONGED_RUNS else 0
    conda:
        "../envs/diffpo.yaml"
    params:
        param_keys=lambda wc: train_keys(wc.method),
        values=lambda wc: select(config, train_keys(wc.method)),
        keep_snapshots=lambda wc: "--keep-snapshots" if wc.method in CURVE_RUNS else "",
        base=base_path("base"),
        work="results/checkpoints/{method}/seed{seed}",
        # Several GPUs (workflow profile): accelerate starts one process per GPU (the trainer is accelerate-based).
        launch=launch(processes=True),
    shell:
        "{params.launch} -m diffpo train --scorers results/scorers --method {wildcards.method} --seed {wildcards.seed} --base {params.base} --cache {input.cache}"
        " --work {params.work} --out {output.unet} --metrics {output.metrics} --snapshots {output.snapshots}"
        " {params.keep_snapshots} --log {log}"


# Scores along training (SePPO Figs. 2-3; reward hacking): a run's snapshots, and the base
# model as step 0, sampled on the first prompts of the reported set and scored.
rule curve:
    input:
        code("curve"),
        base=base_input("results/base/pipeline"),
        snapshots="results/models/{method}/seed{seed}/snapshots",
        prompts=[data_source()] if BUILDS_WORLD else [],
        scorers=stand_ins(),
    output:
        "results/curves/{method}/seed{seed}.parquet",
    log:
        "logs/curve/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/curve/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method="|".join(CURVE_RUNS) or "^$",
        seed=r"\d+",
    conda:
        "../envs/diffpo.yaml"
    params:
        launch=launch(),
        param_keys=keys("curve", prompt_set=PROMPT_SET),
        values=lambda wc: select(config, keys("curve", prompt_set=PROMPT_SET)),
        base=base_path("base"),
        stand_ins="--stand-ins results/scorers" if BUILDS_STAND_INS else "",
    shell:
        "{params.launch} -m diffpo curve --base {params.base} --snapshots {input.snapshots} --seed {wildcards.seed}"
        " {params.stand_ins} --out {output} --log {log}"
