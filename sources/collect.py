"""Where the clips come from: a folder of videos (captions from sidecar .txt files) or a manifest (CSV, JSONL,
parquet) with a video column and a caption column. The layouts of Hugging Face's `metadata.jsonl` (file_name,
text), OpenVid-1M's CSV (video, caption) and Panda-70M's CSV (videoID, timestamp and caption lists: one clip per
timestamp) are read without flags."""

from __future__ import annotations

import ast
import hashlib
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from densedpo.errors import DenseDPOError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
VIDEO_COLUMNS = ("video", "file_name", "video_path", "path", "filepath", "clip", "videoID")
CAPTION_COLUMNS = ("caption", "text", "prompt", "description")
CANDIDATE_COLUMNS = ["source_id", "video", "caption", "caption_source", "start_s", "end_s"]


def collect(source: Path, video_column: str | None = None, caption_column: str | None = None) -> pd.DataFrame:
    """Every candidate clip: source_id, video (absolute path), caption (None when there is none), caption_source
    (sidecar | manifest | None), start_s / end_s (a clip inside a longer file; None: the whole file)."""
    source = Path(source)
    if source.is_dir():
        return from_folder(source)
    if not source.exists():
        raise DenseDPOError(f"--from {source} not found: give a folder of videos or a CSV/JSONL/parquet manifest.")
    return from_manifest(source, video_column, caption_column)


def unique_ids(ids: list[str], keys: list[str]) -> list[str]:
    """Source ids unique by construction: an id that several candidates would share (`clip.mp4` and `clip.mov`,
    `a/b.mp4` and `a-b.mp4`) gets '~' and 8 hex digits of its candidate's own key (its path, its manifest row).
    safe_id never writes '~', so a suffixed id cannot meet a plain one."""
    counts = Counter(ids)  # linear: a manifest may list a million clips
    out = [f"{i}~{hashlib.sha256(k.encode()).hexdigest()[:8]}" if counts[i] > 1 else i for i, k in zip(ids, keys)]
    seen: Counter = Counter()
    for n, i in enumerate(out):  # two candidates with one key (the same file and span listed twice): numbered
        seen[i] += 1
        if seen[i] > 1:
            out[n] = f"{i}~{seen[i]}"
    return out


def from_folder(folder: Path) -> pd.DataFrame:
    """Videos under `folder` (recursively, sorted), each with the caption of a same-named .txt beside it. Hidden
    names are not clips, as in a shell's glob: macOS's `._clip.mp4` resource forks, `.cache/`, a partial download,
    Label Studio's `.densedpo-blind/` links (each would be a candidate: unreadable, or a duplicate of every clip)."""
    rows, keys = [], []
    for video in sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(folder).parts)):  # fmt: skip
        sidecar = video.with_suffix(".txt")
        caption = sidecar.read_text(errors="replace").strip() if sidecar.exists() else None
        rel = video.relative_to(folder)
        rows.append(
            (safe_id(str(rel.with_suffix(""))), str(video.resolve()), caption or None, "sidecar" if caption else None)
        )
        keys.append(rel.as_posix())
    if not rows:
        raise DenseDPOError(f"--from {folder} holds no video ({', '.join(VIDEO_EXTENSIONS)}); point it at the clips.")
    df = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS[:4])
    df["source_id"] = unique_ids(list(df["source_id"]), keys)
    return df.assign(start_s=None, end_s=None)


