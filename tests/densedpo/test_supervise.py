"""densedpo.supervise: a server's whole process tree goes with its owner, whatever the owner's end.

The tree under test behaves as vLLM's does at its worst: the server starts a child that leaves the process group
(setsid), renames itself (`VLLM::EngineCore`), ignores SIGTERM and starts a grandchild of its own. Processes are
found by an environment marker, which survives renaming and re-parenting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from tests.conftest import REPO

TREE = textwrap.dedent("""
    import ctypes, os, signal, subprocess, sys, time
    def stubborn():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ctypes.CDLL("libc.so.6").prctl(15, b"VLLM::EngineCore")  # PR_SET_NAME, as vLLM does
    if len(sys.argv) > 1:  # the engine core: out of the group, renamed, deaf to SIGTERM, with a worker
        os.setsid(); stubborn()
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        time.sleep(600)
    time.sleep(float(os.environ.get("STARTUP_DELAY_S", "0")))  # a server still loading
    core = subprocess.Popen([sys.executable, __file__, "core"])
    open(os.environ["READY_FILE"], "w").write(str(core.pid))
    time.sleep(600)
""")

OWNER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from densedpo.supervise import supervised
    with supervised([sys.executable, sys.argv[1]], log_path=Path(sys.argv[2]), grace_s=2.0) as proc:
        if sys.argv[3] == "return":
            while not Path(sys.argv[4]).exists():
                time.sleep(0.05)
            time.sleep(1.0)
        else:
            time.sleep(600)
""")


def marked(mark: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if f"DENSEDPO_TEST_MARK={mark}".encode() in open(f"/proc/{entry}/environ", "rb").read():
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def wait_gone(mark: str, timeout_s: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while marked(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    return marked(mark)


def start_owner(tmp_path, how: str):
    mark = uuid.uuid4().hex
    (tmp_path / "tree.py").write_text(TREE)
    ready = tmp_path / "ready"
    env = {**os.environ, "DENSEDPO_TEST_MARK": mark, "READY_FILE": str(ready)}
    args = [sys.executable, "-c", OWNER, str(tmp_path / "tree.py"), str(tmp_path / "log"), how, str(ready)]
    owner = subprocess.Popen(args, cwd=REPO, env=env)
    deadline = time.monotonic() + 30
    while len(marked(mark)) < 5 and time.monotonic() < deadline:  # owner, supervisor, server, core, worker
        time.sleep(0.05)
    assert len(marked(mark)) >= 5, "the tree did not start"
    return owner, mark


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_owner_killed_takes_the_whole_tree(tmp_path, signum):
    owner, mark = start_owner(tmp_path, "sleep")
    owner.send_signal(signum)
    owner.wait()
    assert wait_gone(mark) == [], "processes outlived their owner"


def test_owner_returning_stops_the_whole_tree(tmp_path):
    owner, mark = start_owner(tmp_path, "return")
    assert owner.wait(timeout=60) == 0
    assert marked(mark) == [], "processes outlived the with-block"


def test_a_server_that_exits_is_seen_and_its_orphans_go(tmp_path):
    from pathlib import Path

    from densedpo.supervise import supervised

    script = tmp_path / "exits.py"
    orphan = "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])"
    script.write_text(f"import subprocess, sys; {orphan}; sys.exit(3)")
    mark = uuid.uuid4().hex
    env = {**os.environ, "DENSEDPO_TEST_MARK": mark}
    with supervised([sys.executable, str(script)], log_path=Path(tmp_path / "log"), env=env, grace_s=1.0) as proc:
        assert proc.wait(timeout=30) == 3  # the supervisor exits with the server's code, its orphan killed
        assert marked(mark) == []


def supervisor_of(mark: str) -> int | None:
    for pid in marked(mark):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"-m\0densedpo.supervise\0" in f.read():
                return pid
    return None


@pytest.mark.parametrize("moment", ["startup", "running"])
@pytest.mark.parametrize("victim", ["supervisor", "owner", "both"])
def test_sigkill_of_the_supervisor_the_owner_or_both_leaves_nothing(tmp_path, victim, moment):
    """SIGKILL the supervisor itself, the owner, or both at once, while the server is still starting (it has not
    started its engine core yet) or once the whole tree runs: no process of the tree is left."""
    mark = uuid.uuid4().hex
    (tmp_path / "tree.py").write_text(TREE)
    ready = tmp_path / "ready"
    env = {**os.environ, "DENSEDPO_TEST_MARK": mark, "READY_FILE": str(ready), "STARTUP_DELAY_S": "1.5"}
    args = [sys.executable, "-c", OWNER, str(tmp_path / "tree.py"), str(tmp_path / "log"), "sleep", str(ready)]
    owner = subprocess.Popen(args, cwd=REPO, env=env)
    deadline = time.monotonic() + 30
    want = 3 if moment == "startup" else 5  # owner, supervisor, server (+ core, worker once running)
    while (len(marked(mark)) < want or supervisor_of(mark) is None) and time.monotonic() < deadline:
        time.sleep(0.02)
    supervisor = supervisor_of(mark)
    assert supervisor is not None and len(marked(mark)) >= want
    if moment == "startup":
        assert not ready.exists()  # the engine core is not started yet
    if victim in ("supervisor", "both"):
        os.kill(supervisor, signal.SIGKILL)
    if victim in ("owner", "both"):
        owner.kill()
    if victim == "supervisor":  # the owner lives on; everything else goes
        deadline = time.monotonic() + 60
        while set(marked(mark)) - {owner.pid} and time.monotonic() < deadline:
            time.sleep(0.1)
        left = set(marked(mark)) - {owner.pid}
        owner.kill()
        assert left == set(), "the server's tree outlived its supervisor"
    owner.wait()
    assert wait_gone(mark, timeout_s=60) == [], "processes outlived the owner and the supervisor"


def test_a_failed_start_leaks_no_pipe(tmp_path):
    """Popen raising (here: an environment value that is not text) closes every pipe end it had opened."""
    from pathlib import Path

    from densedpo.supervise import supervised

    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(TypeError):
        with supervised([sys.executable, "-c", "pass"], log_path=Path(tmp_path / "log"), env={"BAD": 1}):
            pass
    assert len(os.listdir("/proc/self/fd")) == before
