"""One writer per output: a second label/generate/train on a busy output exits at once, touching nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from densedpo.locks import OutputBusy, exclusive
from tests.conftest import REPO, run_cli
from tests.fake_openai import FakeServer


def hold(code: str, ready: Path) -> subprocess.Popen:
    """A process that takes a lock with `code` (a `with` header), says so in `ready`, then sleeps."""
    script = (
        f"import time\nfrom pathlib import Path\n{code}:\n"
        f"    Path({str(ready)!r}).write_text('held')\n    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ready.exists(), "the holder never took its lock"
    return proc


def test_lock_names_the_holder_is_reentrant_and_dies_with_it(tmp_path):
    lock = tmp_path / "out.parquet.lock"
    holder = hold(
        f"from densedpo.locks import exclusive\nwith exclusive(Path({str(lock)!r}), 'x', 'y')", tmp_path / "ready"
    )
    try:
        with pytest.raises(OutputBusy, match=rf"--out o is in use by another densedpo run \(pid {holder.pid} on "):
            with exclusive(lock, "--out o", "choose another --out"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel releases a flock with its process: no stale lock
        holder.wait()
    with exclusive(lock, "--out o", "fix"):
        with exclusive(lock, "--out o", "fix"):  # re-entrant within a process (CLI, then the stage)
            pass
        code = "\n".join(
            [
                "from densedpo.locks import exclusive",
                "from pathlib import Path",
                f"with exclusive(Path({str(lock)!r}), 'o', 'f'): pass",
            ]
        )
        probe = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
        assert probe.returncode != 0 and "OutputBusy" in probe.stderr  # still held after the inner block
    assert "pid" in lock.read_text()


def assert_one_line_busy(r, what):
    """Refused, not queued: the holder never lets go while the second run lives, so a run that waited for the lock
    would hang into run_cli's timeout instead of returning here (no wall-clock assertion on busy cores)."""
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{what} is in use by another densedpo run (pid" in lines[0], r.stderr


def test_second_label_on_a_busy_out_exits_and_the_first_finishes(synthetic, tmp_path):
    pairs_path, _ = synthetic
    out = tmp_path / "labels.parquet"
    journal = out.with_name(out.name + ".journal.jsonl")
    with FakeServer() as fake:
        fake.hold.hold_after(4)  # the first run answers 4 of its 18 requests, then waits until the second has run
        args = ["label", "--pairs", pairs_path, "--out", out, "--server", fake.url, "--concurrency", "2", "--quiet"]
        first = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *map(str, args)], cwd=REPO, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            fake.hold.held and journal.exists() and len(journal.read_text().splitlines()) > 2
        ):
            time.sleep(0.05)
        run_file = out.with_name(out.name + ".run.yaml").read_text()
        second = run_cli(*args, "--min-confidence", "0.9", timeout=120)
        fake.hold.release()
        assert_one_line_busy(second, f"--out {out}")
        assert f"pid {first.pid} on" in second.stderr
        assert first.wait(timeout=120) == 0, first.stderr.read()
    assert out.with_name(out.name + ".run.yaml").read_text() == run_file  # the second run wrote nothing
    assert fake.chat_requests() == {rid: 1 for rid in fake.chat_requests()}  # no segment asked twice
    assert len(fake.chat_requests()) == 18
    df = pd.read_parquet(out)
    assert len(df) == 9 and (df["status"] == "ok").all()
    ids = [json.loads(line)["request_id"] for line in journal.read_text().splitlines()[1:]]
    assert len(ids) == len(set(ids)) == 18


@pytest.mark.slow  # starts generate and train in fresh interpreters (torch imports)
@pytest.mark.parametrize("command", ["generate", "train"])
def test_second_generate_or_train_on_a_busy_out_exits(command, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "finished.txt").write_text("the first run's work")
    if command == "generate":
        code = (
            "from generation.engine import GenerateConfig, output_lock\n"
            f"with output_lock(GenerateConfig(sources=Path('s'), model='m', out=Path({str(out)!r})))"
        )
        args = ["generate", "--sources", tmp_path / "s.parquet", "--model", "m", "--out", out]
    else:
        code = (
            "from dpo.train import TrainConfig, output_lock\n"
            f"with output_lock(TrainConfig(pairs=Path('p'), labels=Path('l'), model='m', out=Path({str(out)!r})))"
        )
        args = [
            "train",
            "--pairs",
            tmp_path / "p.parquet",
            "--labels",
            tmp_path / "l.parquet",
            "--model",
            "m",
            "--out",
            out,
        ]
    holder = hold(code, tmp_path / "ready")
    try:
        pd.DataFrame([{"source_id": "s", "video": "v.mp4", "prompt": "p"}]).to_parquet(tmp_path / "s.parquet")
        r = run_cli(*args, timeout=120)
        what = f"--out {out} (shard 0/1)" if command == "generate" else f"--out {out}"
        assert_one_line_busy(r, what)
        assert f"pid {holder.pid} on" in r.stderr
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["finished.txt"]
        # another shard of the same folder is a writer of its own
        if command == "generate":
            from generation.engine import GenerateConfig, output_lock

            with output_lock(GenerateConfig(sources=Path("s"), model="m", out=out, shard="1/2")):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
