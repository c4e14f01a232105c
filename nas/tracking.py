"""MLflow tracking: one experiment per campaign, a parent run for the campaign, one nested run per trial.

The only module that imports mlflow. Runs are created through ``MlflowClient`` with explicit run ids
rather than mlflow's global "active run", so the driver can log trials in whatever order they finish.
The default store is SQLite inside the campaign folder; ``MLFLOW_TRACKING_URI`` (or ``--tracking-uri``)
points it at a server instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
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

    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": str(os.cpu_count()),
            "cpu_model": cpu_model(), "os": platform.platform()}
    for pkg in ("torch", "apache-tvm", "optuna", "ray", "mlflow", "transformers", "onnxruntime"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = "absent"
    return info


def _quiet_mlflow_logs() -> None:
    """MLflow logs store migrations ("Creating initial MLflow database tables...") at INFO on stderr: noise here."""
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cpu_model() -> str:  # /proc/cpuinfo model name: runs and calibrations record it
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class CampaignTracker:
    """Logs a campaign and its trials to MLflow, never losing a record when the server is away.

    Every logging call is an *operation* (name + JSON arguments). If MLflow fails (server down, network
    error), the operation and every later one are appended to ``pending_path`` (JSON lines) and the
    campaign goes on; each later call first retries the backlog in order, and a tracker opened on the same
    campaign (``nas resume``) replays what is left. So records arrive late, but in order and exactly once
    per successful replay.

    Args:
        tracking_uri: Where runs go (a ``sqlite:///`` path, a server URL, …).
        experiment_name: One experiment per campaign; created if absent.
        artifact_location: Where a new experiment keeps artifacts (a ``file://`` URI); None: the store's default.
        pending_path: Backlog file; None keeps the backlog in memory only.
        warn: Called with a one-line message when MLflow becomes unreachable or catches up.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, pending_path: Path | None = None, warn=None,
                 artifact_location: str | None = None) -> None:
        # MLflow's HTTP client retries 7 times with exponential backoff (minutes) by default; a campaign
        # would rather buffer and move on.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        _quiet_mlflow_logs()  # after the import: importing mlflow configures its loggers

        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        # A local store keeps artifacts next to it (MLflow's default is ./mlruns in whatever folder we run from);
        # a server decides for itself (None).
        self.artifact_location = artifact_location
        self.client: MlflowClient = MlflowClient(tracking_uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.trial_runs: dict[int, str] = {}  # trial number → run id
        self.pending_path = Path(pending_path) if pending_path else None
        self._warn = warn or (lambda msg: None)
        self._pending: list[dict[str, Any]] = []
        if self.pending_path and self.pending_path.is_file():
            self._pending = [json.loads(line) for line in self.pending_path.read_text().splitlines() if line.strip()]

    # -- public operations -------------------------------------------------------------------------------

    def start_campaign(self, run_name: str, params: dict[str, Any], artifacts: dict[str, Any], resume_run_id: str | None = None) -> str | None:
        """Open (or reopen, on resume) the campaign's parent run; its id, or None while MLflow is away."""
        self._do("start", run_name=run_name, params=params, artifacts=artifacts, resume_run_id=resume_run_id)
        return self.parent_run_id

    def log_trial(self, number: int, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str],
                  artifacts: dict[str, Any], failed: bool = False, files: dict[str, str] | None = None) -> None:
        """Log one finished trial as a nested run of the campaign.

        ``artifacts`` are JSON values; ``files`` are files (e.g. the student's ONNX) that the tracker takes
        over: each is deleted once MLflow has it (kept until then if MLflow is away).
        """
        self._do("trial", number=number, params=params, metrics=metrics, tags=tags, artifacts=artifacts, failed=failed,
                 files=files or {})

    def mark_pareto(self, numbers: set[int]) -> None:
        """Tag every logged trial with whether it is on the final Pareto front."""
        self._do("pareto", numbers=sorted(numbers))

    def finish(self, status: str = "FINISHED", summary: dict[str, Any] | None = None) -> None:
        self._do("finish", status=status, summary=summary)

    @property
    def n_pending(self) -> int:
        """Operations waiting for MLflow to come back."""
        return len(self._pending)

    def flush(self) -> bool:
        """Replay the backlog in order; True when it is empty."""
        while self._pending:
            op = self._pending[0]
            try:
                getattr(self, f"_op_{op['op']}")(**op["args"])
            except Exception as exc:  # noqa: BLE001 - any MLflow/network failure keeps the backlog
                self._save_pending()
                self._last_error = exc
                return False
            self._pending.pop(0)
            self._save_pending()
        return True

    # -- machinery ---------------------------------------------------------------------------------------

    def _do(self, op: str, **args: Any) -> None:
        record = {"op": op, "args": json.loads(json.dumps(args, default=str))}
        had_backlog = bool(self._pending)
        if had_backlog and not self.flush():
            self._pending.append(record)
            self._save_pending()
            return
        if had_backlog:
            self._warn(f"MLflow at {self.tracking_uri} is back: buffered records were sent")
        try:
            getattr(self, f"_op_{op}")(**record["args"])
        except Exception as exc:  # noqa: BLE001 - the campaign must not die with the tracking server
            self._pending.append(record)
            self._save_pending()
            where = f"; kept in {self.pending_path} and sent when it is back (or on 'nas resume')" if self.pending_path else ""
            self._warn(f"MLflow at {self.tracking_uri} failed ({type(exc).__name__}: {str(exc)[:120]}){where}")

    def _save_pending(self) -> None:
        if self.pending_path is None:
            return
        if not self._pending:
            self.pending_path.unlink(missing_ok=True)
            return
        tmp = self.pending_path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self._pending))
        tmp.replace(self.pending_path)

    def _experiment(self) -> str:
        if self.experiment_id is None:
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
                self.experiment_name, artifact_location=self.artifact_location
            )
        return self.experiment_id

    def _op_start(self, run_name: str, params: dict[str, Any], artifacts: dict[str, Any], resume_run_id: str | None) -> None:
        experiment_id = self._experiment()
        resume_run_id = resume_run_id or self.parent_run_id  # a replayed start already made the parent run
        if resume_run_id:
            self.client.update_run(resume_run_id, status="RUNNING")
            self.parent_run_id = resume_run_id
            self._index_trial_runs()
            return
        run = self.client.create_run(experiment_id, run_name=run_name, tags={"lightnas.kind": "campaign"})
        self.parent_run_id = run.info.run_id
        self._log_params(self.parent_run_id, params)
        for key, value in environment_info().items():
            self.client.set_tag(self.parent_run_id, f"env.{key}", value)
        for name, value in artifacts.items():
            self.log_json(self.parent_run_id, name, value)

    def _index_trial_runs(self) -> None:
        runs = self.client.search_runs(
            [self._experiment()], filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'", max_results=10000
        )
        for run in runs:
            number = run.data.tags.get("lightnas.trial")
            if number is not None:
                self.trial_runs[int(number)] = run.info.run_id

    def _op_trial(self, number: int, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, str],
                  artifacts: dict[str, Any], failed: bool, files: dict[str, str] | None = None) -> None:
        if self.parent_run_id is None:
            raise RuntimeError("the campaign's parent run does not exist yet")
        stale = self.trial_runs.pop(number, None)
        if stale:  # a replay after a half-written attempt, or a re-run trial: keep one run per trial
            self.client.delete_run(stale)
        run = self.client.create_run(
            self._experiment(),
            run_name=f"trial-{number}",
            tags={"mlflow.parentRunId": self.parent_run_id, "lightnas.trial": str(number), **tags},
        )
        run_id = run.info.run_id
        self.trial_runs[number] = run_id
        self._log_params(run_id, params)
        if batch := metric_batch(metrics):
            self.client.log_batch(run_id, metrics=batch)
        for name, value in artifacts.items():
            self.log_json(run_id, name, value)
        for path in (files or {}).values():
            if Path(path).is_file():
                self.client.log_artifact(run_id, path)
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
        for path in (files or {}).values():  # MLflow has them now
            Path(path).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                Path(path).parent.rmdir()

    def _op_pareto(self, numbers: list[int]) -> None:
        for number, run_id in self.trial_runs.items():
            self.client.set_tag(run_id, "lightnas.pareto", str(number in numbers).lower())

    def _op_finish(self, status: str, summary: dict[str, Any] | None) -> None:
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


