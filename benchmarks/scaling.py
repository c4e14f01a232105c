"""Scaling: trials per hour with 1 and N Ray workers, Ray's per-task overhead, and the driver's ask/tell rate.

    .venv/bin/python benchmarks/scaling.py [--parts campaigns,ray,storage] [--trials 6] [--workers 2]

Three measurements, each a part that can be run alone (results of other parts already in the JSON are kept):

* ``campaigns``: the same small real campaign (the tests' settings: sample task, cached teacher, ``--steps``
  distillation steps, sequence length 32, host profile: untuned TVM build + ONNX Runtime reference per
  trial) with the in-process executor (one trial at a time, torch on every core) and with ``--workers``
  Ray workers (one CPU and one torch thread each). Trials per hour are over the trial phase (first trial
  started → last trial told, from the study's timestamps), wall time includes setup (teacher from cache,
  MLflow store, Ray start) and the report.
* ``ray``: ``ray.init`` time; the round trip of a trivial task (one at a time, and many in flight); and of a
  task that receives the campaign's TrialContext (tokenised splits + teacher logits), passed by value per
  task or ``ray.put`` once and passed by reference, for this campaign's context and for one the size of an
  SST-2 context (67,349 × 64 tokens).
* ``server`` (not in the default ``--parts``): the same driver loop for ``--server-trials`` (1,000) trials on
  SQLite-WAL and on PostgreSQL, each opened as a campaign opens it (a local server from tests/pg_server.py,
  which needs the ``postgresql`` package and ``lightnas[postgres]``): what a cluster's driver can tell.
* ``storage``: the driver's own per-trial work, exactly as ``nas.search.driver.Driver`` does it
  (``study.ask``, ``space.sample``, candidate attribute, ``_tell`` with a campaign's objectives, constraints
  and user attributes) with simulated results, for hundreds of trials: SQLite file (the default), Optuna's
  journal file and in-memory storage, NSGA-II / TPE / random; and the same with MLflow logging (SQLite
  store in the folder, one nested run per trial) as a campaign does.

Expected run time, measured on the 2-vCPU reference machine shared with other jobs (load 12–17): campaigns
18 min (6 trials in-process, then 6 on 2 Ray workers; on a quiet machine, load 1.5, the superseded
campaign_scaling.py took 99 s for both), ray 1.5 min, storage 16 min (200 trials × 9 combinations + 60 with
MLflow; about 1 s per trial on the default SQLite storage, which is disk-bound). server, niced at load 23–55
(2026-12-07): 26 min for 1,000 trials on SQLite-WAL; PostgreSQL took about 3 s per trial there, so its run was
capped with ``--server-max-s`` (each storage call is a round trip to the server's process, which waits for a
CPU on an overloaded machine).

Writes ``benchmarks/results/scaling.json`` and the block between the ``<!-- scaling:begin/end -->``
markers of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._env import environment, write_docs_block  # noqa: E402

SST2_TRAIN = 67_349  # sentences in SST-2's train split
STORAGE_NAMES = {"sqlite": "SQLite file (rollback journal; the default before WAL)", "journal": "journal file", "inmemory": "in-memory",
                 "sqlite-wal": "SQLite, WAL + synchronous=NORMAL"}


def small_campaign_dict(**overrides: Any) -> dict:
    """The tests' small campaign (tests/conftest.py), named for this benchmark."""
    from tests.conftest import small_campaign_dict as tests_campaign

    return tests_campaign(**{"name": "bench-scaling", **overrides})


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# --------------------------------------------------------------------------------------------- campaigns
def part_campaigns(args: argparse.Namespace) -> dict:
    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.campaign import load_study, run_campaign

    rows = []
    for kind, workers in (("inprocess", 1), ("ray", args.workers)):
        config = CampaignConfig.model_validate(small_campaign_dict(
            name=f"bench-scaling-{kind}", n_trials=args.trials, fidelity={"steps": args.steps},
            executor={"kind": kind, "workers": workers, "cpus_per_trial": 1}))
        load_start = _load()
        with tempfile.TemporaryDirectory(prefix="lightnas-scaling-", dir=args.tmp) as tmp:
            started = time.perf_counter()
            result = run_campaign(config, Path(tmp) / "c", out=Output(quiet=True))
            wall = time.perf_counter() - started
            study, _ = load_study(Path(tmp) / "c")
            trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
            span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
            timings = [(t.user_attrs.get("metrics") or {}).get("timings_s", {}) for t in trials]
            own = [sum(x.values()) for x in timings if x]
            timed = [x["latency_s"] for x in timings if "latency_s" in x]  # TVM build + timing, under the machine-wide lock
        row = {"executor": kind, "workers": workers, "trials": args.trials, "complete": result.n_complete,
               "wall_s": round(wall, 1), "trial_phase_s": round(span, 1), "setup_and_report_s": round(wall - span, 1),
               "trials_per_hour": round(len(trials) / span * 3600, 1),
               "trial_own_s_median": round(statistics.median(own), 1) if own else None,
               "latency_s_median": round(statistics.median(timed), 1) if timed else None,
               "load_start": load_start, "load_end": _load()}
        rows.append(row)
        print(f"campaign {kind:9s} x{workers}: {result.n_complete}/{args.trials} in {wall:.0f} s wall, trial phase "
              f"{span:.0f} s = {row['trials_per_hour']:.0f} trials/h (load {load_start}→{row['load_end']})", flush=True)
    return {"steps_per_trial": args.steps, "runs": rows,
            "speedup_trials_per_hour": round(rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"], 2),
            "speedup_wall": round(rows[0]["wall_s"] / rows[1]["wall_s"], 2)}


# --------------------------------------------------------------------------------------------------- ray
def _context(args: argparse.Namespace) -> Any:
    """This benchmark's real TrialContext (the tests' small campaign: 600 sentences × 32 tokens)."""
    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.campaign import build_context

    return build_context(CampaignConfig.model_validate(small_campaign_dict()), Output(quiet=True))


def _sst2_sized(ctx: Any) -> Any:
    """The same context with SST-2's train split size at 64 tokens (zeros; only the bytes matter)."""
    import dataclasses

    import torch

    n, length = SST2_TRAIN, 64
    train = dataclasses.replace(ctx.train, input_ids=torch.zeros(n, length, dtype=torch.long),
                                attention_mask=torch.ones(n, length, dtype=torch.long),
                                labels=torch.zeros(n, dtype=torch.long))
    return dataclasses.replace(ctx, train=train, teacher_logits=torch.zeros(n, ctx.num_labels))


def part_ray(args: argparse.Namespace) -> dict:
    import ray

    out: dict[str, Any] = {"load_start": _load()}
    ctx = _context(args)
    big = _sst2_sized(ctx)
    with tempfile.TemporaryDirectory(prefix="lightnas-ray-", dir=args.tmp) as tmp:
        started = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, _temp_dir=tmp)
        out["init_s"] = round(time.perf_counter() - started, 2)
        try:
            @ray.remote(num_cpus=1)
            def noop() -> int:
                return 0

            @ray.remote(num_cpus=1)
            def receive(context: Any) -> int:  # touches the payload, as a trial would
                return int(context.train.input_ids.shape[0])

            ray.get([noop.remote() for _ in range(2 * args.workers)])  # start the worker processes
            seq = []
            for _ in range(args.ray_tasks):
                t = time.perf_counter()
                ray.get(noop.remote())
                seq.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            ray.get([noop.remote() for _ in range(args.ray_tasks)])
            burst = time.perf_counter() - t
            out["trivial_task"] = {"n": args.ray_tasks, "round_trip_ms_median": round(statistics.median(seq), 3),
                                   "round_trip_ms_p90": round(_pct(seq, 0.9), 3),
                                   "in_flight_tasks_per_s": round(args.ray_tasks / burst, 1)}
            print(f"ray init {out['init_s']} s; trivial task {out['trivial_task']}", flush=True)
            payloads = []
            for name, value in (("this campaign (600 × 32 tokens)", ctx), (f"SST-2 sized ({SST2_TRAIN} × 64 tokens)", big)):
                size = len(pickle.dumps(value, protocol=5))
                receive_n = max(3, args.ray_payload_tasks)
                ray.get(receive.remote(value))  # warm-up
                by_value = []
                for _ in range(receive_n):
                    t = time.perf_counter()
                    ray.get(receive.remote(value))
                    by_value.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                ref = ray.put(value)
                put_ms = (time.perf_counter() - t) * 1e3
                ray.get(receive.remote(ref))  # warm-up
                by_ref = []
                for _ in range(receive_n):
                    t = time.perf_counter()
                    ray.get(receive.remote(ref))
                    by_ref.append((time.perf_counter() - t) * 1e3)
                del ref
                row = {"payload": name, "bytes": size, "n": receive_n,
                       "by_value_ms_median": round(statistics.median(by_value), 2),
                       "put_once_ms": round(put_ms, 2), "by_ref_ms_median": round(statistics.median(by_ref), 2)}
                payloads.append(row)
                print(f"payload {row}", flush=True)
            out["payloads"] = payloads
        finally:
            ray.shutdown()
    out["load_end"] = _load()
    return out


