"""`densedpo review`: a local page to look at pairs with their segment labels and to label segments by hand.

The server (FastAPI + uvicorn, like `densedpo serve`) holds the queue, serves the two videos of a pair (HTTP
Range, so the players can seek) and saves every human label at once: a line in an append-only journal shared by
all annotators of the file, then the whole human table rewritten atomically from the journal under a short
lock. A killed server or a closed tab loses nothing; a restart resumes at the first pair this annotator has not
finished. The page itself is static HTML/CSS/JS in review/static (no CDN, no build step).
"""

from __future__ import annotations

import fcntl
import hashlib
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, Field
from starlette.requests import Request

from densedpo.errors import DenseDPOError
from densedpo.files import JsonlWriter, read_jsonl
from densedpo.segments import segment_bounds
from densedpo.tables import LABELS, PAIRS, read_table, resolve_path, write_table
from densedpo.video import probe
from review.uncertain import ORDER_CHOICES, check_budget, uncertain_queue

QUEUE_ORDERS = ORDER_CHOICES
CHOICES = ("left", "right", "tie")
STATIC = Path(__file__).parent / "static"
JUDGE_FIELDS = (
    "preference",
    "status",
    "confidence",
    "p_a",
    "p_b",
    "p_tie",
    "order_agreement",
    "answer_ab",
    "answer_ba",
    "raw_response",
    "judge_model",
    "reasoning_ab",
    "reasoning_ba",
)


@dataclass
class ReviewConfig:
    pairs: Path
    labels: Path | None = None
    human: Path | None = None
    annotator: str = "anonymous"
    blind: bool = False
    order: str = "least-confident"
    seed: int = 0
    segment_seconds: float = 1.0
    budget: int | None = None  # --order uncertain: ask about this many segments (their pairs are queued)

    def check(self) -> None:
        if self.order not in QUEUE_ORDERS:
            raise DenseDPOError(f"--order must be one of {', '.join(QUEUE_ORDERS)}, got {self.order!r}.")
        check_budget(self.order, self.budget)
        if self.order == "uncertain" and self.labels is None:
            raise DenseDPOError("--order uncertain needs --labels (the judge's labels say where it is unsure).")
        if not (0 < self.segment_seconds < float("inf")):
            raise DenseDPOError(f"--segment-seconds must be a positive finite number, got {self.segment_seconds}.")
        if not self.annotator or not all(c.isalnum() or c in "-_.@" for c in self.annotator):
            raise DenseDPOError(f"--annotator {self.annotator!r}: use letters, digits and - _ . @ only.")
        if self.human is None:
            self.human = (self.labels or self.pairs).with_name("human.parquet")


# ---------------------------------------------------------------------------------------------- queue


def queue_order(pairs: pd.DataFrame, labels: pd.DataFrame | None, order: str, seed: int) -> list[str]:
    """Pair ids in the order the annotator sees them.

    least-confident: pairs whose least confident segment is least confident first (failed rows count as 0,
    unlabeled pairs last); random: a seeded shuffle (the unbiased sample to measure a judge on); table: as given.
    """
    ids = [str(p) for p in pairs["pair_id"]]
    if order == "table":
        return ids
    if order == "random":
        out = ids.copy()
        random.Random(seed).shuffle(out)
        return out
    if labels is None:
        return ids
    least = labels.assign(c=labels["confidence"].fillna(0.0)).groupby("pair_id")["c"].min()
    position = {p: i for i, p in enumerate(ids)}
    return sorted(ids, key=lambda p: (p not in least.index, least.get(p, 0.0), position[p]))