def metric_batch(metrics: dict[str, float]) -> list[Any]:
    """MLflow ``Metric`` entities stamped now: NaN is not a metric, and MLflow refuses '@', '<', '=' in names
    (``constraint.fits@mcu-m7``, ``constraint.latency_ms@host<=20``), so those become '_'."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(re.sub(r"[^\w\-. /:]", "_", k), float(v), now, 0) for k, v in metrics.items() if v == v]


def campaign_environment(tracking_uri: str, run_id: str | None) -> dict[str, str]:
    """The ``env.*`` tags (versions, CPU) a campaign's parent run recorded; empty if the run is not found."""
    from mlflow.tracking import MlflowClient

    if not run_id:
        return {}
    try:
        run = MlflowClient(tracking_uri).get_run(run_id)
    except Exception:  # noqa: BLE001 - MlflowException, or a connection error while the server is down
        return {}
    return {k.removeprefix("env."): v for k, v in sorted(run.data.tags.items()) if k.startswith("env.")}


def find_trial_run(tracking_uri: str, experiment_name: str, number: int) -> str | None:
    """Run id of trial ``number`` of a campaign's experiment (the latest such run), or None."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`lightnas.trial` = '{number}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def register_selection(
    tracking_uri: str,
    experiment_name: str,
    export_dir: Path,
    *,
    model_name: str,
    parent_run_id: str | None,
    metrics: dict[str, float],
    tags: dict[str, str],
) -> dict[str, str]:
    """Log a selected model's export folder as a run and register it as a new model version.

    The run (``selection``, nested under the campaign's parent run when given) holds the whole export
    folder under the artifact path ``model``; the registered version's source is that folder.

    Args:
        tracking_uri: MLflow tracking (and registry) URI.
        experiment_name: The campaign's experiment (``lightnas/<campaign>``).
        export_dir: Folder written by :func:`nas.export.export_all`.
        model_name: Registered model name, e.g. ``lightnas-demo-host``; created if absent.
        parent_run_id: The campaign's parent run, or None.
        metrics: Metrics of the selection (accuracies, latency in ms).
        tags: Tags for the run and the model version.

    Returns:
        ``{"model_name", "version", "run_id", "source"}``.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    run_tags = {"lightnas.kind": "selection", **tags}
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=f"select-{tags.get('lightnas.profile', '')}", tags=run_tags)
    run_id = run.info.run_id
    client.log_batch(run_id, metrics=metric_batch(metrics))
    client.log_artifacts(run_id, str(export_dir), artifact_path="model")
    client.set_terminated(run_id, status="FINISHED")
    try:
        client.create_registered_model(model_name, description="lightnas selections; see each version's MODEL_CARD.md")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{run.info.artifact_uri}/model"
    version = client.create_model_version(model_name, source=source, run_id=run_id,
                                          tags={k: v[:5000] for k, v in tags.items()})
    return {"model_name": model_name, "version": str(version.version), "run_id": run_id, "source": source}


