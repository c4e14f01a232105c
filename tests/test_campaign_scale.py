"""Campaigns under stress: kill -9 and resume, failing and out-of-memory trials, a real MLflow server (and
one that goes away), successive halving and constraints."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import REPO, small_campaign_dict
from conftest import run_nas as _nas

from nas.config import CampaignConfig, FidelityConfig
from nas.output import Output
from nas.search.campaign import load_study, run_campaign
from nas.search.schedule import non_dominated


def _write_config(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump(small_campaign_dict(**overrides)))
    return path


def _complete(folder: Path) -> dict[int, list[float]]:
    study, _ = load_study(folder)
    return {t.number: t.values for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}


@pytest.mark.fault
def test_sigkill_of_the_driver_then_resume_keeps_every_completed_trial(tmp_path):
    config = _write_config(tmp_path / "c.yaml", name="killed", n_trials=6)
    folder = tmp_path / "camp"
    driver = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "search", "--config", str(config), "--out", str(folder), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 400
        before: dict[int, list[float]] = {}
        last_error = None
        while time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.5)
            if (folder / "study.db").exists():
                try:
                    before = _complete(folder)
                except Exception as exc:  # the driver may be creating the study right now
                    last_error = exc
                    continue
                if before:
                    break
        assert driver.poll() is None, f"the campaign finished before it could be killed (last poll error: {last_error!r})"
        assert before, "no trial completed within the deadline"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()

    before = _complete(folder)  # what the study holds at the moment of death
    proc = _nas("resume", str(folder), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = _complete(folder)
    for number, values in before.items():
        assert after[number] == values, "a completed trial changed or was lost"
    assert len(after) == 6
    study, _ = load_study(folder)
    interrupted = [t for t in study.get_trials() if t.user_attrs.get("interrupted")]
    assert len(interrupted) <= 1  # the in-process executor runs one trial at a time
    status = _nas("status", str(folder))
    assert status.returncode == 0 and "6/6 trials finished" in status.stdout, status.stdout


def _eat_memory(candidate, ctx, seed=0):
    """Allocates 2 GiB: fine for this machine, fatal under a 1,536 MiB trial bound."""
    import torch

    block = torch.ones(2 * 1024**3 // 4, dtype=torch.float32)
    return block.sum()


@pytest.mark.fault
def test_raising_and_out_of_memory_trials_fail_with_reasons_and_the_campaign_finishes(tmp_path, monkeypatch):
    import nas.search.objective as objective

    real = objective.evaluate_candidate

    def misbehaving(candidate, ctx, seed=0):
        if seed == 0:
            raise RuntimeError("boom in trial")
        if seed == 1:
            return _eat_memory(candidate, ctx, seed)
        return real(candidate, ctx, seed)

    monkeypatch.setattr(objective, "evaluate_candidate", misbehaving)
    config = CampaignConfig.model_validate(
        small_campaign_dict(n_trials=3, name="faulty", executor={"memory_mib_per_trial": 1536})
    )
    result = run_campaign(config, tmp_path / "c", out=Output(quiet=True))
    assert (result.n_complete, result.n_failed) == (1, 2)

    status = _nas("status", str(tmp_path / "c"))
    assert status.returncode == 0
    assert "trial 0 FAILED: RuntimeError: boom in trial" in status.stdout
    assert "trial 1 FAILED: MemoryError: the trial needed more than its memory bound of 1536 MiB" in status.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(result.tracking_uri)
    experiment = client.get_experiment_by_name("lightnas/faulty")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`lightnas.state` = 'FAIL'")
    reasons = sorted(r.data.tags["lightnas.fail_reason"] for r in runs)
    assert reasons[0].startswith("MemoryError") and reasons[1] == "RuntimeError: boom in trial"
    assert all(r.info.status == "FAILED" for r in runs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_mlflow_server(port: int, data: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_DATA": str(data), "MLFLOW_BIN": str(Path(sys.executable).parent / "mlflow")}
    server = subprocess.Popen(
        ["bash", str(REPO / "mlflow_server" / "start.sh"), str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    _stop(server)
    raise AssertionError("mlflow server did not start within 120 s")


def _stop(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.fault
def test_campaign_against_a_real_mlflow_server_and_one_that_is_down(tmp_path):
    from mlflow.tracking import MlflowClient

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"

    # 1. the server is down for the whole campaign: it finishes, and keeps the records on disk
    config = CampaignConfig.model_validate(small_campaign_dict(n_trials=2, name="served", log_onnx=True))
    result = run_campaign(config, tmp_path / "c", tracking_uri=uri, out=Output(quiet=True))
    assert result.n_complete == 2
    pending = (tmp_path / "c" / "mlflow-pending.jsonl").read_text().splitlines()
    assert [json.loads(line)["op"] for line in pending] == ["start", "trial", "trial", "pareto", "finish"]

    # 2. the server comes up: resuming sends the backlog, then runs one more trial against the server
    server = _start_mlflow_server(port, tmp_path / "mlflow-data")
    try:
        cfg = yaml.safe_load((tmp_path / "c" / "campaign.yaml").read_text())
        cfg["n_trials"] = 3
        (tmp_path / "c" / "campaign.yaml").write_text(yaml.safe_dump(cfg))
        result = run_campaign(None, tmp_path / "c", resume=True, tracking_uri=uri, out=Output(quiet=True))
        assert result.n_complete == 3
        assert not (tmp_path / "c" / "mlflow-pending.jsonl").exists()

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("lightnas/served")
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("lightnas.kind") == "campaign"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
        assert len(parents) == 1
        assert sorted(int(r.data.tags["lightnas.trial"]) for r in children) == [0, 1, 2]
        assert all("latency_ms.host" in r.data.metrics for r in children)
        assert parents[0].data.tags["env.torch"].startswith("2.13.0")
        artifacts = {a.path for a in client.list_artifacts(children[0].info.run_id)}
        assert {"candidate.json", "metrics.json", "model.onnx"} <= artifacts  # buffered while the server was down
        import onnx

        local = client.download_artifacts(children[0].info.run_id, "model.onnx", str(tmp_path / "dl"))
        onnx.checker.check_model(local)
    finally:
        _stop(server)


def test_rungs_of_successive_halving():
    assert FidelityConfig(steps=150).rungs() == [150]
    assert FidelityConfig(steps=150, min_steps=10, reduction_factor=3).rungs() == [10, 30, 90, 150]
    with pytest.raises(ValueError):
        FidelityConfig(steps=50, min_steps=50)
    directions = ["maximize", "minimize"]
    assert non_dominated([0.8, 2.0], [[0.7, 3.0], [0.9, 5.0]], directions)
    assert not non_dominated([0.8, 2.0], [[0.85, 1.5]], directions)


def test_successive_halving_and_constraints(tmp_path):
    config = CampaignConfig.model_validate(
        small_campaign_dict(
            n_trials=4, name="halving", fidelity={"steps": 40, "min_steps": 10, "reduction_factor": 4},
            storage="journal",  # Optuna's journal file, the cluster-friendly storage
            constraints=[{"metric": "size_bytes", "max": 1.0}],  # nothing fits in one byte: all infeasible
        )
    )
    result = run_campaign(config, tmp_path / "c", out=Output(quiet=True))
    assert result.n_complete + result.n_pruned == 4 and result.n_complete >= 1
    assert (tmp_path / "c" / "study.journal").is_file() and not (tmp_path / "c" / "study.db").exists()
    study, _ = load_study(tmp_path / "c")
    for trial in study.get_trials():
        assert "rung_10_steps" in trial.user_attrs  # every trial ran the cheap rung first
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.user_attrs["fidelity_steps"] == 40
            assert trial.user_attrs["feasible"] is False and "size_bytes<=1 violated" in trial.user_attrs["infeasible_reason"]
        else:
            assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["fidelity_steps"] == 10
    assert result.pareto == []  # infeasible trials are kept in the study but never on the Pareto set
    assert study.best_trials == []
