# Preference training: one job per method of the registry (params.yaml `methods`) and
# training seed (params.yaml `seeds`).


rule train:
    input:
        code("train"),
        base=base_input("results/base/pipeline"),
        cache=lambda wc: training_cache(wc.method),
        judges=lambda wc: judges(wc.method),
    output:
        unet=directory("results/models/{method}/seed{seed}/unet"),
        metrics="results/models/{method}/seed{seed}/metrics.csv",
    log:
        "logs/train/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method="|".join(METHODS),
        seed=r"\d+",
    conda:
        "../envs/diffpo.yaml"
    resources:
        gpu=0 if TINY else 8,
    params:
        param_keys=lambda wc: keys("train", method=wc.method, judges=method_judges(config, wc.method)),
        values=lambda wc: select(config, keys("train", method=wc.method, judges=method_judges(config, wc.method))),
        base=base_path("base"),
        work="results/checkpoints/{method}/seed{seed}",
        # Several GPUs: accelerate starts one process per GPU (the trainer is accelerate-based).
        launch=lambda wc, resources: (
            "python" if resources.gpu <= 1 else f"accelerate launch --num_processes {resources.gpu}"
        ),
    shell:
        "{params.launch} -m diffpo train --scorers results/scorers --method {wildcards.method} --seed {wildcards.seed} --base {params.base} --cache {input.cache}"
        " --work {params.work} --out {output.unet} --metrics {output.metrics} --log {log}"
