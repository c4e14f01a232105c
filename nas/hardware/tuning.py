"""MetaSchedule tuning with one database shared by every candidate and campaign of a target.

Candidates of one search space share most of their operator workloads: the fused TIR functions of a
BERT layer depend only on (sequence length, hidden, heads, FFN) and not on the weights, which stay Relax
constants outside the TIR. So each distinct workload is tuned once per target and its best schedule is
reused by every later candidate that contains it, in this campaign and the next ones. The records live
in a JSON MetaSchedule database under ``$LIGHTNAS_CACHE/tuning/<target key>/`` (default
``~/.cache/lightnas``), keyed by the resolved target (kind, triple, mcpu, attributes, cores).

A workload whose tuning fails, or that gets no valid schedule within its trial budget, is left
unscheduled (TVM's default loops) and reported by name: the :class:`TuningReport` lists it and a
``RuntimeWarning`` says so. Nothing falls back silently.

Cost on this machine (shared/STACK.md): every builder and runner worker imports TVM, which takes tens of
seconds, so both get 300 s timeouts, and a whole small BERT took 389–1116 s from an empty database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

# Worker start-up (import tvm) takes 29–68 s here, beyond MetaSchedule's 30 s default (shared/STACK.md).
WORKER_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class TuningSettings:
    """How much MetaSchedule may search for each workload not yet in the database.

    Args:
        trials_per_task: Schedules measured per new workload; ≥ 1. 64 is a useful minimum for GEMMs;
            tests use 2–4.
        trials_per_iter: Candidates proposed per search round; ≥ 1 (capped at ``trials_per_task``).
        max_new_tasks: Tune at most this many new workloads per call (the largest first, by FLOPs);
            the rest fall back to untuned loops and are reported. ``None`` tunes all.
        cache_dir: Root of the database folders; default ``$LIGHTNAS_CACHE/tuning`` or
            ``~/.cache/lightnas/tuning``.
    """

    trials_per_task: int = 64
    trials_per_iter: int = 32
    max_new_tasks: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.trials_per_task < 1 or self.trials_per_iter < 1:
            raise ValueError(f"need trials_per_task ≥ 1 and trials_per_iter ≥ 1; got {self.trials_per_task=}, {self.trials_per_iter=}")
        if self.max_new_tasks is not None and self.max_new_tasks < 0:
            raise ValueError(f"max_new_tasks must be ≥ 0 or None, got {self.max_new_tasks=}")


@dataclass
class TuningReport:
    """What one tuned build found in the database and what it had to tune.

    Attributes:
        n_tasks: Distinct workloads (fused TIR functions) of the model.
        hits: Workloads that already had a record in the database.
        tuned: Workloads tuned by this call that now have a record.
        fallback: Names of workloads left unscheduled (tuning failed, over budget, or skipped by
            ``max_new_tasks``); they run as TVM's default loops.
        untunable: Names of workloads MetaSchedule was asked to tune and found nothing to try for: no
            arithmetic (e.g. ``take``, the embedding gather, whose design space is empty in TVM 0.27).
            They run as TVM's default loops too, as any tuned build would, so they do not make a build
            "untuned"; they are listed so nothing is hidden.
        tune_s: Wall seconds spent in MetaSchedule by this call.
        database: Folder of the database used.
    """

    n_tasks: int = 0
    hits: int = 0
    tuned: int = 0
    fallback: list[str] = field(default_factory=list)
    untunable: list[str] = field(default_factory=list)
    tune_s: float = 0.0
    database: str = ""

    @property
    def hit_rate(self) -> float:
        """Share of workloads served from the database without tuning, in [0, 1]."""
        return self.hits / self.n_tasks if self.n_tasks else 1.0

    @property
    def is_fully_tuned(self) -> bool:
        return not self.fallback

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": self.hit_rate}

    def merge(self, other: TuningReport) -> None:
        """Add ``other``'s counts to this one (a campaign's running total)."""
        self.n_tasks += other.n_tasks
        self.hits += other.hits
        self.tuned += other.tuned
        self.fallback += other.fallback
        self.untunable += other.untunable
        self.tune_s += other.tune_s
        self.database = other.database or self.database


def cache_root(settings: TuningSettings | None = None) -> Path:
    """Root folder of all tuning databases."""
    if settings is not None and settings.cache_dir:
        return Path(settings.cache_dir)
    base = os.environ.get("LIGHTNAS_CACHE") or str(Path.home() / ".cache" / "lightnas")
    return Path(base) / "tuning"


def database_dir(target: dict[str, Any], settings: TuningSettings | None = None) -> Path:
    """The database folder of a resolved target dict, e.g. ``.../tuning/llvm-znver4-2c-1a2b3c4d``.

    The key holds everything that changes generated code (kind, triple, mcpu, attributes, cores): schedules
    tuned for 2 threads or without AVX-512 are not reused for another configuration.
    """
    canonical = json.dumps(target, sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    readable = "-".join(str(target.get(k)) for k in ("kind", "mtriple", "mcpu") if target.get(k))
    cores = target.get("num-cores")
    name = f"{readable}-{cores}c-{digest}" if cores else f"{readable}-{digest}"
    return cache_root(settings) / name.replace("/", "_")


@contextlib.contextmanager
def _db_lock(folder: Path):
    """One tuner per database at a time (parallel trials would tune the same workload twice)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_for_tuning(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalize and fuse a Relax module the way MetaSchedule's tasks are keyed (TVM's static-shape pipeline)."""
    import tvm
    from tvm import relax

    from nas.hardware.compile import quiet_native_stderr

    with target, quiet_native_stderr():  # legalizing each embedding lookup logs a C++ warning: noise
        return tvm.transform.Sequential(
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                relax.get_pipeline("zero"),  # LegalizeOps, AnnotateTIROpPattern, FoldConstant, FuseOps, FuseTIR
            ]
        )(mod)


def tune_and_apply(
    mod: tvm.IRModule, target: tvm.target.Target, settings: TuningSettings
) -> tuple[tvm.IRModule, TuningReport]:
    """Schedule ``mod`` from the shared database, tuning only workloads it does not hold yet.

    Args:
        mod: A Relax module as imported from torch (weights bound as constants).
        target: The resolved TVM target.
        settings: Trial budget and cache folder.

    Returns:
        The fused module with every recorded workload scheduled, and the report of hits, tuned workloads
        and fallbacks (also warned about).
    """
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    fused = prepare_for_tuning(mod, target)
    folder = database_dir(_target_dict(target), settings)
    with _db_lock(folder):
        report, database = _tune_missing(_distinct(ms.relax_integration.extract_tasks(fused, target)), target, settings, folder)
        with target, database:
            scheduled = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)
    if report.fallback:
        warnings.warn(
            f"{len(report.fallback)} of {report.n_tasks} workloads have no tuned schedule for {target.attrs.get('mcpu', '')} "
            f"({', '.join(report.fallback[:5])}{', …' if len(report.fallback) > 5 else ''}) and run as TVM's default "
            f"loops; raise trials_per_task/max_new_tasks to tune them.",
            RuntimeWarning,
            stacklevel=2,
        )
    return scheduled, report


def tune_workloads(
    mods: Iterable[tvm.IRModule], target: tvm.target.Target, settings: TuningSettings,
    *, trials_global: int | None = None,
) -> TuningReport:
    """Tune, in one MetaSchedule run, the distinct workloads of many modules that the database lacks.

    Pre-tuning a whole set of candidates (e.g. a sample of a search space) before building them costs
    less than tuning candidate by candidate: the builder and runner start once (each import of TVM takes
    tens of seconds here), and MetaSchedule's gradient task scheduler spends the budget where it gains the
    most latency, weighting each workload by how many of the modules contain it. Records are committed as
    they are found, so an interrupted run keeps what it tuned.

    Args:
        mods: Relax modules as imported from torch; read one at a time (only their TIR is kept).
        target: The resolved TVM target.
        settings: ``trials_per_task`` caps each workload; ``max_new_tasks`` keeps the largest ones.
        trials_global: Total trials over all workloads; default ``trials_per_task`` × workloads.

    Returns:
        A report over the distinct workloads: ``n_tasks``, database ``hits`` before the run, ``tuned``
        by it, and ``fallback`` (still without a record).
    """
    from tvm.s_tir import meta_schedule as ms

    distinct = _distinct(task for mod in mods for task in ms.relax_integration.extract_tasks(prepare_for_tuning(mod, target), target))
    folder = database_dir(_target_dict(target), settings)
    with _db_lock(folder):  # taken after extraction: importing many modules takes minutes
        report, _ = _tune_missing(distinct, target, settings, folder, trials_global=trials_global, interruptible=True)
    return report


def _distinct(tasks: Iterable[Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """Tasks keyed by workload (structural hash), once each, with their summed occurrence weights."""
    unique: dict[str, Any] = {}
    weights: dict[str, float] = {}
    for task in tasks:
        key = _workload_key(task)
        unique.setdefault(key, task)
        weights[key] = weights.get(key, 0.0) + float(task.weight)
    return unique, weights


def _tune_missing(
    distinct: tuple[dict[str, Any], dict[str, float]], target: tvm.target.Target, settings: TuningSettings, folder: Path,
    *, trials_global: int | None = None, interruptible: bool = False,
) -> tuple[TuningReport, Any]:
    """Tune the workloads of ``distinct`` (from :func:`_distinct`) that the database in ``folder`` lacks; the
    caller holds its lock. ``interruptible`` turns Ctrl-C into a warning (a pre-tune keeps what it committed); a build
    inside a campaign lets it through. Returns the report and the opened database.
    """
    from tvm.s_tir import meta_schedule as ms

    unique, weights = distinct
    report = TuningReport(database=str(folder), n_tasks=len(unique))
    database = ms.database.JSONDatabase(work_dir=str(folder))
    missing = {k: t for k, t in unique.items() if not _has_record(database, t, target)}
    report.hits = report.n_tasks - len(missing)
    untunable = _read_untunable(folder)
    chosen = sorted((k for k in missing if k not in untunable), key=lambda k: _task_flops(missing[k]), reverse=True)
    if settings.max_new_tasks is not None:
        chosen = chosen[: settings.max_new_tasks]
    completed = False
    if chosen:
        start = time.perf_counter()
        try:
            _tune([missing[k] for k in chosen], target, database, settings,
                  weights=[weights[k] for k in chosen], max_trials_global=trials_global)
            completed = True
        except KeyboardInterrupt:
            if not interruptible:
                raise
            warnings.warn("Tuning interrupted; the records found so far are kept.", RuntimeWarning, stacklevel=3)
        except Exception as exc:  # a MetaSchedule failure leaves those workloads unscheduled, reported below
            warnings.warn(f"MetaSchedule tuning failed ({type(exc).__name__}: {exc}); "
                          f"the workloads it was tuning stay untuned.", RuntimeWarning, stacklevel=3)
        report.tune_s = time.perf_counter() - start
    still = [k for k in missing if not _has_record(database, missing[k], target)]
    report.tuned = len(missing) - len(still)
    # A workload without arithmetic that a completed tuning run could not schedule has no design space
    # (MetaSchedule logs "Total trials: 0"); every later build would ask again, so it is set apart.
    tried = set(chosen) if completed else set()
    untunable |= {k for k in still if k in tried and _task_flops(missing[k]) == 0.0}
    _write_untunable(folder, untunable)
    report.untunable = sorted(missing[k].task_name for k in still if k in untunable)
    report.fallback = sorted(missing[k].task_name for k in still if k not in untunable)
    return report, database


class MetaScheduleTuner:
    """A tuning hook for :func:`nas.hardware.compile.compile_relax` backed by the shared database.

    Keeps the report of its last call (``last_report``) and the running total of a campaign (``total``).

    Example:
        .. code-block:: python

            tuner = MetaScheduleTuner(TuningSettings(trials_per_task=64))
            compiled = compile_relax(model, inputs, host, tuning=tuner)
            print(tuner.total.tune_s, tuner.total.hit_rate)
    """

    def __init__(self, settings: TuningSettings | None = None) -> None:
        self.settings = settings or TuningSettings()
        self.last_report: TuningReport | None = None
        self.total = TuningReport()

    def __call__(self, mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        scheduled, report = tune_and_apply(mod, target, self.settings)
        self.last_report = report
        self.total.merge(report)
        return scheduled


def _tune(tasks: list, target: tvm.target.Target, database: Any, settings: TuningSettings,
          weights: list[float], max_trials_global: int | None = None) -> None:
    from tvm.s_tir import meta_schedule as ms

    with tempfile.TemporaryDirectory(prefix="lightnas-ms-") as work_dir:
        contexts = _tune_contexts(tasks, target, work_dir)
        if not contexts:
            return
        builder = _kept_pool_builder()
        try:
            ms.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=work_dir,
                max_trials_global=max_trials_global or settings.trials_per_task * len(contexts),
                max_trials_per_task=settings.trials_per_task,
                num_trials_per_iter=min(settings.trials_per_iter, settings.trials_per_task),
                builder=builder,
                runner=ms.runner.LocalRunner(timeout_sec=WORKER_TIMEOUT_S),
                database=database,
            )
        finally:
            builder.close()


MS_LOGGER = "tvm.s_tir.meta_schedule"


def _tune_contexts(tasks: list, target: tvm.target.Target, work_dir: str) -> list:
    """MetaSchedule's tune contexts for ``tasks``, with its loggers set up under :func:`_unnamed_handlers_set_aside`."""
    from tvm.s_tir import meta_schedule as ms

    with _unnamed_handlers_set_aside():
        contexts, _ = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, work_dir, num_threads=int(target.attrs.get("num-cores", 1))
        )
    _console_to_stderr()
    return contexts


