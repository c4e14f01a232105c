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


def _latency(profile: str, backend: str, ms: float, measured: bool = True):
    from nas.hardware.measure import LatencyResult

    return LatencyResult(profile=profile, backend=backend, median_ms=ms, mean_ms=ms, std_ms=0.1, min_ms=ms, max_ms=ms,
                         repeats=3, number=2, threads=2, is_measured=measured, is_tuned=False, target="")


def test_a_bench_run_and_a_campaign_trial_log_the_same_latency_names(tmp_path):
    """Issue #17: campaigns logged ``latency_ms.<profile>`` and ``nas bench`` ``<profile>.latency_ms``. Both now
    name through ``nas.search.record.latency_fields``; this reads back what reached MLflow for each."""
    from mlflow.tracking import MlflowClient

    from nas.bench import BenchResult, ProfileBench
    from nas.hardware.memory import Feasibility
    from nas.search.objective import TrialMetrics
    from nas.search.record import latency_metric, mlflow_fields
    from nas.tracking import log_bench_run

    latency = {"host": _latency("host", "tvm", 5.0), "mcu-m4": _latency("mcu-m4", "predictor", 40.0, measured=False)}
    reference = {"onnxruntime": _latency("host", "onnxruntime", 2.5)}
    fits = {name: Feasibility(name, name == "host") for name in latency}
    metrics = TrialMetrics(accuracy=0.8, latency=latency, reference_latency=reference, size_bytes=1000, num_params=10,
                           sparsity=0.0, final_loss=0.5, timings_s={"train_s": 1.0}, feasibility=fits)
    bench = BenchResult(model=str(tmp_path / "m"), kind="onnx", architecture="onnx", seq_len=16, batch=1, weight_bits=32,
                        num_params=10, stored_size_bytes=1000, flops=1e6, matmul_flops=9e5, peak_activation_bytes=100,
                        profiles=[ProfileBench(n, "cpu", latency[n], fits[n]) for n in latency], reference=reference)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = CampaignTracker(uri, "t", artifact_location=(tmp_path / "art").as_uri())
    tracker.start_campaign("c", params={}, artifacts={})
    flat, tags = mlflow_fields(metrics, {}, state="COMPLETE", is_feasible=False, fidelity="standalone")
    tracker.log_trial(0, params={}, metrics=flat, tags=tags, artifacts={})
    bench_metrics, bench_tags = bench.mlflow_fields()
    client = MlflowClient(uri)
    trial_run = client.get_run(tracker.trial_runs[0]).data
    bench_run = client.get_run(log_bench_run(uri, bench.to_dict(), metrics=bench_metrics, tags=bench_tags)).data

    def latency_names(names):
        return {k for k in names if "latency" in k}

    assert latency_names(trial_run.metrics) == latency_names(bench_run.metrics) == {
        "latency_ms.host", "latency_ms.mcu-m4", "latency_std_ms.host", "latency_std_ms.mcu-m4",
        "reference_latency_ms.onnxruntime"}
    assert latency_names(trial_run.tags) == latency_names(bench_run.tags)
    for name in latency:
        assert trial_run.metrics[latency_metric(name)] == bench_run.metrics[latency_metric(name)] == latency[name].median_ms
    assert bench_run.tags["latency.mcu-m4.source"] == "estimated" and bench_run.metrics["fits.mcu-m4"] == 0.0