# ----------------------------------------------------------------------------------------------- storage
class _NoTracker:
    """Stands in for MLflow in the Optuna-only rows."""

    def log_trial(self, *args: Any, **kwargs: Any) -> None:
        pass


def _fake_metrics(rng: Any, candidate: Any) -> Any:
    """A TrialMetrics shaped like a real trial's (two profiles, one reference backend, a device build)."""
    from nas.hardware.measure import LatencyResult
    from nas.hardware.memory import Feasibility
    from nas.search.objective import TrialMetrics

    def lat(profile: str, backend: str, ms: float, measured: bool) -> LatencyResult:
        return LatencyResult(profile=profile, backend=backend, median_ms=ms, mean_ms=ms * 1.02, std_ms=ms * 0.05,
                             min_ms=ms * 0.95, max_ms=ms * 1.2, repeats=10 if measured else 0, number=5 if measured else 0,
                             threads=2, is_measured=measured, is_tuned=not measured, target='{"kind": "llvm", "mcpu": "znver5"}',
                             note="" if measured else "estimated by the predictor (calibrated on onnxruntime); fp32")

    host_ms = float(rng.uniform(1, 60))
    return TrialMetrics(
        accuracy=float(rng.uniform(0.5, 0.9)),
        latency={"host": lat("host", "tvm", host_ms, True), "phone-flagship": lat("phone-flagship", "predictor", host_ms / 3, False)},
        reference_latency={"onnxruntime": lat("host", "onnxruntime", host_ms / 20, True)},
        size_bytes=int(rng.integers(500_000, 20_000_000)), num_params=int(rng.integers(100_000, 5_000_000)),
        sparsity=float(rng.uniform(0, 0.6)), final_loss=float(rng.uniform(0.2, 1.0)),
        timings_s={"pretrain_s": 0.1, "train_s": 20.0, "compress_s": 2.0, "eval_s": 0.5, "latency_s": 8.0},
        feasibility={"host": Feasibility("host", True),
                     "phone-flagship": Feasibility("phone-flagship", True)},
    )


