"""Running MetaSchedule inside a lightnas process: its workers, and its loggers.

Two things TVM 0.27 does not do the way lightnas needs, fixed here:

- **Workers.** Every builder and runner worker imports TVM, which takes tens of seconds here
  (shared/STACK.md), so both get :data:`WORKER_TIMEOUT_S`, and the builder keeps its worker process from one
  batch to the next (:func:`_kept_pool_builder`) instead of starting one per batch.
- **Loggers.** MetaSchedule logs progress to stdout, which lightnas keeps for results, so its console handler
  is pointed at stderr; and TVM's logger set-up breaks on a handler without a name, so such handlers are set
  aside while it runs (:func:`_unnamed_handlers_set_aside`: the "second tuning in one process" fix).
"""

from __future__ import annotations

import contextlib
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

    from nas.hardware.tuning import TuningSettings

# Worker start-up (import tvm) takes 29–68 s here, beyond MetaSchedule's 30 s default (shared/STACK.md).
WORKER_TIMEOUT_S = 300.0
MS_LOGGER = "tvm.s_tir.meta_schedule"


def run_tuning(tasks: list, target: tvm.target.Target, database: Any, settings: TuningSettings,
               weights: list[float], max_trials_global: int | None = None) -> None:
    """One ``ms.tune_tasks`` run over ``tasks`` into ``database`` (records are committed as they are found)."""
    from tvm.s_tir import meta_schedule as ms

    with tempfile.TemporaryDirectory(prefix="lightnas-ms-") as work_dir:
        contexts = tune_contexts(tasks, target, work_dir)
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


def tune_contexts(tasks: list, target: tvm.target.Target, work_dir: str) -> list:
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
