"""Pareto arithmetic for the evolutionary search, in NumPy: ranks, crowding, and what a new point adds to a front.

Kept here rather than borrowed from :mod:`nas.search.pareto` (import cycle: :mod:`nas.search` imports this
package) or Optuna's private ``_is_pareto_front`` (private Optuna APIs live in ``nas/search/optuna_private.py``
only). Every function works on *losses* (to minimise), one row per point.
"""

from __future__ import annotations

import numpy as np


def dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``out[i, j]``: row ``a[i]`` is at least as good as ``b[j]`` everywhere and better somewhere."""
    le = (a[:, None, :] <= b[None, :, :]).all(-1)
    lt = (a[:, None, :] < b[None, :, :]).any(-1)
    return le & lt


def nondominated_ranks(losses: np.ndarray) -> np.ndarray:
    """NSGA-II's front number of each row: 0 for the non-dominated, 1 for those only the first front dominates…"""
    n = len(losses)
    ranks = np.full(n, -1, dtype=int)
    beaten_by = dominates(losses, losses)  # [i, j]: i dominates j
    remaining = np.ones(n, dtype=bool)
    rank = 0
    while remaining.any():
        counts = beaten_by[remaining][:, remaining].sum(axis=0)  # dominators of each remaining row, among the remaining
        current = np.flatnonzero(remaining)[counts == 0]
        ranks[current] = rank
        remaining[current] = False
        rank += 1
    return ranks


def crowding(losses: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance within each front (infinite at a front's extremes)."""
    out = np.zeros(len(losses))
    for rank in np.unique(ranks):
        idx = np.flatnonzero(ranks == rank)
        for k in range(losses.shape[1]):
            order = idx[np.argsort(losses[idx, k], kind="stable")]
            span = losses[order[-1], k] - losses[order[0], k]
            out[order[0]] = out[order[-1]] = np.inf
            if span > 0 and len(order) > 2:
                out[order[1:-1]] += (losses[order[2:], k] - losses[order[:-2], k]) / span
    return out


def hypervolume_2d(points: np.ndarray, reference: np.ndarray) -> float:
    """Area dominated by 2-objective ``points`` up to ``reference`` (points beyond it count for nothing)."""
    pts = points[(points < reference).all(axis=1)]
    if not len(pts):
        return 0.0
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    area, best_y = 0.0, reference[1]
    for x, y in pts:
        if y < best_y:
            area += (reference[0] - x) * (best_y - y)
            best_y = y
    return float(area)


def front_gain(candidates: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """How much each candidate row would improve the front of ``observed``, on losses scaled to the observed range.

    Two objectives: the hypervolume it adds (reference 10 % beyond the worst observed), where positive. Otherwise,
    and for more objectives: the additive-epsilon margin ``min over the front of max_k (front_k − candidate_k)``,
    negative for a dominated candidate (how far it is behind), so candidates always have an order.
    """
    low, high = observed.min(axis=0), observed.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    front = observed[nondominated_ranks(observed) == 0]
    scaled_front, scaled = (front - low) / span, (candidates - low) / span
    margin = (scaled_front[None, :, :] - scaled[:, None, :]).max(-1).min(-1)
    if observed.shape[1] != 2:
        return margin
    reference = np.full(2, 1.1)
    base = hypervolume_2d(scaled_front, reference)
    gain = np.array([hypervolume_2d(np.vstack([scaled_front, c]), reference) - base for c in scaled])
    return np.where(gain > 1e-12, gain, np.minimum(margin, 0.0))
