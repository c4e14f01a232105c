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
        self._cluster = bool(address)  # a cluster by address: what a trial reads travels through the object store
        self._owns_ray = not ray.is_initialized()  # this executor connected or started it, so it disconnects
        if self._owns_ray:
            if address:
                connect_ray_cluster(ray, address)
            else:
                _start_local_ray(ray, max(workers * cpus_per_trial, os.cpu_count() or 1), temp_dir)
        options: dict[str, Any] = {"num_cpus": cpus_per_trial, "max_retries": max_retries, "retry_exceptions": False}
        if memory_mib_per_trial:
            options["memory"] = memory_mib_per_trial * 1024 * 1024  # for Ray's scheduler; enforced below
        self._options = options
        self._memory_mib = memory_mib_per_trial
        self._remote = ray.remote(_run_on_node).options(**options)
        self._artifact_dir: str | None = None  # the driver's folder for artifacts that come back from other nodes

    def share(self, value: Any) -> Any:
        """Put ``value`` in the object store once; on a cluster, with the driver-local folders it names."""
        if self._cluster:
            self._artifact_dir = getattr(value, "onnx_dir", None)
            value = ship_folders(self._ray, value)
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
                result, node, files = self._ray.get(ref)
                outcomes.append(Outcome(ref, result=land_artifacts(result, files, self._artifact_dir), node=node))
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


def _start_local_ray(ray: Any, num_cpus: int, temp_dir: str | None) -> None:
    """Start a Ray instance for this campaign alone, listening on loopback only."""
    # Measured here: ~4-5 s and ~0.4 GB without the dashboard (../shared/STACK.md).
    node_ip = _bind_loopback_only(ray)
    try:
        ray.init(num_cpus=num_cpus, _temp_dir=temp_dir, _node_ip_address=node_ip, include_dashboard=False,
                 log_to_driver=False)
    except BaseException:
        _restore_cluster_mode(ray)
        raise


# --- a cluster by address: token authentication, loopback heads, one clear line when connecting fails ---

_AUTH_MODE_ENV = "RAY_AUTH_MODE"


def ray_token_source() -> str | None:
    """Where Ray would read its authentication token from on this machine (Ray's own order), or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}"
    default = os.path.expanduser("~/.ray/auth_token")
    return default if os.path.isfile(default) else None


def _use_token_if_available() -> str | None:
    """Turn on Ray's token authentication for this driver when a token is at hand; returns its source.

    Ray 2.60 enables token authentication on every cluster ``ray start`` makes, but a driver given an explicit
    address only sends a token when ``RAY_AUTH_MODE=token`` (Ray turns it on by itself for ``address="auto"``
    only). Following Ray's documented setup, the driver therefore sets ``RAY_AUTH_MODE=token`` when a token is
    available (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``). A mode the user set
    explicitly, ``disabled`` included, is left alone.
    """
    from ray._raylet import AuthenticationTokenLoader, Config

    source = ray_token_source()
    if os.environ.get(_AUTH_MODE_ENV) is None and source is not None:
        os.environ[_AUTH_MODE_ENV] = "token"
    Config.initialize("")  # Ray caches its config and token: re-read both so this process sees them as set now
    AuthenticationTokenLoader.instance().reset_cache()
    return source


def _is_loopback_host(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def connect_ray_cluster(ray: Any, address: str) -> None:
    """``ray.init`` to a running cluster, or one :class:`NasUserError` line saying what failed.

    Three failures are told apart: nothing listens at the address; a Ray GCS answered but refused this
    driver's token (or none was sent); anything else Ray reports. A loopback head (``ray start --head
    --node-ip-address=127.0.0.1``) is reached on loopback: Ray would otherwise rewrite 127.0.0.1 into the
    machine's external address, where a loopback-bound head does not listen.
    """
    check_ray_address(address)  # ray.init would otherwise retry a dead address for minutes
    source = _use_token_if_available()
    hostport = address.removeprefix("ray://")
    host = hostport.rpartition(":")[0]
    kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False}
    if _is_loopback_host(host):
        kwargs["_node_ip_address"] = _bind_loopback_only(ray)
    try:
        if not address.startswith("ray://"):
            _probe_gcs(address, source)
        ray.init(**kwargs)
    except BaseException as exc:
        _restore_cluster_mode(ray)
        if isinstance(exc, NasUserError):
            raise
        if isinstance(exc, (ConnectionError, TimeoutError, RuntimeError)):
            raise NasUserError(f"--ray-address {address}: connecting to the Ray cluster failed "
                               f"({_last_line(exc)}).") from None
        raise


def _auth_failure(address: str, source: str | None) -> NasUserError:
    if source is None:
        why = "this driver has no Ray authentication token"
    elif os.environ.get(_AUTH_MODE_ENV, "").lower() != "token":
        why = f"{_AUTH_MODE_ENV}={os.environ.get(_AUTH_MODE_ENV)} here, so the token ({source}) was not sent"
    else:
        why = f"it rejected the token from {source}"
    return NasUserError(
        f"--ray-address {address}: the Ray cluster answered but refused authentication ({why}); give this "
        "driver the head's token with RAY_AUTH_TOKEN_PATH=<the head's ~/.ray/auth_token> or RAY_AUTH_TOKEN.")


def _probe_gcs(address: str, source: str | None, timeout_s: float = 20.0) -> None:
    """Ask the cluster's GCS for its id once, so a refused token is one line, not 20 retries and a traceback."""
    import threading

    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    failure: list[BaseException] = []

    def probe() -> None:
        try:
            GcsClient(address=address).cluster_id
        except BaseException as exc:  # reported by the caller
            failure.append(exc)

    with _quiet_stderr():  # Ray's C++ client logs each refused attempt to fd 2
        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(timeout_s)
    if thread.is_alive():
        raise NasUserError(f"--ray-address {address}: something listens there but no Ray GCS answered within "
                           f"{timeout_s:.0f} s; is it the head's --port?")
    if failure and isinstance(failure[0], AuthenticationError):
        raise _auth_failure(address, source)
    if failure:
        raise NasUserError(f"--ray-address {address}: the Ray GCS there did not answer ({_last_line(failure[0])}).")


