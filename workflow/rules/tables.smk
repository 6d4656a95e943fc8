# Tables of the papers, from per-image scores only.


rule table1:
    input:
        code("artifacts", "evaluation"),
        scores=[scores(m) for m in table_rows("table1")],
    output:
        csv="results/table1.csv",
        md="results/table1.md",
        json="results/metrics/table1.json",
    params:
        param_keys=keys("table", rows=table_rows("table1")),
        values=lambda wc: select(config, keys("table", rows=table_rows("table1"))),
        scores=" ".join(f"{m}={scores(m)}" for m in table_rows("table1")),
    log:
        "logs/table1.log",
    shell:
        "{CLI} table --scores {params.scores} --csv {output.csv} --md {output.md} --json {output.json} --log {log}"


rule training_curves:
    input:
        code("artifacts"),
        metrics=expand("results/models/{method}/metrics.csv", method=METHODS),
    output:
        png="results/figures/training_curves.png",
        pdf="results/figures/training_curves.pdf",
    params:
        param_keys=keys("figures", methods=METHODS),
        values=lambda wc: select(config, keys("figures", methods=METHODS)),
        metrics=" ".join(f"{m}=results/models/{m}/metrics.csv" for m in METHODS),
    log:
        "logs/training_curves.log",
    shell:
        "{CLI} figures --metrics {params.metrics} --out results/figures/training_curves --log {log}"
