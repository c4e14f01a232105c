"""Shared by the sampler tests: a tiny real search space, and a synthetic two-objective problem with a known front.

The synthetic problem is ZDT1 (Zitzler, Deb & Thiele 2000) made NAS-shaped: ``x0`` (a 0.05 grid, the "latency"
axis) is the first objective, and the distance to the front ``g`` comes from a conditional stack of 1–4 "layers",
each picking a type and that type's own setting, the way the default space's layers do. The front is known:
``n = 1``, ``l0.type = a``, ``l0.a.v = 0`` gives ``g = 1`` and ``f2 = 1 − sqrt(x0)``, so its hypervolume is exact.
Pure Python: a trial costs microseconds, so a test can run a few hundred.
"""

from __future__ import annotations

import math

import numpy as np

from nas.samplers.fronts import hypervolume_2d

TINY_SPACE = """\
name: tiny-samplers
architecture:
  n_layers: {type: int, low: 1, high: 3}
  hidden_size: {type: categorical, choices: [32, 64]}
  per_layer: true
  blocks:
    type: {type: categorical, choices: [transformer, conv]}
    transformer:
      heads: {type: categorical, choices: [2, 4]}
      ffn_size: {type: int, low: 64, high: 256, step: 64}
    conv:
      kernel_size: {type: categorical, choices: [3, 5]}
      ffn_size: {type: int, low: 64, high: 256, step: 64}
compression:
  prune_rate: {type: float, low: 0.0, high: 0.4, step: 0.2}
  weight_bits: {type: categorical, choices: [8, 32]}
distill:
  temperature: {type: float, low: 1.0, high: 8.0, log: true}
"""

REFERENCE = np.array([1.1, 7.0])  # beyond the worst f1 (1) and f2 (g ≤ 1 + 4 + 0.5, times 1)
GRID = [i * 0.05 for i in range(21)]


def zdt_nas(trial) -> tuple[float, float]:
    """Two losses to minimise; see the module docstring."""
    x0 = trial.suggest_float("x0", 0.0, 1.0, step=0.05)
    n = trial.suggest_int("n", 1, 4)
    g = 0.0
    for i in range(n):
        kind = trial.suggest_categorical(f"l{i}.type", ["a", "b"])
        v = trial.suggest_int(f"l{i}.{kind}.v", 0, 9)
        g += v / 9.0 if kind == "a" else 0.3 + v / 18.0
    g = 1.0 + 4.0 * g / n + 0.5 * (n - 1) / 3
    return x0, g * (1.0 - math.sqrt(x0 / g))


def true_front_hv() -> float:
    """HV of the known front (g = 1 at every grid point of x0)."""
    return hypervolume_2d(np.array([[x, 1.0 - math.sqrt(x)] for x in GRID]), REFERENCE)


def hv_curve(values: list[tuple[float, float]]) -> list[float]:
    """HV after each trial (fixed reference :data:`REFERENCE`)."""
    points, out = [], []
    for v in values:
        points.append(v)
        out.append(hypervolume_2d(np.array(points), REFERENCE))
    return out


def run(sampler, n_trials: int) -> list[tuple[float, float]]:
    """The values of ``n_trials`` trials of :func:`zdt_nas` under ``sampler``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(zdt_nas, n_trials=n_trials)
    return [tuple(t.values) for t in study.trials]


def trials_to_reach(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), None)
