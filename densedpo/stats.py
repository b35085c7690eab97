"""Figures with honest intervals: per-cluster count vectors (pairs, prompts) and a cluster bootstrap over them.

Every figure is a function of sums of counts, so it is computed once from the per-cluster vectors and its 95%
interval comes from resampling clusters (multinomial weights on the same vectors): segments and seeds of one
cluster are correlated, the clusters are the independent units. Used by the judge report (clusters: pairs) and
the model evaluation (clusters: prompts).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class Counts:
    """Per-cluster count vectors (rows: clusters, the independent units: pairs in the judge report, prompts in the
    model evaluation; columns: named counts) and the figures computed from their sums."""

    clusters: list[str]
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, per_cluster: pd.Series) -> None:
        self.columns[name] = per_cluster.reindex(self.clusters, fill_value=0).to_numpy(float)

    def matrix(self) -> tuple[list[str], np.ndarray]:
        names = list(self.columns)
        empty = np.zeros((len(self.clusters), 0))
        return names, np.stack([self.columns[n] for n in names], axis=1) if names else empty


def per_cluster(mask: pd.Series, cluster_ids: pd.Series) -> pd.Series:
    """Sum of a per-row mask (or value) per cluster id."""
    return mask.astype(float).groupby(cluster_ids.to_numpy()).sum()


def ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def bootstrap(
    counts: Counts, figures: Callable[[dict], dict], n_boot: int = 1000, seed: int = 0, interval: str = "ci95"
) -> dict:
    """{figure: {"value", interval: [lo, hi]}}: the point value from all clusters, the 95% interval from resampled
    clusters."""
    names, x = counts.matrix()
    point = figures({n: x[:, i].sum(keepdims=True) for i, n in enumerate(names)})
    rng = np.random.default_rng(seed)
    n_clusters = x.shape[0]
    weights = (
        rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters), size=n_boot)
        if n_clusters
        else np.zeros((0, 0))
    )
    sums = weights @ x if n_clusters else np.zeros((0, len(names)))
    draws = figures({n: sums[:, i] for i, n in enumerate(names)})
    out = {}
    for name, value in point.items():
        d = draws[name][np.isfinite(draws[name])] if n_clusters else np.array([])
        lo, hi = np.percentile(d, [2.5, 97.5]) if len(d) else (math.nan, math.nan)
        out[name] = {"value": rounded(value[0]), interval: [rounded(lo), rounded(hi)]}
    return out


def rounded(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else round(v, 6)


def with_interval(value: float | None, lo: float | None = None, hi: float | None = None, signed: bool = False) -> str:
    """A figure and its interval at one precision (3 decimals): "0.812 [0.701, 0.905]"; "–" without a value."""
    if value is None or value != value:
        return "–"
    f = "{:+.3f}" if signed else "{:.3f}"
    if lo is None or hi is None:
        return f.format(value)
    return f"{f.format(value)} [{f.format(lo)}, {f.format(hi)}]"
