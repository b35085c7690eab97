"""The report's figures, as pure functions of tables: preference per segment and clip, motion, the static probe,
and the sample size a wanted precision needs. Intervals come from a bootstrap over prompts (densedpo.stats):
the segments and seeds of one prompt are correlated, prompts are the independent units."""

from __future__ import annotations

import math

import pandas as pd

from densedpo.stats import Counts, bootstrap, per_cluster, ratio
from labeler.aggregate import clip_preference, decided

FAILED_STATUSES = ("request_error", "parse_error")  # no answer came back: not a verdict of any kind


def preference_figures(labels: pd.DataFrame, pairs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """One judge's rows of one policy's pairs (video_a = policy) -> segment win/tie/loss rates, net win (win -
    loss), net win by segment index, clip net win (majority vote per sample); each {"value", "ci"}.

    Segments the judge could not answer (request or parse errors) are no verdict, not a tie: they are counted
    apart (`failed_segments`) and left out of every rate, the clip votes and the sample-size hints."""
    m = labels.merge(pairs[["pair_id", "prompt_id"]], on="pair_id")
    failed = m["status"].isin(FAILED_STATUSES)
    n_failed, n_all = int(failed.sum()), int(len(m))
    m = m[~failed]
    win = decided(m) & m["preference"].eq("a")
    loss = decided(m) & m["preference"].eq("b")
    prompt = m["prompt_id"]
    counts = Counts(sorted(pairs["prompt_id"].unique()))
    counts.add("n", per_cluster(pd.Series(1.0, index=m.index), prompt))
    counts.add("win", per_cluster(win, prompt))
    counts.add("loss", per_cluster(loss, prompt))
    n_seg = int(m["segment_idx"].max()) + 1 if len(m) else 0
    for i in range(n_seg):
        at = m["segment_idx"].eq(i)
        counts.add(f"n_{i}", per_cluster(at, prompt))
        counts.add(f"net_{i}", per_cluster((at & win).astype(float) - (at & loss).astype(float), prompt))
    clips = m.groupby("pair_id").apply(
        lambda g: clip_preference(list(g["preference"]), list(g["status"])), include_groups=False
    )
    clip_prompt = pairs.set_index("pair_id").loc[clips.index, "prompt_id"]
    counts.add("clips", per_cluster(pd.Series(1.0, index=clips.index), clip_prompt))
    counts.add("clip_net", per_cluster(clips.eq("a").astype(float) - clips.eq("b").astype(float), clip_prompt))

    def figures(s: dict) -> dict:
        out = {
            "segment_win_rate": ratio(s["win"], s["n"]),
            "segment_loss_rate": ratio(s["loss"], s["n"]),
            "segment_tie_rate": ratio(s["n"] - s["win"] - s["loss"], s["n"]),
            "segment_net_win": ratio(s["win"] - s["loss"], s["n"]),
            "clip_net_win": ratio(s["clip_net"], s["clips"]),
        }
        out.update({f"net_win_segment_{i}": ratio(s[f"net_{i}"], s[f"n_{i}"]) for i in range(n_seg)})
        return out

    figs = bootstrap(counts, figures, n_boot, seed, interval="ci")
    figs["net_win_by_segment"] = [figs.pop(f"net_win_segment_{i}") for i in range(n_seg)]
    figs["segments"] = int(len(m))
    figs["failed_segments"] = {"count": n_failed, "rate": n_failed / n_all if n_all else 0.0}
    figs["prompts"] = int(m["prompt_id"].nunique())
    return figs


def motion_figures(motion: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per sample pair (prompt_id, dynamic_policy, dynamic_base, motion_policy, motion_base, segment_motion_diff_i)
    -> dynamic-degree rate of each side and their difference, mean motion difference (overall and per 1 s segment),
    share of samples where the policy moves less."""
    prompt = motion["prompt_id"]
    counts = Counts(sorted(prompt.unique()))
    counts.add("n", per_cluster(pd.Series(1.0, index=motion.index), prompt))
    counts.add("dyn_policy", per_cluster(motion["dynamic_policy"], prompt))
    counts.add("dyn_base", per_cluster(motion["dynamic_base"], prompt))
    counts.add("motion_diff", per_cluster(motion["motion_policy"] - motion["motion_base"], prompt))
    counts.add("moves_less", per_cluster(motion["motion_policy"] < motion["motion_base"] - 1e-9, prompt))
    segments = sorted(int(c.rsplit("_", 1)[1]) for c in motion.columns if c.startswith("segment_motion_diff_"))
    for i in segments:  # samples shorter than i + 1 segments do not count there
        present = motion[f"segment_motion_diff_{i}"].notna()
        counts.add(f"seg_n_{i}", per_cluster(present, prompt))
        counts.add(f"seg_diff_{i}", per_cluster(motion[f"segment_motion_diff_{i}"].fillna(0.0), prompt))

    def figures(s: dict) -> dict:
        out = {
            "dynamic_degree_policy": ratio(s["dyn_policy"], s["n"]),
            "dynamic_degree_base": ratio(s["dyn_base"], s["n"]),
            "dynamic_degree_diff": ratio(s["dyn_policy"] - s["dyn_base"], s["n"]),
            "motion_diff": ratio(s["motion_diff"], s["n"]),
            "moves_less_share": ratio(s["moves_less"], s["n"]),
        }
        out.update({f"motion_diff_segment_{i}": ratio(s[f"seg_diff_{i}"], s[f"seg_n_{i}"]) for i in segments})
        return out

    figs = bootstrap(counts, figures, n_boot, seed, interval="ci")
    figs["motion_diff_by_segment"] = [figs.pop(f"motion_diff_segment_{i}") for i in segments]
    return figs


def static_win_figures(labels: pd.DataFrame, pairs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """The motion-bias probe (paper Table 8): video_a a frozen copy, video_b the original. static_win_rate: share
    of decided segments where the judge preferred the frozen copy (above 0.5: it prefers static video)."""
    m = labels.merge(pairs[["pair_id", "prompt_id"]], on="pair_id")
    prompt = m["prompt_id"]
    counts = Counts(sorted(pairs["prompt_id"].unique()))
    counts.add("n", per_cluster(pd.Series(1.0, index=m.index), prompt))
    counts.add("static", per_cluster(decided(m) & m["preference"].eq("a"), prompt))
    counts.add("moving", per_cluster(decided(m) & m["preference"].eq("b"), prompt))

    def figures(s: dict) -> dict:
        return {
            "static_win_rate": ratio(s["static"], s["static"] + s["moving"]),
            "probe_tie_rate": ratio(s["n"] - s["static"] - s["moving"], s["n"]),
        }

    return bootstrap(counts, figures, n_boot, seed, interval="ci")


def samples_for_precision(net_win: dict, samples: int, half_width: float = 0.05) -> int | None:
    """How many samples (prompts x seeds, in the proportions of this run) a ±half_width 95% interval on the net
    win needs: the interval narrows as 1/sqrt(n), so n = samples x (observed half width / wanted)^2. None when
    the observed interval has no width (every segment a tie, or one prompt)."""
    lo, hi = net_win["ci"]
    if lo is None or hi is None or hi - lo <= 0:
        return None
    return int(math.ceil(samples * ((hi - lo) / 2 / half_width) ** 2))


def tie_based_samples(tie_rate: float, segments_per_sample: float, net_win: float = 0.0, half_width: float = 0.05):
    """The same from the tie rate alone, as if segments were independent (a lower bound: segments of one prompt
    are correlated): var(win - loss per segment) = (1 - tie) - net^2; n_segments = (1.96 sd / half_width)^2."""
    var = max(0.0, (1 - tie_rate) - net_win**2)
    segments = (1.96 * math.sqrt(var) / half_width) ** 2
    return int(math.ceil(segments / max(segments_per_sample, 1e-9)))