def _storage_run(storage_kind: str, sampler: str, n: int, mlflow: bool, tmp: Path, storage: Any = None,
                 max_s: float | None = None) -> dict:
    import numpy as np
    import optuna

    from nas.config import CampaignConfig
    from nas.output import Output
    from nas.search.campaign import CampaignPaths, make_sampler, make_storage
    from nas.search.executor import Outcome
    from nas.search.space import load_space
    from nas.search.tell import Job, Teller

    folder = tmp / f"{storage_kind}-{sampler}-{'mlflow' if mlflow else 'plain'}"
    folder.mkdir()
    paths = CampaignPaths(folder)
    config = CampaignConfig.model_validate({
        "name": "bench-storage", "profiles": ["host", "phone-flagship"], "sampler": sampler, "n_trials": n,
        "storage": "journal" if storage_kind == "journal" else None})
    if storage is not None:  # the server part: a storage opened as a campaign opens it
        pass
    elif storage_kind == "inmemory":
        storage = optuna.storages.InMemoryStorage()
    elif storage_kind == "sqlite-wal":  # WAL journal, fsync at checkpoints only (campaigns' default since this was measured)
        import sqlite3

        db = folder / "study.db"
        sqlite3.connect(db).execute("PRAGMA journal_mode=WAL").close()  # persistent in the file
        storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    else:  # "sqlite": the rollback journal campaigns used before WAL; "journal": Optuna's journal file
        storage = f"sqlite:///{folder / 'study.db'}" if storage_kind == "sqlite" else make_storage(config, paths)
    study = optuna.create_study(study_name=config.name, storage=storage, directions=[o.direction for o in config.objectives],
                                sampler=make_sampler(sampler, 0, constrained=True))  # as with a non-host profile
    study.set_metric_names([o.name for o in config.objectives])
    space = load_space(config.space)
    if mlflow:
        from nas.tracking import CampaignTracker

        tracker = CampaignTracker(f"sqlite:///{folder / 'mlflow.db'}", experiment_name="lightnas/bench-storage",
                                  pending_path=paths.mlflow_pending, warn=print,
                                  artifact_location=(folder / "mlartifacts").resolve().as_uri())
        tracker.start_campaign("bench-storage", params={"n_trials": n}, artifacts={"campaign.json": config.model_dump(mode="json")})
    else:
        tracker = _NoTracker()
    rng = np.random.default_rng(0)
    teller = Teller(study, tracker, config, Output(quiet=True))
    ask_ms, tell_ms = [], []
    load_start = _load()
    started = time.perf_counter()
    for _ in range(n):  # what the Driver does per trial, with the trial's work replaced by a simulated result
        if max_s is not None and time.perf_counter() - started > max_s:
            break  # out of time (--server-max-s): the row says how many trials were done
        t0 = time.perf_counter()
        trial = study.ask()
        candidate = space.sample(trial)
        trial.set_user_attr("candidate", candidate.to_dict())
        t1 = time.perf_counter()
        teller.tell(Job(trial, candidate, steps=150), Outcome(job=None, result=_fake_metrics(rng, candidate)))
        t2 = time.perf_counter()
        ask_ms.append((t1 - t0) * 1e3)
        tell_ms.append((t2 - t1) * 1e3)
        if len(ask_ms) % 100 == 0 and n >= 500:  # long runs: show progress
            print(f"  {storage_kind} {len(ask_ms)}/{n}: {time.perf_counter() - started:.0f} s (load {_load()})", flush=True)
    total = time.perf_counter() - started
    if mlflow:
        tracker.finish()
    per = [a + b for a, b in zip(ask_ms, tell_ms)]
    done = len(per)
    k = min(50, done // 2)
    extra = {"trials_planned": n, "stopped_at_time_limit_s": max_s} if done < n else {}
    return {"storage": storage_kind, "sampler": sampler, "mlflow": mlflow, "trials": done, **extra,
            "trials_per_s": round(done / total, 2), "ms_per_trial_median": round(statistics.median(per), 2),
            "ms_first": round(statistics.median(per[:k]), 2), "ms_last": round(statistics.median(per[-k:]), 2),
            "ask_ms_median": round(statistics.median(ask_ms), 2), "tell_ms_median": round(statistics.median(tell_ms), 2),
            "load_start": load_start, "load_end": _load()}


def _synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def part_storage(args: argparse.Namespace, previous: dict | None = None) -> dict:
    import warnings

    import optuna
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)  # constraints_func deprecation in Optuna 5
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lightnas-storage-", dir=args.tmp) as tmp:
        fsync = _fsync_ms(Path(tmp))
        print(f"fsync of a 4 KiB append in {tmp}: {fsync['median_ms']:.2f} ms median", flush=True)
        combos = [(s, p, False, args.storage_trials) for p in ("nsga2", "tpe") for s in ("sqlite", "journal", "inmemory")]
        combos += [("sqlite", "random", False, args.storage_trials), ("sqlite", "nsga2", True, args.mlflow_trials),
                   ("sqlite-wal", "nsga2", False, args.storage_trials), ("sqlite-wal", "tpe", False, args.storage_trials)]
        if args.storage_only:  # rerun some combinations, keep the other rows of the last run
            wanted = {tuple(c.split("/")) for c in args.storage_only.split(",")}
            combos = [c for c in combos if (c[0], c[1]) in wanted]
            rows = [r for r in (previous or {}).get("rows", []) if (r["storage"], r["sampler"]) not in wanted]
        for storage_kind, sampler, mlflow, n in combos:
            if storage_kind == "sqlite-wal":
                event.listen(Engine, "connect", _synchronous_normal)
            try:
                row = _storage_run(storage_kind, sampler, n, mlflow, Path(tmp))
            finally:
                if event.contains(Engine, "connect", _synchronous_normal):
                    event.remove(Engine, "connect", _synchronous_normal)
            rows.append(row)
            print(f"storage {storage_kind:8s} {sampler:6s} mlflow={mlflow!s:5s}: {row['trials_per_s']:.1f} trials/s, "
                  f"{row['ms_first']:.1f} → {row['ms_last']:.1f} ms/trial (load {row['load_start']}→{row['load_end']})", flush=True)
    return {"rows": rows, "fsync": fsync, "filesystem": _filesystem(Path(args.tmp or tempfile.gettempdir()))}