def main_judge_rows(labels: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(the rows the page shows as the judge's, the other judges' rows): a jury table's combined rows and its
    members; a table of several judges without a jury, its first judge by name and the rest; else all, None."""
    from densedpo.tables import JURY

    if "judge" not in labels.columns or labels["judge"].nunique() <= 1:
        return labels, None
    names = sorted(labels["judge"].dropna().unique())
    main = JURY if JURY in names else names[0]
    chosen = labels["judge"].eq(main)
    return labels[chosen].reset_index(drop=True), labels[~chosen].reset_index(drop=True)


def left_side(pair_id: str, seed: int, blind: bool) -> str:
    """Which video ('a' or 'b') is shown on the left: a, unless blind (then drawn per pair from the seed)."""
    if not blind:
        return "a"
    return "a" if hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()[0] % 2 == 0 else "b"


def to_preference(choice: str, left: str) -> str:
    """The screen's left/right/tie back to the pair's a/b/tie."""
    if choice == "tie":
        return "tie"
    right = "b" if left == "a" else "a"
    return left if choice == "left" else right


# ---------------------------------------------------------------------------------------------- human labels


class HumanStore:
    """Human labels: an append-only JSONL journal (all annotators) and the labels table rebuilt from it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.journal = self.path.with_name(self.path.name + ".journal.jsonl")
        self.lock_file = self.path.with_name(self.path.name + ".write.lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and not self.journal.exists():  # a table made elsewhere: its rows stay
            with self._locked():
                old = read_table(self.path, LABELS)
                with JsonlWriter(self.journal) as journal:
                    for row in old.to_dict("records"):
                        journal.write(_plain_row(row))

    @contextmanager
    def _locked(self):
        with open(self.lock_file, "a") as fd:
            fcntl.flock(fd, fcntl.LOCK_EX)  # short: one journal line and one table write
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def rows(self) -> dict[tuple[str, int, str], dict]:
        """The latest label per (pair, segment, annotator); a torn last line (killed mid-write) is skipped."""
        out = {}
        for row in read_jsonl(self.journal):
            key = (row["pair_id"], int(row["segment_idx"]), row.get("annotator") or "")
            if row.get("deleted"):  # a tombstone: the label was withdrawn where it came from
                out.pop(key, None)
            else:
                out[key] = row
        return out

    def has_source(self, source: str) -> bool:
        return any(r.get("source") == source for r in self.rows().values())

    def sync(self, source: str, rows: list[dict]) -> dict[str, int]:
        """Make the labels from `source` exactly `rows`: new or changed rows are journaled, rows of that source
        missing from `rows` get a tombstone, unchanged rows write nothing (the journal does not grow)."""
        with self._locked():
            current = self.rows()
            incoming = {
                (r["pair_id"], int(r["segment_idx"]), r["annotator"] or ""): {**r, "source": source} for r in rows
            }
            changed = [r for k, r in incoming.items() if k not in current or not _same_label(current[k], r)]
            gone = [k for k, r in current.items() if r.get("source") == source and k not in incoming]
            tombstones = [
                {"pair_id": p, "segment_idx": i, "annotator": a, "deleted": True, "source": source} for p, i, a in gone
            ]
            if changed or tombstones:
                with JsonlWriter(self.journal, fsync_every_s=0) as journal:
                    for row in changed + tombstones:
                        journal.write(row)
                self._write_table()
        return {"labels new or changed": len(changed), "labels removed": len(tombstones)}

    def _write_table(self) -> None:
        table = list(self.rows().values())
        if table:
            write_table(pd.DataFrame(table), self.path, LABELS, extra_metadata={"judge_model": "human"})
        else:
            self.path.unlink(missing_ok=True)  # every label withdrawn: no table rather than an empty one

    def save(self, row: dict) -> None:
        self.save_many([row])

    def save_many(self, rows: list[dict]) -> None:
        """Journal the rows (a later row of the same pair, segment and annotator supersedes), then rewrite the
        table from the journal, atomically."""
        with self._locked():
            with JsonlWriter(self.journal, fsync_every_s=0) as journal:
                for row in rows:
                    journal.write(row)
            self._write_table()


def _same_label(a: dict, b: dict) -> bool:
    """Two journal rows say the same thing (when they were written aside)."""
    return {k: v for k, v in a.items() if k != "labeled_at"} == {k: v for k, v in b.items() if k != "labeled_at"}


def human_row(pair_id: str, seg: dict, pref: str, raw: str, annotator: str, blind: bool, left: str) -> dict:
    """One human label as a labels-table row (judge_model "human", the annotator, what was shown on the left)."""
    return {
        "pair_id": pair_id,
        "segment_idx": int(seg["segment_idx"]),
        "frame_start": int(seg["frame_start"]),
        "frame_end": int(seg["frame_end"]),
        "t_start_s": float(seg["t_start_s"]),
        "t_end_s": float(seg["t_end_s"]),
        "preference": pref,
        "p_a": None,
        "p_b": None,
        "p_tie": None,
        "confidence": None,
        "order_agreement": None,
        "status": "ok",
        "error": None,
        "raw_response": raw,
        "judge_model": "human",
        "prompt_name": None,
        "prompt_sha256": None,
        "answer_ab": None,
        "answer_ba": None,
        "judge": "human",
        "annotator": annotator,
        "blind": blind,
        "shown_left": left,
        "labeled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _plain_row(row: dict) -> dict:
    return {k: (None if _isnull(v) else (v.item() if hasattr(v, "item") else v)) for k, v in row.items()}


def _isnull(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------- the session


class ReviewSession:
    """Everything the page asks for: the queue, one pair with its segments, and saving a label."""

    def __init__(self, cfg: ReviewConfig):
        cfg.check()
        self.cfg = cfg
        self.pairs = read_table(cfg.pairs, PAIRS)
        self.labels = read_table(cfg.labels, LABELS) if cfg.labels else None
        if self.labels is not None:
            unknown = sorted(set(self.labels["pair_id"]) - set(self.pairs["pair_id"]))
            if unknown:
                raise DenseDPOError(
                    f"--labels {cfg.labels} has pair_id {unknown[0]!r} that --pairs {cfg.pairs} lacks; "
                    "pass the pairs table the labels were made from."
                )
        self.other_labels = None
        self.asked: dict[tuple[str, int], str] = {}  # --order uncertain: (pair, segment) -> why it was chosen
        if cfg.order == "uncertain":
            self.queue, self.asked = uncertain_queue(self.labels, cfg.budget)
        if self.labels is not None:  # a jury's table: one block per segment (the jury's), the others beside it
            self.labels, self.other_labels = main_judge_rows(self.labels)
        self.by_id = {str(r["pair_id"]): r for r in self.pairs.to_dict("records")}
        if cfg.order != "uncertain":
            self.queue = queue_order(self.pairs, self.labels, cfg.order, cfg.seed)
        self.store = HumanStore(cfg.human)
        self._segments: dict[str, list[dict]] = {}

    def video_path(self, pair_id: str, side: str) -> Path:
        return resolve_path(self.cfg.pairs, self.by_id[pair_id][f"video_{side}"])

    def segments(self, pair_id: str) -> list[dict]:
        """The labels' segments of a pair; without labels, cut from the video (as `label` would)."""
        if pair_id in self._segments:
            return self._segments[pair_id]
        if self.labels is not None and pair_id in set(self.labels["pair_id"]):
            rows = self.labels[self.labels["pair_id"] == pair_id].sort_values("segment_idx")
            segs = [_plain_row(r) for r in rows.to_dict("records")]
        else:
            info = probe(self.video_path(pair_id, "a"))
            segs = [
                {
                    "segment_idx": s.segment_idx,
                    "frame_start": s.frame_start,
                    "frame_end": s.frame_end,
                    "t_start_s": s.t_start_s,
                    "t_end_s": s.t_end_s,
                }
                for s in segment_bounds(info.num_frames, info.fps, self.cfg.segment_seconds)
            ]
        self._segments[pair_id] = segs
        return segs

    def other_judges(self, pair_id: str, segment_idx: int) -> list[dict]:
        """The jury members' rows of a segment (the side panel), when the table is a jury's."""
        if self.other_labels is None:
            return []
        o = self.other_labels
        rows = o[(o["pair_id"] == pair_id) & (o["segment_idx"] == segment_idx)]
        return [{k: _plain_row(r).get(k) for k in ("judge", *JUDGE_FIELDS)} for r in rows.to_dict("records")]

    def fps(self, pair_id: str) -> float:
        fps = self.by_id[pair_id].get("fps")
        return float(fps) if fps is not None and not _isnull(fps) else probe(self.video_path(pair_id, "a")).fps

    def human_labels(self, pair_id: str) -> dict[int, str]:
        mine = self.cfg.annotator
        rows = self.store.rows().items()
        return {seg: row["preference"] for (p, seg, ann), row in rows if p == pair_id and ann == mine}

    def finished(self) -> list[bool]:
        """Per queued pair: has this annotator labeled every one of its segments?"""
        done = self.store.rows()
        return [all((p, s["segment_idx"], self.cfg.annotator) in done for s in self.segments(p)) for p in self.queue]

    def session(self) -> dict:
        """The page's start: counts, and the first pair this annotator has not finished (a restart resumes there)."""
        finished = self.finished()
        start = finished.index(False) if False in finished else 0
        return {
            "annotator": self.cfg.annotator,
            "blind": self.cfg.blind,
            "order": self.cfg.order,
            "asked_segments": len(self.asked) or None,
            "pairs": len(self.queue),
            "finished_pairs": sum(finished),
            "start": start,
            "has_judge": self.labels is not None and not self.cfg.blind,
            "human_path": str(self.cfg.human),
        }

    def pair(self, index: int) -> dict:
        pair_id = self.queue[index]
        left = left_side(pair_id, self.cfg.seed, self.cfg.blind)
        human = self.human_labels(pair_id)
        segments = []
        for s in self.segments(pair_id):
            seg = {k: s[k] for k in ("segment_idx", "frame_start", "frame_end", "t_start_s", "t_end_s")}
            if self.labels is not None and not self.cfg.blind and "preference" in s:
                seg["judge"] = {k: s.get(k) for k in JUDGE_FIELDS}
                seg["other_judges"] = self.other_judges(pair_id, int(s["segment_idx"]))
            seg["human"] = human.get(int(s["segment_idx"]))
            why = self.asked.get((pair_id, int(s["segment_idx"])))
            if why is not None:  # blind: that it was chosen, not the judge's answers behind it
                seg["asked_because"] = "chosen for review" if self.cfg.blind else why
            segments.append(seg)
        row = self.by_id[pair_id]
        right = "b" if left == "a" else "a"
        return {
            "index": index,
            "pair_id": pair_id,
            "prompt": row["prompt"],
            "fps": self.fps(pair_id),
            "left": left,
            "right": right,
            "video_left": f"/media/{index}/{left}",
            "video_right": f"/media/{index}/{right}",
            "segments": segments,
        }

    def label(self, index: int, segment_idx: int, choice: str) -> dict:
        pair_id = self.queue[index]
        segs = {int(s["segment_idx"]): s for s in self.segments(pair_id)}
        if segment_idx not in segs:
            raise KeyError(f"pair {pair_id} has no segment {segment_idx}")
        left = left_side(pair_id, self.cfg.seed, self.cfg.blind)
        pref = to_preference(choice, left)
        row = human_row(pair_id, segs[segment_idx], pref, choice, self.cfg.annotator, self.cfg.blind, left)
        self.store.save(row)
        finished = self.finished()
        return {
            "pair_id": pair_id,
            "segment_idx": segment_idx,
            "human": pref,
            "finished_pairs": sum(finished),
            "pairs": len(self.queue),
        }


# ---------------------------------------------------------------------------------------------- the app


class LabelIn(BaseModel):
    """One human label, as the page sends it: the pair's queue index, the segment, the side on screen."""

    index: int = Field(ge=0)
    segment_idx: int = Field(ge=0)
    choice: Literal["left", "right", "tie"]


def same_origin_json(request: Request) -> None:
    """Labels come from this page only: a JSON body (415 otherwise: a plain form or text, which another page can
    send without a CORS preflight) from this origin (403 for another site's page open in the same browser)."""
    from fastapi import HTTPException

    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "send the label as JSON (Content-Type: application/json)")
    origin = request.headers.get("origin")
    here = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if (origin is not None and origin != here) or request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise HTTPException(403, f"labels are accepted from the review page only ({here}), not from {origin}")


def create_review_app(session: ReviewSession):
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse

    app = FastAPI(title="densedpo review", docs_url=None, redoc_url=None)

    def pair_index(index: int) -> int:
        if not 0 <= index < len(session.queue):
            raise HTTPException(404, f"no pair {index}: the queue has {len(session.queue)}")
        return index

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()}:
            raise HTTPException(404, f"no static file {name}")
        return FileResponse(path, headers={"Cache-Control": "no-store"})

    @app.get("/api/session")
    def get_session():
        return session.session()

    @app.get("/api/pairs/{index}")
    def get_pair(index: int):
        return session.pair(pair_index(index))

    @app.get("/media/{index}/{side}", include_in_schema=False)
    def media(index: int, side: Literal["a", "b"]):
        path = session.video_path(session.queue[pair_index(index)], side)
        if not path.exists():
            raise HTTPException(404, f"video {path} is gone")
        return FileResponse(path, media_type="video/mp4")  # answers Range requests: the players can seek

    @app.post("/api/labels", dependencies=[Depends(same_origin_json)])
    def post_label(body: LabelIn):
        try:
            return session.label(pair_index(body.index), body.segment_idx, body.choice)
        except KeyError as e:
            raise HTTPException(404, str(e.args[0])) from None

    return app
