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

The database itself (folders, lock, records, the untunable list) is :mod:`nas.hardware.tuning_db`; running
MetaSchedule in-process (workers, loggers) is :mod:`nas.hardware.tuning_run`. This module decides what to tune.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.hardware.tuning_db import (
    database_dir,
    db_lock,
    has_record,
    read_untunable,
    target_dict,
    task_flops,
    workload_key,
    write_untunable,
)

if TYPE_CHECKING:
    import tvm

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
    folder = database_dir(target_dict(target), settings)
    with db_lock(folder):
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
    folder = database_dir(target_dict(target), settings)
    with db_lock(folder):  # taken after extraction: importing many modules takes minutes
        report, _ = _tune_missing(distinct, target, settings, folder, trials_global=trials_global, interruptible=True)
    return report


def _distinct(tasks: Iterable[Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """Tasks keyed by workload (structural hash), once each, with their summed occurrence weights."""
    unique: dict[str, Any] = {}
    weights: dict[str, float] = {}
    for task in tasks:
        key = workload_key(task)
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
    missing = {k: t for k, t in unique.items() if not has_record(database, t, target)}
    report.hits = report.n_tasks - len(missing)
    untunable = read_untunable(folder)
    chosen = sorted((k for k in missing if k not in untunable), key=lambda k: task_flops(missing[k]), reverse=True)
    if settings.max_new_tasks is not None:
        chosen = chosen[: settings.max_new_tasks]
    completed = False
    if chosen:
        from nas.hardware.tuning_run import run_tuning

        start = time.perf_counter()
        try:
            run_tuning([missing[k] for k in chosen], target, database, settings,
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
    still = [k for k in missing if not has_record(database, missing[k], target)]
    report.tuned = len(missing) - len(still)
    # A workload without arithmetic that a completed tuning run could not schedule has no design space
    # (MetaSchedule logs "Total trials: 0"); every later build would ask again, so it is set apart.
    tried = set(chosen) if completed else set()
    untunable |= {k for k in still if k in tried and task_flops(missing[k]) == 0.0}
    write_untunable(folder, untunable)
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
