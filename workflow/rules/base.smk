# Pre-training of the tiny profile's Stable-Diffusion-shaped base model.
# Trained on the tiny world's own corpus (results/corpus), never on a preference image.
# The paper profile loads SD-1.5 instead (base.pretrained) and has none of these jobs.

if BUILDS_BASE:

    rule pretrain_text_encoder:
        input:
            code("pretrain-text-encoder"),
            source=config["corpus"]["source"],
        output:
            directory("results/base/text"),
        log:
            "logs/pretrain_text_encoder.log",
        benchmark:
            "benchmarks/pretrain_text_encoder.tsv"
        priority: 10  # on the critical path: base model first, scorers and the rest after
        conda:
            "../envs/diffpo.yaml"
        params:
            param_keys=keys("pretrain_text_encoder"),
            values=values("pretrain_text_encoder"),
        shell:
            "python -m diffpo pretrain-text-encoder --out {output} --log {log}"

    rule pretrain_vae:
        input:
            code("pretrain-vae"),
            source=config["corpus"]["source"],
        output:
            directory("results/base/autoencoder"),
        log:
            "logs/pretrain_vae.log",
        benchmark:
            "benchmarks/pretrain_vae.tsv"
        priority: 10  # on the critical path: base model first, scorers and the rest after
        conda:
            "../envs/diffpo.yaml"
        params:
            param_keys=keys("pretrain_vae"),
            values=values("pretrain_vae"),
        shell:
            "python -m diffpo pretrain-vae --out {output} --log {log}"

    # The corpus's latents and captions, encoded once: the UNet's pre-training data and the
    # plateau control's (the same budget on the same data must not move the base).
    rule encode_corpus:
        input:
            code("encode-corpus"),
            source=config["corpus"]["source"],
            text_encoder="results/base/text",
            vae="results/base/autoencoder",
        output:
            directory("results/cache_corpus"),
        log:
            "logs/encode_corpus.log",
        benchmark:
            "benchmarks/encode_corpus.tsv"
        priority: 10  # on the critical path: base model first, scorers and the rest after
        conda:
            "../envs/diffpo.yaml"
        params:
            param_keys=keys("encode_corpus"),
            values=values("encode_corpus"),
        shell:
            "python -m diffpo encode-corpus --text-encoder {input.text_encoder} --vae {input.vae} --out {output} --log {log}"

    rule pretrain_unet:
        input:
            code("pretrain-unet"),
            cache="results/cache_corpus",
            text_encoder="results/base/text",
            vae="results/base/autoencoder",
        output:
            pipeline=directory("results/base/pipeline"),
            metrics="results/base/metrics.csv",
        log:
            "logs/pretrain_unet.log",
        benchmark:
            "benchmarks/pretrain_unet.tsv"
        priority: 10  # on the critical path: base model first, scorers and the rest after
        conda:
            "../envs/diffpo.yaml"
        threads: workflow.cores
        params:
            param_keys=keys("pretrain_unet"),
            values=values("pretrain_unet"),
            work="results/checkpoints/base",
        shell:
            "python -m diffpo pretrain-unet --cache {input.cache} --text-encoder {input.text_encoder} --vae {input.vae}"
            " --work {params.work} --out {output.pipeline} --metrics {output.metrics} --log {log}"
