# Sampling and scoring; per-image scores are kept so tables never score twice.


# One job per model, training seed and prompt set samples and then scores: the imports and
# the pipeline are paid once (a separate scoring job cost about as much start-up again).
rule evaluate:
    input:
        code("evaluate"),
        base=base_input("results/base/pipeline"),
        unet=lambda wc: unet_of(wc.model, wc.seed),
        prompts=[data_source()] if BUILDS_WORLD else [],
        scorers=stand_ins(),
    output:
        samples="results/samples/{model}/seed{seed}/{prompt_set}.parquet",
        scores="results/scores/{model}/seed{seed}/{prompt_set}.parquet",
        diversity="results/diversity/{model}/seed{seed}/{prompt_set}.parquet",
    log:
        "logs/evaluate/{model}/seed{seed}/{prompt_set}.log",
    benchmark:
        "benchmarks/evaluate/{model}/seed{seed}/{prompt_set}.tsv"
    wildcard_constraints:
        model="|".join(MODELS),
        seed=r"\d+",
        prompt_set="|".join(PROMPT_SETS),
    conda:
        "../envs/diffpo.yaml"
    params:
        launch=launch(),
        param_keys=lambda wc: keys("evaluate", prompt_set=wc.prompt_set),
        values=values("evaluate"),
        base=base_path("base"),
        unet=lambda wc, input: f"--unet {input.unet}" if input.unet else "",
        stand_ins="--stand-ins results/scorers" if BUILDS_STAND_INS else "",
    shell:
        "{params.launch} -m diffpo evaluate --base {params.base} {params.unet} --seed {wildcards.seed}"
        " --prompt-set {wildcards.prompt_set} {params.stand_ins} --samples {output.samples}"
        " --scores {output.scores} --diversity {output.diversity} --log {log}"


if BUILDS_WORLD:

    # The world's facts that need the base model: the preference data's images against the
    # base's samples of the same prompts (must be better), and the base's diversity (its
    # samples of the first training seed's evaluation noise).
    rule world_stats:
        input:
            code("world-stats"),
            source=data_source(),
            corpus=config["corpus"]["source"],
            scores=scores("base", SEEDS[0]),
            diversity=diversity("base", SEEDS[0]),
        output:
            "results/world_stats.json",
        log:
            "logs/world_stats.log",
        conda:
            "../envs/diffpo.yaml"
        params:
            param_keys=keys("world_stats"),
            values=values("world_stats"),
        shell:
            "python -m diffpo world-stats --scores {input.scores} --diversity {input.diversity} --out {output} --log {log}"