BENCH_EXPERIMENT = "bench"


def default_bench_tracking_uri(cwd: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store in ``bench/`` under ``cwd`` (the current folder)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = Path(cwd or Path.cwd()) / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / 'mlflow.db'}"


def log_bench_run(tracking_uri: str, bench: dict[str, Any], *, metrics: dict[str, float], tags: dict[str, str]) -> str:
    """Log one ``nas bench`` result as a run in the ``bench`` experiment.

    ``bench`` is ``BenchResult.to_dict()`` (params: the model and options; artifact: ``bench.json``);
    ``metrics`` and ``tags`` come named from ``BenchResult.mlflow_fields`` (this module names nothing).

    Returns:
        The run id.
    """
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    _quiet_mlflow_logs()
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(BENCH_EXPERIMENT)
    if experiment is None:
        # A SQLite store keeps artifacts next to it (MLflow's default is ./mlruns wherever we run from).
        local_db = tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else None
        location = (Path(local_db).resolve().parent / "artifacts").as_uri() if local_db else None
        experiment_id = client.create_experiment(BENCH_EXPERIMENT, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    run_tags = {"lightnas.kind": "bench", **tags, **{f"env.{k}": v for k, v in environment_info().items()}}
    run = client.create_run(experiment_id, run_name=f"bench-{Path(bench['model']).name}", tags=run_tags)
    run_id = run.info.run_id
    params = {k: str(bench[k]) for k in ("model", "kind", "architecture", "seq_len", "batch", "weight_bits")}
    params["profiles"] = ",".join(p["profile"] for p in bench["profiles"])
    client.log_batch(run_id, metrics=metric_batch(metrics), params=[Param(k, v[:6000]) for k, v in params.items()])
    client.log_text(run_id, json.dumps(bench, indent=2, default=str), "bench.json")
    client.set_terminated(run_id, status="FINISHED")
    return run_id
