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

from nas.errors import MissingDependencyError, NasUserError


@dataclass
class Outcome:
    """A finished job: exactly one of ``result`` and ``error`` is set."""

    job: Any
    result: Any = None
    error: BaseException | None = None


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


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one sentence, when nothing listens at a Ray address (``host:port`` or ``ray://host:port``)."""
    import socket

    if address == "auto":
        return
    hostport = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise NasUserError(f"--ray-address {address}: expected HOST:PORT (e.g. 127.0.0.1:6379) or ray://HOST:10001.")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise NasUserError(
            f"--ray-address {address}: no Ray cluster answered ({exc.strerror or exc}); start one with "
            "'ray start --head' or drop --ray-address to run locally."
        ) from None


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
    """

    def __init__(
        self,
        workers: int = 2,
        cpus_per_trial: int = 1,
        address: str | None = None,
        max_retries: int = 2,
        memory_mib_per_trial: int | None = None,
        temp_dir: str | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is a declared dependency
            raise MissingDependencyError("the Ray executor needs ray: pip install 'ray==2.60.0'") from None
        self._ray = ray
        self.max_parallel = workers
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                check_ray_address(address)  # ray.init would otherwise retry a dead address for minutes
                kwargs["address"] = address
            else:
                # Measured here: ~4-5 s and ~0.4 GB without the dashboard (../shared/STACK.md).
                kwargs["num_cpus"] = max(workers * cpus_per_trial, os.cpu_count() or 1)
                kwargs["_temp_dir"] = temp_dir
                kwargs["_node_ip_address"] = _bind_loopback_only(ray)
            try:
                ray.init(**kwargs)
            except (ConnectionError, TimeoutError, RuntimeError) as exc:
                if not address:
                    _restore_cluster_mode(ray)
                if address:
                    raise NasUserError(
                        f"--ray-address {address}: no Ray cluster answered ({exc}); start one with "
                        "'ray start --head' or drop --ray-address to run locally."
                    ) from None
                raise
        self._owns_ray = not address
        options: dict[str, Any] = {"num_cpus": cpus_per_trial, "max_retries": max_retries, "retry_exceptions": False}
        if memory_mib_per_trial:
            options["memory"] = memory_mib_per_trial * 1024 * 1024  # for Ray's scheduler; enforced below
        self._options = options
        self._memory_mib = memory_mib_per_trial
        self._remote = ray.remote(call_with_memory_bound).options(**options)

    def share(self, value: Any) -> Any:
        return self._ray.put(value)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._remote.remote(self._memory_mib, fn, *args)

    def wait(self, jobs: list[Any]) -> list[Outcome]:
        self._ray.wait(jobs, num_returns=1)  # block until one has finished
        # Then take everything already finished, not just the first, to keep ask/tell rounds short.
        ready, _ = self._ray.wait(jobs, num_returns=len(jobs), timeout=0)
        outcomes = []
        for ref in ready:
            try:
                outcomes.append(Outcome(ref, result=self._ray.get(ref)))
            except self._ray.exceptions.RayTaskError as exc:
                outcomes.append(Outcome(ref, error=exc.as_instanceof_cause()))
            except (self._ray.exceptions.WorkerCrashedError, self._ray.exceptions.RayError) as exc:
                outcomes.append(Outcome(ref, error=exc))
        return outcomes

    def shutdown(self) -> None:
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        if self._owns_ray:
            _restore_cluster_mode(self._ray)


# Ray 2.60 resolves a node IP of 127.0.0.1 to the machine's external address (services.resolve_ip_for_localhost)
# unless this variable is 0, the setting Ray itself uses on macOS and Windows to keep a local Ray on loopback.
# With the node IP on loopback, GCS, raylet, workers, the driver's core worker and the runtime-env agent all
# bind 127.0.0.1 (measured with ss; without it they listen on '*' and the agent on the external address).
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_saved_cluster_env: list[str | None] = []


def _bind_loopback_only(ray: Any) -> str:
    """Make the local Ray about to start listen on 127.0.0.1 only; returns the node IP to pass to ``ray.init``.

    The variable is set in this process's environment (Ray's processes inherit it when ``ray.init`` starts
    them) and in Ray's already-imported constants; :func:`_restore_cluster_mode` undoes both at shutdown, so
    a later ``ray.init(address=...)`` to a real cluster in the same process is not affected.
    """
    from ray._private import ray_constants

    _saved_cluster_env.append(os.environ.get(_LOOPBACK_ENV))
    os.environ[_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    return "127.0.0.1"


def _restore_cluster_mode(ray: Any) -> None:
    from ray._private import ray_constants

    if not _saved_cluster_env:
        return
    previous = _saved_cluster_env.pop()
    if previous is None:
        os.environ.pop(_LOOPBACK_ENV, None)
    else:
        os.environ[_LOOPBACK_ENV] = previous
    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(_LOOPBACK_ENV, not ray_constants.IS_WINDOWS_OR_OSX)
