"""README and docs numbers come from results/ files, through marked blocks."""

import pytest

from diffpo.evidence.rendering import render_blocks, render_documents, snakemake_wall_seconds


def test_blocks_are_filled_from_results_and_text_outside_them_is_kept(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results/table1.md").write_text("# Table 1\n\nnote\n\n| a |\n|---|\n| 1 |\n")
    text = "intro\n<!-- BEGIN table1 -->\nstale 0.5\n<!-- END table1 -->\noutro\n"
    assert render_blocks(text, tmp_path) == "intro\n<!-- BEGIN table1 -->\nnote\n\n| a |\n|---|\n| 1 |\n<!-- END table1 -->\noutro\n"
    with pytest.raises(KeyError, match="unknown generated block"):
        render_blocks("<!-- BEGIN nosuch -->\n<!-- END nosuch -->", tmp_path)


def test_check_reports_a_document_that_disagrees(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "results/timings.md").write_text("12.0 minutes\n")
    (tmp_path / "README.md").write_text("<!-- BEGIN timings -->\n11.0 minutes\n<!-- END timings -->\n")
    (tmp_path / "docs/tiny-world.md").write_text("no blocks\n")
    (tmp_path / "workflow").mkdir()
    (tmp_path / "workflow/artifacts.yaml").write_text(
        "artifacts:\n  - {id: t1, paper: SePPO, kind: table, target: results/table1.md, reproduces: Table 1, caption: c}\n")
    assert render_documents(tmp_path, check=True) == ["README.md", "notebooks/seppo.ipynb", "notebooks/see_dpo.ipynb"]
    assert "11.0" in (tmp_path / "README.md").read_text()  # check changes nothing
    render_documents(tmp_path)
    assert render_documents(tmp_path, check=True) == []


def test_wall_time_spans_the_logged_jobs(tmp_path):
    log = tmp_path / "run.snakemake.log"
    log.write_text("Command: snakemake\n[Tue Dec  1 15:10:31 2026]\nrule a:\n[Tue Dec  1 15:25:01 2026]\nFinished\n")
    assert snakemake_wall_seconds(log) == 870.0


def test_committed_documents_agree_with_committed_results(root):
    assert render_documents(root, check=True) == [], "run `python -m diffpo render-docs` and commit"


def test_notebooks_are_written_from_the_catalogue(tmp_path):
    import nbformat

    from diffpo.evidence.notebook import notebook_json

    catalogue = [{"id": "t1", "paper": "SePPO", "kind": "table", "target": "results/table1.md", "reproduces": "Table 1",
                  "caption": "c"},
                 {"id": "g", "paper": "SEE-DPO", "kind": "figure", "target": "results/figures/g.png", "reproduces": "G"},
                 {"id": "acc", "paper": "both", "kind": "table", "target": "results/a.md", "reproduces": "A"}]
    notebook = nbformat.reads(notebook_json(catalogue, "SePPO"), as_version=4)
    nbformat.validate(notebook)
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    assert code[1:] == ['project.show("t1")', 'project.show("acc")']


def test_timings_of_a_log_without_jobs_or_of_no_benchmarks_is_one_clear_line(tmp_path):
    import subprocess
    import sys

    log = tmp_path / ".snakemake/log/dry.snakemake.log"
    log.parent.mkdir(parents=True)
    log.write_text("Building DAG of jobs...\n")  # a dry run, or dvc-commit's DAG: no job ran
    command = [sys.executable, "-m", "diffpo", "timings", "--root", str(tmp_path), "--snakemake-log", str(log),
               "--out", str(tmp_path / "t.md")]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "not the log of a run that executed jobs" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    log.write_text(_LOG)  # jobs ran, but benchmarks/ holds none of them
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip().endswith("holds no benchmark of these jobs: run the workflow first")


_LOG = """Command: snakemake --cores 2 results/table1.csv
[Wed Dec  2 02:27:49 2026]
localrule world:
    output: results/world
    benchmark: benchmarks/world.tsv
[Wed Dec  2 02:27:49 2026]
localrule train:
    benchmark: benchmarks/train/sft_w/seed0.tsv
[Wed Dec  2 02:28:04 2026]
Finished jobid: 8 (Rule: world)
"""


def test_timings_list_only_the_jobs_of_the_logs(tmp_path):
    from diffpo.evidence.rendering import timings_markdown

    log = tmp_path / "run.snakemake.log"
    log.write_text(_LOG)
    for job, seconds in (("world", 15.0), ("corpus", 7.0)):  # corpus: a later run's job, not this log's
        (tmp_path / "benchmarks").mkdir(exist_ok=True)
        (tmp_path / f"benchmarks/{job}.tsv").write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t10\n")
    text = timings_markdown(tmp_path, [log])
    assert text.startswith("`snakemake --cores 2 results/table1.csv`: 1 jobs, **0.2 minutes** of wall time")
    assert "; 1 of its jobs left no benchmark (interrupted or failed)." in text.splitlines()[0]
    assert "| world" in text and "corpus" not in text
    assert "\n\nMeasured on " in text  # the CPU: the same jobs take different times on different CPUs


def test_machine_description_names_the_cpu_and_its_cores(tmp_path):
    import os

    from diffpo.evidence.rendering import machine_description

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n")
    assert machine_description(cpuinfo) == f"AMD EPYC 9R14, {os.cpu_count()} CPU cores"
