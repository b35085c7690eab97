"""A server's whole process tree goes with its owner, at any moment: a small supervisor between them.

`supervised(cmd)` starts `python -m densedpo.supervise FD -- cmd` in a session of its own. The supervisor makes
itself a child subreaper (so every orphan of the server's tree, e.g. vLLM's engine core and workers, which
rename themselves `VLLM::EngineCore`/`VLLM::Worker` and can outlive the API server, is re-parented to it rather
than to init), starts the server in a process group of its own, and waits for the owner's pipe to close. The
pipe closes when the owner stops the server, returns, raises, or dies by any signal, SIGKILL included: the
kernel closes the write end with the owner. Then the supervisor stops the tree: SIGTERM to the group, a grace
period, SIGKILL to the group and to every process still re-parented to it, until none is left.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)


@contextlib.contextmanager
def supervised(
    cmd: Sequence[str], *, log_path: Path, env: dict | None = None, grace_s: float = 20.0
) -> Iterator[subprocess.Popen]:
    """Run `cmd` under a supervisor (its output appended to `log_path`); yield the supervisor's Popen, whose
    exit means the server has exited (its code is the server's). On leaving, the whole tree is stopped."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()  # the write end stays with the owner alone (not inheritable)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "densedpo.supervise", str(read_end), str(grace_s), "--", *cmd],
            pass_fds=(read_end,),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches the owner, which then stops the tree in order
        )
    os.close(read_end)
    try:
        yield proc
    finally:
        os.close(write_end)  # the supervisor stops the tree
        try:
            proc.wait(timeout=grace_s + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------- the supervisor


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = open(f"/proc/{entry}/stat").read()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
    return out


def _reap() -> bool:
    """Collect exited children; True while any child is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _stop_tree(server: subprocess.Popen, grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    # Whatever is left, in the group or re-parented to us (it may have left the group or renamed itself): SIGKILL.
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        for pid in _children(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not _reap():
            return
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    read_end, grace_s, cmd = int(argv[0]), float(argv[1]), argv[3:]
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner decides when the tree stops
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    server = subprocess.Popen(
        cmd,
        start_new_session=True,
        # if this supervisor is killed outright, the server at least goes with it
        preexec_fn=lambda: _prctl(PR_SET_PDEATHSIG, signal.SIGKILL),
    )
    while not stop["now"] and server.poll() is None:
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([read_end], [], [], 0.5)
            if ready and os.read(read_end, 4096) == b"":
                break  # the owner closed the pipe or died
    code = server.poll()
    _stop_tree(server, grace_s)
    if code is None:
        return 0  # stopped on the owner's word
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
