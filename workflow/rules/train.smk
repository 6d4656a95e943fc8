# Preference training: one job per method of the registry (params.yaml `methods`).

from diffpo.gpu_slots import rule_prefix  # GPU jobs take their own GPUs (workflow/profiles/local-gpus)


rule train:
    input:
        code("train"),
        base=base_input("results/base/pipeline"),
        cache=lambda wc: training_cache(wc.method),
        judges=lambda wc: judges(wc.method),
    output:
        unet=directory("results/models/{method}/unet"),
        metrics="results/models/{method}/metrics.csv",
    log:
        "logs/train/{method}.log",
    benchmark:
        "benchmarks/train/{method}.tsv"
    wildcard_constraints:
        method="|".join(METHODS),
    conda:
        "../envs/diffpo.yaml"
    resources:
        gpu=0 if TINY else 8,
    params:
        param_keys=lambda wc: keys("train", method=wc.method, judges=method_judges(config, wc.method)),
        values=lambda wc: select(config, keys("train", method=wc.method, judges=method_judges(config, wc.method))),
        base=base_path("base"),
        work="results/checkpoints/{method}",
        # Several GPUs: accelerate starts one process per GPU (the trainer is accelerate-based).
        launch=lambda wc, resources: (
            "python" if resources.gpu <= 1 else f"accelerate launch --num_processes {resources.gpu}"
        ),
    shell:
        rule_prefix(TINY)
        + "{params.launch} -m diffpo train --scorers results/scorers --method {wildcards.method} --base {params.base} --cache {input.cache}"
        " --work {params.work} --out {output.unet} --metrics {output.metrics} --log {log}"
