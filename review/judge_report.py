"""A judge against people (or synthetic truth): the figures of `densedpo eval-labels`.

Every figure is a ratio (or a function) of counts that add up over pairs, so each is computed once from
per-pair count vectors and its bootstrap 95% interval comes from resampling pairs (multinomial weights on the
same vectors). Definitions (README "Measure a judge"):

- decided: status ok and preference a or b; every other row counts as tie (as training does).
- segment_accuracy: over segments decided in both tables, the share that agree (the paper's, ties skipped).
- segment_accuracy_ties_wrong: over segments decided in the reference, the share the judge decided the same way.
- coverage: over segments decided in the reference, the share the judge decided.
- cohen_kappa: a / b / tie over all shared segments, non-decided as tie on both sides.
- clip_accuracy: majority vote per pair on both sides, pairs decided on both sides.
- ece: over segments decided in both, 10 equal-width confidence bins; Σ n_bin/n · |accuracy_bin − confidence_bin|.
- coverage_curve: the judge's filter re-applied at each --min-confidence (both orders agreed on a or b and
  confidence ≥ threshold): coverage and segment_accuracy at each threshold.
- position_consistency: share of segments with both orders answered whose answers agree;
  first_position_rate: share of non-tie per-order answers that chose the first position (0.5 is unbiased).
- motion bias: share of decided segments where the preferred video moves less (mean Farnebäck flow).
- human ceiling: with several annotators, their pairwise agreement, Cohen's kappa (two) and Krippendorff's alpha.

A reference with several annotators is reduced to one label per segment by majority (no majority: tie).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from densedpo.motion import FLOW_MAX_SIDE, gray_frames, mean_flow_magnitude
from densedpo.plots import fitted_title
from densedpo.stats import Counts, bootstrap, ratio, rounded
from densedpo.tables import JURY, POSITIONS, majority_vote
from labeler.aggregate import CLASSES, clip_preference, decided

THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50, 0.55, ..., 0.95
ECE_BINS = 10
KEY = ["pair_id", "segment_idx"]


# ---------------------------------------------------------------------------------------------- per-row facts


def three_class(df: pd.DataFrame) -> pd.Series:
    """a, b or tie per row: every non-decided row is a tie."""
    return df["preference"].where(decided(df), "tie")


def _position_to_pref(positions: pd.Series, first: str) -> pd.Series:
    second = "b" if first == "a" else "a"
    return positions.map({"first": first, "second": second, "tie": "tie"})


def order_answers(df: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per-order positions (first/second/tie or None): the v2 columns, else parsed from v1's raw_response."""
    if "answer_ab" in df.columns and "answer_ba" in df.columns:
        return df["answer_ab"], df["answer_ba"]
    parsed = df["raw_response"].astype("string").str.extract(r"^ab: (\w+) \| ba: (\w+)$").astype(object)
    answered = df["status"].isin(["ok", "low_confidence", "order_inconsistent"])
    # v1 raw answers are the prompt's words: the default ones (first, second, tie) map, others stay unknown
    return tuple(parsed[k].where(answered & parsed[k].isin(POSITIONS), None) for k in (0, 1))


def agreed_answer(df: pd.DataFrame) -> pd.Series:
    """The answer a row's judge gave before the --min-confidence filter (a, b or tie); None where its orders
    differ or it failed. Chat rows: the preference both orders gave. Rows without per-order answers (scorers,
    juries, v1 tables without raw answers): an ok row's preference, a low_confidence row's answer is the class
    whose probability is its confidence (every judge kind stores that probability as the confidence)."""
    ab, ba = order_answers(df)
    pref_ab, pref_ba = _position_to_pref(ab, "a"), _position_to_pref(ba, "b")
    agreed = pref_ab.where(pref_ab.eq(pref_ba) & pref_ab.notna(), None).astype(object)
    # order_agreement is a nullable bool: read from disk it is pandas' `boolean`, where `NA != False` is NA, not
    # True. Ask "is it False?" and call NA "no": a scorer's or a jury's null agreement keeps its row.
    disagreed = df["order_agreement"].eq(False).fillna(False).astype(bool)
    without_orders = ab.isna() & ba.isna() & ~disagreed & df["confidence"].notna()
    ok = without_orders & df["status"].eq("ok") & df["preference"].isin(CLASSES)
    agreed.loc[ok] = df.loc[ok, "preference"]
    low = without_orders & df["status"].eq("low_confidence")
    if low.any():
        probs = df.loc[low, ["p_a", "p_b", "p_tie"]].to_numpy(float)
        conf = df.loc[low, "confidence"].to_numpy(float)[:, None]
        agreed.loc[low] = np.array(CLASSES)[np.abs(probs - conf).argmin(axis=1)]
    return agreed


