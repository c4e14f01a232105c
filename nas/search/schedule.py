"""Scheduler strategies: how much training each proposal gets, and what happens after the search.

* :class:`Scheduler` (plain): one run per trial at ``fidelity.steps``.
* :class:`SuccessiveHalving` (``fidelity.min_steps``): a trial runs at the lowest rung first and moves up a
  rung only while no other result at that rung dominates it; otherwise it is told PRUNED.
* :class:`SupernetPromotion` (``fidelity.scorer: supernet``): one run per trial with inherited weights and
  ``fidelity.recovery_steps``, then ``promote_top`` of them, spread over the latency range (the most accurate
  of each latency bin, :func:`spread_promotions`), are re-run stand-alone.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from nas.search.record import TrialRecord, records
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
    """Score with the supernet's weights, then re-run a spread of the best inherited trials stand-alone."""

    def __init__(self, config: CampaignConfig) -> None:
        super().__init__([config.fidelity.recovery_steps], "supernet")
        self.config = config

    def after_search(self, driver: Driver) -> None:
        """Re-run up to ``fidelity.promote_top`` feasible supernet-scored trials stand-alone, as new trials.

        Which ones: :func:`spread_promotions` (the most accurate of each latency bin, see there), each
        trained like a standalone campaign's trial (``fidelity.steps``, fidelity ``standalone``). A promoted
        trial records ``promoted_from`` (the inherited trial's number); after a resume, trials already
        promoted are not run again.
        """
        if not self.config.fidelity.promote_top:
            return
        chosen = self.promotions(driver.study)
        if not chosen:
            return
        steps = self.config.fidelity.steps
        driver.out.info(f"promoting {len(chosen)} supernet-scored trial(s), spread over the latency range, to "
                        f"stand-alone training ({steps} steps each): {', '.join(str(t.number) for t in chosen)}")
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

    def promotions(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The inherited trials to promote, chosen over all feasible inherited trials (so a resume chooses alike)."""
        from optuna.trial import TrialState

        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        already = {t.user_attrs["promoted_from"] for t in finished if "promoted_from" in t.user_attrs}
        inherited = [t for t in finished if t.state == TrialState.COMPLETE and t.user_attrs.get("fidelity") == "supernet"
                     and t.user_attrs.get("feasible", True) and not TrialRecord.from_trial(t).is_repeat]
        profile = promotion_profile(self.config)
        points = [(t.number, *_accuracy_latency(t, profile)) for t in inherited]
        picked = spread_promotions([p for p in points if p[2] is not None], self.config.fidelity.promote_top)
        by_number = {t.number: t for t in inherited}
        return [by_number[n] for n in picked if n not in already]


def promotion_profile(config: CampaignConfig) -> str:
    """The profile whose latency promotions are spread over: the first latency objective's, else the first
    latency constraint's (a budget-targeted campaign), else the campaign's first profile."""
    for item in [*config.objectives, *config.constraints]:
        if item.metric == "latency_ms":
            return item.profile
    return config.profiles[0]


def _accuracy_latency(trial: optuna.trial.FrozenTrial, profile: str) -> tuple[float, float | None]:
    metrics = trial.user_attrs.get("metrics") or {}
    latency = (metrics.get("latency") or {}).get(profile) or {}
    return float(metrics.get("accuracy", 0.0)), latency.get("median_ms")


def spread_promotions(points: list[tuple[int, float, float]], k: int) -> list[int]:
    """Up to ``k`` of ``points`` (``(key, accuracy, latency_ms)``) to promote: the most accurate per latency bin.

    Why not the ``k`` most accurate, or the accuracy-latency front: supernet-scored accuracies of the top
    candidates tie within their noise, and the fastest of a tie dominates the rest, so both land on one
    width and the stand-alone front never sees the others (the SST-2 campaign's front collapsed onto
    width-64 students). Here the latency range of ``points`` is cut into ``k`` log-spaced bins and each bin
    gives its most accurate point (ties: the faster), the best the supernet sees at that cost; stand-alone
    training then decides. Slots of empty bins go to the rest by non-dominated layer (accuracy up, latency
    down), then accuracy. Returned most accurate first.
    """
    if k <= 0 or not points:
        return []
    logs = {p[0]: math.log(max(p[2], 1e-12)) for p in points}
    low, span = min(logs.values()), max(logs.values()) - min(logs.values())
    best: dict[int, tuple[int, float, float]] = {}
    for p in points:
        b = 0 if span <= 0 else min(k - 1, int(k * (logs[p[0]] - low) / span))
        if b not in best or (p[1], -p[2]) > (best[b][1], -best[b][2]):
            best[b] = p
    picked = sorted(best.values(), key=lambda p: (-p[1], p[2]))
    rank = {p[0]: i for i, layer in enumerate(_layers(points)) for p in layer}
    rest = sorted((p for p in points if p not in picked), key=lambda p: (rank[p[0]], -p[1], p[2]))
    return [p[0] for p in (picked + rest)[:k]]


def _layers(points: list[tuple[int, float, float]]) -> list[list[tuple[int, float, float]]]:
    """Non-dominated sorting of ``points`` by (accuracy maximised, latency minimised): front first."""
    import numpy as np

    from nas.search.optuna_private import is_pareto_front

    left, layers = list(points), []
    while left:
        mask = is_pareto_front(np.array([[-p[1], p[2]] for p in left], dtype=float))
        layers.append([p for p, keep in zip(left, mask) if keep])
        left = [p for p, keep in zip(left, mask) if not keep]
    return layers


def make_scheduler(config: CampaignConfig, study: optuna.Study) -> Scheduler:
    """The campaign's scheduler, from ``config.fidelity`` (scorer and rungs)."""
    if config.fidelity.scorer == "supernet":
        return SupernetPromotion(config)
    rungs = config.fidelity.rungs()
    return SuccessiveHalving(rungs, study, config) if len(rungs) > 1 else Scheduler(rungs)
