"""A server's whole process tree goes with its owner and with its supervisor, at any moment.

`supervised(cmd)` starts two small processes beside the owner:
- the supervisor (`python -m densedpo.supervise FD GRACE TOKEN -- cmd`), in a session of its own: it makes itself a
  child subreaper (so every orphan of the server's tree, e.g. vLLM's engine core and workers, which rename
  themselves `VLLM::EngineCore`/`VLLM::Worker` and can outlive the API server, is re-parented to it rather than
  to init), starts the server with DENSEDPO_TREE=TOKEN in its environment, and waits for the owner's pipe to
  close. The pipe closes when the owner stops the server, returns, raises, or dies by any signal, SIGKILL
  included: the kernel closes the write end with the owner. Then it stops the tree: SIGTERM to the server's
  group, a grace period, SIGKILL to every process of the tree until none is left.
- the watchdog (`python -m densedpo.supervise --watch ...`), in a session of its own, holding the owner's pipe and
  one from the supervisor. When the supervisor dies (SIGKILL included, alone or with the owner), or the owner dies
  and the supervisor has not finished within its grace period, the watchdog kills every process of the tree.

A process of the tree is one whose environment holds DENSEDPO_TREE=TOKEN: the environment is inherited by every
descendant and survives renaming, re-parenting and `setsid`, where process groups, sessions and parent links do
not. Killing by it never hits a reused pid (a new process would need the token).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
TREE_VAR = "DENSEDPO_TREE"
SETTLE_S = 1.5  # the watchdog leaves once no process of the tree has been seen for this long


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)


@contextlib.contextmanager
def supervised(
    cmd: Sequence[str], *, log_path: Path, env: dict | None = None, grace_s: float = 20.0
) -> Iterator[subprocess.Popen]:
    """Run `cmd` under a supervisor (its output appended to `log_path`); yield the supervisor's Popen (not the
    server's): its exit means the server has exited, and its code is the server's. On leaving, the whole tree is
    stopped, and the supervisor and the watchdog are gone."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    fds: list[int] = []
    proc = watchdog = None
    try:
        owner_r, owner_w = os.pipe()  # the write ends stay with their holder alone (not inheritable)
        life_r, life_w = os.pipe()
        fds += [owner_r, owner_w, life_r, life_w]
        with open(log_path, "ab") as log:
            watchdog = subprocess.Popen(
                [sys.executable, "-m", "densedpo.supervise", "--watch", str(owner_r), str(life_r), token, str(grace_s)],
                pass_fds=(owner_r, life_r),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_watchdog_env(env),
                start_new_session=True,  # outside the tree and its signals
            )
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "densedpo.supervise",
                    str(owner_r),
                    str(grace_s),
                    token,
                    str(life_w),
                    "--",
                    *cmd,
                ],
                pass_fds=(owner_r, life_w),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C reaches the owner, which then stops the tree in order
            )
        for fd in (owner_r, life_r, life_w):
            os.close(fd)
            fds.remove(fd)
        yield proc
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # the owner's write end: the supervisor (and the watchdog) stop the tree
        for p, limit in ((proc, grace_s + 30), (watchdog, grace_s + 30)):
            if p is None:
                continue
            try:
                p.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        kill_tree(token)  # nothing of it outlives this block, whatever happened above


def _watchdog_env(env: dict | None) -> dict:
    """What the watchdog needs to start Python and import densedpo; nothing of the server's environment (it is
    densedpo's process, not the server's: markers meant for the server's tree must not find it)."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if k in ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}


# ---------------------------------------------------------------------------------------------- the tree


def tree_pids(token: str) -> list[int]:
    """Every live process whose environment holds DENSEDPO_TREE=token."""
    needle = f"{TREE_VAR}={token}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        out.append(int(entry))
    return out


def kill_tree(token: str, settle_s: float = 0.0) -> None:
    """SIGKILL every process of the tree until none is seen for settle_s (a process forked just before its parent
    died appears a moment later)."""
    quiet_since = time.monotonic()
    while True:
        pids = tree_pids(token)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        _reap()
        if pids:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle_s:
            return
        time.sleep(0.05)


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


# ---------------------------------------------------------------------------------------------- the supervisor


def _stop_tree(server: subprocess.Popen, token: str, grace_s: float) -> None:
    if server.returncode is None:  # not reaped: its pid and group id are still its own (no pid reuse)
        with contextlib.suppress(OSError):
            os.killpg(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    # Whatever is left, in the tree or re-parented to us (it may have left the group or renamed itself): SIGKILL.
    while True:
        kill_tree(token)
        for pid in _children(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if not _reap():
            return
        time.sleep(0.05)


def _start_server(cmd: list[str], token: str) -> subprocess.Popen:
    me = os.getpid()

    def in_child() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # if this supervisor is killed outright, the server goes too
        if os.getppid() != me:  # it died before the line above: the signal would never come
            os._exit(1)

    return subprocess.Popen(
        cmd, env={**os.environ, TREE_VAR: token}, process_group=0, preexec_fn=in_child, close_fds=True
    )


def main(argv: list[str]) -> int:
    if argv[0] == "--watch":
        return watch(int(argv[1]), int(argv[2]), argv[3], float(argv[4]))
    read_end, grace_s, token, life_w, cmd = int(argv[0]), float(argv[1]), argv[2], int(argv[3]), argv[5:]
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner decides when the tree stops
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    server = _start_server(cmd, token)
    while not stop["now"] and server.poll() is None:
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([read_end], [], [], 0.5)
            if ready and os.read(read_end, 4096) == b"":
                break  # the owner closed the pipe or died
    code = server.poll()
    _stop_tree(server, token, grace_s)
    with contextlib.suppress(OSError):
        os.write(life_w, b"stopped")  # the tree is gone: the watchdog checks once and leaves without waiting
    os.close(life_w)
    if code is None:
        return 0  # stopped on the owner's word
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


def watch(owner_fd: int, life_fd: int, token: str, grace_s: float) -> int:
    """The watchdog: when the supervisor's pipe closes (it finished, or died), or the owner's closes and the
    supervisor has not finished after its grace period, kill whatever is left of the tree, then leave."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fds = [owner_fd, life_fd]
    owner_gone_at, stopped = None, False
    while True:
        timeout = 0.5 if owner_gone_at is None else max(0.0, owner_gone_at + grace_s + 5 - time.monotonic())
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select(fds, [], [], timeout)
            if life_fd in ready:
                data = os.read(life_fd, 4096)
                stopped = stopped or data.startswith(b"stopped")
                if data == b"":
                    break  # the supervisor is done or dead
            if owner_fd in ready and os.read(owner_fd, 4096) == b"":
                fds.remove(owner_fd)
                owner_gone_at = time.monotonic()
        if owner_gone_at is not None and time.monotonic() >= owner_gone_at + grace_s + 5:
            break  # the supervisor should have stopped the tree by now
    kill_tree(token, settle_s=0.0 if stopped else SETTLE_S)  # a supervisor killed mid-fork: late children
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
