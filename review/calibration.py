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
                entry["calibration_temperature"] = fitted[entry["name"]]["calibration_temperature"]
                done.append(entry["name"])
    else:
        data = {**(data if isinstance(data, dict) else {}), **fitted}
        done = list(fitted)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return done
