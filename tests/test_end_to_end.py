"""One run of the real workflow at a reduced size: Snakemake, then DVC, on a copy of the project.

Checks that the chain produces table 1; that Snakemake's finished work is current for DVC
(dvc.lock), and that changing one method's setting reruns only that method's jobs and the
table (in Snakemake and in DVC); that ``dvc repro --force`` without checkpoints retrains and
reproduces Snakemake's outputs byte for byte; and that a code change retrains from step 0.
Every command imports the copy's package (PYTHONPATH), never the installed one.

The report, the notebook and the code change are checked on a twin of the finished project, in
a second thread while DVC works on the first.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml

from diffpo.pipeline.catalogue import SMOKE_RELPATH, smoke_params
from diffpo.pipeline.dvc import expand_stages

from conftest import NOTEBOOKS, dvc_stage_name, execute, outputs, text_of

pytestmark = pytest.mark.slow

# The sizes of the run: .test/params.yaml, the workflow's test configuration (one source for
# this test and for anyone who runs the workflow at this size, config/README.md).
SMOKE = yaml.safe_load((Path(__file__).resolve().parents[1] / SMOKE_RELPATH).read_text())
SMOKE_TABLES = SMOKE["tables"]


def run(cmd: list[str], cwd: Path, stderr: bool = True, **env) -> str:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                   "PYTHONPATH": str(Path(cwd) / "src"), **env}
    result = subprocess.run(cmd, cwd=cwd, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{errors(result.stderr)}"
    return result.stdout + result.stderr if stderr else result.stdout


def errors(stderr: str) -> str:
    # Progress bars fill the tail of stderr; keep the lines that say what failed.
    lines = [line for line in stderr.splitlines() if "it/s]" not in line and "s/it]" not in line]
    return "\n".join(lines[-80:])


def digests(project: Path) -> dict[str, str]:
    out = {}
    for path in sorted((project / "results").rglob("*")):
        # Snakemake marks directory outputs with a timestamp file; DVC writes .gitignore files.
        if path.is_file() and "checkpoints" not in path.parts and path.name not in (".gitignore", ".snakemake_timestamp"):
            out[str(path.relative_to(project))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def tree_digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*.safetensors")))).hexdigest()


def dvc_status(project: Path) -> set[str]:
    """The stages ``dvc status`` reports changed."""
    return set(yaml.safe_load(run(["dvc", "status", "--json"], project, stderr=False)) or {})


def dvc_stages(project: Path) -> dict[str, dict]:
    """dvc.yaml's stages as DVC names and expands them."""
    return expand_stages(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])


def stage(project: Path, rule: str, key: str) -> str:
    """The DVC name of the job of ``rule`` with wildcards ``key`` (joined by "-")."""
    return dvc_stage_name(dvc_stages(project), rule, key)


def downstream(project: Path, stage: str) -> set[str]:
    """``stage`` and every dvc.yaml stage that depends on its outputs, transitively."""
    stages = dvc_stages(project)
    outs = {name: [next(iter(o)) if isinstance(o, dict) else o for o in s["outs"]] for name, s in stages.items()}
    found, todo = set(), [stage]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += [other for other, s in stages.items()
                     if any(d == o or d.startswith(o + "/") for d in s.get("deps", []) for o in outs[name])]
    return found


def trained_from_scratch(log: Path) -> bool:
    """The job trained from step 0 (its progress bar starts at 0) and resumed no checkpoint."""
    text = log.read_text()
    return "resuming from" not in text and re.search(r"\b0/\d+ \[", text) is not None


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    table = dry_run_output.split("Job stats:")[1].split("Reasons:")[0] if "Job stats:" in dry_run_output else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def project(root, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("project")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        # The committed results (and dvc.lock) are the full tiny run's: the smoke project makes its own.
        if (root / name).is_file() and not name.startswith("results/") and name != "dvc.lock":
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)
    params = smoke_params(yaml.safe_load((root / "params.yaml").read_text()), SMOKE)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The DVC stages expand over the registry and the tables, so the smaller registry needs its own dvc.yaml.
    (dest / "dvc.yaml").write_text(run([sys.executable, "-m", "diffpo", "dvc-yaml"], dest, stderr=False))
    run(["git", "init", "-q"], dest)
    imported = run([sys.executable, "-c", "import diffpo; print(diffpo.__file__)"], dest, stderr=False).strip()
    assert Path(imported).resolve() == (dest / "src/diffpo/__init__.py").resolve(), imported
    return dest


# Stages DVC reruns from nothing in the test (running all of them, one at a time, would take
# DVC ten minutes): pre-training, training from the data's images (the experiment's variant),
# from generated losers and from rollouts, evaluation, a table.
REPRODUCED = [("pretrain_unet", ""), ("train", "seppo_w-1"), ("train", "d3po-0"), ("train", "see_diffusion_dpo__gamma0-1"),
              ("evaluate", "seppo_w-1-validation_unique"), ("table", "table1")]