def part_server(args: argparse.Namespace) -> dict:
    """SQLite-WAL against PostgreSQL, each opened exactly as a campaign opens it, for ``--server-trials`` trials.

    SQLite: ``nas.search.store.sqlite_storage`` (WAL, ``synchronous=NORMAL``) in a folder on the temporary disk.
    PostgreSQL: a fresh local server (tests/pg_server.py: initdb + pg_ctl, default settings, ``fsync`` on) over
    TCP on 127.0.0.1, through ``nas.search.postgres.ReconnectingStorage``. Both run at this process's priority
    (the server inherits it), NSGA-II, no MLflow: the driver's ask/tell rate with the storage the only change.
    """
    import warnings

    import optuna

    from nas.search.postgres import server_storage
    from nas.search.store import sqlite_storage
    from tests.pg_server import PgServer, why_unavailable

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    reason = why_unavailable()
    if reason:
        raise SystemExit(f"--parts server: {reason}")
    kinds = args.server_kinds.split(",")
    rows, server, version = [], PgServer().init() if "postgres" in kinds else None, None
    try:
        if server:
            server.start()
            with server.connect() as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
        with tempfile.TemporaryDirectory(prefix="lightnas-server-", dir=args.tmp) as tmp:
            for kind in kinds:
                if kind == "postgres":
                    storage = server_storage(server.create_database("bench"), writer=True)
                else:
                    storage = sqlite_storage(Path(tmp) / "sqlite-wal.db", writer=True)
                statements = _count_statements(storage.rdb.engine if kind == "postgres" else storage.engine)
                row = _storage_run(kind, "nsga2", args.server_trials, False, Path(tmp), storage=storage, max_s=args.server_max_s)
                row["statements_per_trial"] = round((statements[0] - 2) / row["trials"], 1)  # less the study's creation
                rows.append(row)
                print(f"storage {kind:10s} nsga2: {row['trials']} trials at {row['trials_per_s']:.1f} trials/s, "
                      f"{row['ms_first']:.1f} → {row['ms_last']:.1f} ms/trial (load {row['load_start']}→{row['load_end']})", flush=True)
    finally:
        if server:
            server.remove()
    return {"rows": rows, "postgres_version": version, "nice": os.nice(0),
            "filesystem": _filesystem(Path(args.tmp or tempfile.gettempdir()))}


