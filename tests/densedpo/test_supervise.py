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
