"""A real campaign end to end: study, MLflow runs, Pareto set, resume; and the executors."""

from __future__ import annotations

import json
import statistics

import optuna
import pytest
from conftest import small_campaign_dict

from nas.config import CampaignConfig
from nas.output import Output
from nas.search.campaign import load_study, run_campaign
from nas.search.executor import InProcessExecutor, RayExecutor


def _dominates(a, b, directions):
    better_or_equal = all((x >= y) if d == "maximize" else (x <= y) for x, y, d in zip(a, b, directions))
    strictly = any((x > y) if d == "maximize" else (x < y) for x, y, d in zip(a, b, directions))
    return better_or_equal and strictly


@pytest.fixture(scope="module")
def finished_campaign(small_campaign):
    """The session's shared three-trial campaign (tests/conftest.py), read-only here."""
    from nas.tracking import default_tracking_uri

    return small_campaign, default_tracking_uri(small_campaign)


def test_three_trial_campaign_writes_study_mlflow_and_pareto(finished_campaign):
    folder, tracking_uri = finished_campaign
    study, config = load_study(folder)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3

    # every trial's latency says where it came from
    for trial in complete:
        metrics = trial.user_attrs["metrics"]
        lat = metrics["latency"]["host"]
        assert lat["backend"] == "tvm" and lat["is_tuned"] is False
        # ≤ 8-bit candidates: the fp32 timing scaled to int8 by the predictor, labelled estimated (docs/latency.md)
        assert lat["is_measured"] is True or "fp32 kernels measured" in lat["note"]
        assert lat["median_ms"] > 0 and lat["repeats"] == 3
        assert metrics["reference_latency"]["onnxruntime"]["median_ms"] > 0
        assert 0.0 <= metrics["accuracy"] <= 1.0

    # the Pareto set is non-dominated, and every trial off it is dominated by one on it
    directions = [o.direction for o in config.objectives]
    pareto = json.loads((folder / "pareto.json").read_text())
    front = {p["trial"]: [p["objectives"][o.name] for o in config.objectives] for p in pareto}
    assert front
    for a in front.values():
        assert not any(_dominates(b, a, directions) for b in front.values())
    for trial in complete:
        if trial.number not in front:
            assert any(_dominates(v, trial.values, directions) for v in front.values())

    # MLflow: one parent run and three nested trial runs, with Pareto tags
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("lightnas/shared")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("lightnas.kind") == "campaign"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3
    assert {r.data.tags["lightnas.pareto"] for r in children} <= {"true", "false"}
    assert sum(r.data.tags["lightnas.pareto"] == "true" for r in children) == len(front)
    assert all("latency_ms.host" in r.data.metrics for r in children)
    assert (folder / "report.html").stat().st_size > 100_000  # plotly.js is embedded: works offline


def test_resume_of_a_finished_campaign_adds_trials_to_reach_a_larger_budget(finished_campaign, tmp_path):
    import shutil

    import yaml

    folder = tmp_path / "copy"
    shutil.copytree(finished_campaign[0], folder)  # the shared campaign stays as it is for other tests
    cfg = yaml.safe_load((folder / "campaign.yaml").read_text())
    cfg["n_trials"] = 4
    (folder / "campaign.yaml").write_text(yaml.safe_dump(cfg))
    result = run_campaign(None, folder, resume=True, out=Output(quiet=True))
    assert result.n_complete == 4


def test_failed_trial_is_recorded_with_reason_and_campaign_goes_on(tmp_path, monkeypatch):
    import nas.search.objective as objective

    real = objective.evaluate_candidate

    def flaky(candidate, ctx, seed=0):
        if seed == 0:  # the first trial
            raise RuntimeError("boom in trial")
        return real(candidate, ctx, seed)

    monkeypatch.setattr(objective, "evaluate_candidate", flaky)
    config = CampaignConfig.model_validate(small_campaign_dict(n_trials=2, name="flaky"))
    result = run_campaign(config, tmp_path / "c", out=Output(quiet=True))
    assert (result.n_complete, result.n_failed) == (1, 1)
    study, _ = load_study(tmp_path / "c")
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert failed[0].user_attrs["fail_reason"] == "RuntimeError: boom in trial"


def _short_tmp() -> str:
    # Ray's socket paths must stay under 107 bytes, which pytest's tmp_path can exceed.
    import tempfile

    return tempfile.mkdtemp(prefix="ray", dir="/tmp")


