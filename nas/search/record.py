"""The typed trial record: what a told trial holds, read once from a ``FrozenTrial``, and the MLflow schema.

The driver stores a trial's outcome as Optuna user attributes (``candidate``, ``metrics``, ``fidelity``,
``feasible``, ...). :class:`TrialRecord` is the one place that knows those keys, so readers ask
``record.is_repeat`` instead of ``"repeat_of" in trial.user_attrs``. :func:`mlflow_fields` is the one place
that names a trial's MLflow metrics and tags.

Example:
    >>> import optuna
    >>> study = optuna.create_study()
    >>> trial = study.ask()
    >>> trial.set_user_attr("repeat_of", 0)
    >>> study.tell(trial, 1.0)
    >>> record = TrialRecord.from_trial(study.trials[0])
    >>> record.is_repeat, record.counts_toward_budget
    (True, False)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    import optuna

    from nas.hardware.measure import LatencyResult
    from nas.search.objective import TrialMetrics


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a campaign's study, as plain typed values (never changed by later writes to the study).

    Args:
        number: The Optuna trial number.
        state: ``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING`` or ``WAITING`` (``TrialState`` names).
        values: Objective values in the campaign's objective order, or None unless COMPLETE.
        attrs: The trial's user attributes, as stored (read through the properties below).
    """

    number: int
    state: str
    values: tuple[float, ...] | None
    attrs: dict[str, Any] = field(repr=False)

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        values = tuple(trial.values) if trial.values is not None else None
        return cls(number=trial.number, state=trial.state.name, values=values, attrs=dict(trial.user_attrs))

    # -- what the trial was
    @property
    def candidate(self) -> dict[str, Any] | None:
        """The candidate's ``Candidate.to_dict()``, or None for a trial that failed before sampling."""
        return self.attrs.get("candidate")

    @property
    def identity(self) -> str | None:
        """A canonical string of the candidate: equal for trials of the same point."""
        return candidate_identity(self.candidate) if self.candidate is not None else None

    @property
    def fidelity(self) -> str:
        """What produced the numbers: ``standalone`` (trained) or ``supernet`` (inherited weights)."""
        return self.attrs.get("fidelity", "standalone")

    def steps(self, default: int) -> int:
        """Distillation steps the trial trained (``fidelity_steps``), or ``default`` (the campaign's) when unrecorded."""
        return int(self.attrs.get("fidelity_steps", default))

    @property
    def metrics_dict(self) -> dict[str, Any] | None:
        """The stored ``TrialMetrics.to_dict()``, untouched (tolerates records of older lightnas versions)."""
        return self.attrs.get("metrics")

    @cached_property
    def metrics(self) -> TrialMetrics | None:
        """The trial's :class:`~nas.search.objective.TrialMetrics`, or None when it has none (failed, pruned)."""
        from nas.search.objective import TrialMetrics

        return TrialMetrics.from_dict(self.metrics_dict) if self.metrics_dict is not None else None

    @property
    def validation_size(self) -> int | None:
        """Sentences the trial's accuracy was measured on, or None for records written before it was stored."""
        return (self.metrics_dict or {}).get("validation_size")

    @property
    def accuracy_stderr(self) -> float | None:
        """One standard error of the trial's validation accuracy (:func:`nas.metrics.accuracy_stderr`), or None."""
        from nas.metrics import accuracy_stderr

        return accuracy_stderr((self.metrics_dict or {}).get("accuracy"), self.validation_size)

    @property
    def is_feasible(self) -> bool:
        return bool(self.attrs.get("feasible", True))

    @property
    def fail_reason(self) -> str:
        """Why a FAIL trial failed (one line), or ``?`` when it recorded none."""
        return self.attrs.get("fail_reason", "?")

    @property
    def infeasible_reason(self) -> str:
        """Which constraints a complete but infeasible trial missed, or ``?`` when it recorded none."""
        return self.attrs.get("infeasible_reason", "?")

    # -- the "real trial" filters
    @property
    def is_complete(self) -> bool:
        return self.state == "COMPLETE"

    @property
    def is_repeat(self) -> bool:
        """A sampler's re-proposal of a finished candidate, told that trial's values without running."""
        return "repeat_of" in self.attrs

    @property
    def repeat_of(self) -> int | None:
        """The number of the trial whose values a repeat took, or None for a trial that ran."""
        return self.attrs.get("repeat_of")

    @property
    def is_interrupted(self) -> bool:
        """Running when its driver died; marked FAIL on resume and its parameters run again."""
        return bool(self.attrs.get("interrupted"))

    @property
    def is_duplicate(self) -> bool:
        """A proposal of a point already in flight, failed at once instead of run twice."""
        return bool(self.attrs.get("duplicate"))

    @property
    def is_promoted(self) -> bool:
        """A supernet-scored trial re-run stand-alone (``promoted_from``: the inherited trial's number)."""
        return "promoted_from" in self.attrs

    @property
    def counts_toward_budget(self) -> bool:
        """True for a trial that spent work on a new proposal: not a repeat, an interrupted run or a duplicate."""
        return not (self.is_interrupted or self.is_duplicate or self.is_repeat)