def decided_at(agreed: pd.Series, confidence: pd.Series, threshold: float) -> pd.Series:
    """Decided as `label --min-confidence threshold` would decide: both orders agreed on a or b, confident enough."""
    return agreed.isin(["a", "b"]) & (confidence.fillna(-1) >= threshold - 1e-12)


def reference_consensus(ref: pd.DataFrame) -> pd.DataFrame:
    """One reference label per segment: the annotators' majority (a/b/tie), no majority -> tie.

    A reference of several judges (a jury table) must be narrowed to one judge first (`one_judge`): its rows
    are not annotators. Returns pair_id, segment_idx, preference, status (ok) — a labels-like frame where decided
    means a or b.
    """
    ref = ref.assign(_label=three_class(ref))
    if "annotator" not in ref.columns or ref.groupby(KEY).size().max() == 1:
        return ref[KEY].assign(preference=ref["_label"].to_numpy(), status="ok")
    out = ref.groupby(KEY, sort=False)["_label"].agg(majority_vote).reset_index()
    return out.rename(columns={"_label": "preference"}).assign(status="ok")


# ---------------------------------------------------------------------------------------------- per-pair counts


def _per_pair(mask: pd.Series, pair_ids: pd.Series) -> pd.Series:
    return mask.astype(float).groupby(pair_ids.to_numpy()).sum()


def judge_counts(labels: pd.DataFrame, reference: pd.DataFrame, motion: pd.DataFrame | None = None) -> Counts:
    """Everything eval-labels needs about one judge against one (consensus) reference, as per-pair counts."""
    m = labels.merge(reference[KEY + ["preference", "status"]], on=KEY, suffixes=("", "_ref"))
    ref = m[["preference_ref", "status_ref"]].set_axis(["preference", "status"], axis=1)
    pid = m["pair_id"]
    counts = Counts(sorted(set(labels["pair_id"]) | set(reference["pair_id"])))
    judge_dec, ref_dec = decided(m), decided(ref)
    same = m["preference"].eq(ref["preference"])
    both = judge_dec & ref_dec
    counts.add("both_decided", _per_pair(both, pid))
    counts.add("both_agree", _per_pair(both & same, pid))
    counts.add("ref_decided", _per_pair(ref_dec, pid))
    counts.add("ref_decided_judge_decided", _per_pair(ref_dec & judge_dec, pid))
    counts.add("ref_decided_judge_same", _per_pair(ref_dec & judge_dec & same, pid))
    j3, r3 = three_class(m), three_class(ref)
    for i in CLASSES:
        for k in CLASSES:
            counts.add(f"confusion_{i}_{k}", _per_pair(j3.eq(i) & r3.eq(k), pid))
    # clips: majority vote per pair on both sides
    clip_both, clip_agree = {}, {}
    for p, g in m.groupby("pair_id"):
        ours = clip_preference(list(g["preference"]), list(g["status"]))
        theirs = clip_preference(list(g["preference_ref"]), list(g["status_ref"]))
        clip_both[p] = float(ours in ("a", "b") and theirs in ("a", "b"))
        clip_agree[p] = float(clip_both[p] and ours == theirs)
    counts.add("clip_both_decided", pd.Series(clip_both, dtype=float))
    counts.add("clip_agree", pd.Series(clip_agree, dtype=float))
    # calibration over segments decided in both
    conf = m["confidence"].fillna(0.0).clip(0, 1)
    bins = np.minimum((conf * ECE_BINS).astype(int), ECE_BINS - 1)
    for b in range(ECE_BINS):
        inside = both & bins.eq(b)
        counts.add(f"ece_n_{b}", _per_pair(inside, pid))
        counts.add(f"ece_correct_{b}", _per_pair(inside & same, pid))
        counts.add(f"ece_conf_{b}", (conf.where(inside, 0.0)).groupby(pid.to_numpy()).sum())
    # accuracy-coverage curve: the judge's filter re-applied at each threshold
    agreed = agreed_answer(m)
    for t in THRESHOLDS:
        dec_t = decided_at(agreed, m["confidence"], t)
        counts.add(f"curve_decided_{t:.2f}", _per_pair(ref_dec & dec_t, pid))
        counts.add(f"curve_agree_{t:.2f}", _per_pair(ref_dec & dec_t & agreed.eq(ref["preference"]), pid))
    # position bias (the judge table alone)
    ab, ba = order_answers(labels)
    lp = labels["pair_id"]
    both_answered = ab.notna() & ba.notna()
    agree = _position_to_pref(ab, "a").eq(_position_to_pref(ba, "b"))
    counts.add("orders_answered", _per_pair(both_answered, lp))
    counts.add("orders_agree", _per_pair(both_answered & agree, lp))
    answers = pd.concat([ab, ba], ignore_index=True)
    answer_pairs = pd.concat([lp, lp], ignore_index=True)
    counts.add("nontie_answers", _per_pair(answers.isin(["first", "second"]), answer_pairs))
    counts.add("first_answers", _per_pair(answers.eq("first"), answer_pairs))
    if motion is not None:
        _motion_counts(counts, labels, reference, motion)
    return counts


