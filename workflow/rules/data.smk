# Data: the synthetic world (tiny profile), tie removal, and the encoded cache.

if BUILDS_WORLD:

    rule world:
        input:
            code("world"),
        output:
            directory("results/world"),
        log:
            "logs/world.log",
        benchmark:
            "benchmarks/world.tsv"
        conda:
            "../envs/diffpo.yaml"
        params:
            param_keys=keys("world"),
            values=values("world"),
        shell:
            "python -m diffpo world --out {output} --log {log}"

    rule corpus:
        input:
            code("corpus"),
        output:
            directory(config["corpus"]["source"]),
        log:
            "logs/corpus.log",
        benchmark:
            "benchmarks/corpus.tsv"
        conda:
            "../envs/diffpo.yaml"
        params:
            param_keys=keys("corpus"),
            values=values("corpus"),
        shell:
            "python -m diffpo corpus --out {output} --log {log}"


rule prepare:
    input:
        code("prepare"),
        source=[data_source()] if BUILDS_WORLD else [],
    output:
        pairs="results/data/train_pairs.parquet",
        manifest="results/data/manifest.json",
    log:
        "logs/prepare.log",
    benchmark:
        "benchmarks/prepare.tsv"
    conda:
        "../envs/diffpo.yaml"
    params:
        param_keys=keys("prepare"),
        values=values("prepare"),
    shell:
        "python -m diffpo prepare --pairs {output.pairs} --manifest {output.manifest} --log {log}"


rule encode:
    input:
        code("encode"),
        pairs="results/data/train_pairs.parquet",
        text_encoder=base_input("results/base/text"),
        vae=base_input("results/base/autoencoder"),
    output:
        directory("results/cache"),
    log:
        "logs/encode.log",
    benchmark:
        "benchmarks/encode.tsv"
    priority: 10  # on the critical path: base model first, scorers and the rest after
    conda:
        "../envs/diffpo.yaml"
    params:
        launch=launch(),
        param_keys=keys("encode"),
        values=values("encode"),
        text_encoder=base_path("text_encoder"),
        vae=base_path("vae"),
    shell:
        "{params.launch} -m diffpo encode --pairs {input.pairs} --text-encoder {params.text_encoder} --vae {params.vae}"
        " --out {output} --log {log}"
