import math

import pandas as pd
import pytest

from labeler.evaluate import label_accuracy


def table(prefs, statuses=None, pairs=None):
    n = len(prefs)
    return pd.DataFrame({"pair_id": pairs or ["p"] * n, "segment_idx": list(range(n)), "preference": prefs,
                         "status": statuses or ["ok"] * n})  # fmt: skip


def test_ties_and_non_ok_are_skipped_and_majority_gives_clips():
    ref = table(["a", "b", "a", "tie", "b"], pairs=["p", "p", "p", "q", "q"])
    ours = table(["a", "a", "a", "a", "b"], ["ok", "ok", "ok", "ok", "order_inconsistent"], ["p", "p", "p", "q", "q"])
    acc = label_accuracy(ours, ref)
    # decided on both sides: segments 0, 1, 2 (3 is a reference tie, 4 is not ok here) -> 2 of 3 right
    assert acc["segments_both_decided"] == 3 and acc["segment_accuracy"] == pytest.approx(2 / 3)
    # clips: p -> ours a (3 votes) vs ref a (2 a, 1 b): right; q -> ours a vs ref b: wrong
    assert acc["clips_both_decided"] == 2 and acc["clip_accuracy"] == 0.5
    assert acc["coverage_of_reference_decisions"] == pytest.approx(3 / 4)


def test_nothing_decided():
    acc = label_accuracy(table(["tie"]), table(["a"]))
    assert acc["segments_both_decided"] == 0 and math.isnan(acc["segment_accuracy"])
