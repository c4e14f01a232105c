"""Scheduler strategies: how much training each proposal gets, and what happens after the search.

* :class:`Scheduler` (plain): one run per trial at ``fidelity.steps``.
* :class:`SuccessiveHalving` (``fidelity.min_steps``): a trial runs at the lowest rung first and moves up a
  rung only while no other result at that rung dominates it; otherwise it is told PRUNED.
* :class:`SupernetPromotion` (``fidelity.scorer: supernet``): one run per trial with inherited weights and
  ``fidelity.recovery_steps``, then the best non-dominated trials are re-run stand-alone (``promote_top``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas.search.record import records
from nas.search.tell import Job, objective_values

if TYPE_CHECKING:
    import optuna

    from nas.config import CampaignConfig
    from nas.search.driver import Driver
    from nas.search.objective import TrialMetrics


def non_dominated(values: list[float], others: list[list[float]], directions: list[str]) -> bool:
    """True when no point of ``others`` dominates ``values`` (at least as good everywhere, better somewhere).

    Equal points do not dominate each other. Uses Optuna's front (the code behind ``study.best_trials``).
    """
    import numpy as np

    from nas.search.optuna_private import is_pareto_front

    signs = [-1.0 if d == "maximize" else 1.0 for d in directions]
    losses = np.array([[s * v for s, v in zip(signs, point)] for point in [values, *others]], dtype=float)
    return bool(is_pareto_front(losses)[0])


class Scheduler:
    """Plain scheduling: each trial runs once, at ``rungs[0]`` steps, scored by ``scorer``."""

    def __init__(self, rungs: list[int], scorer: str = "standalone") -> None:
        self.rungs = rungs
        self.scorer = scorer

    def first_job(self, trial: optuna.trial.Trial, candidate: Any) -> Job:
        return Job(trial, candidate, steps=self.rungs[0], fidelity=self.scorer, rung=0)

    def is_last(self, job: Job) -> bool:
        """Whether ``job`` ran at the final rung (then its result is told COMPLETE)."""
        return job.rung + 1 >= len(self.rungs)

    def next_job(self, job: Job, metrics: TrialMetrics) -> Job | None:
        """The trial's run at the next rung, or None to prune it; called only when not :meth:`is_last`."""
        raise RuntimeError(f"{type(self).__name__} has one rung; job at rung {job.rung} has no next one")

    def after_search(self, driver: Driver) -> None:
        """Work after the search loop, while time remains (none for plain scheduling)."""


class SuccessiveHalving(Scheduler):
    """Promote a rung's result to the next rung when no other result at that rung dominates it.

    Rung results of earlier runs of the campaign (``rung_<steps>_steps`` user attributes) count, so the
    decisions after a resume are those the first run would have made.
    """

    def __init__(self, rungs: list[int], study: optuna.Study, config: CampaignConfig) -> None:
        super().__init__(rungs, "standalone")
        self.config = config
        self.directions = [o.direction for o in config.objectives]
        self.rung_values: dict[int, list[list[float]]] = {}
        for record in records(study):
            for i, steps in enumerate(rungs[:-1]):
                stored = record.attrs.get(f"rung_{steps}_steps")
                if stored:
                    self.rung_values.setdefault(i, []).append(stored["values"])

    def next_job(self, job: Job, metrics: TrialMetrics) -> Job | None:
        values = objective_values(metrics, self.config)
        self.rung_values.setdefault(job.rung, []).append(values)
        job.trial.set_user_attr(f"rung_{job.steps}_steps", {"values": values, "metrics": metrics.to_dict()})
        if not non_dominated(values, self.rung_values[job.rung], self.directions):
            return None
        return Job(job.trial, job.candidate, steps=self.rungs[job.rung + 1], fidelity=job.fidelity, rung=job.rung + 1)


class SupernetPromotion(Scheduler):
    """Score with the supernet's weights, then re-run the best inherited trials stand-alone."""

    def __init__(self, config: CampaignConfig) -> None:
        super().__init__([config.fidelity.recovery_steps], "supernet")
        self.config = config

    def after_search(self, driver: Driver) -> None:
        """Re-run the best non-dominated supernet-scored trials stand-alone, as new trials (fidelity ``standalone``).

        Up to ``fidelity.promote_top`` of the feasible inherited trials no other inherited trial dominates, best
        first by the first objective, each trained like a standalone campaign's trial (``fidelity.steps``). A
        promoted trial records ``promoted_from`` (the inherited trial's number); after a resume, trials already
        promoted are not run again.
        """
        if not self.config.fidelity.promote_top:
            return
        chosen = self._chosen(driver.study)
        if not chosen:
            return
        steps = self.config.fidelity.steps
        driver.out.info(f"promoting {len(chosen)} supernet Pareto trial(s) to stand-alone training "
                        f"({steps} steps each): {', '.join(str(t.number) for t in chosen)}")
        queue = list(chosen)
        while queue or driver.pending:
            while queue and len(driver.pending) < driver.executor.max_parallel:
                source = queue.pop(0)
                driver.study.enqueue_trial(source.params, skip_if_exists=False)
                trial, candidate = driver.ask()
                trial.set_user_attr("promoted_from", source.number)
                driver.submit(Job(trial, candidate, steps=steps, fidelity="standalone"))
            for outcome in driver.executor.wait(list(driver.pending)):
                driver.teller.tell(driver.pending.pop(outcome.job), outcome)

    def _chosen(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        from optuna.trial import TrialState

        directions = [o.direction for o in self.config.objectives]
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        already = {t.user_attrs["promoted_from"] for t in finished if "promoted_from" in t.user_attrs}
        inherited = [t for t in finished if t.state == TrialState.COMPLETE and t.user_attrs.get("fidelity") == "supernet"
                     and t.user_attrs.get("feasible", True)]
        front = [t for t in inherited if non_dominated(list(t.values), [list(o.values) for o in inherited], directions)]
        front.sort(key=lambda t: t.values[0], reverse=directions[0] == "maximize")
        return [t for t in front[: self.config.fidelity.promote_top] if t.number not in already]


def make_scheduler(config: CampaignConfig, study: optuna.Study) -> Scheduler:
    """The campaign's scheduler, from ``config.fidelity`` (scorer and rungs)."""
    if config.fidelity.scorer == "supernet":
        return SupernetPromotion(config)
    rungs = config.fidelity.rungs()
    return SuccessiveHalving(rungs, study, config) if len(rungs) > 1 else Scheduler(rungs)
