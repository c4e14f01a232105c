"""Telling Optuna and MLflow how a trial ended: COMPLETE (feasible or not), PRUNED, FAIL, a repeat, a duplicate.

The driver is the only writer of the study; :class:`Teller` is the only code in it that writes a trial's
outcome, so the user attributes :class:`~nas.search.record.TrialRecord` reads are all set here.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas.search.record import mlflow_fields

if TYPE_CHECKING:
    import optuna

    from nas.candidate import Candidate
    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.executor import Outcome
    from nas.search.objective import TrialMetrics


@dataclass
class Job:
    """One trial's run at one training budget: what the driver submits and later tells.

    Args:
        trial: The asked Optuna trial (RUNNING until told).
        candidate: The sampled architecture and compression.
        steps: Training (or, for the supernet scorer, recovery) steps of this run.
        fidelity: ``standalone`` (trained) or ``supernet`` (inherited weights): also the trial's scorer.
        rung: Index of ``steps`` in the scheduler's rungs (successive halving); 0 otherwise.
    """

    trial: optuna.trial.Trial
    candidate: Candidate
    steps: int
    fidelity: str = "standalone"
    rung: int = 0


def objective_values(metrics: TrialMetrics, config: CampaignConfig) -> list[float]:
    """The campaign's objective values of ``metrics``, in the order of ``config.objectives``."""
    return [float(metrics.objective(o.metric, o.profile)) for o in config.objectives]


@dataclass
class Teller:
    """Writes finished trials to the study and to MLflow (``tracker``: a ``nas.tracking.CampaignTracker``)."""

    study: optuna.Study
    tracker: Any
    config: CampaignConfig
    out: Output

    def tell(self, job: Job, outcome: Outcome, *, pruned: bool = False) -> None:
        """Record ``job``'s finished run: FAIL when it raised, else PRUNED (``pruned``) or COMPLETE.

        ``job.fidelity`` says what produced the numbers; it is the trial's ``fidelity`` user attribute and
        its ``lightnas.fidelity`` MLflow tag.
        """
        job.trial.set_user_attr("fidelity_steps", job.steps)
        job.trial.set_user_attr("fidelity", job.fidelity)
        if outcome.error is not None:
            self._fail(job, outcome.error)
        else:
            self._measured(job, outcome.result, pruned)

    def _params(self, job: Job) -> dict[str, Any]:
        return {**job.trial.params, "candidate_key": job.candidate.key, "fidelity_steps": job.steps,
                "fidelity": job.fidelity}

    def _fail(self, job: Job, error: BaseException) -> None:
        from optuna.trial import TrialState

        trial = job.trial
        reason = f"{type(error).__name__}: {error}"
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("traceback", "".join(traceback.format_exception(error))[-4000:])
        self.study.tell(trial, state=TrialState.FAIL)
        tags = {"lightnas.fail_reason": reason[:500], "lightnas.state": "FAIL", "lightnas.fidelity": job.fidelity}
        self.tracker.log_trial(trial.number, self._params(job), {}, tags, {"candidate.json": job.candidate.to_dict()},
                               failed=True)
        self.out.warn(f"trial {trial.number} ({job.candidate.key}) failed: {reason}")

    def _violations(self, metrics: TrialMetrics) -> dict[str, float]:
        """Constraint values (≤ 0 satisfied): the campaign's constraints, and fits@<profile> for searched devices."""
        config = self.config
        violations = {c.name: c.violation(metrics.objective(c.metric, c.profile)) for c in config.constraints}
        searched = set(config.search_profiles())  # fits@<profile>: compiles for and fits each device the search targets
        violations.update({k: v for k, v in metrics.hardware_constraints().items() if k.split("@", 1)[1] in searched})
        return violations

    def _measured(self, job: Job, metrics: TrialMetrics, pruned: bool) -> None:
        from optuna.trial import TrialState

        trial = job.trial
        trial.set_user_attr("metrics", metrics.to_dict())
        violations = self._violations(metrics)
        for name, v in violations.items():
            trial.set_constraint(name, v)
        feasible = all(v <= 0 for v in violations.values())
        trial.set_user_attr("feasible", feasible)
        if not feasible:
            trial.set_user_attr("infeasible_reason", "; ".join(f"{k} violated by {v:g}" for k, v in violations.items() if v > 0))
        if pruned:
            trial.set_user_attr("pruned_reason", f"dominated at {job.steps} training steps (successive halving)")
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, objective_values(metrics, self.config))
        flat, tags = mlflow_fields(metrics, violations, state="PRUNED" if pruned else "COMPLETE",
                                   is_feasible=feasible, fidelity=job.fidelity)
        self.tracker.log_trial(trial.number, self._params(job), flat, tags,
                               {"candidate.json": job.candidate.to_dict(), "metrics.json": metrics.to_dict()},
                               files=metrics.artifacts)

    def duplicate(self, trial: optuna.trial.Trial, twin: int) -> None:
        """Fail ``trial`` at once: its candidate is already running as trial ``twin`` (a slot is not spent on it)."""
        from optuna.trial import TrialState

        trial.set_user_attr("fail_reason", f"duplicate of running trial {twin}")
        trial.set_user_attr("duplicate", True)
        self.study.tell(trial, state=TrialState.FAIL)

    def repeat(self, trial: optuna.trial.Trial, source: optuna.trial.FrozenTrial) -> None:
        """Tell ``trial`` the values of ``source``, an earlier trial of the same candidate, without running it.

        Samplers re-propose finished points (NSGA-II's crossover and mutation of a small discrete space often
        do; Optuna's FAQ suggests returning the stored value). Training it again would cost a full trial for a
        second noisy reading of the same number. Instead the sampler learns the known value; the trial does not
        count toward ``n_trials`` (the budget buys new candidates), and reports leave it out (``repeat_of``),
        so no point is listed twice.
        """
        from nas.search.optuna_private import stored_constraints_by_name

        for key in ("metrics", "feasible", "infeasible_reason", "fidelity", "fidelity_steps"):
            if key in source.user_attrs:
                trial.set_user_attr(key, source.user_attrs[key])
        trial.set_user_attr("repeat_of", source.number)
        for name, value in stored_constraints_by_name(source).items():
            trial.set_constraint(name, value)
        self.study.tell(trial, list(source.values))