def candidate_identity(candidate: dict[str, Any]) -> str:
    """A canonical string of a candidate dict: what "the same point" means for repeats and duplicates."""
    return json.dumps(candidate, sort_keys=True)


def records(study: optuna.Study, *states: str) -> list[TrialRecord]:
    """The study's trials as records, optionally only those in ``states`` (``TrialState`` names)."""
    from optuna.trial import TrialState

    wanted = tuple(TrialState[s] for s in states) if states else None
    return [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False, states=wanted)]


def n_finished(study: optuna.Study) -> int:
    """Finished trials that count toward ``n_trials`` (COMPLETE, PRUNED or FAIL, and a real proposal)."""
    return sum(r.counts_toward_budget for r in records(study, "COMPLETE", "FAIL", "PRUNED"))


def best_accuracy(study: optuna.Study) -> float | None:
    """The best validation accuracy among COMPLETE trials (any fidelity), or None before the first."""
    accs = [r.metrics_dict["accuracy"] for r in records(study, "COMPLETE") if r.metrics_dict is not None]
    return max(accs) if accs else None


def tuning_totals(study: optuna.Study) -> dict[str, float]:
    """Tuning seconds and database hit rate over every trial of the campaign (all profiles)."""
    tune_s = tasks = hits = 0.0
    for record in records(study):
        for lat in (record.metrics_dict or {}).get("latency", {}).values():
            tune_s += lat.get("tune_s", 0.0) or 0.0
            tasks += lat.get("tune_tasks", 0) or 0
            hits += lat.get("tune_hits", 0) or 0
    return {"tune_s": round(tune_s, 1), "tasks": int(tasks), "hits": int(hits), "hit_rate": hits / tasks if tasks else 0.0}


def latency_metric(profile: str) -> str:
    """The MLflow metric name of a median latency (ms) on ``profile``: trials, ``nas bench`` and selections use it."""
    return f"latency_ms.{profile}"


def latency_fields(latency: Mapping[str, LatencyResult],
                   reference: Mapping[str, LatencyResult]) -> tuple[dict[str, float], dict[str, str]]:
    """MLflow metrics and tags of latencies by profile and host references by backend: the one definition of
    their names, shared by campaign trials (:func:`mlflow_fields`) and ``nas bench``, so one query compares both.

    Returns:
        ``(metrics, tags)``: ``latency_ms.<profile>`` and ``latency_std_ms.<profile>`` (ms), tags
        ``latency.<profile>`` (the label) and ``latency.<profile>.source`` (measured/estimated);
        ``reference_latency_ms.<backend>`` (ms) with tag ``reference_latency.<backend>``.
    """
    flat: dict[str, float] = {}
    tags: dict[str, str] = {}
    for profile, lat in latency.items():
        flat[latency_metric(profile)] = lat.median_ms
        flat[f"latency_std_ms.{profile}"] = lat.std_ms
        tags[f"latency.{profile}"] = lat.label
        tags[f"latency.{profile}.source"] = "measured" if lat.is_measured else "estimated"
    for backend, lat in reference.items():
        flat[f"reference_latency_ms.{backend}"] = lat.median_ms
        tags[f"reference_latency.{backend}"] = lat.label
    return flat, tags


def mlflow_fields(metrics: TrialMetrics, violations: dict[str, float], *, state: str, is_feasible: bool,
                  fidelity: str) -> tuple[dict[str, float], dict[str, str]]:
    """A trial's MLflow metrics and tags: the one definition of their names.

    Args:
        metrics: What the trial measured.
        violations: Constraint values by name (≤ 0 satisfied), as set on the Optuna trial.
        state: ``COMPLETE`` or ``PRUNED``.
        is_feasible: Whether every constraint holds.
        fidelity: ``standalone`` or ``supernet``.

    Returns:
        ``(metrics, tags)``: latencies as :func:`latency_fields` names them; stage times in s as
        ``time_<stage>``; ``constraint.<name>``.
    """
    lat_flat, lat_tags = latency_fields(metrics.latency, metrics.reference_latency)
    flat = {"accuracy": metrics.accuracy, "size_bytes": metrics.size_bytes, "num_params": metrics.num_params,
            "sparsity": metrics.sparsity, "final_loss": metrics.final_loss,
            **{f"time_{k}": v for k, v in metrics.timings_s.items()},
            **{f"constraint.{k}": v for k, v in violations.items()}}
    tags = {"lightnas.state": state, "lightnas.feasible": str(is_feasible).lower(), "lightnas.fidelity": fidelity}
    return {**flat, **lat_flat}, {**tags, **lat_tags}
