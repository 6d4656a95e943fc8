# Choosing settings (params.yaml `tuning`): every grid point of every tuned method, trained
# with one seed and scored on the tuning prompt set, then one selection rule. Its own target
# (`snakemake --cores all results/tuning/selection.csv`): params.yaml holds the selection,
# and tests/test_tuning.py checks that it equals the committed results/tuning/selection.csv.


rule tune:
    input:
        code("tune"),
        base=base_input("results/base/pipeline"),
        cache=lambda wc: training_cache(wc.method),
        judges=lambda wc: judges(wc.method),
        metric_scorer=tuning_metric_scorer(),
        prompts=[data_source()] if BUILDS_WORLD else [],
        origin=lambda wc: grid_results(grid_origin(wc.method)),
    output:
        "results/tuning/{method}/point{point}.json",
    log:
        "logs/tune/{method}/point{point}.log",
    benchmark:
        "benchmarks/tune/{method}/point{point}.tsv"
    wildcard_constraints:
        method="|".join(tuned_methods()) or "^$",
        point=r"\d+",
    conda:
        "../envs/diffpo.yaml"
    params:
        launch=launch(processes=True),  # several GPUs: one training process each
        param_keys=lambda wc: keys("tune", keys=tune_keys(config, wc.method)),
        values=lambda wc: select(config, tune_keys(config, wc.method)),
        base=base_path("base"),
        work="results/tuning/checkpoints/{method}/point{point}",
        origin=lambda wc, input: f"--origin-results {' '.join(input.origin)}" if input.origin else "",
    shell:
        "{params.launch} -m diffpo tune --scorers results/scorers --method {wildcards.method} --point {wildcards.point}"
        " --base {params.base} --cache {input.cache} --work {params.work} {params.origin} --out {output} --log {log}"


rule tune_select:
    input:
        code("tune-select"),
        results=[f for m in tuned_methods() for f in grid_results(m)],
    output:
        csv="results/tuning/selection.csv",
        md="results/tuning/selection.md",
    log:
        "logs/tune_select.log",
    conda:
        "../envs/diffpo.yaml"
    params:
        param_keys=keys("tune_select"),
        values=values("tune_select"),
    shell:
        "python -m diffpo tune-select --results {input.results} --csv {output.csv} --md {output.md} --log {log}"
