"""Calibration from people: a temperature for a judge's answer probabilities, fitted on the segments people
labeled, with a held-out check (k folds over pairs) of what it does to the calibration error.

The judge's (p_a, p_b, p_tie) of a segment are tempered, p^(1/T) renormalised (labeler.aggregate.temper), and T
minimises the negative log-likelihood of the people's label. The figure that says whether it helped is the
held-out expected calibration error of the top answer (10 bins): every segment's probabilities tempered by the T
fitted on the other folds, against the untouched ones; intervals from a bootstrap over pairs. `label
--calibration-temperature T` (or a judges file's `calibration_temperature:`) applies it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from densedpo.stats import rounded
from labeler.aggregate import CLASSES

T_RANGE = (0.05, 20.0)
ECE_BINS = 10


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """(N, 3) probabilities -> tempered, rows renormalised (numpy twin of labeler.aggregate.temper)."""
    powered = np.clip(probs, 0.0, None) ** (1.0 / temperature)
    total = powered.sum(axis=1, keepdims=True)
    return np.where(total > 0, powered / np.where(total > 0, total, 1.0), probs)


def nll(probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the people's classes (N,) under the tempered probabilities."""
    p = tempered(probs, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in T_RANGE of least NLL: golden-section search on log T (the NLL is convex in 1/T)."""
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(probs, labels, math.exp(a)), nll(probs, labels, math.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(probs, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(probs, labels, math.exp(b))
    return math.exp((lo + hi) / 2)


def top_ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top answer: Σ_bins |accuracy − mean confidence| · share of segments."""
    if not len(labels):
        return math.nan
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(correct[idx == k].sum() - conf[idx == k].sum()) for k in range(bins)) / len(labels))


def calibration_data(labels: pd.DataFrame, reference: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs (N, 3), people's class (N,), pair ids (N,)) over the segments both answered: the judge's rows with
    probabilities (failed ones have none) joined with the reference's one label per segment."""
    key = ["pair_id", "segment_idx"]
    m = labels.merge(reference[key + ["preference"]].rename(columns={"preference": "preference_ref"}), on=key)
    answered = m["status"].isin(["ok", "low_confidence", "order_inconsistent"]) & m["preference_ref"].isin(CLASSES)
    probs = m[["p_a", "p_b", "p_tie"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    keep = answered.to_numpy() & np.isfinite(probs).all(axis=1) & (probs.sum(axis=1) > 0)
    y = m["preference_ref"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    return probs[keep], y[keep].astype(int), m["pair_id"].to_numpy()[keep]


def fit_calibration(
    labels: pd.DataFrame, reference: pd.DataFrame, folds: int = 5, n_boot: int = 1000, seed: int = 0
) -> dict | None:
    """The temperature fitted on every labeled segment, and the held-out ECE before and after with intervals.
    None when fewer than 2 pairs have answered, labeled segments."""
    probs, y, pairs = calibration_data(labels, reference)
    unique = np.array(sorted(set(pairs)))
    if len(unique) < 2:
        return None
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(unique, rng.permutation(len(unique)) % min(folds, len(unique))))
    fold = np.array([fold_of[p] for p in pairs])
    held_out = np.empty_like(probs)
    for k in np.unique(fold):
        t = fit_temperature(probs[fold != k], y[fold != k])
        held_out[fold == k] = tempered(probs[fold == k], t)
    members = [np.flatnonzero(pairs == p) for p in unique]
    draws = []
    for _ in range(n_boot):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(unique), len(unique))])
        draws.append((top_ece(probs[rows], y[rows]), top_ece(held_out[rows], y[rows])))
    draws = np.array(draws)

    def figure(value, column):
        lo, hi = np.percentile(column, [2.5, 97.5])
        return {"value": rounded(value), "ci95": [rounded(lo), rounded(hi)]}

    before, after = top_ece(probs, y), top_ece(held_out, y)
    temperature = fit_temperature(probs, y)
    return {
        "calibration_temperature": round(temperature, 4),
        "segments": int(len(y)),
        "pairs": int(len(unique)),
        "folds": int(len(np.unique(fold))),
        "ece_before": figure(before, draws[:, 0]),
        "ece_after_heldout": figure(after, draws[:, 1]),
        "ece_change": figure(after - before, draws[:, 1] - draws[:, 0]),
        "nll_before": round(nll(probs, y, 1.0), 4),
        "nll_after_in_sample": round(nll(probs, y, temperature), 4),
    }


def write_calibration(path, fitted: dict[str, dict]) -> list[str]:
    """Put each judge's temperature where `label` reads it: into the entries of a --judges file whose `name` is the
    judge's id; else (no such file) a file of `judge id: {calibration_temperature: T, ...}`. Returns what was set."""
    from pathlib import Path

    import yaml

    from densedpo.files import atomic_write_text

    path = Path(path)
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    done = []
    if isinstance(data, dict) and isinstance(data.get("judges"), list):
        for entry in data["judges"]:
            if isinstance(entry, dict) and entry.get("name") in fitted:
                entry.update(fitted[entry["name"]])
                done.append(entry["name"])
    else:
        data = {**(data if isinstance(data, dict) else {}), **fitted}
        done = list(fitted)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return done