def test_snakemake_builds_everything_and_dvc_reproduces_it(project, monkeypatch):
    # One thread per job in both tools: results are then identical, not merely close.
    # every artifact, and the tuning sweep (its own target): dvc.yaml declares both
    run(["snakemake", "all", "results/tuning/selection.csv", "--cores", "2", "--set-threads", "pretrain_unet=1"], project)
    selection = pd.read_csv(project / "results/tuning/selection.csv")
    assert selection.groupby("method")["selected"].sum().to_dict() == {"diffusion_dpo": 1, "see_diffusion_dpo": 1, "sft_w": 1}
    seeds = SMOKE["overrides"]["seeds"]["tiny"]
    table = pd.read_csv(project / "results/table1.csv")
    assert table["method"].tolist() == SMOKE_TABLES["table1"]["rows"]
    assert table["gt_preference_mean"].between(0, 1).all() and (table["n_seeds"] == len(seeds)).all()
    assert (table["gt_preference_low"] <= table["gt_preference_mean"]).all()
    assert {"pickscore_mean", "hpsv2_low", "imagereward_high", "aesthetic_mean", "paper_pickscore"} <= set(table)
    accuracy = pd.read_csv(project / "results/scorer_accuracy.csv")
    assert accuracy["scorer"].tolist() == ["pickscore", "hpsv2", "imagereward", "aesthetic", "ground_truth"]
    assert accuracy["accuracy"].between(0, 1).all()
    assert (project / "results/table1.md").read_text().startswith("# Table 1")
    assert (project / "logs/train/sft_w/seed1.log").exists()
    assert (project / "results/figures/training_curves.pdf").exists()
    manifest = yaml.safe_load((project / "results/data/manifest.json").read_text())
    assert manifest["rows_in"] == 600 and manifest["rows_skipped"] == {"invalid_label": 2, "undecodable_image": 3}
    metrics = pd.read_csv(project / "results/models/diffusion_dpo/seed0/metrics.csv")
    assert metrics["step"].tolist() == [1, 2, 3, 4] and {"loss", "implicit_acc", "mse_ref_w"} <= set(metrics)
    seppo = pd.read_csv(project / "results/models/seppo_w/seed1/metrics.csv")
    assert {"aaf_rate", "reference_step"} <= set(seppo) and seppo["reference_step"].tolist()[:2] == [0, 0]
    assert {"reward_mean", "implicit_acc"} <= set(pd.read_csv(project / "results/models/d3po/seed0/metrics.csv"))
    assert pd.read_csv(project / "results/table4.csv")["method"].tolist() == ["base", "seppo_w"]
    see = pd.read_csv(project / "results/see_dpo.csv")
    assert {"div_vendi_mean", "div_ssim_low"} <= set(see)
    assert see["method"].tolist() == ["base", "diffusion_dpo", "see_diffusion_dpo", "d3po"]
    # the experiment's variant run, SePPO^w's scores along training, and the claims the smaller registry allows
    variant = pd.read_csv(project / "results/models/see_diffusion_dpo__gamma0/seed1/metrics.csv")
    assert variant["step"].tolist() == [1, 2, 3, 4]
    curve = pd.read_parquet(project / "results/curves/seppo_w/seed0.parquet")
    assert sorted(curve["step"].unique()) == [0, 2, 4] and len(curve) == 3 * 4 * 2
    claims = pd.read_csv(project / "results/claims.csv")
    verdicts = dict(zip(claims["claim"], claims["claim_verdict"]))
    assert verdicts["seppo_beats_sft"] in ("reproduced", "contradicted", "inconclusive")
    assert verdicts["aaf_rate_and_score_rise"] != "not evaluated" and verdicts["spin_beats_diffusion_dpo"] == "not evaluated"
    assert "**Rule.**" in (project / "results/claims.md").read_text()

    # The report, a notebook and a code change are checked on a twin of the project as it stands
    # now, in the background, while DVC is checked here: each side runs one process at a time, so
    # together they fill both cores.
    twin = project.parent / "twin"
    shutil.copytree(project, twin, symlinks=True)
    monkeypatch.setenv("PYTHONPATH", str(twin / "src"))  # the notebook's kernel (commands set their own)
    with ThreadPoolExecutor(max_workers=1) as background:
        on_twin = background.submit(check_the_report_a_notebook_and_a_code_change, twin)
        check_dvc_and_a_setting_change(project, seeds)
        on_twin.result()


def check_the_report_a_notebook_and_a_code_change(project: Path):
    # The report: every artifact under its category, with its caption from workflow/artifacts.yaml.
    run(["snakemake", "--report", "results/report.html"], project)
    report = (project / "results/report.html").read_text()
    assert "every method on the reported prompts" in report and "seppo_grid" in report

    # A notebook recomputes each table, figure and claim from the per-image results and checks them
    # (one of the two: they share diffpo.evidence.notebook; its SEE-DPO table has the diversity columns too).
    shown = {k: text_of(v) for k, v in outputs(execute(project / NOTEBOOKS["SEE-DPO"], project / "notebooks")).items()}
    assert "re-evaluated from the per-image results: the same effects, intervals and verdicts" in shown["claims"]
    assert "recomputed from the per-image scores: equal to the committed table" in shown["see_quality"]
    assert "recomputed from the per-image results: equal to the committed data" in shown["see_gamma"]
    assert "not drawn: these settings do not define its runs" in shown["see_reward_hacking"]
    check_a_code_change_retrains_from_step_0(project)