def _console_to_stderr() -> None:
    """MetaSchedule logs its progress to stdout; lightnas keeps stdout for results (``nas tune``, ``nas calibrate``)."""
    import logging
    import sys

    for handler in logging.getLogger(MS_LOGGER).handlers:
        if handler.get_name() == f"{MS_LOGGER}.console" and isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)


@contextlib.contextmanager
def _unnamed_handlers_set_aside():
    """Take handlers without a name off MetaSchedule's logger while it (re)configures its loggers; put them back after.

    Every tuning run calls TVM's ``create_loggers``, which rebuilds a ``logging.config.dictConfig`` from the
    *names* of the handlers already on the ``tvm.s_tir.meta_schedule`` logger and calls ``.format`` on each.
    After the first run that logger is non-propagating, and pytest's log capture (which attaches an unnamed
    ``LogCaptureHandler`` to every non-propagating logger at each test phase) or any user logging setup adds
    a handler whose name is ``None``: the next run then died with "'NoneType' object has no attribute
    'format'" before tuning anything (every workload fell back to default loops). This was the "second
    tuning in one process fails" bug, not the kept builder pool.
    """
    import logging

    logger = logging.getLogger(MS_LOGGER)
    unnamed = [h for h in logger.handlers if h.get_name() is None]
    for handler in unnamed:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in unnamed:
            logger.addHandler(handler)