@pytest.mark.ray
def test_campaign_on_the_ray_executor_runs_two_trials_at_once(tmp_path, monkeypatch):
    config = CampaignConfig.model_validate(
        small_campaign_dict(n_trials=2, name="ray", executor={"kind": "ray", "workers": 2, "cpus_per_trial": 1})
    )
    from nas.search import campaign as campaign_mod

    monkeypatch.setattr(
        campaign_mod, "make_executor",
        lambda cfg, root, addr=None: RayExecutor(workers=2, cpus_per_trial=1, temp_dir=_short_tmp()),
    )
    result = run_campaign(config, tmp_path / "c", out=Output(quiet=True))
    assert (result.n_complete, result.n_failed) == (2, 0)
    study, _ = load_study(tmp_path / "c")
    for trial in study.get_trials():
        assert trial.user_attrs["metrics"]["latency"]["host"]["median_ms"] > 0


def _square(x):
    return x * x


def _raise(x):
    raise ValueError(f"bad {x}")


def test_in_process_executor_returns_results_and_errors():
    ex = InProcessExecutor()
    jobs = [ex.submit(_square, 3), ex.submit(_raise, 1)]
    outcomes = ex.wait(jobs)
    assert outcomes[0].result == 9 and isinstance(outcomes[1].error, ValueError)


@pytest.mark.ray
def test_ray_executor_runs_jobs_in_parallel_and_returns_errors():
    ex = RayExecutor(workers=2, cpus_per_trial=1, temp_dir=_short_tmp())
    try:
        # functions from an importable module: Ray workers cannot import pytest's test modules
        shared = ex.share([7, 9])
        jobs = [ex.submit(statistics.fmean, shared), ex.submit(statistics.fmean, [])]
        seen = []
        while jobs:
            for outcome in ex.wait(jobs):
                jobs.remove(outcome.job)
                seen.append(outcome)
        results = [o.result for o in seen if o.error is None]
        errors = [o.error for o in seen if o.error is not None]
        assert results == [8.0], errors
        assert len(errors) == 1 and isinstance(errors[0], statistics.StatisticsError), errors
    finally:
        ex.shutdown()


def test_a_repeated_candidate_reuses_the_finished_trial_instead_of_running_again(tmp_path, monkeypatch, nas_cli):
    """A one-point space: every proposal after the first repeats it, takes its values without training and does
    not count toward n_trials; after MAX_CONSECUTIVE_REPEATS of them in a row the search stops as exhausted."""
    import nas.search.driver as driver
    import nas.search.objective as objective
    from nas.search.pareto import complete_trials, front_trials

    space = tmp_path / "one_point.yaml"
    space.write_text(
        "name: one-point\n"
        "architecture:\n  n_layers: 1\n  hidden_size: 64\n  per_layer: false\n"
        "  blocks:\n    type: transformer\n    transformer: {heads: 2, ffn_size: 128}\n"
        "compression:\n  prune_rate: 0.0\n  weight_bits: 32\n"
        "distill:\n  alpha: 0.5\n  temperature: 2.0\n"
    )
    real, calls = objective.evaluate_candidate, []

    def counted(candidate, ctx, seed=0):
        calls.append(seed)
        return real(candidate, ctx, seed)

    monkeypatch.setattr(objective, "evaluate_candidate", counted)
    monkeypatch.setattr(driver, "MAX_CONSECUTIVE_REPEATS", 5)
    config = CampaignConfig.model_validate(small_campaign_dict(n_trials=3, name="repeats", space=str(space)))
    result = run_campaign(config, tmp_path / "c", out=Output(quiet=True))
    assert result.n_complete == 1
    study, config = load_study(tmp_path / "c")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(calls) == 1 and len(trials) == 6
    assert [t.user_attrs.get("repeat_of") for t in trials] == [None, 0, 0, 0, 0, 0]
    assert all(t.values == trials[0].values for t in trials)
    assert [t.number for t in complete_trials(study)] == [0]
    assert [t.number for t in front_trials(study, config)] == [0]
    status = nas_cli("status", str(tmp_path / "c"))
    text = " ".join(status.stdout.split())  # rich wraps long lines
    assert "1/3 trials finished (1 complete" in text and "5 repeated proposals of finished candidates" in text
