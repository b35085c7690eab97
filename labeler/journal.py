"""An append-only JSONL journal of finished requests, so a killed labeling run resumes where it stopped.

Line 1 is a header with the settings fingerprint (the judges and the frame settings); every later line is one
OrderResult, keyed by (judge id, request id). Lines are flushed as
they are written (a SIGKILL loses nothing that was written) and fsynced at most every `fsync_every_s`
seconds. A truncated last line (power loss) is ignored on reading. Only answered requests are journaled:
request errors are retried by the next run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from densedpo.errors import DenseDPOError
from labeler.parse import OrderResult


def journal_path_for(out: Path) -> Path:
    return out.with_name(out.name + ".journal.jsonl")


def read_journal(path: Path) -> tuple[dict | None, dict[tuple[str | None, str], OrderResult]]:
    """(fingerprint, results by (judge, request id)); the last entry of a key wins, so duplicates cannot appear."""
    if not path.exists():
        return None, {}
    header, results = None, {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if i == 0 and "fingerprint" in obj:
                header = obj["fingerprint"]
                continue
            try:
                r = OrderResult(**obj)
            except TypeError:
                continue
            results[r.key] = r
    return header, results


class Journal:
    def __init__(self, path: Path, fingerprint: dict, restart: bool = False, fsync_every_s: float = 1.0):
        self.path = path
        self.fsync_every_s = fsync_every_s
        header, self.results = read_journal(path)
        if restart and path.exists():
            path.unlink()
            header, self.results = None, {}
        if header is not None and header != fingerprint:
            diff = sorted(k for k in set(header) | set(fingerprint) if header.get(k) != fingerprint.get(k))
            raise DenseDPOError(
                f"the journal {path} was written with different settings ({', '.join(diff)}); pass --restart to "
                "discard it, or choose another --out."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self._f = open(path, "a", encoding="utf-8")
        if new:
            self._f.write(json.dumps({"fingerprint": fingerprint}) + "\n")
            self._f.flush()
        self._last_sync = time.monotonic()

    def append(self, result: OrderResult) -> None:
        self._f.write(result.to_json() + "\n")
        self._f.flush()
        self.results[result.key] = result
        if time.monotonic() - self._last_sync > self.fsync_every_s:
            os.fsync(self._f.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
