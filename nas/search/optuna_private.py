"""Every use of Optuna's private API in lightnas, in one place, each with the reason no public call does it.

Optuna 5.0 is pinned by the project; when an upgrade breaks one of these, this is the only file to change.
Each function names the private symbol it wraps. Nothing else in ``nas/`` should reach into ``optuna._*``,
``optuna.study._*`` or a study's ``_storage`` (``tests/test_layout.py`` checks it).

Callers: the driver (:func:`frozen_trial`), tell and the sampler setup (:func:`stored_constraints_by_name`,
:func:`stored_constraints`), the store's resume (:func:`fail_orphaned_trial`), the scheduler,
:mod:`nas.search.pareto` and :mod:`nas.report.pareto` (:func:`is_pareto_front`, :func:`compute_hypervolume`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import optuna


def constraints_key() -> str:
    """The system-attribute prefix under which ``trial.set_constraint`` stores constraint values.

    Private: ``optuna.study._constrained_optimization._CONSTRAINTS_KEY``. Needed because samplers that take a
    ``constraints_func`` (NSGA-II, TPE, GP) must read the values back from a ``FrozenTrial``, and a repeated
    proposal copies them from its source trial; Optuna has no public getter for a trial's constraints.
    """
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    return _CONSTRAINTS_KEY


def stored_constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Constraint values stored on ``trial`` (``trial.set_constraint``), in a stable (sorted-name) order."""
    prefix = f"{constraints_key()}:"
    return [v for k, v in sorted(trial.system_attrs.items()) if k.startswith(prefix)]


def stored_constraints_by_name(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """Constraint values stored on ``trial``, by the name given to ``trial.set_constraint``."""
    prefix = f"{constraints_key()}:"
    return {k[len(prefix):]: v for k, v in trial.system_attrs.items() if k.startswith(prefix)}


def fail_orphaned_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: dict[str, Any]) -> None:
    """Set ``attrs`` on a RUNNING trial left by a dead driver and mark it FAIL, without telling the sampler.

    Private: ``study._storage`` and ``trial._trial_id``. ``study.tell`` would run the sampler's ``after_trial``
    hook for a trial this process never asked, and there is no public way to set a user attribute on a
    ``FrozenTrial``; writing the storage directly is what Optuna's own ``fail_stale_trials`` does.
    """
    from optuna.trial import TrialState

    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def frozen_trial(study: optuna.Study, trial: optuna.trial.Trial) -> optuna.trial.FrozenTrial:
    """The stored, frozen copy of a trial just told.

    Private: ``study._storage.get_trial`` and ``trial._trial_id``. The public route,
    ``study.get_trials()[trial.number]``, reads every trial of the study: quadratic over a campaign.
    """
    return study._storage.get_trial(trial._trial_id)


def is_pareto_front(losses: np.ndarray) -> np.ndarray:
    """Mask of the rows of ``losses`` (to minimise, shape (n, k)) that no other row dominates; ties all kept.

    Private: ``optuna.study._multi_objective._is_pareto_front``, the code behind ``study.best_trials``. The
    public ``best_trials`` works on a whole study only, while the campaign needs fronts over subsets (one
    rung, one fidelity, feasible trials) with the same tie and dominance rules.
    """
    from optuna.study._multi_objective import _is_pareto_front

    return _is_pareto_front(losses, assume_unique_lexsorted=False)


def compute_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume dominated by ``points`` (to minimise) up to ``reference``.

    Private: ``optuna._hypervolume.compute_hypervolume``. Optuna exposes hypervolume only through
    visualisation (``plot_hypervolume_history``); reports need the number itself.
    """
    from optuna._hypervolume import compute_hypervolume as _compute

    return float(_compute(points, reference))
