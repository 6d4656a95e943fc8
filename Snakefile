# The project's Snakefile: the workflow itself lives in workflow/ (the Snakemake workflow
# template's layout), one rule file per stage. Its `rule all` stays the default target
# (a plain `include:` would drop an included file's default target).
workflow.include("workflow/Snakefile", overwrite_default_target=True)
