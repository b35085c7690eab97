"""The table contracts between stages (README: Table contracts), defined once.

Each table is a parquet file whose metadata records `densedpo.table` and `densedpo.schema_version`.
Paths inside a table are relative to the table's own folder; absolute paths are accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from densedpo.errors import DenseDPOError, TableError
from densedpo.files import atomic_path

SCHEMA_VERSION = 2  # v2: labels gained answer_ab, answer_ba, judge, annotator, score_a, score_b (v1 still read)
_META_TABLE = b"densedpo.table"
_META_VERSION = b"densedpo.schema_version"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "str", "int", "float", "bool"
    required: bool = True
    nullable: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Schema:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    path_columns: tuple[str, ...] = ()
    optional_key: tuple[str, ...] = ()  # key columns that count only where the table has them

    def key_columns(self, df: pd.DataFrame) -> list[str]:
        return list(self.key) + [k for k in self.optional_key if k in df.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


SOURCES = Schema(
    "sources",
    (
        Column("source_id", "str", doc="unique id of the real clip"),
        Column("video", "str", doc="path of the clip"),
        Column("prompt", "str", doc="caption of the clip"),
        Column("start_s", "float", required=False, nullable=True, doc="where the clip starts in its file"),
        Column("end_s", "float", required=False, nullable=True, doc="where it ends (none: the file's end)"),
    ),
    key=("source_id",),
    path_columns=("video",),
)

PAIRS = Schema(
    "pairs",
    (
        Column("pair_id", "str"),
        Column("prompt", "str"),
        Column("video_a", "str"),
        Column("video_b", "str"),
        Column("source_id", "str", required=False, nullable=True),
        Column("source_video", "str", required=False, nullable=True),
        Column("num_frames", "int", required=False, nullable=True),
        Column("fps", "float", required=False, nullable=True),
        Column("height", "int", required=False, nullable=True),
        Column("width", "int", required=False, nullable=True),
        Column("mode", "str", required=False, nullable=True, doc="sdedit or vanilla"),
        Column("strength", "float", required=False, nullable=True, doc="requested noise level eta"),
        Column("start_sigma", "float", required=False, nullable=True, doc="realized noise level"),
        Column("seed_a", "int", required=False, nullable=True),
        Column("seed_b", "int", required=False, nullable=True),
        Column("num_inference_steps", "int", required=False, nullable=True),
        Column("guidance_scale", "float", required=False, nullable=True),
        Column("model_id", "str", required=False, nullable=True),
        Column("lora_sha256", "str", required=False, nullable=True, doc="generate --lora: the policy's LoRA"),
        Column("latents_a", "str", required=False, nullable=True),
        Column("latents_b", "str", required=False, nullable=True),
        Column("prompt_embeds", "str", required=False, nullable=True),
    ),
    key=("pair_id",),
    path_columns=("video_a", "video_b", "source_video", "latents_a", "latents_b", "prompt_embeds"),
)

PREFERENCES = ("a", "b", "tie")
POSITIONS = ("first", "second", "tie")  # what one order's answer chose, by position on screen
LABEL_STATUSES = ("ok", "low_confidence", "order_inconsistent", "parse_error", "request_error")

SAMPLES = Schema(
    "samples",
    (
        Column("prompt_id", "str", doc="the prompt's id (its line number in a text file, or the table's)"),
        Column("prompt", "str"),
        Column("k", "int", doc="which sample of the prompt (0 .. seeds_per_prompt - 1)"),
        Column("seed", "int", doc="a function of --seed, prompt_id and k only: base and policy share it"),
        Column("video", "str"),
        Column("model_id", "str"),
        Column("lora", "str", required=False, nullable=True, doc="the LoRA folder loaded, if any"),
        Column("lora_sha256", "str", required=False, nullable=True, doc="content digest of its weights"),
        Column("num_frames", "int"),
        Column("fps", "float"),
        Column("height", "int"),
        Column("width", "int"),
        Column("num_inference_steps", "int"),
        Column("guidance_scale", "float"),
        Column("negative_prompt", "str", required=False, nullable=True),
        Column("latents", "str", required=False, nullable=True, doc="final latents (--save-latents)"),
    ),
    key=("prompt_id", "k"),
    path_columns=("video", "latents"),
)

LABELS = Schema(
    "labels",
    (
        Column("pair_id", "str"),
        Column("segment_idx", "int"),
        Column("frame_start", "int", doc="first pixel frame of the segment"),
        Column("frame_end", "int", doc="one past the last pixel frame (half-open)"),
        Column("t_start_s", "float"),
        Column("t_end_s", "float"),
        Column("preference", "str", nullable=True, doc="a, b or tie; null on error"),
        Column("p_a", "float", nullable=True),
        Column("p_b", "float", nullable=True),
        Column("p_tie", "float", nullable=True),
        Column("confidence", "float", nullable=True),
        Column("order_agreement", "bool", nullable=True),
        Column("status", "str"),
        Column("error", "str", nullable=True),
        Column("raw_response", "str", nullable=True),
        Column("judge_model", "str"),
        Column("prompt_name", "str", nullable=True),
        Column("prompt_sha256", "str", nullable=True),
        # schema v2
        Column("answer_ab", "str", required=False, nullable=True, doc="position chosen with video_a shown first"),
        Column("answer_ba", "str", required=False, nullable=True, doc="position chosen with video_b shown first"),
        Column("judge", "str", required=False, nullable=True, doc="judge configuration id (model, kind, prompt)"),
        Column("annotator", "str", required=False, nullable=True, doc="who labeled a human row"),
        Column("score_a", "float", required=False, nullable=True, doc="a scorer judge's score of video_a"),
        Column("score_b", "float", required=False, nullable=True, doc="a scorer judge's score of video_b"),
        Column(
            "calibration_temperature",
            "float",
            required=False,
            nullable=True,
            doc="the temperature the judge's probabilities were scaled by (eval-labels --fit-calibration)",
        ),
        Column("reasoning_ab", "str", required=False, nullable=True, doc="a reasoning judge's thought, a shown first"),
        Column("reasoning_ba", "str", required=False, nullable=True, doc="its thought with video_b shown first"),
    ),
    key=("pair_id", "segment_idx"),
    optional_key=("judge", "annotator"),
)


def _row_label(df: pd.DataFrame, i: int) -> str:
    return f"row {i}" + (f" (pair_id={df['pair_id'].iloc[i]!r})" if "pair_id" in df.columns else "")


def validate(df: pd.DataFrame, schema: Schema, where: str | None = None) -> pd.DataFrame:
    """Check `df` against `schema`; return it with columns coerced to their kinds.

    Raises TableError naming the table, the column and the first bad row.
    """
    where = where or f"{schema.name} table"
    if len(df) == 0:
        raise TableError(f"{where} is empty: it needs at least one row with columns {', '.join(schema.key)}.")
    missing = [c.name for c in schema.columns if c.required and c.name not in df.columns]
    if missing:
        raise TableError(
            f"{where} lacks required column(s) {', '.join(missing)}; it has: {', '.join(map(str, df.columns))}."
        )
    df = df.copy()
    for col in schema.columns:
        if col.name not in df.columns:
            continue
        series = df[col.name]
        nulls = series.isna()
        if not col.nullable and nulls.any():
            i = int(nulls.to_numpy().nonzero()[0][0])
            raise TableError(f"{where}: column {col.name!r} is empty at {_row_label(df, i)}; every row needs a value.")
        df[col.name] = _coerce(df, col, where)
    key_columns = schema.key_columns(df)
    dup = df.duplicated(key_columns, keep="first")
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        key = ", ".join(f"{k}={_plain(df[k].iloc[i])!r}" for k in key_columns)
        raise TableError(f"{where}: duplicate key ({key}) at row {i}; each {'/'.join(key_columns)} must be unique.")
    if schema is LABELS:
        _check_allowed(df, "status", LABEL_STATUSES, where)
        _check_allowed(df, "preference", PREFERENCES, where)
        for column in ("answer_ab", "answer_ba"):
            if column in df.columns:
                _check_allowed(df, column, POSITIONS, where)
        bad = df["frame_end"] <= df["frame_start"]
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise TableError(f"{where}: frame_end must be greater than frame_start at {_row_label(df, i)}.")
    return df


def _check_allowed(df: pd.DataFrame, column: str, allowed: tuple[str, ...], where: str) -> None:
    values = df[column]
    bad = values.notna() & ~values.isin(allowed)
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise TableError(
            f"{where}: column {column!r} has {_plain(values.iloc[i])!r} at {_row_label(df, i)}; "
            f"allowed: {', '.join(allowed)}."
        )


def _coerce(df: pd.DataFrame, col: Column, where: str) -> pd.Series:
    s = df[col.name]
    try:
        if col.kind == "str":
            return s.astype("string").astype(object).where(s.notna(), None)
        if col.kind == "int":
            out = pd.to_numeric(s, errors="raise")
            if (out.dropna() % 1 != 0).any():
                raise ValueError("not an integer")
            return out.astype("Int64")
        if col.kind == "float":
            return pd.to_numeric(s, errors="raise").astype("float64")
        if col.kind == "bool":
            return s.astype("boolean")
    except (ValueError, TypeError) as e:
        bad = next(i for i, v in enumerate(s) if not _ok(v, col.kind))
        raise TableError(
            f"{where}: column {col.name!r} must hold {col.kind} values but has {_plain(s.iloc[bad])!r} at "
            f"{_row_label(df, bad)}."
        ) from e
    raise AssertionError(col.kind)


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _ok(v, kind: str) -> bool:
    if v is None or (isinstance(v, float) and v != v):
        return True
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return kind != "int" or f.is_integer()


def resolve_path(table_path: str | Path, value: str) -> Path:
    """Resolve a path stored in a table: relative paths are relative to the table's folder."""
    p = Path(value)
    return p if p.is_absolute() else Path(table_path).resolve().parent / p