# ---------------------------------------------------------------------------------------------- juries


def member_arrays(members: dict[str, pd.DataFrame], reference: pd.DataFrame):
    """(probs (J, N, 3), people's class (N,), pair ids (N,)) over the segments every member answered with
    probabilities and the reference labeled."""
    key = ["pair_id", "segment_idx"]
    joined = None
    for k, (_, table) in enumerate(members.items()):
        answered = table[table["status"].isin(["ok", "low_confidence", "order_inconsistent"])]
        probs = answered[key + ["p_a", "p_b", "p_tie"]].rename(columns={c: f"{c}_{k}" for c in ("p_a", "p_b", "p_tie")})
        joined = probs if joined is None else joined.merge(probs, on=key)
    ref = reference[reference["preference"].isin(CLASSES)][key + ["preference"]]
    m = joined.merge(ref, on=key).dropna()
    probs = np.stack([m[[f"p_a_{k}", f"p_b_{k}", f"p_tie_{k}"]].to_numpy(float) for k in range(len(members))])
    y = m["preference"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy(int)
    return probs, y, m["pair_id"].to_numpy()


def mixture_weights(probs: np.ndarray, labels: np.ndarray, iterations: int = 300) -> np.ndarray:
    """Weights (J,) of the members' mixture Σ_j w_j p_j(label) of greatest likelihood: EM on the mixture weights
    (the log-likelihood is concave in them; each step cannot lower it)."""
    p = np.clip(probs[:, np.arange(len(labels)), labels], 1e-12, 1.0)  # (J, N)
    w = np.full(len(probs), 1.0 / len(probs))
    for _ in range(iterations):
        r = w[:, None] * p
        w = (r / r.sum(axis=0, keepdims=True)).mean(axis=1)
    return w


def majority_classes(probs: np.ndarray) -> np.ndarray:
    """The class most members chose (their top answer); equal top counts give tie (2), as the majority rule."""
    votes = np.stack([(probs.argmax(axis=2) == c).sum(axis=0) for c in range(3)], axis=1)  # (N, 3)
    top = votes.max(axis=1, keepdims=True)
    return np.where((votes == top).sum(axis=1) == 1, votes.argmax(axis=1), 2)


def fit_jury(
    members: dict[str, pd.DataFrame], reference: pd.DataFrame, folds: int = 5, n_boot: int = 1000, seed: int = 0
) -> dict | None:
    """A jury fitted to people: each member's temperature, then the members' weights in the jury's mean, with a
    k-fold held-out check (pairs) of the weighted mean against the equal mean and the majority vote. The weights
    are worth using only when they lower the held-out NLL with the interval of the change below 0."""
    probs, y, pairs = member_arrays(members, reference)
    unique = np.array(sorted(set(pairs)))
    if len(unique) < 2 or len(members) < 2:
        return None
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(unique, rng.permutation(len(unique)) % min(folds, len(unique))))
    fold = np.array([fold_of[p] for p in pairs])
    equal, weighted = np.empty_like(probs[0]), np.empty_like(probs[0])
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        tempered_all = np.stack([tempered(p, fit_temperature(p[train], y[train])) for p in probs])
        w = mixture_weights(tempered_all[:, train], y[train])
        equal[test] = tempered_all[:, test].mean(axis=0)
        weighted[test] = np.tensordot(w, tempered_all[:, test], axes=1)
    majority = majority_classes(probs)
    rows = np.arange(len(y))

    def per_segment(p):  # (NLL, correct) of each segment's held-out mixture
        return -np.log(np.clip(p[rows, y], 1e-12, 1.0)), p.argmax(axis=1) == y

    (nll_eq, acc_eq), (nll_w, acc_w) = per_segment(equal), per_segment(weighted)
    acc_maj = majority == y
    members_of = [np.flatnonzero(pairs == p) for p in unique]
    draws = []
    for _ in range(n_boot):
        r = np.concatenate([members_of[i] for i in rng.integers(0, len(unique), len(unique))])
        draws.append((nll_w[r].mean() - nll_eq[r].mean(), acc_w[r].mean() - acc_eq[r].mean()))
    lo, hi = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
    temperatures = [fit_temperature(p, y) for p in probs]
    weights = mixture_weights(np.stack([tempered(p, t) for p, t in zip(probs, temperatures)]), y)
    use = bool(hi[0] < 0)
    return {
        "segments": int(len(y)),
        "pairs": int(len(unique)),
        "jury_weights": {n: round(float(w), 4) for n, w in zip(members, weights / weights.max())},
        "heldout_nll": {"equal_mean": rounded(nll_eq.mean()), "weighted_mean": rounded(nll_w.mean())},
        "heldout_nll_change": {
            "value": rounded(nll_w.mean() - nll_eq.mean()),
            "ci95": [rounded(lo[0]), rounded(hi[0])],
        },
        "heldout_accuracy": {
            "equal_mean": rounded(acc_eq.mean()),
            "weighted_mean": rounded(acc_w.mean()),
            "majority": rounded(acc_maj.mean()),
        },
        "heldout_accuracy_change": {
            "value": rounded(acc_w.mean() - acc_eq.mean()),
            "ci95": [rounded(lo[1]), rounded(hi[1])],
        },
        "use_weights": use,
    }
