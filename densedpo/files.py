"""Files that survive a crash: atomic writes (temp file, fsync, rename) and append-only JSONL journals."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, created with `mode`); on success fsync it and rename
    it over `path`, so a reader sees the old file or the whole new one, never half of it; on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{threading.get_ident()}{path.suffix}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))  # the mode holds from the first byte
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # The rename itself lives in the folder's entry; without this a power loss can undo it.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def finished_files(folder: str | Path, pattern: str = "*") -> list[Path]:
    """The files of `folder` matching `pattern`, sorted, without an atomic write's temporary (`.name.tmp-…`, left
    behind whole or torn by a kill mid-write; pathlib's glob matches hidden names, so `*.json` would read it)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, mode: int = 0o644) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- journals


def read_jsonl(path: str | Path) -> list[dict]:
    """Every JSON object line of a journal, in order; blank lines and a line torn by a crash are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if isinstance(obj, dict):
                out.append(obj)
    return out


def repair_torn_tail(path: str | Path) -> None:
    """Cut a last line that a crash left without its newline, so the next append starts a line of its own
    (appended onto the torn bytes, the next answer would be unreadable and lost too)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        f.seek(max(0, end - 1))
        if f.read(1) == b"\n":
            return
        # Find the start of the torn line: the byte after the last newline.
        pos, chunk = end, 4096
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                f.truncate(start + nl + 1)
                return
            pos = start
        f.truncate(0)


class JsonlWriter:
    """Appends one JSON object per line: each line is flushed as it is written (a SIGKILL of this process loses
    nothing written) and fsynced at most every `fsync_every_s` seconds (0: every line) and on close."""

    def __init__(self, path: str | Path, fsync_every_s: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)
        self.fsync_every_s = fsync_every_s
        self._f = open(self.path, "a", encoding="utf-8")
        self._last_sync = time.monotonic()

    @property
    def empty(self) -> bool:
        return self._f.tell() == 0

    def write(self, obj: dict | str) -> None:
        self._f.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        self._f.flush()
        if time.monotonic() - self._last_sync >= self.fsync_every_s:
            os.fsync(self._f.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cache_root() -> Path:
    """densedpo's per-machine cache: $DENSEDPO_CACHE, else $XDG_CACHE_HOME/densedpo, else ~/.cache/densedpo."""
    import os

    if os.environ.get("DENSEDPO_CACHE"):
        return Path(os.environ["DENSEDPO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "densedpo"
