"""How fast people's labels pin down a judge: `eval-labels --label-budget N`.

On a pool the reference has labeled (people, or synthetic truth), a labeling session of n segments is simulated
many times in two designs, and after each labeled segment the judge's segment accuracy (ties skipped, as
eval-labels reports it) is estimated from the labels so far:

- random: segments drawn uniformly among those the judge decided (only they enter the accuracy);
- uncertain: drawn with probability q_i growing with the judge's predicted error e_i = 1 − confidence_i,
  q_i ∝ sqrt((1 − e_i)(1 − R0)² + e_i·R0²) (the expected squared influence of segment i on the accuracy R, at
  the judge's own prediction R0 = 1 − mean e), mixed 80/20 with uniform so that no weight explodes, and each
  label weighted back by 1/(N·q_i). The estimate stays one of the whole pool's accuracy, not of its hard stratum.

Asking people about the least sure segments first and averaging their labels unweighted would measure the hard
stratum only: the report shows that estimate too ("top n unweighted"), to show how far off it is. The figures per
n: the width of the 95% range of the estimate over the simulated sessions (what an interval at n labels spans),
its bias against the pool's accuracy, and the width of the range of the fitted threshold (the lowest
--min-confidence whose estimated accuracy reaches --target-accuracy). Sessions draw with replacement.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from labeler.aggregate import decided

KEY = ["pair_id", "segment_idx"]
UNIFORM_SHARE = 0.2
THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # as eval-labels' accuracy-coverage curve


def pool(labels: pd.DataFrame, reference: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, correct, counted) over the segments the judge decided and the reference labeled: counted = the
    reference decided too (a or b), correct = counted and the same answer. Accuracy = Σ correct / Σ counted."""
    m = labels.merge(reference[KEY + ["preference", "status"]], on=KEY, suffixes=("", "_ref"))
    m = m[decided(m)]
    ref = m[["preference_ref", "status_ref"]].set_axis(["preference", "status"], axis=1)
    counted = decided(ref).to_numpy()
    correct = counted & m["preference"].eq(ref["preference"]).to_numpy()
    conf = pd.to_numeric(m["confidence"], errors="coerce").fillna(0.5).clip(0, 1).to_numpy(float)
    return conf, correct.astype(float), counted.astype(float)


def uncertain_proposal(conf: np.ndarray) -> np.ndarray:
    """q over the pool (sums to 1): more weight where the judge predicts its own error (module docstring)."""
    e = np.clip(1.0 - conf, 0.01, 0.99)
    r0 = 1.0 - e.mean()
    s = np.sqrt((1 - e) * (1 - r0) ** 2 + e * r0**2)
    return (1 - UNIFORM_SHARE) * s / s.sum() + UNIFORM_SHARE / len(conf)


def session_estimates(
    values: np.ndarray, counted: np.ndarray, q: np.ndarray, n_max: int, reps: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Simulated sessions: draws (reps, n_max) from q and the importance-weighted running estimates Σ w·values /
    Σ w·counted after each label, (reps, n_max) (NaN while nothing counted)."""
    draws = rng.choice(len(q), size=(reps, n_max), p=q)
    w = 1.0 / (len(q) * q[draws])
    den = np.cumsum(counted[draws] * w, axis=1)
    num = np.cumsum(values[draws] * w, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return draws, np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def spread(estimates: np.ndarray) -> np.ndarray:
    """Width of the 95% range over sessions at each n (NaN where fewer than half the sessions have an estimate)."""
    with np.errstate(all="ignore"):
        lo, hi = np.nanpercentile(estimates, [2.5, 97.5], axis=0)
    return np.where(np.isfinite(estimates).mean(axis=0) >= 0.5, hi - lo, np.nan)


def fitted_thresholds(conf, correct, counted, q, draws, target: float) -> np.ndarray:
    """(reps, n_max): per session and n, the lowest threshold whose weighted accuracy reaches target (NaN: none)."""
    w = 1.0 / (len(q) * q[draws])
    out = np.full(draws.shape, np.nan)
    for t in reversed(THRESHOLDS):  # lowest last, so it wins
        above = (conf >= t - 1e-12)[draws]
        den = np.cumsum(counted[draws] * above * w, axis=1)
        num = np.cumsum(correct[draws] * above * w, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            reach = (den > 0) & (num / np.where(den > 0, den, 1) >= target - 1e-12)
        out = np.where(reach, t, out)
    return out


def first_reaching(widths: np.ndarray, width: float) -> int | None:
    """The smallest n (1-based) from which the width stays at or below `width`; None if it never does."""
    above = ~(widths <= width)
    if above.all():
        return None
    last_above = np.flatnonzero(above)
    n = (last_above[-1] + 2) if len(last_above) else 1
    return int(n) if n <= len(widths) else None


def budget_report(
    labels: pd.DataFrame,
    reference: pd.DataFrame,
    budget: int,
    width: float = 0.1,
    target_accuracy: float = 0.8,
    reps: int = 400,
    seed: int = 0,
) -> dict | None:
    """The figures of both designs per n up to `budget` labels (module docstring); None when the judge decided
    no segment the reference labeled."""
    conf, correct, counted = pool(labels, reference)
    if not counted.sum():
        return None
    n_max = int(budget)
    rng = np.random.default_rng(seed)
    truth = float(correct.sum() / counted.sum())
    designs = {}
    for name, q in (("random", np.full(len(conf), 1.0 / len(conf))), ("uncertain", uncertain_proposal(conf))):
        draws, est = session_estimates(correct, counted, q, n_max, reps, rng)
        widths = spread(est)
        thresholds = fitted_thresholds(conf, correct, counted, q, draws, target_accuracy)
        with np.errstate(all="ignore"):
            bias = np.nanmean(est, axis=0) - truth
        designs[name] = {"width": widths, "bias": bias, "threshold_width": spread(thresholds)}
    order = np.argsort(conf, kind="stable")  # least sure first, unweighted: the hard stratum's accuracy
    with np.errstate(invalid="ignore", divide="ignore"):
        top = np.cumsum(correct[order]) / np.cumsum(counted[order])
    top = np.concatenate([top, np.full(max(0, n_max - len(top)), np.nan)])[:n_max]
    grid = sorted({n for n in np.unique(np.geomspace(5, n_max, 12).round().astype(int)) if 1 <= n <= n_max} | {n_max})
    return {
        "pool_segments": int(len(conf)),
        "pool_accuracy": round(truth, 4),
        "sessions": reps,
        "width": width,
        "labels_to_width": {k: first_reaching(d["width"], width) for k, d in designs.items()},
        "curve": [
            {
                "labels": int(n),
                **{
                    f"{k}_{f}": _r(d[f][n - 1])
                    for k, d in designs.items()
                    for f in ("width", "bias", "threshold_width")
                },
                "top_n_unweighted": _r(top[n - 1]),
            }
            for n in grid
        ],
    }


def _r(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)
