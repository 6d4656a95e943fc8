# Tables of the papers, from per-image scores only: SePPO's Tables 1, 2 (one block per
# out-of-distribution prompt set) and 4, and the SEE-DPO comparison (with diversity). Every table also shows the base model, the baseline
# of its paired differences; every row is read for every training seed.


rule table:
    input:
        code("table"),
        scores=lambda wc: table_scores(wc.table)[0],
        diversity=lambda wc: per_seed(diversity, table_rows(wc.table), diversity_set(wc.table))[0],
    output:
        csv="results/{table}.csv",
        md=report("results/{table}.md", caption="../report/artifact.rst", category="Tables", subcategory="{table}"),
        json="results/metrics/{table}.json",
    log:
        "logs/{table}.log",
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        "../envs/diffpo.yaml"
    params:
        caption=lambda wc: artifact_caption(f"results/{wc.table}.md"),
        param_keys=lambda wc: keys("table", table=wc.table, rows=table_rows(wc.table)),
        values=lambda wc: select(config, keys("table", table=wc.table, rows=table_rows(wc.table))),
        scores=lambda wc: table_scores(wc.table)[1],
        diversity=lambda wc: (
            f"--diversity {per_seed(diversity, table_rows(wc.table), diversity_set(wc.table))[1]}"
            if diversity_set(wc.table)
            else ""
        ),
    shell:
        "python -m diffpo table --table {wildcards.table} --scores {params.scores} {params.diversity}"
        " --csv {output.csv} --md {output.md} --json {output.json} --log {log}"


rule training_curves:
    input:
        code("figures"),
        metrics=expand("results/models/{method}/seed{seed}/metrics.csv", method=METHODS, seed=SEEDS[0]),
    output:
        png="results/figures/training_curves.png",
        pdf="results/figures/training_curves.pdf",
    log:
        "logs/training_curves.log",
    conda:
        "../envs/diffpo.yaml"
    params:
        param_keys=keys("figures", methods=METHODS),
        values=lambda wc: select(config, keys("figures", methods=METHODS)),
        metrics=" ".join(f"{m}=results/models/{m}/seed{SEEDS[0]}/metrics.csv" for m in METHODS),
    shell:
        "python -m diffpo figures --metrics {params.metrics} --out results/figures/training_curves --log {log}"


# The papers' claims (workflow/claims.yaml), evaluated on every run they name by the rule
# diffpo.evidence.claims states: results/claims.csv and results/claims.md (rendered into the README).
rule claims:
    input:
        code("claims"),
        claims="workflow/claims.yaml",
        results=claims_inputs(),
    output:
        csv="results/claims.csv",
        md=report("results/claims.md", caption="../report/artifact.rst", category="Claims"),
        json="results/metrics/claims.json",
    log:
        "logs/claims.log",
    conda:
        "../envs/diffpo.yaml"
    params:
        caption=artifact_caption("results/claims.md"),
        param_keys=keys("claims"),
        values=values("claims"),
    shell:
        "python -m diffpo claims --claims {input.claims} --results results --csv {output.csv} --md {output.md}"
        " --json {output.json} --log {log}"


# The papers' figures (workflow/artifacts.yaml), each from files under results/ only.
rule figure:
    input:
        code("figure"),
        results=lambda wc: figure_inputs(wc.figure),
    output:
        png=report(
            "results/figures/{figure}.png",
            caption="../report/artifact.rst",
            category="Figures",
            subcategory="{figure}",
        ),
        pdf="results/figures/{figure}.pdf",
        data="results/figures/{figure}.csv",
    log:
        "logs/figure/{figure}.log",
    wildcard_constraints:
        figure="|".join(figure_ids()),
    conda:
        "../envs/diffpo.yaml"
    params:
        caption=lambda wc: artifact_caption(f"results/figures/{wc.figure}.png"),
        param_keys=keys("figure"),
        values=values("figure"),
    shell:
        "python -m diffpo figure --figure {wildcards.figure} --results results --out results/figures/{wildcards.figure}"
        " --log {log}"
