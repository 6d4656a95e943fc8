"""The command line: help everywhere, one clear line per input error, the README's commands run."""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import diffpo
from diffpo.cli import build_parser, main

from conftest import scores

SMALL_WORLD = dict(n_train_pairs=60, n_validation_unique=8, n_test_unique=8, n_ood_combinations=4,
                   n_ood_phrasings=4, train_shard_size=40)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _run(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    """``python -m diffpo ARGS`` in ``cwd``, importing this diffpo (not another install)."""
    path = os.pathsep.join([str(Path(diffpo.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "diffpo", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path, **env}, timeout=300)


@pytest.fixture
def project(tmp_path, root) -> Path:
    """An empty project folder with the project's settings, the world made small."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["world"].update(SMALL_WORLD)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp_path


def test_every_subcommand_and_option_has_help():
    for name, sub in _subcommands(build_parser()).items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.option_strings)


def test_the_stand_in_choices_are_the_stand_ins():
    from diffpo.cli.evaluate import STAND_INS
    from diffpo.scoring.stand_ins import NAMES

    assert STAND_INS == NAMES


# ---------------------------------------------------------------- errors in the input
def test_an_input_error_is_one_line_without_a_traceback(project, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "--params", str(project / "missing.yaml"), "--pairs", "p.parquet", "--manifest", "m.json"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err == f"diffpo prepare: error: {project / 'missing.yaml'} not found: run from the project root or pass --params\n"


def test_debug_shows_the_traceback(project):
    from diffpo.settings.params import ParamsError

    with pytest.raises(ParamsError):
        main(["prepare", "--params", str(project / "missing.yaml"), "--pairs", "p", "--manifest", "m", "--debug"])


def test_a_bad_shard_names_itself(project, capsys):
    params = project / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["data"]["source"] = {"tiny": str(project / "shards"), "paper": "resources/pickapic_v2"}
    params.write_text(yaml.safe_dump(raw))
    (project / "shards").mkdir()
    (project / "shards" / "train-0.parquet").write_bytes(b"PAR1 and then nothing")
    with pytest.raises(SystemExit):
        main(["prepare", "--params", str(params), "--pairs", str(project / "p.parquet"), "--manifest", "m.json"])
    err = capsys.readouterr().err
    assert err.startswith(f"diffpo prepare: error: {project / 'shards' / 'train-0.parquet'}: not a readable parquet")
    assert err.count("\n") == 1


def test_an_unknown_method_fails_before_torch_is_imported(project):
    probe = ("import sys\nfrom diffpo.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
             "    print('torch' in sys.modules, e.code)\n")
    path = os.pathsep.join([str(Path(diffpo.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", probe, "train", "--method", "nosuch", "--seed", "0", "--base", "b", "--cache", "c",
                           "--work", "w", "--out", "o", "--metrics", "m"], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path}, timeout=60)
    assert done.stdout == "False 1\n"
    assert re.fullmatch(r"diffpo train: error: unknown run 'nosuch': not a method of params.yaml nor a variant its "
                        r"experiments declare \(.*seppo_w__round_updates60.*\)\n", done.stderr)


def test_missing_weights_are_one_clear_message(project, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--params", str(project / "params.yaml"), "--base", str(project / "no_model"),
              "--prompt-set", "validation_unique", "--samples", str(project / "s.parquet"),
              "--scores", str(project / "c.parquet"), "--diversity", str(project / "d.parquet")])
    err = capsys.readouterr().err
    assert err.startswith(f"diffpo evaluate: error: cannot load") and str(project / "no_model") in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["table", "--table", "table1", "--scores", "sft_w", "--csv", "c", "--md", "m", "--json", "j"],
     "argument --scores: expected METHOD=PATH, e.g. sft_w=results/scores/sft_w/validation_unique.parquet; got 'sft_w'"),
    (["train-scorer", "--scorer", "nosuch", "--text-encoder", "t", "--out", "o"],
     "argument --scorer: invalid choice: 'nosuch'"),
])
def test_a_malformed_argument_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("rank, logged", [({}, True), ({"RANK": "0", "LOCAL_RANK": "0"}, True),
                                          ({"RANK": "1", "LOCAL_RANK": "1"}, False), ({"LOCAL_RANK": "2"}, False)])
def test_only_the_main_process_writes_the_log(project, rank, logged):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-m", "diffpo", "prepare", "--params", "missing.yaml", "--pairs", "p",
                           "--manifest", "m", "--log", "logs/prepare.log"], cwd=project, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": os.pathsep.join([str(Path(diffpo.__file__).parents[1]),
                                                                      env.get("PYTHONPATH", "")]), **rank}, timeout=60)
    assert done.returncode == 1 and "missing.yaml not found" in done.stderr
    log = project / "logs" / "prepare.log"
    assert log.exists() == logged
    if logged:
        assert log.read_text() == done.stderr


# ---------------------------------------------------------------- the README's commands
def _readme_commands(root: Path) -> list[list[str]]:
    """Every ``python -m diffpo ...`` line of the README's bash blocks, as argv after ``diffpo``
    (up to a shell redirection or comment)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (root / "README.md").read_text(), re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:3] == ["python", "-m", "diffpo"]:
                end = next((i for i, w in enumerate(words) if w in (">", "|", "&&", ";")), len(words))
                commands.append(words[3:end])
    return commands


def test_the_readme_shows_a_command_for_every_stage_that_parses(root, capsys):
    commands = _readme_commands(root)
    subcommands = _subcommands(build_parser())
    table = re.findall(r"^\| `[a-z_]+`.*?\| (`[a-z-]+`(?:, `[a-z-]+`)*) \|", (root / "README.md").read_text(), re.M)
    named = {name.strip("`") for cell in table for name in cell.split(", ")}
    assert named and named <= {argv[0] for argv in commands}, named - {argv[0] for argv in commands}
    for argv in commands:
        args = build_parser().parse_args(argv)
        assert args.func.__name__ == "cmd_" + argv[0].replace("-", "_")
    for name in {argv[0] for argv in commands}:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([name, "--help"])
        assert exit_.value.code == 0 and subcommands[name].description in " ".join(capsys.readouterr().out.split())


def test_the_readme_world_and_prepare_commands_run_as_written(root, project):
    commands = {argv[0]: argv for argv in _readme_commands(root)}
    for name in ("world", "prepare"):
        done = _run(commands[name], project)
        assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load((project / "results" / "data" / "manifest.json").read_text())
    assert manifest["rows_in"] == SMALL_WORLD["n_train_pairs"] and manifest["pairs_out"] > 0
    assert (project / "results" / "data" / "train_pairs.parquet").is_file()


def test_the_table_command_splits_a_table_of_several_prompt_sets_by_file_name(project, root, tmp_path):
    # Table 2: one METHOD=PATH per seed and prompt set; a file's set is its name (SET.parquet)
    args = []
    for run in ("base", "seppo_w"):
        for prompt_set in ("hps_benchmark", "partiprompts"):
            path = tmp_path / "scores" / run / f"{prompt_set}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            scores({0: [0.4, 0.5], 1: [0.6, 0.6]}, 20.0 if run == "base" else 21.0).to_parquet(path)
            args.append(f"{run}={path}")
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace(
        "rows: [base, sft_w, diffusion_dpo, spo, spin_diffusion, seppo_w]", "rows: [base, seppo_w]"))
    main(["table", "--params", str(project / "params.yaml"), "--table", "table2", "--scores", *args,
          "--csv", str(tmp_path / "t.csv"), "--md", str(tmp_path / "t.md"), "--json", str(tmp_path / "t.json")])
    table = pd.read_csv(tmp_path / "t.csv")
    assert list(zip(table["method"], table["prompt_set"])) == [
        ("base", "hps_benchmark"), ("seppo_w", "hps_benchmark"), ("base", "partiprompts"), ("seppo_w", "partiprompts")]
    # DVC's metrics: each row's change against the base (not the base's own row), per prompt set
    assert set(yaml.safe_load((tmp_path / "t.json").read_text())) == {"seppo_w@hps_benchmark", "seppo_w@partiprompts"}


def test_a_score_file_of_no_reported_prompt_set_is_one_clear_error(project, tmp_path, capsys):
    path = tmp_path / "scores" / "seppo_w" / "validation_unique.parquet"
    path.parent.mkdir(parents=True)
    scores({0: [0.4, 0.5]}, 20.0).to_parquet(path)
    with pytest.raises(SystemExit) as exit_info:
        main(["table", "--params", str(project / "params.yaml"), "--table", "table2", "--scores", f"seppo_w={path}",
              "--csv", str(tmp_path / "t.csv"), "--md", str(tmp_path / "t.md"), "--json", str(tmp_path / "t.json")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "validation_unique.parquet name none of tables.table2.prompt_sets" in err and "Traceback" not in err
