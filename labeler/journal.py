"""An append-only JSONL journal of finished requests, so a killed labeling run resumes where it stopped.

Line 1 is a header with the settings fingerprint (the judges and the frame settings); every later line is one
OrderResult, keyed by (judge id, request id). Lines are flushed as they are written (a SIGKILL loses nothing
that was written) and fsynced at most every `fsync_every_s` seconds; a line torn by a crash is skipped on
reading and cut before the next append (densedpo.files). Only answered requests are journaled: request errors
are retried by the next run.
"""

from __future__ import annotations

from pathlib import Path

from densedpo.errors import DenseDPOError
from densedpo.files import JsonlWriter, read_jsonl
from labeler.parse import OrderResult


def journal_path_for(out: Path) -> Path:
    return out.with_name(out.name + ".journal.jsonl")


def read_journal(path: Path) -> tuple[dict | None, dict[tuple[str | None, str], OrderResult]]:
    """(fingerprint, results by (judge, request id)); the last entry of a key wins, so duplicates cannot appear."""
    header, results = None, {}
    for i, obj in enumerate(read_jsonl(path)):
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
        self._writer = JsonlWriter(path, fsync_every_s)
        if header is None and self._writer.empty:
            self._writer.write({"fingerprint": fingerprint})

    def append(self, result: OrderResult) -> None:
        self._writer.write(result.to_json())
        self.results[result.key] = result

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
