"""MLflow logging of trial records whose metric names carry profile and limit characters."""

from __future__ import annotations

from nas.tracking import CampaignTracker


def test_constraint_metric_names_are_accepted_by_mlflow(tmp_path):
    # Campaign metric names hold '@' (per profile) and '<=' (a limit); MLflow refuses both, which used to
    # leave every constrained trial's record stuck in the pending file.
    pending = tmp_path / "pending.jsonl"
    tracker = CampaignTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "t", pending_path=pending,
                              artifact_location=(tmp_path / "art").as_uri())
    assert tracker.start_campaign("c", params={}, artifacts={})
    tracker.log_trial(0, params={"x": 1}, tags={},
                      metrics={"accuracy": 0.8, "constraint.fits@mcu-m7": 0.25, "constraint.latency_ms@host<=20": -3.0},
                      artifacts={})
    assert tracker.n_pending == 0 and not pending.exists()
    run = tracker.client.get_run(tracker.trial_runs[0])
    assert run.data.metrics == {"accuracy": 0.8, "constraint.fits_mcu-m7": 0.25, "constraint.latency_ms_host__20": -3.0}
