import pandas as pd
import pytest

from densedpo.errors import TableError
from densedpo.tables import LABELS, PAIRS, read_table, resolve_path, validate, write_table


def pairs_df(**over):
    df = pd.DataFrame(
        {
            "pair_id": ["p0", "p1"],
            "prompt": ["x", "y"],
            "video_a": ["a0.mp4", "a1.mp4"],
            "video_b": ["b0.mp4", "b1.mp4"],
        }
    )
    for k, v in over.items():
        df[k] = v
    return df


def test_minimal_pairs_table_roundtrip_with_metadata(tmp_path):
    path = write_table(pairs_df(fps=[16, 16.0]), tmp_path / "pairs.parquet", PAIRS)
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata
    assert meta[b"densedpo.table"] == b"pairs" and meta[b"densedpo.schema_version"] == b"2"
    back = read_table(path, PAIRS)
    assert list(back["pair_id"]) == ["p0", "p1"] and back["fps"].dtype == "float64"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temp file


@pytest.mark.parametrize(
    "df, fragment",
    [
        (pairs_df().drop(columns=["video_b"]), "lacks required column(s) video_b"),
        (pairs_df(pair_id=["p0", "p0"]), "duplicate key (pair_id='p0') at row 1"),
        (pairs_df(prompt=["x", None]), "column 'prompt' is empty at row 1 (pair_id='p1')"),
        (pairs_df(num_frames=[49, "many"]), "column 'num_frames' must hold int values but has 'many' at row 1"),
        (pairs_df(num_frames=[49, 4.5]), "must hold int values but has 4.5 at row 1"),
        (pairs_df().iloc[:0], "is empty"),
    ],
)
def test_pairs_errors_name_column_and_row(df, fragment):
    with pytest.raises(TableError) as e:
        validate(df, PAIRS)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def label_row(**over):
    row = {
        "pair_id": "p0",
        "segment_idx": 0,
        "frame_start": 0,
        "frame_end": 16,
        "t_start_s": 0.0,
        "t_end_s": 1.0,
        "preference": "a",
        "p_a": 0.8,
        "p_b": 0.1,
        "p_tie": 0.1,
        "confidence": 0.8,
        "order_agreement": True,
        "status": "ok",
        "error": None,
        "raw_response": None,
        "judge_model": "human",
        "prompt_name": None,
        "prompt_sha256": None,
    }
    row.update(over)
    return row


@pytest.mark.parametrize(
    "rows, fragment",
    [
        ([label_row(status="great")], "column 'status' has 'great' at row 0"),
        ([label_row(preference="left")], "column 'preference' has 'left'"),
        ([label_row(), label_row()], "duplicate key (pair_id='p0', segment_idx=0)"),
        ([label_row(frame_end=0)], "frame_end must be greater than frame_start"),
    ],
)
def test_labels_errors(rows, fragment):
    with pytest.raises(TableError) as e:
        validate(pd.DataFrame(rows), LABELS)
    assert fragment in str(e.value)


def test_human_labels_with_null_error_fields_are_valid():
    df = validate(
        pd.DataFrame(
            [label_row(), label_row(segment_idx=1, frame_start=16, frame_end=32, preference=None, status="parse_error")]
        ),
        LABELS,
    )
    assert df["segment_idx"].tolist() == [0, 1]


def test_read_errors(tmp_path):
    with pytest.raises(TableError, match="not found"):
        read_table(tmp_path / "nope.parquet", PAIRS)
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(TableError, match="cannot read"):
        read_table(bad, PAIRS)


def test_resolve_path(tmp_path):
    assert resolve_path(tmp_path / "t.parquet", "v/a.mp4") == tmp_path.resolve() / "v/a.mp4"
    assert resolve_path(tmp_path / "t.parquet", "/abs/a.mp4").as_posix() == "/abs/a.mp4"


def test_trainable_pairs_follow_train_filter_and_the_label_summary_warns_when_few():
    """A pair trains when more than 20% of its segments are decided (ok and a/b); label's summary warns below 1/4."""
    from app.summaries import few_trainable_warning
    from densedpo.tables import non_tie_share, trainable_pairs

    rows = []
    for pid, decided in (("p0", 0), ("p1", 1), ("p2", 2), ("p3", 5)):
        for k in range(5):  # 5 segments each: p1 has 20% decided (not > 20%), p2 40%
            rows.append((pid, k, "a" if k < decided else "tie", "ok"))
    rows.append(("p4", 0, "b", "low_confidence"))  # not ok: a tie whatever its preference
    df = pd.DataFrame(rows, columns=["pair_id", "segment_idx", "preference", "status"])
    assert non_tie_share(df).to_dict() == {"p0": 0.0, "p1": 0.2, "p2": 0.4, "p3": 1.0, "p4": 0.0}
    assert trainable_pairs(df) == 2 and trainable_pairs(df, 0.0) == 3
    assert few_trainable_warning(2, 5, 0.5) is None
    w = few_trainable_warning(1, 5, 0.5)
    assert w.startswith("warning: only 1 of 5 pairs") and "--min-confidence (now 0.5)" in w and "\n" not in w
    assert few_trainable_warning(0, 1, None).startswith("warning: only 0 of 1")