def check_dvc_and_a_setting_change(project: Path, seeds: list[int]):
    # Snakemake's finished work is current for DVC: its onsuccess handler recorded it in dvc.lock.
    assert "dvc.lock: recorded" in (project / "logs/dvc_commit.log").read_text()
    assert dvc_status(project) == set()

    # Changing one method's setting reruns that method's jobs (every seed), the tables and claims reading them.
    params_file = project / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["methods"]["sft_w"]["learning_rate"] = 2.0e-4
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    plan = planned_jobs(run(["snakemake", "--cores", "2", "--dry-run"], project))
    n = len(seeds)
    # the figures read the methods' labels (all of `methods`): both of the test configuration's are redrawn
    assert plan == {"train": n, "evaluate": n, "table": 1, "training_curves": 1, "claims": 1, "figure": 2,
                    "all": 1}, plan
    train = {key: stage(project, "train", key) for key in ("sft_w-0", "sft_w-1", "diffusion_dpo-0")}
    affected = downstream(project, train["sft_w-0"])  # its evaluate, table1, the curves figure, claims
    assert {"training_curves", stage(project, "table", "table1"), "claims"} <= affected
    assert not {train["diffusion_dpo-0"], train["sft_w-1"], "pretrain_unet"} & affected
    status = dvc_status(project)
    reads_methods = {name for name, s in dvc_stages(project).items() if "methods" in s.get("params", [])}
    assert {train["sft_w-0"], train["sft_w-1"]} <= status
    assert status <= affected | downstream(project, train["sft_w-1"]) | reads_methods, status
    params_file.write_text(original)

    # DVC runs the same commands on the same files: byte-identical outputs, retrained from nothing.
    snakemake_outputs = digests(project)
    shutil.rmtree(project / "results/checkpoints")
    reproduced = [rule if not key else stage(project, rule, key) for rule, key in REPRODUCED]
    run(["dvc", "repro", "--force", "--single-item", "--quiet", *reproduced], project, OMP_NUM_THREADS="1")
    assert digests(project) == snakemake_outputs
    for log in ["logs/pretrain_unet.log", "logs/train/seppo_w/seed1.log", "logs/train/d3po/seed0.log",
                "logs/train/see_diffusion_dpo__gamma0/seed1.log"]:
        assert trained_from_scratch(project / log), (project / log).read_text()[-2000:]
    assert dvc_status(project) == set()

    # A DVC remote (a local folder here) carries the large outputs: push them, lose them and the
    # cache, pull them back byte for byte, and DVC holds them current.
    run(["dvc", "remote", "add", "--local", "--default", "roundtrip", str(project.parent / "dvc-remote")], project)
    run(["dvc", "push", "--quiet"], project)
    for folder in ("results/samples", "results/scores", "results/models/sft_w/seed0/unet", ".dvc/cache"):
        shutil.rmtree(project / folder)
    run(["dvc", "pull", "--quiet"], project)
    assert digests(project) == snakemake_outputs
    assert dvc_status(project) == set()


def check_a_code_change_retrains_from_step_0(project: Path):
    """A code change retrains: the final checkpoints of the old code are not resumed."""
    objectives = project / "src/diffpo/methods/objectives.py"
    source = objectives.read_text()
    assert source.count("loss = mse_policy.mean()") == 1
    objectives.write_text(source.replace("loss = mse_policy.mean()", "loss = mse_policy.pow(1.5).mean()  # test"))
    model = lambda m: project / f"results/models/{m}/seed0/unet"
    before = {m: tree_digest(model(m)) for m in ("sft_w", "diffusion_dpo")}
    run(["snakemake", "results/models/sft_w/seed0/unet", "--cores", "2", "--set-threads", "pretrain_unet=1"], project)
    for log in ("logs/pretrain_unet.log", "logs/train/sft_w/seed0.log"):
        assert trained_from_scratch(project / log), (project / log).read_text()[-2000:]
    assert tree_digest(model("sft_w")) != before["sft_w"]
    assert tree_digest(model("diffusion_dpo")) == before["diffusion_dpo"]  # not a target
    # dvc.lock records what Snakemake reran; what it did not (other methods, now stale) DVC still sees as changed.
    status = dvc_status(project)
    assert not {"pretrain_unet", stage(project, "train", "sft_w-0")} & status, status
    assert {stage(project, "train", "diffusion_dpo-0"), stage(project, "evaluate", "sft_w-0-validation_unique")} <= status, status
