"""Atomic outputs: whole or absent, a finished output never lost, a killed write's leftovers removed."""

import pytest

from diffpo import files
from diffpo.files import atomic_dir, atomic_path, remove_stale_in


def _folder(path, text):
    path.mkdir(parents=True, exist_ok=True)
    (path / "weights").write_text(text)


def test_a_failed_write_leaves_the_finished_output(tmp_path):
    _folder(tmp_path / "out", "old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError
    assert (tmp_path / "out" / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_new_folder_is_in_place_before_the_old_one_is_deleted(tmp_path, monkeypatch):
    _folder(tmp_path / "out", "old")
    deleted = []
    remove = files._remove

    def recording_remove(path):
        deleted.append((path.name, (path / "weights").read_text(), (tmp_path / "out" / "weights").read_text()))
        remove(path)

    monkeypatch.setattr(files, "_remove", recording_remove)
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "weights").write_text("new")
    assert len(deleted) == 1 and deleted[0][1:] == ("old", "new")  # the old one, deleted with the new in place
    assert deleted[0][0].startswith(".out.") and deleted[0][0].endswith(".tmp")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_next_write_removes_what_a_killed_write_of_the_same_output_left(tmp_path):
    _folder(tmp_path / ".out.k1ll3d_x.tmp", "half")          # a killed atomic_dir of out
    (tmp_path / ".metrics.csv.abcd1234.tmp").write_text("1,")  # a killed atomic_path of metrics.csv
    _folder(tmp_path / ".out.v2.abcd1234.tmp", "another")      # out.v2's: not out's
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "weights").write_text("new")
    with atomic_path(tmp_path / "metrics.csv") as tmp:
        tmp.write_text("step\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.v2.abcd1234.tmp", "metrics.csv", "out"]


def test_a_work_folder_is_cleared_of_every_temporary(tmp_path):
    _folder(tmp_path / ".checkpoint-0000200.q1w2e3r4.tmp", "half")
    (tmp_path / ".step-0000003.safetensors.a_b_c_d_.tmp").write_text("half")
    _folder(tmp_path / "checkpoint-0000100", "whole")
    (tmp_path / "metrics.csv").write_text("step\n")
    remove_stale_in(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-0000100", "metrics.csv"]
