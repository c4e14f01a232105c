"""Where trials run: in this process, or as Ray tasks (local ``ray.init`` or a cluster by address).

This is the only module that imports ray. An executor runs ``fn(*args)`` and hands back, for each finished
job, its result or the exception it raised, so the campaign can tell Optuna COMPLETE or FAIL. Large shared
arguments go through :meth:`Executor.share` once (Ray's object store), not once per trial.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nas.device import check_gpus_declared
from nas.errors import MissingDependencyError
from nas.search.ray_connect import restore_cluster_mode, start_local_ray, check_ray_address, connect_ray_cluster  # noqa: F401  (check_ray_address: re-exported)
from nas.search.ray_shipping import TuningShipper, land_artifacts, run_on_node, ship_folders


@dataclass
class Outcome:
    """A finished job: exactly one of ``result`` and ``error`` is set."""

    job: Any
    result: Any = None
    error: BaseException | None = None
    node: dict[str, str] | None = None  # Ray only: where it ran (node_id, node_ip), recorded on the trial


# Libraries a trial imports lazily whose import maps hundreds of MiB of address space (TVM with LLVM, ONNX
# Runtime, transformers). They are imported before the bound is set: an import that fails half-way under
# RLIMIT_AS leaves the module broken for the rest of the process (TVM then lacks ``RegisterOpAttr`` and every
# later trial fails), and a real campaign's first trial would otherwise import them under its bound.
_HEAVY_MODULES = ("torch", "tvm", "tvm.relax", "tvm.relax.frontend.torch", "tvm.s_tir.analysis", "onnxruntime",
                  "onnxruntime.quantization", "transformers")


def _import_heavy_modules() -> None:
    import importlib

    for name in _HEAVY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional backend missing here fails inside the trial, with its own message
            pass


def call_with_memory_bound(limit_mib: int | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` allowing it about ``limit_mib`` MiB of address space beyond what the process holds.

    Uses the soft ``RLIMIT_AS`` (restored afterwards, so a reused Ray worker is not left bounded). An
    allocation beyond the bound fails inside ``fn``; torch reports that as a RuntimeError, which is raised
    here as :class:`MemoryError` so the trial's failure reason says what happened.
    """
    if not limit_mib:
        return fn(*args)
    import resource

    import psutil

    _import_heavy_modules()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    bound = psutil.Process().memory_info().vms + limit_mib * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        bound = min(bound, hard)
    resource.setrlimit(resource.RLIMIT_AS, (bound, hard))
    try:
        return fn(*args)
    except MemoryError as exc:
        raise MemoryError(f"the trial needed more than its memory bound of {limit_mib} MiB") from exc
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower():
            raise MemoryError(f"the trial needed more than its memory bound of {limit_mib} MiB ({str(exc)[:100]})") from exc
        raise
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class Executor(abc.ABC):
    """Runs trial functions; subclasses set :attr:`max_parallel`.

    Contract: :meth:`wait` returns at least one finished job (blocking until one is), and every job
    submitted is returned exactly once.
    """

    max_parallel: int = 1

    def share(self, value: Any) -> Any:
        """Make ``value`` cheap to pass to many jobs; returns what to pass instead."""
        return value

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Start ``fn(*args)``; returns a job handle."""

    @abc.abstractmethod
    def wait(self, jobs: list[Any]) -> list[Outcome]:
        """Block until at least one of ``jobs`` has finished; return the finished ones."""

    def shutdown(self) -> None:
        """Release workers; a no-op by default."""


class InProcessExecutor(Executor):
    """Runs each job to completion inside :meth:`submit`: simple, debuggable, one trial at a time."""

    max_parallel = 1

    def __init__(self, memory_mib_per_trial: int | None = None) -> None:
        self._done: dict[int, Outcome] = {}
        self._next = 0
        self._memory_mib = memory_mib_per_trial

    def submit(self, fn: Callable[..., Any], *args: Any) -> int:
        job, self._next = self._next, self._next + 1
        try:
            self._done[job] = Outcome(job, result=call_with_memory_bound(self._memory_mib, fn, *args))
        except Exception as exc:  # recorded as a FAILED trial by the campaign, with its reason
            self._done[job] = Outcome(job, error=exc)
        return job

    def wait(self, jobs: list[int]) -> list[Outcome]:
        return [self._done.pop(job) for job in jobs]


class RayExecutor(Executor):
    """Runs jobs as Ray tasks, ``workers`` at a time, each declaring ``cpus_per_trial`` CPUs.

    A task whose worker process dies (OOM-killed, SIGKILL) is retried by Ray up to ``max_retries`` times;
    an exception raised by the trial itself is not retried, it is the trial's result.

    Args:
        workers: Trials run at once; ≥ 1.
        cpus_per_trial: CPUs each trial declares (and uses for torch threads); ≥ 1.
        address: A Ray cluster address (``ray://host:10001`` or ``host:6379``); None starts a local Ray.
        max_retries: Retries of a task whose worker died; ≥ 0.
        memory_mib_per_trial: Memory each trial declares to Ray's scheduler, in MiB; None declares none.
        gpus_per_trial: GPUs each trial declares (Ray's ``num_gpus``; fractions share one); 0 declares none.
            Ray then sets the trial's ``CUDA_VISIBLE_DEVICES`` to the GPUs it assigned.

    Raises:
        NasUserError: When trials declare more GPUs than the local Ray found (they could never be scheduled).
    """

    def __init__(
        self,
        workers: int = 2,
        cpus_per_trial: int = 1,
        address: str | None = None,
        max_retries: int = 2,
        memory_mib_per_trial: int | None = None,
        temp_dir: str | None = None,
        gpus_per_trial: float = 0,
    ) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is a declared dependency
            raise MissingDependencyError("the Ray executor needs ray: pip install 'ray==2.60.0'") from None
        self._ray = ray
        self.max_parallel = workers
        self._cluster = bool(address)  # a cluster by address: what a trial reads travels through the object store
        self._owns_ray = not ray.is_initialized()  # this executor connected or started it, so it disconnects
        if self._owns_ray:
            if address:
                connect_ray_cluster(ray, address)
            else:
                start_local_ray(ray, max(workers * cpus_per_trial, os.cpu_count() or 1), temp_dir)
        options: dict[str, Any] = {"num_cpus": cpus_per_trial, "max_retries": max_retries, "retry_exceptions": False}
        if memory_mib_per_trial:
            options["memory"] = memory_mib_per_trial * 1024 * 1024  # for Ray's scheduler; enforced below
        if gpus_per_trial:
            options["num_gpus"] = gpus_per_trial
            if not address:  # a cluster may add GPU nodes later (autoscaler); a local Ray never does
                check_gpus_declared(gpus_per_trial, ray.cluster_resources().get("GPU", 0), "the local Ray")
        self._options = options
        self._memory_mib = memory_mib_per_trial
        self._remote = ray.remote(run_on_node).options(**options)
        self._artifact_dir: str | None = None  # the driver's folder for artifacts that come back from other nodes
        self.tuning = TuningShipper(ray) if self._cluster else None  # tuning records to and from the nodes

    @property
    def task_options(self) -> dict[str, Any]:
        """The resources and retry policy every trial task declares (Ray's ``.options``), for checks and logs."""
        return dict(self._options)

    def share(self, value: Any) -> Any:
        """Put ``value`` in the object store once; on a cluster, with the driver-local folders it names."""
        if self._cluster:
            self._artifact_dir = getattr(value, "onnx_dir", None)
            value = ship_folders(self._ray, value)
        return self._ray.put(value)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._remote.remote(self._memory_mib, self.tuning.current() if self.tuning else None, fn, *args)

    def wait(self, jobs: list[Any]) -> list[Outcome]:
        self._ray.wait(jobs, num_returns=1)  # block until one has finished
        # Then take everything already finished, not just the first, to keep ask/tell rounds short.
        ready, _ = self._ray.wait(jobs, num_returns=len(jobs), timeout=0)
        outcomes = []
        for ref in ready:
            try:
                back = self._ray.get(ref)
                if self.tuning is not None:
                    self.tuning.absorb(back.tuning)  # also from a failed trial: what it tuned is tuned
                result = land_artifacts(back.result, back.files, self._artifact_dir) if back.error is None else None
                outcomes.append(Outcome(ref, result=result, error=back.error, node=back.node))
            except self._ray.exceptions.RayTaskError as exc:
                outcomes.append(Outcome(ref, error=exc.as_instanceof_cause()))
            except (self._ray.exceptions.WorkerCrashedError, self._ray.exceptions.RayError) as exc:
                outcomes.append(Outcome(ref, error=exc))
        return outcomes

    def shutdown(self) -> None:
        """Stop the local Ray, or disconnect from the cluster (which keeps running)."""
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        if self._owns_ray:
            restore_cluster_mode(self._ray)
