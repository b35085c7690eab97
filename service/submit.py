"""A job submission, checked before anything is stored: paths confined to --data-root, the table and its videos
validated as `densedpo label` validates them, and the images per request within the VLM server's limit."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.tables import PAIRS, read_table, resolve_path, validate
from labeler.config import LabelConfig
from labeler.plan import max_images_per_request, plan_pairs


class PathOutsideRoot(DenseDPOError):
    """A submitted path that resolves outside --data-root (`..`, an absolute path, or a symlink out)."""


def confined(root: Path, value: str) -> Path:
    """A path under root: relative to it, no `..` escape, no symlink leading out. Raises PathOutsideRoot."""
    root = root.resolve()
    p = Path(value)
    resolved = (p if p.is_absolute() else root / p).resolve()
    if resolved != root and root not in resolved.parents:
        raise PathOutsideRoot(f"path {value!r} is outside --data-root; give a path under it.")
    return resolved


@dataclass
class Accepted:
    table: pd.DataFrame  # the table as checked, its paths absolute: the job runs this copy, never the file again
    pairs_path: Path  # where it was read from (an upload: where it will be written)


def check_submission(
    upload: bytes | None,
    path: str | None,
    settings: dict,
    job_dir: Path,
    data_root: Path,
    max_images: int,
    base: str | None = None,
) -> Accepted:
    """Validate a submission like the CLI does, so a bad table is refused now, not failed later. An upload's video
    paths are relative to `base`, a folder under --data-root (the root itself by default).

    Blocking (reads the table, probes every video): the route runs it in a worker thread. Raises PathOutsideRoot
    (400) or DenseDPOError (422) with the CLI's one-line message."""
    cfg_job = LabelConfig(pairs=Path("-"), out=job_dir / "labels.parquet", server=["-"], **settings)
    cfg_job.check()  # the CLI's own checks and messages
    if upload is not None:
        df = _read_upload(upload, data_root, base)
        pairs_path = job_dir / "pairs.parquet"
    else:
        pairs_path = confined(data_root, path)
        df = read_table(pairs_path, PAIRS)
        _confine_videos(df, pairs_path, data_root)
        for col in [c for c in PAIRS.path_columns if c in df.columns]:  # the job keeps its own copy of the table
            df[col] = [None if v is None else str(resolve_path(pairs_path, v)) for v in df[col]]
    cfg_job.pairs = pairs_path
    try:
        plans = plan_pairs(cfg_job, df)
    except DenseDPOError as e:
        if upload is None or "not found" not in str(e):
            raise
        where = f"the folder {base!r} under --data-root" if base else "--data-root itself"
        raise DenseDPOError(
            f"{e} An uploaded table's video paths are relative to {where}: send the folder they are relative to "
            "as the `base` form field (densedpo jobs submit --base FOLDER)."
        ) from None
    images = max_images_per_request(plans, cfg_job.sample_fps)
    if images > max_images:
        raise DenseDPOError(
            f"this job asks {images} images per request (2 videos x frames of a {cfg_job.segment_seconds:g} s "
            f"segment at {cfg_job.sample_fps:g} fps) but the VLM server takes at most {max_images} "
            "(--max-images); lower sample_fps or segment_seconds."
        )
    return Accepted(df, pairs_path)


def _read_upload(data: bytes, data_root: Path, base: str | None = None) -> pd.DataFrame:
    """An uploaded pairs table, validated, with its video paths (relative to `base` under --data-root) made
    absolute."""
    import pyarrow.parquet as pq

    try:
        df = pq.read_table(io.BytesIO(data)).to_pandas()
    except Exception as e:  # pyarrow raises several types for bytes that are not parquet
        raise DenseDPOError(f"the upload is not a parquet table ({type(e).__name__}).") from None
    df = validate(df, PAIRS, where="uploaded pairs table")
    base_dir = confined(data_root, base) if base else data_root.resolve()
    _confine_videos(df, base_dir / "pairs.parquet", data_root)
    for col in ("video_a", "video_b"):
        df[col] = [str(resolve_path(base_dir / "pairs.parquet", v)) for v in df[col]]
    return df


def _confine_videos(df: pd.DataFrame, table_path: Path, data_root: Path) -> None:
    for i, row in enumerate(df.itertuples(index=False)):
        for col in ("video_a", "video_b"):
            p = resolve_path(table_path, getattr(row, col))
            try:
                confined(data_root, str(p))
            except PathOutsideRoot:
                raise PathOutsideRoot(
                    f"row {i} (pair_id={row.pair_id!r}), column {col}: {getattr(row, col)!r} is outside --data-root."
                ) from None
