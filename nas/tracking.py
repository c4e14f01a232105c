"""MLflow tracking: one experiment per campaign, a parent run for the campaign, one nested run per trial.

The only module that imports mlflow. Runs are created through ``MlflowClient`` with explicit run ids
rather than mlflow's global "active run", so the driver can log trials in whatever order they finish.
The default store is SQLite inside the campaign folder; ``MLFLOW_TRACKING_URI`` (or ``--tracking-uri``)
points it at a server instead.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def default_tracking_uri(campaign_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store in the campaign folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(campaign_dir).resolve() / 'mlflow.db'}"


def environment_info() -> dict[str, str]:
    """Versions and CPU of this machine, logged with every campaign."""
    from importlib.metadata import PackageNotFoundError, version

    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": str(os.cpu_count())}
    for pkg in ("torch", "apache-tvm", "optuna", "ray", "mlflow", "transformers", "onnxruntime"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = "absent"
    return info


class CampaignTracker:
    """Logs a campaign and its trials to MLflow.

    Args:
        tracking_uri: Where runs go (a ``sqlite:///`` path, a server URL, …).
        experiment_name: One experiment per campaign; created if absent.
    """

    def __init__(self, tracking_uri: str, experiment_name: str) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client: MlflowClient = MlflowClient(tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        self.experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(experiment_name)
        )
        self.parent_run_id: str | None = None
        self.trial_runs: dict[int, str] = {}  # trial number → run id

    def start_campaign(self, run_name: str, params: dict[str, Any], artifacts: dict[str, Any], resume_run_id: str | None = None) -> str:
        """Open (or reopen, on resume) the campaign's parent run and log its settings."""
        if resume_run_id:
            self.parent_run_id = resume_run_id
            self.client.update_run(resume_run_id, status="RUNNING")
            self._index_trial_runs()
            return resume_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={"lightnas.kind": "campaign"})
        self.parent_run_id = run.info.run_id
        self._log_params(self.parent_run_id, params)
        for key, value in environment_info().items():
            self.client.set_tag(self.parent_run_id, f"env.{key}", value)
        for name, value in artifacts.items():
            self.log_json(self.parent_run_id, name, value)
        return self.parent_run_id

    def _index_trial_runs(self) -> None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'", max_results=10000
        )
        for run in runs:
            number = run.data.tags.get("lightnas.trial")
            if number is not None:
                self.trial_runs[int(number)] = run.info.run_id

    def log_trial(
        self,
        number: int,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        artifacts: dict[str, Any],
        failed: bool = False,
    ) -> str:
        """Log one finished trial as a nested run; returns its run id."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number}",
            tags={"mlflow.parentRunId": self.parent_run_id, "lightnas.trial": str(number), **tags},
        )
        run_id = run.info.run_id
        self._log_params(run_id, params)
        from mlflow.entities import Metric

        import time

        now = int(time.time() * 1000)
        finite = {k: float(v) for k, v in metrics.items() if v == v}  # NaN is not a metric
        if finite:
            self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in finite.items()])
        for name, value in artifacts.items():
            self.log_json(run_id, name, value)
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
        self.trial_runs[number] = run_id
        return run_id

    def mark_pareto(self, numbers: set[int]) -> None:
        """Tag every logged trial with whether it is on the final Pareto front."""
        for number, run_id in self.trial_runs.items():
            self.client.set_tag(run_id, "lightnas.pareto", str(number in numbers).lower())

    def finish(self, status: str = "FINISHED", summary: dict[str, Any] | None = None) -> None:
        if self.parent_run_id is None:
            return
        if summary:
            self.log_json(self.parent_run_id, "pareto.json", summary)
        self.client.set_terminated(self.parent_run_id, status=status)

    def log_json(self, run_id: str, name: str, value: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(value, indent=2, default=str))
            self.client.log_artifact(run_id, str(path))

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # MLflow caps a param value at 6000 characters; longer values belong in artifacts.
        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params per call
            self.client.log_batch(run_id, params=items[i : i + 100])
