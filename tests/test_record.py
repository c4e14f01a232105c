"""The typed trial record: metrics survive the study's JSON, the driver's tells read back as the right record,
the MLflow names, and the promotion rule agrees with the definition of dominance. No training: seconds."""

from __future__ import annotations

import json
import random

import optuna
import pytest
from conftest import small_campaign_dict

from nas.config import CampaignConfig
from nas.hardware.measure import LatencyResult
from nas.hardware.memory import Feasibility
from nas.output import Output
from nas.search.executor import Outcome
from nas.search.objective import TrialMetrics
from nas.search.record import TrialRecord, mlflow_fields, n_finished, records
from nas.search.schedule import non_dominated
from nas.search.space import load_space
from nas.search.tell import Job, Teller


def _latency(profile: str, backend: str, ms: float) -> LatencyResult:
    return LatencyResult(profile=profile, backend=backend, median_ms=ms, mean_ms=ms, std_ms=0.1, min_ms=ms, max_ms=ms,
                         repeats=3, number=2, threads=2, is_measured=backend != "predictor", is_tuned=False, target="")


def _metrics(accuracy: float = 0.8, ms: float = 5.0) -> TrialMetrics:
    return TrialMetrics(
        accuracy=accuracy, latency={"host": _latency("host", "tvm", ms), "mcu-m4": _latency("mcu-m4", "predictor", 40.0)},
        reference_latency={"onnxruntime": _latency("host", "onnxruntime", ms / 2)}, size_bytes=123_456, num_params=30_000,
        sparsity=0.25, final_loss=0.5, timings_s={"train_s": 1.5},
        feasibility={"mcu-m4": Feasibility("mcu-m4", False, reasons=("too big",), flash_bytes=2_000_000,
                                           flash_limit_bytes=1_000_000, build={"code_bytes": 10})},
    )


class RecordingTracker:
    """The tracker seam (``CampaignTracker.log_trial``), recording what would go to MLflow."""

    def __init__(self) -> None:
        self.logged: list[dict] = []

    def log_trial(self, number, params, metrics, tags, artifacts, files=None, failed=False):
        self.logged.append({"number": number, "metrics": metrics, "tags": tags, "failed": failed})


def test_trial_metrics_survive_the_studys_json():
    metrics = _metrics()
    again = TrialMetrics.from_dict(json.loads(json.dumps(metrics.to_dict())))
    assert again == metrics
    assert again.feasibility["mcu-m4"].reasons == ("too big",) and again.latency["host"].median_ms == 5.0
    assert TrialMetrics.from_dict({**metrics.to_dict(), "added_by_a_newer_version": 1}) == metrics


@pytest.fixture()
def told_study():
    """A study the driver's Teller wrote: a COMPLETE trial, a FAIL, a duplicate and a repeat of the first."""
    config = CampaignConfig.model_validate(small_campaign_dict(constraints=[{"metric": "size_bytes", "max": 1000.0}]))
    study = optuna.create_study(directions=[o.direction for o in config.objectives])
    space, tracker = load_space(config.space), RecordingTracker()
    teller = Teller(study, tracker, config, Output(quiet=True))
    jobs = []
    for _ in range(4):
        trial = study.ask()
        candidate = space.sample(trial)
        trial.set_user_attr("candidate", candidate.to_dict())
        jobs.append(Job(trial, candidate, steps=40))
    teller.tell(jobs[0], Outcome(job=None, result=_metrics()))
    teller.tell(jobs[1], Outcome(job=None, error=RuntimeError("boom")))
    teller.duplicate(jobs[2].trial, twin=0)
    first = study.get_trials(deepcopy=False)[0]
    teller.repeat(jobs[3].trial, first)
    return study, config, tracker


def test_the_tells_read_back_as_records_with_the_real_trial_filters(told_study):
    study, _, _ = told_study
    complete, failed, duplicate, repeat = records(study)
    assert complete.is_complete and complete.counts_toward_budget and not complete.is_feasible  # 123,456 B > 1,000 B
    assert complete.metrics == _metrics() and complete.fidelity == "standalone"
    assert failed.state == "FAIL" and failed.counts_toward_budget and failed.metrics is None
    assert duplicate.is_duplicate and not duplicate.counts_toward_budget
    assert repeat.is_repeat and repeat.values == complete.values and repeat.attrs["repeat_of"] == 0
    assert not repeat.is_feasible  # the source's feasibility and constraint values travel with its values
    assert study.trials[3].system_attrs == study.trials[0].system_attrs
    assert n_finished(study) == 2


def test_mlflow_names_are_one_schema(told_study):
    _, _, tracker = told_study
    complete, failed = tracker.logged
    assert failed["failed"] and failed["tags"]["lightnas.state"] == "FAIL" and failed["metrics"] == {}
    flat, tags = mlflow_fields(_metrics(), {"size_bytes<=1000": 122456.0}, state="COMPLETE", is_feasible=False,
                               fidelity="standalone")
    assert complete["metrics"] == flat and complete["tags"] == tags
    assert flat["latency_ms.host"] == 5.0 and flat["latency_ms.mcu-m4"] == 40.0
    assert flat["reference_latency_ms.onnxruntime"] == 2.5 and flat["time_train_s"] == 1.5
    assert tags["latency.mcu-m4.source"] == "estimated" and tags["lightnas.feasible"] == "false"


def _dominates(a, b, directions):
    better_or_equal = all((x >= y) if d == "maximize" else (x <= y) for x, y, d in zip(a, b, directions))
    return better_or_equal and any((x > y) if d == "maximize" else (x < y) for x, y, d in zip(a, b, directions))


def test_the_promotion_rule_is_the_definition_of_dominance():
    rng = random.Random(0)
    directions = ["maximize", "minimize", "minimize"]
    for _ in range(300):  # small integer grids: many ties, equal points and dominated ones
        points = [[rng.randint(0, 3) for _ in directions] for _ in range(rng.randint(1, 6))]
        values, others = points[0], points[1:]
        assert non_dominated(values, others, directions) == (not any(_dominates(o, values, directions) for o in others))
    assert non_dominated([0.8, 2.0, 1.0], [[0.8, 2.0, 1.0]], directions)  # an equal point does not dominate


def test_a_record_is_a_frozen_copy():
    study = optuna.create_study()
    trial = study.ask()
    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    record = TrialRecord.from_trial(study.trials[0])
    assert record.is_interrupted and not record.counts_toward_budget and record.values is None
    with pytest.raises(AttributeError):
        record.state = "COMPLETE"


def test_status_counts_real_trials_through_the_record(told_study):
    """``nas status`` reads the same predicates: the repeat is not counted, the duplicate is a re-run, not a failure."""
    from nas.commands.status import study_status

    study, config, _ = told_study
    status = study_status(study, config)
    assert status.states["COMPLETE"] == 1 and status.states["FAIL"] == 2  # the real failure and the duplicate
    assert status.repeats == 1 and status.retried == 1
    assert [f["trial"] for f in status.failures] == [1] and "boom" in status.failures[0]["reason"]
    assert [f["trial"] for f in status.infeasible] == [0]  # 123,456 B > 1,000 B; the repeat of it is left out
    assert status.n_done == 2 and status.to_json()["n_trials"] == config.n_trials
