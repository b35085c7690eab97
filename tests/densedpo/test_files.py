"""densedpo.files: atomic writes keep the old file or the whole new one; journals survive a torn last line."""

from __future__ import annotations

import json
import os
import stat

import pytest

from densedpo.files import JsonlWriter, atomic_path, atomic_write_text, read_jsonl, repair_torn_tail


def test_atomic_write_replaces_whole_and_leaves_no_temp_on_failure(tmp_path):
    path = tmp_path / "t.json"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


def test_atomic_write_mode_holds_from_the_first_byte(tmp_path):
    path = tmp_path / "token"
    old = os.umask(0)
    try:
        atomic_write_text(path, "secret\n", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_torn_tail_is_cut_before_the_next_append(tmp_path):
    path = tmp_path / "j.jsonl"
    with JsonlWriter(path) as w:
        w.write({"n": 1})
        w.write({"n": 2})
    with open(path, "a") as f:
        f.write('{"n": 3, "answer": "fir')  # killed mid-line
    assert [o["n"] for o in read_jsonl(path)] == [1, 2]
    with JsonlWriter(path) as w:  # resume: the torn line goes, the new answer is a line of its own
        w.write({"n": 4})
    assert [o["n"] for o in read_jsonl(path)] == [1, 2, 4]
    assert path.read_text().endswith("\n")


def test_repair_without_any_newline_empties_the_file(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"fingerprint": {"a"')
    repair_torn_tail(path)
    assert path.read_text() == ""
    path.write_text(json.dumps({"ok": 1}) + "\n")
    repair_torn_tail(path)
    assert read_jsonl(path) == [{"ok": 1}]