def _kept_pool_builder(restart_every: int = 50):
    """MetaSchedule's LocalBuilder, but keeping its worker process from one batch to the next.

    TVM's LocalBuilder starts a new worker for every batch of candidates (to dodge a slow memory leak), and
    that worker's ``import tvm`` takes ~20 s here: in a pre-tune of 150 workloads that start-up, not
    building, was most of the time (1 kernel built in 20 s). This builder keeps one worker and restarts it
    every ``restart_every`` batches instead; a worker that hangs is still killed after ``WORKER_TIMEOUT_S``.
    Written by hand because TVM offers no option for it; the build and export functions are TVM's own.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder import local_builder
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class KeptPoolBuilder(PyBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.pool = None
            self.batches = 0

        def build(self, build_inputs: list) -> list:
            if self.pool is None or self.batches >= restart_every:
                if self.pool is not None:
                    self.pool.shutdown()
                self.pool = PopenPoolExecutor(max_workers=1, timeout=WORKER_TIMEOUT_S)
                self.batches = 0
            self.batches += 1
            work = [(None, None, b.mod, b.target, local_builder._serialize_params(b.params)) for b in build_inputs]
            results = []
            for outcome in self.pool.map_with_error_catching(lambda x: local_builder._worker_func(*x), work):
                if outcome.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(outcome.value, None))
                elif outcome.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"LocalBuilder: Timeout, killed after {WORKER_TIMEOUT_S} seconds"))
                else:
                    results.append(BuilderResult(None, f"LocalBuilder: An exception occurred\n{outcome.value}"))
            return results

        def close(self) -> None:
            if self.pool is not None:
                self.pool.shutdown()
                self.pool = None

    return KeptPoolBuilder()


def _has_record(database: Any, task: Any, target: tvm.target.Target) -> bool:
    mod = task.dispatched[0]
    return database.has_workload(mod) and bool(database.query_tuning_record(mod, target, task.task_name))


def _workload_key(task: Any) -> str:
    """A workload's identity across builds and processes: the structural hash of its TIR (as MetaSchedule keys it)."""
    import tvm_ffi

    return str(tvm_ffi.structural_hash(task.dispatched[0]))


def _read_untunable(folder: Path) -> set[str]:
    path = folder / "untunable.json"
    return set(json.loads(path.read_text())) if path.is_file() else set()


def _write_untunable(folder: Path, keys: set[str]) -> None:
    """Remember workloads with no design space, so later builds do not start MetaSchedule for them again."""
    if keys and keys != _read_untunable(folder):
        (folder / "untunable.json").write_text(json.dumps(sorted(keys)) + "\n")


def _task_flops(task: Any) -> float:
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # estimate_tir_flops refuses some loop nests; order them last
        return 0.0


def _target_dict(target: tvm.target.Target) -> dict[str, Any]:
    data = {"kind": target.kind.name}
    for key in ("mtriple", "mcpu", "mattr", "num-cores"):
        value = target.attrs.get(key)
        if value is not None and value != "":
            data[key] = [str(v) for v in value] if key == "mattr" else (int(value) if key == "num-cores" else str(value))
    return data
