# Preference training: one job per method of the registry (params.yaml `methods`).


rule train:
    input:
        code("train"),
        base_inputs(),
        cache=lambda wc: training_cache(wc.method),
        judges=lambda wc: judges(wc.method),
    output:
        unet=directory("results/models/{method}/unet"),
        metrics="results/models/{method}/metrics.csv",
    wildcard_constraints:
        method="|".join(METHODS),
    params:
        param_keys=lambda wc: keys("train", method=wc.method, judges=method_judges(config, wc.method)),
        values=lambda wc: select(config, keys("train", method=wc.method, judges=method_judges(config, wc.method))),
        base=base_model(),
        work="results/checkpoints/{method}",
        # Several GPUs: accelerate starts one process per GPU (the trainer is accelerate-based).
        launch=lambda wc, resources: "python" if resources.gpu <= 1 else f"accelerate launch --num_processes {resources.gpu}",
    resources:
        gpu=0 if TINY else 8,
    log:
        "logs/train/{method}.log",
    benchmark:
        "benchmarks/train/{method}.tsv"
    shell:
        "{params.launch} -m diffpo train --scorers results/scorers --method {wildcards.method} --base {params.base} --cache {input.cache}"
        " --work {params.work} --out {output.unet} --metrics {output.metrics} --log {log}"
