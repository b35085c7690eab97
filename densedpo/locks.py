"""One writer per output: an exclusive advisory lock held for a whole run.

`flock` on a lock file beside the output. The kernel drops the lock when the process dies (SIGKILL included),
so a crash never leaves a stale lock to clean up; the file itself stays and only records who holds it. A second
run on the same output fails at once with one line naming the holder.

Caveat: `flock` is local to one machine on NFS before Linux 2.6.12 and on some network filesystems (it may be
emulated with byte-range locks, or not shared between hosts at all). On shared storage, give each machine its
own output (e.g. `generate --shard i/n` into one folder works: each shard has its own lock) or a local path.

Locks are re-entrant within a process: the CLI takes the lock before writing its run file and the stage
function takes it again for API users, on one file descriptor.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from densedpo.errors import DenseDPOError

_held: dict[str, list] = {}  # resolved path -> [fd, depth]
_guard = threading.Lock()


class OutputBusy(DenseDPOError):
    """Another process holds the lock of this output."""


def rank_suffix() -> str:
    """Under torchrun/accelerate each rank is a writer of its own: `-rank{r}-of-{w}`, else ''."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return f"-rank{os.environ.get('RANK', '0')}-of-{world}" if world > 1 else ""


def holder(lock_file: Path) -> dict:
    """What the lock file says about its last holder (pid, host, command, started), {} if unreadable."""
    try:
        return json.loads(lock_file.read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, fix: str) -> Iterator[Path]:
    """Hold an exclusive lock on `lock_file` for the block, or raise OutputBusy at once.

    `what` names the output in the message ("--out labels.parquet"); `fix` says what to do instead.
    """
    key = str(lock_file.resolve())
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is not None:
        try:
            yield lock_file
        finally:
            _release(key)
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        h = holder(lock_file)
        who = f"pid {h.get('pid', '?')} on {h.get('host', '?')}"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["started"])) if "started" in h else "?"
        raise OutputBusy(
            f"{what} is in use by another densedpo run ({who}, since {since}: {h.get('command', '?')}); wait for it "
            f"to finish or stop it, or {fix}."
        ) from None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "command": " ".join(["densedpo", *sys.argv[1:]])[:300],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    with _guard:
        _held[key] = [fd, 1]
    try:
        yield lock_file
    finally:
        _release(key)


def _release(key: str) -> None:
    with _guard:
        entry = _held[key]
        entry[1] -= 1
        if entry[1]:
            return
        del _held[key]
    fcntl.flock(entry[0], fcntl.LOCK_UN)
    os.close(entry[0])


@contextlib.contextmanager
def waiting(lock_file: Path) -> Iterator[None]:
    """A short critical section shared by several writers (e.g. shards merging one table): wait for the lock,
    hold it for the block. Unlike `exclusive`, a second holder waits instead of being refused."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