def read_manifest(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl")
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (ValueError, OSError) as e:
        raise DenseDPOError(f"--from {path} could not be read as {suffix[1:]}: {e}") from None
    raise DenseDPOError(f"--from {path}: a manifest must be .csv, .jsonl or .parquet (or give a folder of videos).")


def pick_column(df: pd.DataFrame, given: str | None, known: tuple[str, ...], flag: str, where: Path) -> str | None:
    """The manifest's column for `flag`: the one given, else the first known name it has (None if none)."""
    if given is not None:
        if given not in df.columns:
            raise DenseDPOError(
                f"{flag} {given}: {where} has no such column; it has {', '.join(map(str, df.columns))}."
            )
        return given
    return next((c for c in known if c in df.columns), None)


def from_manifest(path: Path, video_column: str | None, caption_column: str | None) -> pd.DataFrame:
    """Rows of a manifest as candidate clips; video paths are relative to the manifest's folder, and a video value
    without an extension (Panda-70M's videoID) is looked up with each video extension."""
    df = read_manifest(path)
    vcol = pick_column(df, video_column, VIDEO_COLUMNS, "--video-column", path)
    if vcol is None:
        raise DenseDPOError(
            f"{path} has no video column ({', '.join(VIDEO_COLUMNS)}); name it with --video-column "
            f"(it has {', '.join(map(str, df.columns))})."
        )
    ccol = pick_column(df, caption_column, CAPTION_COLUMNS, "--caption-column", path)
    # Only a column whose every cell is a list (Panda-70M's timestamp and caption lists) is read as lists: a
    # caption that starts with '[' ("[Music] a man plays guitar") is text.
    lists = {c for c in (ccol, "timestamp") if c in df.columns and is_list_column(df[c])}
    rows, keys = [], []
    for i, row in enumerate(df.to_dict("records")):
        value = row[vcol]
        if not isinstance(value, str) or not value.strip():
            raise DenseDPOError(f"{path} row {i}: column {vcol} is empty; every row needs a video.")
        video = locate(path.parent, value.strip())
        captions = as_list(row.get(ccol), ccol in lists) if ccol else [None]
        spans = (
            timestamp_spans(row["timestamp"], "timestamp" in lists, f"{path} row {i}")
            if "timestamp" in row
            else [(None, None)]
        )
        if len(spans) > 1 and len(captions) not in (1, len(spans)):
            raise DenseDPOError(f"{path} row {i}: {len(spans)} timestamps but {len(captions)} captions.")
        base = safe_id(Path(value).with_suffix("").as_posix() if Path(value).suffix else value)
        for k, (start, end) in enumerate(spans):
            caption = captions[k if len(captions) == len(spans) else 0]
            caption = str(caption).strip() if caption is not None and str(caption).strip() else None
            sid = f"{base}-{k}" if len(spans) > 1 else base
            rows.append((sid, str(video), caption, "manifest" if caption else None, start, end))
            keys.append(f"{value}|{start}|{end}")
    out = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)
    out["source_id"] = unique_ids(list(out["source_id"]), keys)
    return out


def locate(folder: Path, value: str) -> Path:
    """A manifest's video value as a path: relative to the manifest's folder; without an extension, the first
    existing file with a video extension (else the value as given: the probe reports it missing)."""
    p = Path(value)
    p = p if p.is_absolute() else (folder / p)
    if not p.suffix:
        for ext in VIDEO_EXTENSIONS:
            if p.with_suffix(ext).exists():
                return p.with_suffix(ext).resolve()
    return p.resolve() if p.exists() else p


def _literal_list(value):
    """The list a cell holds (a list, an array, or its text as Panda-70M's CSV stores it), else None."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return list(value.tolist() if hasattr(value, "tolist") else value)
    return None


def is_list_column(column: pd.Series) -> bool:
    """Every non-empty cell of the column holds a list."""
    cells = [v for v in column if not (v is None or (isinstance(v, float) and v != v))]
    return bool(cells) and all(_literal_list(v) is not None for v in cells)


def as_list(value, is_list: bool = False) -> list:
    """A cell of a list column as its list; any other cell as [value] (text stays text, brackets and all)."""
    if is_list:
        return _literal_list(value) or [None]
    return [None if value is None or (isinstance(value, float) and value != value) else value]


def timestamp_spans(value, is_list: bool, where: str) -> list[tuple[float | None, float | None]]:
    """A timestamp cell as spans: a list of [start, end] pairs (one clip each), or one flat [start, end] pair."""
    if not is_list:
        if value is None or (isinstance(value, float) and value != value):
            return [(None, None)]
        raise DenseDPOError(f"{where}: timestamp {value!r} is not a list; write [start, end] or [[start, end], ...].")
    spans = as_list(value, True)
    if spans and not any(hasattr(s, "__len__") and not isinstance(s, str) for s in spans):
        return [parse_span(spans)]  # ['13', '45']: one clip, not two of one character each
    return [parse_span(s) for s in spans]


def parse_span(span) -> tuple[float | None, float | None]:
    """Panda-70M's ["0:00:05.005", "0:00:12.345"] (or numbers of seconds) -> (5.005, 12.345)."""
    if span is None:
        return None, None
    try:
        start, end = (to_seconds(x) for x in span)
    except (TypeError, ValueError):
        raise DenseDPOError(
            f"timestamp {span!r}: write [start, end] as seconds or H:MM:SS.mmm, e.g. ['0:00:05.0', '0:00:09.5']."
        ) from None
    if not 0 <= start < end:
        raise DenseDPOError(f"timestamp {span!r}: the start must lie before the end.")
    return start, end


def to_seconds(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    parts = [float(x) for x in str(value).strip().split(":")]
    seconds = 0.0
    for x in parts:
        seconds = seconds * 60 + x
    return seconds


def safe_id(text: str) -> str:
    """A source id from a path or id: letters, digits, - _ . kept, everything else -."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "clip"
