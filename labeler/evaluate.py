"""Label accuracy against reference labels (human or synthetic truth), as the paper reports it (§4.3).

Pure functions over two labels tables: segment accuracy over segments where both sides are decided (a or b,
status ok — ties skipped, as in the paper), clip accuracy by majority vote per pair, and coverage.
"""

from __future__ import annotations

import pandas as pd

from labeler.aggregate import clip_preference


def label_accuracy(labels: pd.DataFrame, reference: pd.DataFrame) -> dict:
    """Compare `labels` to `reference` on the (pair_id, segment_idx) they share."""
    keys = ["pair_id", "segment_idx"]
    m = labels.merge(reference, on=keys, suffixes=("", "_ref"))

    def decided(pref, status):
        return pref.isin(["a", "b"]) & status.eq("ok")

    both = decided(m["preference"], m["status"]) & decided(m["preference_ref"], m["status_ref"])
    seg_hits = (m["preference"] == m["preference_ref"])[both]
    clips = []
    for _, g in m.groupby("pair_id"):
        ours = clip_preference(list(g["preference"]), list(g["status"]))
        ref = clip_preference(list(g["preference_ref"]), list(g["status_ref"]))
        if ours in ("a", "b") and ref in ("a", "b"):
            clips.append(ours == ref)
    ref_decided = decided(m["preference_ref"], m["status_ref"])
    coverage = float(both.sum() / ref_decided.sum()) if ref_decided.any() else float("nan")
    return {
        "segments_compared": int(len(m)),
        "segments_both_decided": int(both.sum()),
        "segment_accuracy": float(seg_hits.mean()) if len(seg_hits) else float("nan"),
        "clips_both_decided": len(clips),
        "clip_accuracy": sum(clips) / len(clips) if clips else float("nan"),
        "coverage_of_reference_decisions": coverage,
    }
