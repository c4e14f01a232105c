"""The evolutionary search's cheap predictor: parameters → features, and a small Gaussian process per objective.

A GP (RBF kernel, length scale and noise chosen by marginal likelihood on a small grid) fits a few hundred
trials in milliseconds with NumPy, and its standard deviation is what lets the screen be optimistic about
children far from anything evaluated. Latency (from the hardware predictor) is smooth in width, depth and
bits, so the GP learns it well from tens of trials; supernet accuracy is noisier, hence the fitted noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

LENGTH_SCALES = (0.5, 1.0, 2.0, 4.0)  # × the median distance between trials
NOISES = (1e-3, 1e-2, 1e-1)  # variance, on the standardised target


@dataclass(frozen=True)
class Encoder:
    """Every parameter name seen → columns: one-hot for a categorical, [0, 1] (log if log) for a number,
    plus a presence column (conditional parameters are absent from some trials)."""

    distributions: dict[str, Any]

    @classmethod
    def fit(cls, distributions: list[dict[str, BaseDistribution]]) -> Encoder:
        merged: dict[str, Any] = {}
        for d in distributions:
            for name, dist in d.items():
                merged.setdefault(name, dist)
        return cls(dict(sorted(merged.items())))

    def encode(self, rows: list[dict[str, Any]]) -> np.ndarray:
        return np.array([sum((self._columns(name, dist, row.get(name, _ABSENT)) for name, dist in self.distributions.items()), [])
                         for row in rows], dtype=float)

    @staticmethod
    def _columns(name: str, dist: Any, value: Any) -> list[float]:
        from optuna.distributions import CategoricalDistribution

        present = value is not _ABSENT
        if isinstance(dist, CategoricalDistribution):
            return [float(present)] + [float(present and value == c) for c in dist.choices]
        if not present:
            return [0.0, 0.5]
        low, high = float(dist.low), float(dist.high)
        if getattr(dist, "log", False) and low > 0:
            low, high, value = math.log(low), math.log(high), math.log(max(float(value), 1e-300))
        return [1.0, (float(value) - low) / (high - low) if high > low else 0.5]


_ABSENT = object()


class GaussianProcess:
    """Exact GP regression with an RBF kernel; ``predict`` gives the mean and standard deviation."""

    def __init__(self, x: np.ndarray, y: np.ndarray, length: float, noise: float) -> None:
        self.x, self.length, self.noise = x, length, noise
        self.mu, self.sd = float(y.mean()), float(y.std()) or 1.0
        z = (y - self.mu) / self.sd
        self.chol = np.linalg.cholesky(self._kernel(x, x) + noise * np.eye(len(x)))
        self.alpha = np.linalg.solve(self.chol.T, np.linalg.solve(self.chol, z))
        self.log_likelihood = float(-0.5 * z @ self.alpha - np.log(np.diag(self.chol)).sum())

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-0.5 * d2 / self.length**2)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> GaussianProcess:
        """The grid's best (length scale, noise) by marginal likelihood."""
        d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        median = float(np.median(d[d > 0])) if (d > 0).any() else 1.0
        fits = [cls(x, y, median * s, n) for s in LENGTH_SCALES for n in NOISES]
        return max(fits, key=lambda g: g.log_likelihood)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self._kernel(x, self.x)
        mean = k @ self.alpha
        v = np.linalg.solve(self.chol, k.T)
        var = np.clip(1.0 - (v**2).sum(0), 1e-12, None)
        return self.mu + self.sd * mean, self.sd * np.sqrt(var)