def read_table(path: str | Path, schema: Schema) -> pd.DataFrame:
    """Read and validate a table; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"{schema.name} table not found: {path}. Check the path you passed.")
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a non-parquet file
        raise TableError(f"cannot read {path} as parquet ({type(e).__name__}: {e}).") from e
    meta = table.schema.metadata or {}
    version = meta.get(_META_VERSION)
    if version is not None and int(version) > SCHEMA_VERSION:
        raise TableError(
            f"{path} was written with {schema.name} schema v{int(version)}, newer than this densedpo "
            f"(v{SCHEMA_VERSION}); upgrade densedpo."
        )
    return validate(table.to_pandas(), schema, where=str(path))


def write_table(df: pd.DataFrame, path: str | Path, schema: Schema, extra_metadata: dict | None = None) -> Path:
    """Validate and write atomically (temp file + rename): a crash never leaves a half-written table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    df = validate(df, schema, where=f"{schema.name} table being written to {path}")
    ordered = [c for c in schema.names if c in df.columns] + [c for c in df.columns if c not in schema.names]
    table = pa.Table.from_pandas(df[ordered].reset_index(drop=True), preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_META_TABLE] = schema.name.encode()
    meta[_META_VERSION] = str(SCHEMA_VERSION).encode()
    if extra_metadata:
        meta[b"densedpo.extra"] = json.dumps(extra_metadata, default=str).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


