"""HAT-style evolutionary search: breed many children, score them cheaply, run only the most promising.

HAT (https://arxiv.org/abs/2005.14187) evolves a population of subnets and scores each child with a latency
predictor and the supernet, thousands of times, because both are cheap. Here a trial already *is* the cheap
score (supernet accuracy + predictor latency, seconds), so the evolution adds one cheaper stage in front of it:

1. **Parents**: the ``population_size`` best finished trials, by constraint violation, non-dominated rank and
   crowding distance (NSGA-II's order).
2. **Children**: ``n_children`` (default 64) by binary tournament, uniform crossover and mutation
   (each parameter resampled with probability 1/#parameters, at least one), duplicates of evaluated points dropped.
3. **Screen**: a Gaussian-process surrogate per objective (:mod:`nas.samplers.surrogate`), fitted on the
   finished trials, predicts every child; the child whose optimistic prediction (mean − ``kappa``·std, on
   losses) adds the most hypervolume to the current front is the one the trial runs. Screening 64 children
   costs milliseconds, so the study spends its real evaluations only where the surrogate expects progress.

Until ``n_startup_trials`` trials have finished it samples at random. The sampler is stateless between trials
(everything is recomputed from the study), so a campaign resumed after a kill continues the same search.
Conditional parameters a child lacks (a layer its parent did not have) are sampled at random when Optuna asks.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.samplers.fronts import crowding, front_gain, nondominated_ranks
from nas.samplers.structure import Structure, complete
from nas.samplers.surrogate import Encoder, GaussianProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial


def _base() -> type:
    import optuna

    return optuna.samplers.BaseSampler


class EvolutionSampler(_base()):  # type: ignore[misc]
    """Evolution with surrogate screening; see the module docstring.

    Args:
        seed: Seeds the random start, the breeding and the fallback for conditional parameters.
        population_size: Parents kept per generation (the campaign sizes it to ``n_trials``).
        n_startup_trials: Random trials before the evolution starts.
        n_children: Children bred and screened per trial.
        kappa: Optimism of the screen, in surrogate standard deviations.
        top_k: The trial runs one of the ``top_k`` best-screened children, at random (diversity).
        constraints_func: Optuna's convention: values ≤ 0 are satisfied; infeasible trials rank behind feasible ones.
    """

    def __init__(self, *, seed: int | None = None, population_size: int = 20, n_startup_trials: int = 10,
                 n_children: int = 64, kappa: float = 0.3, top_k: int = 1,
                 constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None) -> None:
        import optuna

        self._seed = seed
        self._rng = random.Random(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self.population_size, self.n_startup_trials = population_size, n_startup_trials
        self.n_children, self.kappa, self.top_k = n_children, kappa, top_k
        self._constraints_func = constraints_func
        self._plans: dict[int, dict[str, Any]] = {}

    def reseed_rng(self) -> None:
        self._rng = random.Random()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Plan this trial's parameters: the best screened child, or nothing (random) during the start."""
        self._plans[trial.number] = self.plan(study)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        value = self._plans.get(trial.number, {}).get(param_name, _MISSING)
        if value is not _MISSING and fits(param_distribution, value):
            return value
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: Any, values: Sequence[float] | None) -> None:
        self._plans.pop(trial.number, None)

    # ------------------------------------------------------------------------------------------ the search

    def plan(self, study: optuna.Study) -> dict[str, Any]:
        """The parameters of the next trial ({} = random), from the study's finished and running trials."""
        from optuna.trial import TrialState

        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values is not None]
        if len(done) < self.n_startup_trials:
            return {}
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        losses = np.array([_losses(t.values, study.directions) for t in done], dtype=float)
        violation = np.array([self._violation(t) for t in done], dtype=float)
        parents = self._parents(done, losses, violation)
        seen = {_key(t.params) for t in [*done, *running]}
        self._structure = Structure.learn([t.params for t in done])
        self._distributions = {n: d for t in done for n, d in t.distributions.items()}
        children = self._breed(parents, seen)
        if not children:
            return {}
        keep = self._order[:MAX_FIT]  # the best-ranked: where the front is, and an O(n³) fit that stays milliseconds
        return children[self._screen([done[i] for i in keep], losses[keep], violation[keep], children)]

    def _violation(self, trial: FrozenTrial) -> float:
        if self._constraints_func is None:
            return 0.0
        return float(sum(max(0.0, c) for c in self._constraints_func(trial)))

    def _parents(self, done: list[FrozenTrial], losses: np.ndarray, violation: np.ndarray) -> list[FrozenTrial]:
        """The population: feasible first, then by non-dominated rank and crowding (wider spread first)."""
        ranks = nondominated_ranks(losses)
        spread = crowding(losses, ranks)
        order = sorted(range(len(done)), key=lambda i: (violation[i], ranks[i], -spread[i]))
        self._order = order
        self._rank = {done[i].number: (violation[i], ranks[i], -spread[i]) for i in order}
        return [_Parent(done[i].params, done[i].distributions, self._rank_of(done[i].number))
                for i in order[: self.population_size]]

    def _rank_of(self, number: int) -> tuple:
        return self._rank[number]

    def _breed(self, parents: list[_Parent], seen: set[tuple]) -> list[dict[str, Any]]:
        """Up to ``n_children`` distinct children of ``parents`` that no trial has tried."""
        children, keys = [], set(seen)
        for _ in range(self.n_children * 4):
            a, b = self._tournament(parents), self._tournament(parents)
            child = complete(self._structure, self._mutate(self._crossover(a, b), a), lambda n: self._fill(n, parents))
            key = _key(child)
            if key not in keys:
                keys.add(key)
                children.append(child)
            if len(children) >= self.n_children:
                break
        return children

    def _fill(self, name: str, parents: list[_Parent]) -> Any:
        """A value for a parameter a child lacks: a random parent's that has it, else a draw from its distribution."""
        donors = [p for p in parents if name in p.params]
        if donors:
            return self._rng.choice(donors).params[name]
        dist = self._distributions.get(name)
        return mutate_value(dist, None, self._rng, uniform=True) if dist is not None else None

    def _tournament(self, parents: list[_Parent]) -> _Parent:
        a, b = self._rng.choice(parents), self._rng.choice(parents)
        return min(a, b, key=lambda p: p.rank)

    def _crossover(self, a: _Parent, b: _Parent) -> dict[str, Any]:
        """Uniform crossover on ``a``'s parameters; a value from ``b`` only where ``b`` has that parameter."""
        return {name: (b.params[name] if name in b.params and self._rng.random() < 0.5 else value)
                for name, value in a.params.items()}

    def _mutate(self, child: dict[str, Any], shape: _Parent) -> dict[str, Any]:
        """Resample each parameter with probability 1/n (at least one), from its distribution or a grid neighbour."""
        names = list(child)
        flips = [self._rng.random() < 1.0 / len(names) for _ in names]
        if not any(flips):
            flips[self._rng.randrange(len(names))] = True
        for name, flip in zip(names, flips):
            if flip:
                child[name] = mutate_value(shape.distributions[name], child[name], self._rng)
        return child

    def _screen(self, done: list[FrozenTrial], losses: np.ndarray, violation: np.ndarray,
                children: list[dict[str, Any]]) -> int:
        """Index of the child whose optimistic predicted losses add the most to the feasible front."""
        encoder = Encoder.fit([t.distributions for t in done])
        x_done = encoder.encode([t.params for t in done])
        x_new = encoder.encode(children)
        optimistic = np.empty((len(children), losses.shape[1]))
        for k in range(losses.shape[1]):
            mean, std = GaussianProcess.fit(x_done, losses[:, k]).predict(x_new)
            optimistic[:, k] = mean - self.kappa * std
        feasible = losses[violation <= 0.0]
        gains = front_gain(optimistic, feasible if len(feasible) else losses)
        best = np.flatnonzero(gains >= gains.max() - 1e-12)
        if len(best) < self.top_k:
            best = np.argsort(-gains, kind="stable")[: self.top_k]
        return int(self._rng.choice(list(best)))