def _count_statements(engine: Any) -> list[int]:
    """A one-item list counting the SQL statements ``engine`` sends (each one a round trip to a server)."""
    from sqlalchemy import event

    count = [0]

    def seen(*_args: Any) -> None:
        count[0] += 1

    event.listen(engine, "before_cursor_execute", seen)
    return count


def _fsync_ms(folder: Path, n: int = 50) -> dict:
    """How long the disk under ``folder`` takes to make a small append durable (SQLite commits wait for it)."""
    times = []
    with open(folder / "fsync-probe", "ab") as fh:
        for _ in range(n):
            fh.write(b"x" * 4096)
            fh.flush()
            t = time.perf_counter()
            os.fsync(fh.fileno())
            times.append((time.perf_counter() - t) * 1e3)
    return {"n": n, "median_ms": round(statistics.median(times), 3), "p90_ms": round(_pct(times, 0.9), 3)}


def _filesystem(folder: Path) -> str:
    """The mount (type and device) holding ``folder``, from /proc/mounts."""
    try:
        best = ("", "?", "?")
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            if str(folder.resolve()).startswith(mnt) and len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
        return f"{best[1]} ({best[2]} on {best[0]})"
    except OSError:
        return "unknown"


# ------------------------------------------------------------------------------------------------ report
def projection(result: dict) -> dict:
    """Cluster projection from the measured numbers: where the driver saturates."""
    proj: dict[str, Any] = {}
    storage = result.get("storage", {}).get("rows", [])
    camp = result.get("campaigns", {}).get("runs", [])
    ray_part = result.get("ray", {})

    def row(st: str, sa: str, ml: bool) -> dict | None:
        return next((r for r in storage if r["storage"] == st and r["sampler"] == sa and r["mlflow"] == ml), None)

    plain, with_ml = row("sqlite", "nsga2", False), row("sqlite", "nsga2", True)
    tpe = row("sqlite", "tpe", False)
    if plain and with_ml:
        # MLflow's share: the MLflow run (few trials) against the same storage and sampler's first 50 trials
        mlflow_ms = max(0.0, with_ml["ms_per_trial_median"] - plain["ms_first"])
        driver_ms = plain["ms_last"] + mlflow_ms
        proj["driver_ms_per_trial_nsga2"] = round(driver_ms, 1)
        proj["mlflow_ms_per_trial"] = round(mlflow_ms, 1)
        if tpe:
            proj["driver_ms_per_trial_tpe"] = round(tpe["ms_last"] + mlflow_ms, 1)
    ray_runs = [r for r in camp if r["executor"] == "ray"]
    if ray_runs and "driver_ms_per_trial_nsga2" in proj:
        r = ray_runs[0]
        worker_trial_s = r["trial_phase_s"] * r["workers"] / r["trials"]  # seconds one worker spends per trial
        proj["worker_s_per_trial"] = round(worker_trial_s, 1)
        proj["workers_to_saturate_driver_nsga2"] = int(worker_trial_s * 1e3 / proj["driver_ms_per_trial_nsga2"])
        if "driver_ms_per_trial_tpe" in proj:
            proj["workers_to_saturate_driver_tpe"] = int(worker_trial_s * 1e3 / proj["driver_ms_per_trial_tpe"])
    for r in result.get("server", {}).get("rows", []):  # SQLite-WAL vs PostgreSQL at the end of a long study
        key = r["storage"].replace("-", "_")
        proj[f"driver_ms_per_trial_{key}_last50_of_{r['trials']}"] = r["ms_last"]
        if "worker_s_per_trial" in proj:
            proj[f"workers_to_saturate_driver_{key}"] = int(proj["worker_s_per_trial"] * 1e3 / r["ms_last"])
    big = next((p for p in ray_part.get("payloads", []) if p["payload"].startswith("SST-2")), None)
    if big:
        proj["sst2_context_mb"] = round(big["bytes"] / 2**20, 1)
        proj["sst2_context_per_task_by_ref_ms"] = big["by_ref_ms_median"]
        proj["sst2_context_per_task_by_value_ms"] = big["by_value_ms_median"]
    return proj


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [f"Measured {result['date']} on {env.get('cpu_model')} ({env.get('cpus')} CPUs, shared with other jobs), "
             f"commit {env.get('commit')}, Python {env.get('python')}, torch {env.get('torch')}, optuna {env.get('optuna')}, "
             f"ray {env.get('ray')}, mlflow {env.get('mlflow')}. Command: `{result['command']}`.", ""]
    camp = result.get("campaigns")
    if camp:
        lines += [f"**Trials per hour** (the tests' small campaign: sample task, {camp['steps_per_trial']} distillation steps, "
                  "sequence length 32, host profile: untuned TVM build and timing plus ONNX Runtime per trial):", "",
                  "| executor | workers | trials | wall time | trial phase | setup + report | trials / hour | a trial's own work (median) | of it, latency (median) | load |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in camp["runs"]:
            lines.append(f"| {'in-process' if r['executor'] == 'inprocess' else 'Ray'} | {r['workers']} | {r['complete']}/{r['trials']} | "
                         f"{r['wall_s']:.0f} s | {r['trial_phase_s']:.0f} s | {r['setup_and_report_s']:.0f} s | {r['trials_per_hour']:.0f} | "
                         f"{r['trial_own_s_median']} s | {r.get('latency_s_median')} s | {r['load_start']:.1f} → {r['load_end']:.1f} |")
        lines += ["", f"Speed-up with Ray: {camp['speedup_trials_per_hour']:.2f}× in trials per hour, {camp['speedup_wall']:.2f}× in wall time.", ""]
    ray_part = result.get("ray")
    if ray_part:
        t = ray_part["trivial_task"]
        lines += [f"**Ray overhead** (local Ray, {env.get('cpus')} CPUs; load {ray_part['load_start']:.1f} → {ray_part['load_end']:.1f}): "
                  f"`ray.init` {ray_part['init_s']:.1f} s; a trivial task's round trip {t['round_trip_ms_median']:.2f} ms median "
                  f"({t['round_trip_ms_p90']:.2f} ms p90, {t['n']} one at a time); {t['in_flight_tasks_per_s']:.0f} trivial tasks/s "
                  "with all in flight.", "",
                  "| payload (TrialContext) | pickled | by value, per task | `ray.put` once | by reference, per task |",
                  "|---|---|---|---|---|"]
        for p in ray_part["payloads"]:
            lines.append(f"| {p['payload']} | {p['bytes'] / 2**20:.1f} MiB | {p['by_value_ms_median']:.1f} ms | "
                         f"{p['put_once_ms']:.1f} ms | {p['by_ref_ms_median']:.1f} ms |")
        lines.append("")
    storage = result.get("storage")
    if storage:
        lines += ["**Driver ask/tell rate** (what `_drive` does per trial with a simulated result: `ask`, `space.sample`, "
                  "candidate attribute, `_tell` with 2 objectives, 2 profiles and the metrics attribute; ms per trial, "
                  f"median over the first and the last 50 trials; campaign folder on {storage.get('filesystem')}, where "
                  f"an fsync of a 4 KiB append takes {storage['fsync']['median_ms']:.1f} ms median, "
                  f"{storage['fsync']['p90_ms']:.1f} ms p90):", "",
                  "| storage | sampler | MLflow | trials | trials / s | ms / trial, first 50 | ms / trial, last 50 | ask ms | tell ms | load |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in storage["rows"]:
            lines.append(f"| {STORAGE_NAMES.get(r['storage'], r['storage'])} | {r['sampler']} | {'yes (SQLite)' if r['mlflow'] else 'no'} | {r['trials']} | "
                         f"{r['trials_per_s']:.1f} | {r['ms_first']:.1f} | {r['ms_last']:.1f} | {r['ask_ms_median']:.1f} | "
                         f"{r['tell_ms_median']:.1f} | {r['load_start']:.1f} → {r['load_end']:.1f} |")
        lines.append("")
    server = result.get("server")
    if server:
        lines += [f"**SQLite-WAL against PostgreSQL** (each opened as a campaign opens it; PostgreSQL {server['postgres_version']} on "
                  f"127.0.0.1 with default settings, fsync on; NSGA-II, no MLflow; nice {server['nice']}):", "",
                  "| storage | trials | trials / s | ms / trial, first 50 | ms / trial, last 50 | ask ms | tell ms | SQL statements / trial | load |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in server["rows"]:
            lines.append(f"| {r['storage']} | {r['trials']} | {r['trials_per_s']:.1f} | {r['ms_first']:.1f} | {r['ms_last']:.1f} | "
                         f"{r['ask_ms_median']:.1f} | {r['tell_ms_median']:.1f} | {r.get('statements_per_trial', '–')} | "
                         f"{r['load_start']:.1f} → {r['load_end']:.1f} |")
        lines.append("")
    proj = result.get("projection") or {}
    if proj:
        lines.append("Projection inputs (derived from the rows above): " + ", ".join(f"{k} = {v}" for k, v in proj.items()) + ".")
    return "\n".join(lines).rstrip("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="campaigns,ray,storage")
    parser.add_argument("--trials", type=int, default=6, help="campaigns: trials per campaign")
    parser.add_argument("--steps", type=int, default=40, help="campaigns: distillation steps per trial")
    parser.add_argument("--workers", type=int, default=2, help="campaigns and ray: Ray workers (CPUs)")
    parser.add_argument("--ray-tasks", type=int, default=200, help="ray: trivial tasks timed")
    parser.add_argument("--ray-payload-tasks", type=int, default=10, help="ray: tasks timed per payload and way")
    parser.add_argument("--storage-trials", type=int, default=200, help="storage: simulated trials per combination")
    parser.add_argument("--mlflow-trials", type=int, default=60, help="storage: simulated trials logged to MLflow")
    parser.add_argument("--storage-only", default="", help="storage: rerun only these STORAGE/SAMPLER pairs "
                        "(e.g. sqlite-wal/nsga2) and keep the other rows of --out")
    parser.add_argument("--server-trials", type=int, default=1000, help="server: simulated trials per storage")
    parser.add_argument("--server-kinds", default="sqlite-wal,postgres", help="server: storages compared")
    parser.add_argument("--server-max-s", type=float, default=None, help="server: stop a storage's run after this many "
                        "seconds (a loaded machine); the row records the trials done")
    parser.add_argument("--tmp", default=None, help="where temporary campaign folders go")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scaling.json")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--from-json", action="store_true", help="only rewrite --docs from --out")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()

    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    if not args.from_json:
        parts = args.parts.split(",")
        commands = result.get("commands", {})
        result.update({"date": datetime.date.today().isoformat(), "machine": platform.machine(), "environment": environment()})
        for name, fn in (("storage", part_storage), ("server", part_server), ("ray", part_ray), ("campaigns", part_campaigns)):
            if name in parts:
                result[name] = part_storage(args, result.get("storage")) if name == "storage" else fn(args)
                command = "benchmarks/scaling.py " + " ".join(sys.argv[1:])
                commands[name] = f"{commands[name]}, then {command}" if name == "storage" and args.storage_only and commands.get(name) else command
                result["commands"] = commands
                result["projection"] = projection(result)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(result, indent=1) + "\n")
        result["command"] = "; ".join(sorted(set(commands.values())))
    result["projection"] = projection(result)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    print(text)
    if not args.no_docs:
        write_docs_block(args.docs, "scaling", text, "## Scaling")


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"done in {time.time() - started:.0f} s")