JURY = "jury"  # the judge id of a jury's combined rows (labeler: config.JURY)


def one_judge(labels: pd.DataFrame, where: str | Path, judge: str | None, flag: str) -> pd.DataFrame:
    """The rows of one judge from a table that may hold several (a jury's): `judge` if given, else the jury's
    combined rows, else the table's only judge; several judges and no jury is a one-line error naming them and
    `flag` (how the caller picks one: `-o judge`, `--reference-judge`). Rows without a judge column are one judge's."""
    if "judge" not in labels.columns or labels["judge"].isna().all():
        if judge is not None:
            raise DenseDPOError(f"{flag}={judge} but {where} has no judge column (one judge's labels).")
        return labels
    names = sorted(labels["judge"].dropna().unique())
    if judge is None:
        if len(names) <= 1:
            return labels
        if JURY not in names:
            raise DenseDPOError(
                f"{where} holds the labels of several judges ({', '.join(names)}); pick one with {flag}=NAME."
            )
        judge = JURY
    if judge not in names:
        raise DenseDPOError(f"{flag}={judge}: {where} has no rows of that judge; it has {', '.join(names)}.")
    return labels[labels["judge"] == judge].reset_index(drop=True)


MAJORITY = "majority"  # -o annotator=majority: one label per segment, the annotators' majority vote


