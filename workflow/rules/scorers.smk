# Learned reward models: tiny-profile stand-ins trained on the world's raters, and every
# scorer's agreement with held-out preferences. The paper profile loads the real checkpoints.

if BUILDS_STAND_INS:

    rule train_scorer:
        input:
            code("train-scorer"),
            source=data_source(),
            text_encoder="results/base/text",
        output:
            directory("results/scorers/{scorer}"),
        log:
            "logs/train_scorer/{scorer}.log",
        benchmark:
            "benchmarks/train_scorer/{scorer}.tsv"
        wildcard_constraints:
            scorer="|".join(SCORERS),
        conda:
            "../envs/diffpo.yaml"
        params:
            param_keys=lambda wc: keys("train_scorer", scorer=wc.scorer),
            values=values("train_scorer"),
        shell:
            "python -m diffpo train-scorer --scorer {wildcards.scorer} --text-encoder {input.text_encoder} --out {output} --log {log}"

    # SPO's step-aware preference model: the PickScore stand-in, conditioned on t and trained on
    # the base model's x0 predictions from noised pairs (the paper profile loads SPO's release).
    rule train_step_scorer:
        input:
            code("train-step-scorer"),
            source=data_source(),
            pickscore="results/scorers/pickscore",
            base="results/base/pipeline",
        output:
            directory("results/scorers/step_aware"),
        log:
            "logs/train_scorer/step_aware.log",
        benchmark:
            "benchmarks/train_scorer/step_aware.tsv"
        conda:
            "../envs/diffpo.yaml"
        params:
            param_keys=keys("train_step_scorer"),
            values=values("train_step_scorer"),
        shell:
            "python -m diffpo train-step-scorer --pickscore {input.pickscore} --base {input.base} --out {output} --log {log}"


rule scorer_accuracy:
    input:
        code("scorer-accuracy"),
        source=[data_source()] if BUILDS_WORLD else [],
        scorers=stand_ins(),
    output:
        csv="results/scorer_accuracy.csv",
        md="results/scorer_accuracy.md",
    log:
        "logs/scorer_accuracy.log",
    benchmark:
        "benchmarks/scorer_accuracy.tsv"
    conda:
        "../envs/diffpo.yaml"
    params:
        launch=launch(),
        param_keys=keys("scorer_accuracy"),
        values=values("scorer_accuracy"),
        stand_ins="--stand-ins results/scorers" if BUILDS_STAND_INS else "",
    shell:
        "{params.launch} -m diffpo scorer-accuracy {params.stand_ins} --csv {output.csv} --md {output.md} --log {log}"
