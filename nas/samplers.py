"""The Optuna samplers a campaign may name (``sampler:`` in its file), registered in :data:`SAMPLERS`.

Each entry is ``factory(seed, constraints_func) -> optuna sampler``; the campaign file is validated against the
registered names, so adding a sampler is one decorated function here. Optuna is imported when a sampler is
built, not when a campaign file is read. This module sits outside :mod:`nas.search` because
:mod:`nas.config` validates against it and :mod:`nas.search` imports :mod:`nas.config`.

Example:
    >>> SAMPLERS.names()
    ['gp', 'nsga2', 'random', 'tpe']
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from nas.registry import Registry

if TYPE_CHECKING:
    import optuna

    ConstraintsFn = Callable[[Any], Sequence[float]]
    SamplerFactory = Callable[[int, ConstraintsFn | None], optuna.samplers.BaseSampler]

SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


@SAMPLERS.register("nsga2")
def _nsga2(seed: int, constraints_func: ConstraintsFn | None) -> optuna.samplers.BaseSampler:
    """NSGA-II with a population of 8: generations turn over within the small budgets campaigns run."""
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=8, constraints_func=constraints_func)


@SAMPLERS.register("tpe")
def _tpe(seed: int, constraints_func: ConstraintsFn | None) -> optuna.samplers.BaseSampler:
    """Multivariate TPE with the constant liar, so trials asked while others run (Ray) do not all land on one point."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, constraints_func=constraints_func)


@SAMPLERS.register("random")
def _random(seed: int, constraints_func: ConstraintsFn | None) -> optuna.samplers.BaseSampler:
    """Random search, the baseline (it ignores constraints)."""
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("gp")
def _gp(seed: int, constraints_func: ConstraintsFn | None) -> optuna.samplers.BaseSampler:
    """Gaussian-process Bayesian optimisation."""
    import optuna

    return optuna.samplers.GPSampler(seed=seed, constraints_func=constraints_func)


def build_sampler(name: str, seed: int, constraints_func: ConstraintsFn | None = None) -> optuna.samplers.BaseSampler:
    """The registered sampler ``name``, seeded; :class:`~nas.errors.NasUserError` listing the valid names otherwise."""
    factory = SAMPLERS.get(name, where="sampler =")
    with warnings.catch_warnings():
        # Optuna 5 deprecates constraints_func (it reads set_constraint values too); the warning is Optuna's
        # internals, not the user's to act on, and printed even with --quiet.
        warnings.filterwarnings("ignore", message=r".*`constraints_func`", category=FutureWarning)
        return factory(seed, constraints_func)