def majority_vote(labels: pd.Series) -> str:
    """The most frequent of a segment's a/b/tie labels; equal top counts are a tie (no position or name bias)."""
    counts = labels.value_counts()
    top = counts[counts == counts.max()]
    return str(top.index[0]) if len(top) == 1 else "tie"


def annotator_majority(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per segment (the first row's other columns): preference = the majority of the annotators' a/b/tie,
    where every non-ok row counts as a tie; status ok; annotator = "majority"."""
    three = labels["preference"].where(labels["status"].eq("ok") & labels["preference"].isin(["a", "b"]), "tie")
    key = ["pair_id", "segment_idx"]
    vote = three.groupby([labels[k] for k in key], sort=False).agg(majority_vote)
    first = labels.drop_duplicates(key).set_index(key)
    first["preference"] = vote.reindex(first.index).to_numpy()
    return first.assign(status="ok", annotator=MAJORITY, confidence=float("nan")).reset_index()


def one_annotator(labels: pd.DataFrame, where: str | Path, annotator: str | None) -> pd.DataFrame:
    """The rows of one annotator (`annotator`), or their majority vote (`annotator="majority"`, train's
    `-o annotators=majority`), from a human table that may hold several; several annotators and no choice is a
    one-line error naming them and both options."""
    if "annotator" not in labels.columns or labels["annotator"].isna().all():
        if annotator is not None:
            raise DenseDPOError(f"-o annotator={annotator} but {where} has no annotator column (not human labels).")
        return labels
    names = sorted(labels["annotator"].dropna().unique())
    if annotator is None:
        if len(names) <= 1 or not labels.duplicated(["pair_id", "segment_idx"]).any():
            return labels
        raise DenseDPOError(
            f"{where} holds the labels of {len(names)} annotators ({', '.join(names[:5])}"
            f"{', …' if len(names) > 5 else ''}); train on one with -o annotator=NAME, or on their majority vote "
            f"per segment with -o annotators={MAJORITY}."
        )
    if annotator == MAJORITY:
        return annotator_majority(labels)
    if annotator not in names:
        raise DenseDPOError(
            f"-o annotator={annotator}: {where} has no rows of that annotator; it has {', '.join(names)}."
        )
    return labels[labels["annotator"] == annotator].reset_index(drop=True)


MIN_NON_TIE_FRACTION = 0.2  # train's default: a pair trains when more than this share of its segments is decided


def non_tie_share(labels: pd.DataFrame) -> pd.Series:
    """Per pair_id, the share of its segments that carry a preference (status ok, a or b): train's filter reads it."""
    decided = labels["status"].eq("ok") & labels["preference"].isin(["a", "b"])
    return decided.groupby(labels["pair_id"].to_numpy()).mean()


def trainable_pairs(labels: pd.DataFrame, min_non_tie_fraction: float = MIN_NON_TIE_FRACTION) -> int:
    """How many pairs pass train's non-tie filter (share of decided segments > min_non_tie_fraction)."""
    return int((non_tie_share(labels) > min_non_tie_fraction).sum())