class _quiet_stderr:
    """Send file descriptor 2 to /dev/null for a moment (C++ logging that Python cannot catch)."""

    def __enter__(self) -> None:
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc: Any) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


# --- what a trial reads, shipped through the object store to nodes that do not share the driver's disk ---

_SHIPPED_FOLDERS = ("teacher_dir", "supernet_dir")  # TrialContext fields naming driver-local folders


@dataclass
class _Folder:
    """A driver-local folder in Ray's object store: ``ref`` holds ``{relative path: bytes}``."""

    digest: str
    ref: Any


@dataclass
class _Shipped:
    """A shared value whose folder fields are rewritten, on each node, to that node's copy."""

    value: Any
    folders: dict[str, _Folder]


def ship_folders(ray: Any, value: Any) -> Any:
    """Wrap ``value`` so the folders its :data:`_SHIPPED_FOLDERS` fields name travel with it (once each)."""
    import hashlib
    from pathlib import Path

    folders = {}
    for name in _SHIPPED_FOLDERS:
        folder = getattr(value, name, None)
        if not folder or not Path(folder).is_dir():
            continue
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}
        digest = hashlib.sha256()
        for rel, data in files.items():
            digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        folders[name] = _Folder(digest.hexdigest()[:24], ray.put(files))
    return _Shipped(value, folders) if folders else value


_node_copies: dict[str, str] = {}  # digest -> this node's folder, once looked up in this worker process


def _node_copy(folder: _Folder) -> str:
    """This node's copy of ``folder`` under its ``$LIGHTNAS_CACHE/shipped``: fetched by the first trial on
    the node (written to a temporary folder, then renamed, so concurrent trials never see half a copy)."""
    import shutil
    import tempfile
    from pathlib import Path

    import ray

    from nas.search.context import cache_root

    if folder.digest in _node_copies:
        return _node_copies[folder.digest]
    target = cache_root() / "shipped" / folder.digest
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        for rel, data in ray.get(folder.ref).items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)
        try:
            staging.rename(target)
        except OSError:  # another trial on this node got there first
            shutil.rmtree(staging, ignore_errors=True)
    _node_copies[folder.digest] = str(target)
    return str(target)


def _unship(value: Any) -> tuple[Any, bool]:
    """The value a trial reads on this node, and whether it came from another machine's driver."""
    import dataclasses

    if not isinstance(value, _Shipped):
        return value, False
    from nas.search.context import cache_root

    changes = {name: _node_copy(folder) for name, folder in value.folders.items()}
    if getattr(value.value, "onnx_dir", None):
        changes["onnx_dir"] = str(cache_root() / "onnx-staging")
    return dataclasses.replace(value.value, **changes), True


def _run_on_node(limit_mib: int | None, fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, str], dict]:
    """A Ray task: ``fn(*args)`` under the memory bound, with where it ran and, on a cluster, its artefacts' bytes."""
    import ray

    unshipped = [_unship(arg) for arg in args]
    result = call_with_memory_bound(limit_mib, fn, *(value for value, _ in unshipped))
    context = ray.get_runtime_context()
    node = {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address()}
    files: dict[str, bytes] = {}
    if any(shipped for _, shipped in unshipped) and getattr(result, "artifacts", None):
        for name, path in result.artifacts.items():
            with open(path, "rb") as handle:
                files[name] = handle.read()
            os.remove(path)
            try:
                os.rmdir(os.path.dirname(path))  # the trial's own staging folder, now empty
            except OSError:
                pass
    return result, node, files


def land_artifacts(result: Any, files: dict[str, bytes], folder: str | None) -> Any:
    """Write artefacts that came back from a node into the driver's ``folder``; the result then names them."""
    import dataclasses
    import tempfile
    from pathlib import Path

    if not files:
        return result
    base = Path(folder) if folder else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="trial-", dir=base))
    paths = {}
    for name, data in files.items():
        path = target / Path(result.artifacts[name]).name
        path.write_bytes(data)
        paths[name] = str(path)
    return dataclasses.replace(result, artifacts=paths)