_MISSING = object()
MAX_FIT = 300  # trials the surrogate is fitted on, at most


class _Parent:
    """A finished trial's parameters, distributions and selection rank, read once per generation."""

    __slots__ = ("distributions", "params", "rank")

    def __init__(self, params: dict[str, Any], distributions: dict[str, Any], rank: tuple) -> None:
        self.params, self.distributions, self.rank = params, distributions, rank


def _losses(values: Sequence[float], directions: Sequence[Any]) -> list[float]:
    """Objective values as losses (to minimise)."""
    import optuna

    return [-v if d == optuna.study.StudyDirection.MAXIMIZE else v for v, d in zip(values, directions)]


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def fits(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is a valid value of ``distribution`` (public attributes only)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if isinstance(distribution, (IntDistribution, FloatDistribution)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not distribution.low <= value <= distribution.high:
            return False
        step = distribution.step
        return step is None or math.isclose((value - distribution.low) / step, round((value - distribution.low) / step), abs_tol=1e-6)
    return False


def mutate_value(distribution: BaseDistribution, value: Any, rng: random.Random, uniform: bool = False) -> Any:
    """A new value: a grid neighbour half of the time for ordered parameters (never with ``uniform``), else a
    uniform draw over the distribution."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        others = [c for c in distribution.choices if c != value] or list(distribution.choices)
        return rng.choice(others)
    low, high = distribution.low, distribution.high
    if isinstance(distribution, IntDistribution) or (isinstance(distribution, FloatDistribution) and distribution.step):
        step = distribution.step
        n = int(round((high - low) / step))
        index = 0 if value is None else int(round((value - low) / step))
        new = rng.randint(0, n) if uniform or rng.random() < 0.5 else index + rng.choice((-1, 1))
        new = min(max(new, 0), n)
        out = low + new * step
        return int(out) if isinstance(distribution, IntDistribution) else round(float(out), 10)
    if distribution.log:
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))
