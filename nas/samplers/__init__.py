"""The Optuna samplers a campaign may name (``sampler:`` in its file), registered in :data:`SAMPLERS`.

Each entry is ``factory(seed, constraints_func, n_trials) -> optuna sampler``: ``n_trials`` is the campaign's
budget, so a sampler can size itself to it (NSGA-II's population, the evolutionary search's start). The campaign
file is validated against the registered names, so adding a sampler is one decorated function here. Optuna is
imported when a sampler is built, not when a campaign file is read. This package sits outside
:mod:`nas.search` because :mod:`nas.config` validates against it and :mod:`nas.search` imports :mod:`nas.config`
(the evolutionary search lives in :mod:`nas.samplers.evolution` for the same reason). Which one is the default
and why: docs/samplers.md.

Example:
    >>> SAMPLERS.names()
    ['evolution', 'gp', 'nsga2', 'random', 'tpe']
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from nas.registry import Registry

if TYPE_CHECKING:
    import optuna

    ConstraintsFn = Callable[[Any], Sequence[float]]
    SamplerFactory = Callable[[int, ConstraintsFn | None, int | None], optuna.samplers.BaseSampler]

SAMPLERS: Registry[SamplerFactory] = Registry("sampler")

# The campaign default (CampaignConfig.sampler): the sampler that measured best in
# benchmarks/search_efficiency.py (docs/samplers.md says by how much).
DEFAULT_SAMPLER = "evolution"


def population_for(n_trials: int | None) -> int:
    """NSGA-II population for a budget: about ten generations, 8 to 50 members (8 without a budget).

    Fewer than ~8 generations leaves NSGA-II mostly at its random first generation; a population under 8
    makes its crowding-distance selection degenerate (a 2-objective front needs its two extremes plus a middle).
    """
    if not n_trials:
        return 8
    return max(8, min(50, n_trials // 10))


@SAMPLERS.register("nsga2")
def _nsga2(seed: int, constraints_func: ConstraintsFn | None, n_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """NSGA-II with a population sized to the budget (:func:`population_for`)."""
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_for(n_trials), constraints_func=constraints_func)


@SAMPLERS.register("tpe")
def _tpe(seed: int, constraints_func: ConstraintsFn | None, n_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """Multivariate, grouped TPE with the constant liar.

    ``group``: the space is conditional (a layer's settings exist only for its type and depth), and grouped
    TPE models each set of parameters that occur together jointly instead of falling back to independent
    sampling. ``constant_liar``: trials asked while others run (Ray) do not all land on one point.
    """
    import optuna

    with warnings.catch_warnings():  # group/constant_liar are "experimental" since Optuna 2.x, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=_startup(n_trials), constraints_func=constraints_func)


def _startup(n_trials: int | None) -> int:
    """Random trials before a model-based sampler models: 10, or 5 % of a budget over 200."""
    return max(10, (n_trials or 0) // 20)


@SAMPLERS.register("random")
def _random(seed: int, constraints_func: ConstraintsFn | None, n_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """Random search, the baseline (it ignores constraints)."""
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("gp")
def _gp(seed: int, constraints_func: ConstraintsFn | None, n_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """Gaussian-process Bayesian optimisation (Optuna 5: log-EHVI for several objectives, constraints supported).

    It models the parameters every trial has (depth, width, compression, distillation); a layer's own settings
    are conditional, so Optuna samples them at random (its warning about that is turned off: expected here).
    """
    import optuna

    return optuna.samplers.GPSampler(seed=seed, constraints_func=constraints_func, n_startup_trials=_startup(n_trials),
                                     warn_independent_sampling=False)


@SAMPLERS.register("evolution")
def _evolution(seed: int, constraints_func: ConstraintsFn | None, n_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """HAT-style evolutionary search screened by a surrogate of the finished trials (:mod:`nas.samplers.evolution`)."""
    from nas.samplers.evolution import EvolutionSampler

    return EvolutionSampler(seed=seed, population_size=population_for(n_trials), n_startup_trials=_startup(n_trials),
                            constraints_func=constraints_func)


def build_sampler(name: str, seed: int, constraints_func: ConstraintsFn | None = None,
                  n_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """The registered sampler ``name``, seeded and sized to ``n_trials``; :class:`~nas.errors.NasUserError`
    listing the valid names otherwise."""
    factory = SAMPLERS.get(name, where="sampler =")
    with warnings.catch_warnings():
        # Optuna 5 deprecates constraints_func (it reads set_constraint values too); the warning is Optuna's
        # internals, not the user's to act on, and printed even with --quiet.
        warnings.filterwarnings("ignore", message=r".*`constraints_func`", category=FutureWarning)
        return factory(seed, constraints_func, n_trials)
