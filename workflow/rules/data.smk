# Data: the synthetic world (tiny profile), tie removal, and the encoded cache.

if TINY:

    rule world:
        input:
            code("world"),
        output:
            directory("results/world"),
        params:
            param_keys=keys("world"),
            values=values("world"),
        log:
            "logs/world.log",
        benchmark:
            "benchmarks/world.tsv"
        shell:
            "{CLI} world --out {output} --log {log}"


    rule corpus:
        input:
            code("corpus"),
        output:
            directory(config["corpus"]["source"]),
        params:
            param_keys=keys("corpus"),
            values=values("corpus"),
        log:
            "logs/corpus.log",
        benchmark:
            "benchmarks/corpus.tsv"
        shell:
            "{CLI} corpus --out {output} --log {log}"


rule prepare:
    input:
        code("prepare"),
        source=[data_source()] if TINY else [],
    output:
        pairs="results/data/train_pairs.parquet",
        manifest="results/data/manifest.json",
    params:
        param_keys=keys("prepare"),
        values=values("prepare"),
    log:
        "logs/prepare.log",
    benchmark:
        "benchmarks/prepare.tsv"
    shell:
        "{CLI} prepare --pairs {output.pairs} --manifest {output.manifest} --log {log}"


rule encode:
    input:
        code("encode"),
        pairs="results/data/train_pairs.parquet",
        models=["results/base/text", "results/base/autoencoder"] if TINY else [],
    output:
        directory("results/cache"),
    params:
        param_keys=keys("encode"),
        values=values("encode"),
        text_encoder=text_encoder_source(),
        vae=vae_source(),
    resources:
        gpu=0 if TINY else 1,
    priority: 10  # on the critical path: base model first, scorers and the rest after
    log:
        "logs/encode.log",
    benchmark:
        "benchmarks/encode.tsv"
    shell:
        "{CLI} encode --pairs {input.pairs} --text-encoder {params.text_encoder} --vae {params.vae}"
        " --out {output} --log {log}"
