# Sampling and scoring; per-image scores are kept so tables never score twice.

from diffpo.gpu_slots import rule_prefix  # GPU jobs take their own GPUs (workflow/profiles/local-gpus)


rule sample:
    input:
        code("sample"),
        base=base_input("results/base/pipeline"),
        unet=lambda wc: unet_of(wc.model, wc.seed),
        prompts=[data_source()] if TINY else [],
    output:
        "results/samples/{model}/seed{seed}/{prompt_set}.parquet",
    log:
        "logs/sample/{model}/seed{seed}/{prompt_set}.log",
    benchmark:
        "benchmarks/sample/{model}/seed{seed}/{prompt_set}.tsv"
    wildcard_constraints:
        model="|".join(MODELS),
        seed=r"\d+",
        prompt_set="|".join(PROMPT_SETS),
    conda:
        "../envs/diffpo.yaml"
    resources:
        gpu=0 if TINY else 1,
    params:
        param_keys=lambda wc: keys("sample", prompt_set=wc.prompt_set),
        values=values("sample"),
        base=base_path("base"),
        unet=lambda wc, input: f"--unet {input.unet}" if input.unet else "",
    shell:
        rule_prefix(TINY)
        + "python -m diffpo sample --base {params.base} {params.unet} --seed {wildcards.seed} --prompt-set {wildcards.prompt_set}"
        " --out {output} --log {log}"


rule evaluate:
    input:
        code("evaluate"),
        samples="results/samples/{model}/seed{seed}/{prompt_set}.parquet",
        scorers=stand_ins(),
    output:
        scores="results/scores/{model}/seed{seed}/{prompt_set}.parquet",
        diversity="results/diversity/{model}/seed{seed}/{prompt_set}.parquet",
    log:
        "logs/evaluate/{model}/seed{seed}/{prompt_set}.log",
    benchmark:
        "benchmarks/evaluate/{model}/seed{seed}/{prompt_set}.tsv"
    conda:
        "../envs/diffpo.yaml"
    resources:
        gpu=0 if TINY else 1,
    params:
        param_keys=keys("evaluate"),
        values=values("evaluate"),
        stand_ins="--stand-ins results/scorers" if TINY else "",
    shell:
        rule_prefix(TINY)
        + "python -m diffpo evaluate --samples {input.samples} {params.stand_ins} --out {output.scores}"
        " --diversity {output.diversity} --log {log}"


if TINY:

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
