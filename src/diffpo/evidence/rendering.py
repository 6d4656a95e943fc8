"""Numbers in the README and docs, rendered from tracked result files (never typed by hand).

A document marks each generated block with ``<!-- BEGIN name -->`` / ``<!-- END name -->``;
``render_blocks`` replaces what is between them with ``BLOCKS[name](root)``, and
``python -m diffpo render-docs --check`` (run by the tests) fails when a document disagrees
with the committed results.
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Callable

import pandas as pd
import yaml

DOCUMENTS = ("README.md", "docs/tiny-world.md")


def _markdown_table(path: Path) -> str:
    """The table (and its scorer notes) of a results/*.md file, without its title."""
    text = path.read_text()
    return text.split("\n", 2)[2].strip() if text.startswith("# ") else text.strip()


def _result_table(root: Path, relpath: str) -> str:
    """A committed results/*.md table, or a statement that the committed results lack it."""
    path = root / relpath
    if not path.is_file():
        return f"*Not in the committed results yet: `snakemake --cores all {relpath}` builds it.*"
    return _markdown_table(path)


def _ci(facts: dict, digits: int = 3) -> str:
    low, high = facts["ci95"]
    return f"{facts['mean']:+.{digits}f} (95 % CI {low:+.{digits}f} to {high:+.{digits}f}, {facts['n_prompts']} prompts)"


def world_facts(root: Path) -> str:
    stats = json.loads((root / "results/world_stats.json").read_text())
    d = stats["disjointness"]
    lines = [
        f"- **Disjointness**: the base's corpus has {d['corpus_images']:,} images, the preference splits "
        f"{d['preference_images']:,}; shared by uid: {d['shared_uids']}, by content (SHA-256): {d['shared_content']}.",
        f"- **Preference data better than the base** (GT preference, {stats['prompt_set']}, per prompt: data image "
        f"minus the base's samples): a random data image {_ci(stats['random_data_image_minus_base'])}; the raters' "
        f"winner {_ci(stats['winner_minus_base'])}.",
        f"- **Base model**: GT preference {stats['base_gt_preference']['mean']:.3f}; semantic diversity (entropy of "
        f"the free attributes across seeds, 0-1) "
        + (f"{stats['base_semantic_diversity']['mean']:.3f} ± {stats['base_semantic_diversity']['se']:.3f} (SE)"
           if stats.get("base_semantic_diversity") else "not measured (no prompt leaves an attribute free)")
        + f"; degradation (high-frequency energy) {stats['degradation']['base_samples']:.2f}, the data's images "
        f"{stats['degradation']['data_images']:.2f}.",
        "",
        "| image | GT preference | GT aesthetics |",
        "|---|---|---|",
    ]
    table = stats["degradations"]
    for kind, row in sorted(table.items(), key=lambda item: item[0] != "clean"):  # the clean render first
        lines.append(f"| {kind.replace('_', ' ')} | {row['gt_preference']:.3f} ± {row['gt_preference_se']:.3f} "
                     f"| {row['gt_aesthetic']:.3f} ± {row['gt_aesthetic_se']:.3f} |")
    return "\n".join(lines)


def timings(root: Path, name: str = "timings") -> str:
    path = root / f"results/{name}.md"
    if not path.is_file():
        return f"*Not in the committed results yet: `python -m diffpo timings --out {path.relative_to(root)}` after the run.*"
    return path.read_text().strip()


def claims(root: Path) -> str:
    """The verdict of every claim and the rule (results/claims.md without its per-comparison detail)."""
    path = root / "results/claims.md"
    if not path.is_file():
        return ("*Not in the committed results yet: `snakemake --cores all results/claims.md` builds "
                "results/claims.md.*")
    body = path.read_text().split("\n", 2)[2]
    return body.split("\n## Comparisons")[0].strip() + "\n\nEvery comparison, its effect and interval: `results/claims.md`."


def artifacts(root: Path) -> str:
    """The catalogue of every table and figure (workflow/artifacts.yaml) with its command and state."""
    import yaml

    rows = yaml.safe_load((root / "workflow/artifacts.yaml").read_text())["artifacts"]
    lines = ["| paper | artifact | file | command | in the committed results |", "|---|---|---|---|---|"]
    for a in rows:
        target = a.get("target")
        if target is None:
            lines.append(f"| {a['paper']} | {a['reproduces']} | — | — | {a.get('status', 'not built')} |")
            continue
        built = "yes" if (root / target).is_file() else "not yet"
        lines.append(f"| {a['paper']} | {a['reproduces']} | `{target}` | `snakemake --cores all {target}` | {built} |")
    return "\n".join(lines)


def tuning(root: Path) -> str:
    path = root / "results/tuning/selection.md"
    if not path.is_file():
        return ("*Not in the committed results yet: `snakemake --cores all results/tuning/selection.csv` builds "
                "results/tuning/selection.md.*")
    return _markdown_table(path)


BLOCKS: dict[str, Callable[[Path], str]] = {
    "world-facts": world_facts,
    "timings": timings,
    "timings-all": lambda root: timings(root, "timings_all"),
    "claims": claims,
    "artifacts": artifacts,
    "tuning": tuning,
    **{name: (lambda root, n=name: _result_table(root, f"results/{n}.md"))
       for name in ("table1", "controls", "table2", "table4", "see_dpo", "scorer_accuracy")},
}
_BLOCK = re.compile(r"(<!-- BEGIN (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END (?P=name) -->)", re.S)


def render_blocks(text: str, root: Path) -> str:
    def fill(match: re.Match) -> str:
        name = match.group("name")
        if name not in BLOCKS:
            raise KeyError(f"unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        return f"{match.group(1)}{BLOCKS[name](root)}\n{match.group(4)}"

    return _BLOCK.sub(fill, text)


def render_documents(root: Path, check: bool = False) -> list[str]:
    """Render every document's blocks and the notebooks (from the catalogue); with ``check``, return
    the documents that disagree instead."""
    from diffpo.evidence.notebook import NOTEBOOKS, notebook_json

    catalogue = yaml.safe_load((root / "workflow/artifacts.yaml").read_text())["artifacts"]
    expected = {name: (lambda text: render_blocks(text, root)) for name in DOCUMENTS}
    expected.update({name: (lambda text, paper=paper: notebook_json(catalogue, paper)) for paper, name in NOTEBOOKS.items()})
    stale = []
    for name, render in expected.items():
        path = root / name
        text = path.read_text() if path.exists() else ""
        rendered = render(text)
        if rendered != text:
            stale.append(name)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(rendered)
    return stale


def summarise_benchmarks(root: Path, paths: list[Path]) -> pd.DataFrame:
    """Wall time and peak memory of the jobs whose Snakemake benchmarks are ``paths`` (relative to ``root``)."""
    rows = []
    for path in (root / p for p in paths):
        frame = pd.read_csv(path, sep="\t")
        job = str(path.relative_to(root / "benchmarks").with_suffix("")).replace("/", " ")
        rows.append({"job": job, "seconds": float(frame["s"].iloc[-1]), "max_rss_mb": float(frame["max_rss"].iloc[-1])})
    if not rows:
        from diffpo.errors import UserError

        raise UserError(f"{root / 'benchmarks'} holds no benchmark of these jobs: run the workflow first")
    return pd.DataFrame(rows).sort_values("seconds", ascending=False)


_BENCHMARK = re.compile(r"^\s+benchmark: (\S+)$", re.M)


def logged_benchmarks(root: Path, logs: list[Path]) -> tuple[list[Path], int]:
    """The benchmark files of the jobs the logs ran (a later run's jobs in benchmarks/ are not
    theirs), and how many of those jobs left none (interrupted or failed)."""
    named = list(dict.fromkeys(Path(p) for log in logs for p in _BENCHMARK.findall(log.read_text())))
    found = [p for p in named if (root / p).is_file()]
    return found, len(named) - len(found)


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$", re.M)


def snakemake_wall_seconds(log: Path) -> float:
    """Seconds between the first and the last job timestamp of a Snakemake log."""
    stamps = [pd.Timestamp(pd.to_datetime(s, format="%a %b %d %H:%M:%S %Y")) for s in _STAMP.findall(log.read_text())]
    if len(stamps) < 2:
        from diffpo.errors import UserError

        raise UserError(f"{log}: not the log of a run that executed jobs (fewer than two job timestamps); "
                        "pass the logs of the run's parts")
    return (stamps[-1] - stamps[0]).total_seconds()


def timings_markdown(root: Path, logs: list[Path]) -> str:
    """The wall time of a Snakemake run (its log; a run in several parts: the sum of their logs'
    spans) and the time of every job the logs ran (its benchmark)."""
    wall = sum(snakemake_wall_seconds(log) for log in logs)
    found, missing = logged_benchmarks(root, logs)
    jobs = summarise_benchmarks(root, found)
    command = next((line.split("Command: ", 1)[1] for line in logs[-1].read_text().splitlines() if "Command: " in line), "?")
    program, _, arguments = command.strip().partition(" ")
    command = f"{Path(program).name} {arguments}".strip()  # the program by name, not by this machine's folders
    parts = f" in {len(logs)} parts" if len(logs) > 1 else ""
    head = (f"`{command.strip()}`: {len(jobs)} jobs, **{wall / 60:.1f} minutes** of wall time{parts} "
            f"({jobs['seconds'].sum() / 60:.1f} job-minutes; Snakemake log{'s' if len(logs) > 1 else ''} "
            f"{', '.join(f'`{log.name}`' for log in logs)})"
            + (f"; {missing} of its jobs left no benchmark (interrupted or failed)." if missing else "."))
    view = jobs.assign(seconds=jobs["seconds"].round(0).astype(int), max_rss_mb=jobs["max_rss_mb"].round(0).astype(int))
    return head + "\n\n" + f"Measured on {machine_description()}.\n\n" + view.to_markdown(index=False) + "\n"


def machine_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU the timings were measured on (the same jobs take markedly different times on
    different CPUs of the same core count), and its core count: `timings` runs right after the run, on its machine."""
    model = next((line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
                  if line.startswith("model name")), platform.processor() or platform.machine())
    return f"{model}, {os.cpu_count()} CPU cores"