def _motion_counts(counts: Counts, labels: pd.DataFrame, reference: pd.DataFrame, motion: pd.DataFrame) -> None:
    for name, table in (("judge", labels), ("reference", reference)):
        t = table.merge(motion, on=KEY)
        dec = decided(t) & (t["motion_a"] - t["motion_b"]).abs().gt(1e-9)
        slower = np.where(t["motion_a"] < t["motion_b"], "a", "b")
        counts.add(f"motion_{name}_decided", _per_pair(dec, t["pair_id"]))
        counts.add(
            f"motion_{name}_slower", _per_pair(dec & t["preference"].eq(pd.Series(slower, index=t.index)), t["pair_id"])
        )


# ---------------------------------------------------------------------------------------------- figures


def kappa(confusion: np.ndarray) -> np.ndarray:
    """Cohen's kappa from confusion matrices (..., K, K)."""
    n = confusion.sum(axis=(-1, -2))
    p_o = ratio(np.trace(confusion, axis1=-2, axis2=-1), n)
    p_e = ratio((confusion.sum(-1) * confusion.sum(-2)).sum(-1), n**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p_e < 1, (p_o - p_e) / (1 - p_e), np.nan)


def judge_figures(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The named figures from summed counts (each array has one entry per bootstrap draw, or one)."""
    confusion = np.stack([np.stack([s[f"confusion_{i}_{k}"] for k in CLASSES], -1) for i in CLASSES], -2)
    n_both = s["both_decided"]
    ece = sum(np.abs(s[f"ece_correct_{b}"] - s[f"ece_conf_{b}"]) for b in range(ECE_BINS))
    out = {
        "segment_accuracy": ratio(s["both_agree"], n_both),
        "segment_accuracy_ties_wrong": ratio(s["ref_decided_judge_same"], s["ref_decided"]),
        "coverage": ratio(s["ref_decided_judge_decided"], s["ref_decided"]),
        "cohen_kappa": kappa(confusion),
        "clip_accuracy": ratio(s["clip_agree"], s["clip_both_decided"]),
        "ece": ratio(ece, n_both),
        "position_consistency": ratio(s["orders_agree"], s["orders_answered"]),
        "first_position_rate": ratio(s["first_answers"], s["nontie_answers"]),
    }
    for t in THRESHOLDS:
        out[f"curve_coverage_{t:.2f}"] = ratio(s[f"curve_decided_{t:.2f}"], s["ref_decided"])
        out[f"curve_accuracy_{t:.2f}"] = ratio(s[f"curve_agree_{t:.2f}"], s[f"curve_decided_{t:.2f}"])
    if "motion_judge_decided" in s:
        out["judge_prefers_less_motion"] = ratio(s["motion_judge_slower"], s["motion_judge_decided"])
        out["reference_prefers_less_motion"] = ratio(s["motion_reference_slower"], s["motion_reference_decided"])
    return out


def judge_report(
    labels: pd.DataFrame,
    reference: pd.DataFrame,
    motion: pd.DataFrame | None = None,
    target_accuracy: float = 0.8,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Every figure of one judge against one reference (already reduced to one label per segment)."""
    counts = judge_counts(labels, reference, motion)
    figs = bootstrap(counts, judge_figures, n_boot, seed)
    curve = [
        {
            "threshold": t,
            "coverage": figs.pop(f"curve_coverage_{t:.2f}"),
            "segment_accuracy": figs.pop(f"curve_accuracy_{t:.2f}"),
        }
        for t in THRESHOLDS
    ]
    reaching = [c["threshold"] for c in curve if (c["segment_accuracy"]["value"] or 0) >= target_accuracy]
    # The same with the interval's lower bound: a threshold you can trust to reach the target, and what it costs.
    sure = [c for c in curve if (c["segment_accuracy"]["ci95"][0] or 0) >= target_accuracy]
    report = {
        "segments_shared": int(len(labels.merge(reference[KEY], on=KEY))),
        "segments_both_decided": int(counts.columns["both_decided"].sum()),
        "pairs": len(counts.clusters),
        **{k: v for k, v in figs.items() if not k.endswith("less_motion")},
        "coverage_curve": curve,
        "min_confidence_for_target": min(reaching) if reaching else None,
        "min_confidence_for_target_lower_bound": (
            {"threshold": sure[0]["threshold"], "coverage": sure[0]["coverage"]["value"]} if sure else None
        ),
        "reliability": reliability_bins(counts),
    }
    if motion is not None:
        report["motion_bias"] = {k: figs[k] for k in ("judge_prefers_less_motion", "reference_prefers_less_motion")}
    return report


def recalibrated(labels: pd.DataFrame, temperature: float) -> pd.DataFrame:
    """A judge's table as `label` would write it with this calibration temperature (the filter at 0: eval-labels'
    accuracy-coverage curve applies each threshold itself)."""
    from labeler.aggregate import calibrate_row

    rows = [calibrate_row(r, temperature, 0.0) for r in labels.to_dict("records")]
    return pd.DataFrame(rows, columns=labels.columns)


def reliability_bins(counts: Counts) -> list[dict]:
    """Per confidence bin: segments, accuracy and mean confidence (for the reliability diagram)."""
    out = []
    for b in range(ECE_BINS):
        n = counts.columns[f"ece_n_{b}"].sum()
        out.append(
            {
                "bin": [b / ECE_BINS, (b + 1) / ECE_BINS],
                "segments": int(n),
                "accuracy": rounded(ratio(counts.columns[f"ece_correct_{b}"].sum(), n)),
                "mean_confidence": rounded(ratio(counts.columns[f"ece_conf_{b}"].sum(), n)),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------- human ceiling


def annotator_counts(ref: pd.DataFrame) -> Counts | None:
    """Agreement among the reference's annotators (None with fewer than two), as per-pair counts."""
    if "annotator" not in ref.columns:
        return None
    names = sorted(ref["annotator"].dropna().unique())
    if len(names) < 2:
        return None
    ref = ref.assign(_label=three_class(ref))
    counts = Counts(sorted(ref["pair_id"].unique()))
    agree, total = {}, {}
    coincidence = {(c, k): {} for c in CLASSES for k in CLASSES}
    for (pair, _), g in ref.groupby(KEY):
        values = list(g["_label"])
        m = len(values)
        if m < 2:
            continue
        same = sum(values[i] == values[j] for i in range(m) for j in range(i + 1, m))
        agree[pair] = agree.get(pair, 0) + same
        total[pair] = total.get(pair, 0) + m * (m - 1) / 2
        for i in range(m):
            for j in range(m):
                if i != j:
                    cell = coincidence[(values[i], values[j])]
                    cell[pair] = cell.get(pair, 0) + 1 / (m - 1)
    counts.add("annotator_pairs_agree", pd.Series(agree, dtype=float))
    counts.add("annotator_pairs", pd.Series(total, dtype=float))
    for (c, k), cell in coincidence.items():
        counts.add(f"coincidence_{c}_{k}", pd.Series(cell, dtype=float))
    if len(names) == 2:
        wide = ref.pivot_table(index=KEY, columns="annotator", values="_label", aggfunc="first").dropna()
        for c in CLASSES:
            for k in CLASSES:
                hit = wide[names[0]].eq(c) & wide[names[1]].eq(k)
                counts.add(f"pair_confusion_{c}_{k}", hit.groupby(level="pair_id").sum().astype(float))
    return counts


def krippendorff_alpha(coincidence: np.ndarray) -> np.ndarray:
    """Nominal Krippendorff's alpha from coincidence matrices (..., K, K)."""
    n_c = coincidence.sum(-1)
    n = n_c.sum(-1)
    off = ~np.eye(coincidence.shape[-1], dtype=bool)
    d_o = (coincidence * off).sum((-1, -2))
    d_e = ((n_c[..., :, None] * n_c[..., None, :]) * off).sum((-1, -2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d_e > 0, 1 - (n - 1) * d_o / np.where(d_e > 0, d_e, 1), np.nan)


def ceiling_figures(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    co = np.stack([np.stack([s[f"coincidence_{c}_{k}"] for k in CLASSES], -1) for c in CLASSES], -2)
    out = {
        "pairwise_agreement": ratio(s["annotator_pairs_agree"], s["annotator_pairs"]),
        "krippendorff_alpha": krippendorff_alpha(co),
    }
    if "pair_confusion_a_a" in s:
        conf = np.stack([np.stack([s[f"pair_confusion_{c}_{k}"] for k in CLASSES], -1) for c in CLASSES], -2)
        out["cohen_kappa"] = kappa(conf)
    return out


def human_ceiling(ref: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict | None:
    counts = annotator_counts(ref)
    if counts is None:
        return None
    out = bootstrap(counts, ceiling_figures, n_boot, seed)
    out["annotators"] = sorted(ref["annotator"].dropna().unique().tolist())
    return out


# ---------------------------------------------------------------------------------------------- motion


def segment_motion(
    pairs_path: Path, segments: pd.DataFrame, sample_fps: float = 8.0, max_side: int = FLOW_MAX_SIDE
) -> pd.DataFrame:
    """Mean optical-flow magnitude (densedpo.motion, pixels at `max_side`) of each video per labeled segment."""
    from densedpo.tables import PAIRS, read_table, resolve_path
    from densedpo.video import probe, read_frames
    from labeler.segments import Segment, sample_frame_indices

    pairs = read_table(pairs_path, PAIRS).set_index("pair_id")
    rows = []
    for pair_id, g in segments.drop_duplicates(KEY).groupby("pair_id"):
        if pair_id not in pairs.index:
            continue
        row = pairs.loc[pair_id]
        fps = row.get("fps")
        fps = float(fps) if pd.notna(fps) else probe(resolve_path(pairs_path, row["video_a"])).fps
        segs = [
            Segment(int(r.segment_idx), int(r.frame_start), int(r.frame_end), float(r.t_start_s), float(r.t_end_s))
            for r in g.itertuples()
        ]
        idx = {s.segment_idx: sample_frame_indices(s, fps, sample_fps) for s in segs}
        needed = sorted({i for v in idx.values() for i in v})
        flows = {}
        for side in ("a", "b"):
            frames = read_frames(resolve_path(pairs_path, row[f"video_{side}"]), needed)
            gray = dict(zip(needed, gray_frames(frames, max_side)))
            for s in segs:
                flows[(side, s.segment_idx)] = mean_flow_magnitude([gray[i] for i in idx[s.segment_idx]])
        for s in segs:
            motion = {"motion_a": flows[("a", s.segment_idx)], "motion_b": flows[("b", s.segment_idx)]}
            rows.append({"pair_id": pair_id, "segment_idx": s.segment_idx, **motion})
    return pd.DataFrame(rows, columns=KEY + ["motion_a", "motion_b"])


# ---------------------------------------------------------------------------------------------- plots


def plot_report(report: dict, name: str, out_dir: Path) -> list[Path]:
    """Reliability diagram and accuracy–coverage curve of one judge (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    paths = []
    for fig, kind in ((reliability_figure(report, name), "reliability"), (coverage_figure(report, name), "coverage")):
        paths.append(out_dir / f"{slug}_{kind}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def reliability_figure(report: dict, name: str):
    """Accuracy per confidence bin against the diagonal; "no decided segments" when there is nothing to bin."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), constrained_layout=True)
    bins = [b for b in report["reliability"] if b["segments"]]
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="judge confidence", ylabel="agreement with reference")
    ece = report["ece"]["value"]
    if not bins or ece is None:
        ax.text(0.5, 0.5, "no decided segments", ha="center", va="center", fontsize=12, color="0.3")
        fitted_title(ax, f"{name}\nECE –")
        return fig
    ax.bar(
        [b["bin"][0] for b in report["reliability"]],
        [b["accuracy"] or 0 for b in report["reliability"]],
        width=1 / ECE_BINS,
        align="edge",
        alpha=0.6,
        edgecolor="k",
        label="accuracy per bin",
    )
    ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="C3", label="bin means")
    fitted_title(ax, f"{name}\nECE {ece:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def coverage_figure(report: dict, name: str):
    """Accuracy and coverage (with 95% bands) at each --min-confidence threshold."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), constrained_layout=True)
    t = [c["threshold"] for c in report["coverage_curve"]]
    for key, color in (("segment_accuracy", "C0"), ("coverage", "C1")):
        v = [c[key]["value"] if c[key]["value"] is not None else np.nan for c in report["coverage_curve"]]
        lo = [c[key]["ci95"][0] if c[key]["ci95"][0] is not None else np.nan for c in report["coverage_curve"]]
        hi = [c[key]["ci95"][1] if c[key]["ci95"][1] is not None else np.nan for c in report["coverage_curve"]]
        ax.plot(t, v, "o-", color=color, label=key.replace("_", " "))
        ax.fill_between(t, lo, hi, color=color, alpha=0.15)
    if report["min_confidence_for_target"] is not None:
        ax.axvline(report["min_confidence_for_target"], color="k", lw=1, ls=":", label="lowest threshold on target")
    ax.set(xlabel="--min-confidence", ylim=(0, 1.02))
    fitted_title(ax, f"{name}: accuracy vs coverage")
    ax.legend(loc="lower left", fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------- the command


def fit_tie_margin(labels: pd.DataFrame, reference: pd.DataFrame, folds: int = 5, seed: int = 0) -> dict | None:
    """For a scorer's table (score_a, score_b): the --tie-margin that best reproduces the reference's a/b/tie.

    Tries 0 and every midpoint between consecutive |score_a - score_b| of the shared segments; returns the one with
    the highest 3-way agreement (the smallest margin among equals), its agreement on the data it was fitted on, the
    agreement at 0, and `heldout_agreement`: k-fold cross-validation over pairs (fit on k-1 folds, score the
    held-out fold), the figure to expect on new pairs. None when the table holds no scores.
    """
    if not {"score_a", "score_b"} <= set(labels.columns):
        return None
    shared = labels.merge(reference[KEY + ["preference"]].rename(columns={"preference": "_ref"}), on=KEY)
    shared = shared[shared["score_a"].notna() & shared["score_b"].notna()]
    if shared.empty:
        return None
    d = (shared["score_a"] - shared["score_b"]).to_numpy(float)
    ref = shared["_ref"].to_numpy()
    best, scores = _best_margin(d, ref)
    heldout = _cross_validated_agreement(d, ref, shared["pair_id"].to_numpy(), folds, seed)
    return {
        "value": best,
        "agreement": max(scores),
        "heldout_agreement": heldout,
        "agreement_at_zero": scores[0],
        "segments": len(d),
    }


def margin_agreement(d: np.ndarray, ref: np.ndarray, margin: float) -> float:
    """Share of segments where the margin's a/b/tie (a when d > margin) equals the reference."""
    pred = np.where(d > margin, "a", np.where(d < -margin, "b", "tie"))
    return float((pred == ref).mean())


def _best_margin(d: np.ndarray, ref: np.ndarray) -> tuple[float, list[float]]:
    """(the best margin, the agreement of every candidate; candidate 0 is margin 0)."""
    gaps = np.unique(np.abs(d))
    candidates = np.concatenate([[0.0], (gaps[:-1] + gaps[1:]) / 2, [gaps[-1] + 1e-9]])
    scores = [margin_agreement(d, ref, m) for m in candidates]
    return float(candidates[int(np.argmax(scores))]), scores


def _cross_validated_agreement(d, ref, pair_ids, folds: int, seed: int) -> float | None:
    """Agreement on held-out pairs: pairs split into `folds` groups, each scored with the margin fitted on the rest."""
    pairs = np.unique(pair_ids)
    if len(pairs) < 2:
        return None
    fold_of = dict(zip(np.random.default_rng(seed).permutation(pairs), np.arange(len(pairs)) % min(folds, len(pairs))))
    fold = np.array([fold_of[p] for p in pair_ids])
    hits = 0.0
    for k in np.unique(fold):
        margin, _ = _best_margin(d[fold != k], ref[fold != k])
        hits += margin_agreement(d[fold == k], ref[fold == k], margin) * (fold == k).sum()
    return hits / len(d)


def judges_in(path: Path, labels: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The judges of one labels table: one per `judge` value (schema v2 juries), else one per judge_model."""
    column = "judge" if "judge" in labels.columns and labels["judge"].notna().any() else "judge_model"
    # a judge served from a local folder is named by the folder, not by this machine's path
    return {
        (Path(n).name if str(n).startswith("/") else str(n)): g
        for n, g in labels.groupby(labels[column].fillna("?"), sort=True)
    }


def evaluate_judges(
    label_paths: list[Path],
    reference_paths: list[Path],
    pairs: Path | None = None,
    target_accuracy: float = 0.8,
    n_boot: int = 1000,
    seed: int = 0,
    reference_judge: str | None = None,
    calibrate: bool = False,
    label_budget: int | None = None,
    budget_width: float = 0.1,
) -> dict:
    """The report of eval-labels: every judge of every labels table against every reference table (a reference
    of several judges counts one of them: `reference_judge`, by default its jury). With `calibrate`, each judge
    (not a jury's combined rows) also gets a fitted temperature and its held-out effect (review/calibration.py);
    with `label_budget`, against the first reference, how its accuracy estimate tightens per label (review/budget.py).
    """
    from densedpo.errors import DenseDPOError
    from densedpo.tables import LABELS, one_judge, read_table

    judges: dict[str, pd.DataFrame] = {}
    for path in label_paths:
        for name, table in judges_in(path, read_table(path, LABELS)).items():
            judges[name if name not in judges else f"{name} ({path})"] = table
    motion = None
    if pairs is not None:
        every = pd.concat([t[KEY + ["frame_start", "frame_end", "t_start_s", "t_end_s"]] for t in judges.values()])
        motion = segment_motion(pairs, every)
    reports = []
    for ref_path in reference_paths:
        raw = one_judge(read_table(ref_path, LABELS), ref_path, reference_judge, flag="--reference-judge")
        ref = reference_consensus(raw)
        per_judge = {}
        for name, table in judges.items():
            shared = table.merge(ref[KEY], on=KEY)
            if shared.empty:
                raise DenseDPOError(
                    f"--labels ({name}) and --reference {ref_path} share no (pair_id, segment_idx): were they made "
                    "from the same pairs table with the same --segment-seconds?"
                )
            per_judge[name] = judge_report(table, ref, motion, target_accuracy, n_boot, seed)
            margin = fit_tie_margin(table, ref)
            if margin is not None:
                per_judge[name]["fitted_tie_margin"] = margin
            if calibrate and name != JURY:
                from review.calibration import fit_calibration

                fitted = fit_calibration(table, ref, n_boot=n_boot, seed=seed)
                if fitted is not None:
                    again = judge_report(recalibrated(table, fitted["calibration_temperature"]), ref, None,
                                         target_accuracy, n_boot, seed)  # fmt: skip
                    fitted["min_confidence_for_target_lower_bound"] = again["min_confidence_for_target_lower_bound"]
                    per_judge[name]["calibration"] = fitted
            if label_budget is not None and not reports:
                from review.budget import budget_report

                curve = budget_report(table, ref, label_budget, budget_width, target_accuracy, seed=seed)
                if curve is not None:
                    per_judge[name]["label_budget"] = curve
        entry = {
            "reference": str(ref_path),
            "reference_segments": len(ref),
            "human_ceiling": human_ceiling(raw, n_boot, seed),
            "judges": per_judge,
        }
        if calibrate and JURY in judges and not reports:  # the members first (above), then how to combine them
            from review.calibration import fit_jury

            members = {n: t for n, t in judges.items() if n != JURY}
            entry["jury_fit"] = fit_jury(members, ref, n_boot=n_boot, seed=seed)
        reports.append(entry)
    return {
        "target_accuracy": target_accuracy,
        "bootstrap_draws": n_boot,
        "confidence_level": 0.95,
        "references": reports,
    }
