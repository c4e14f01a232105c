"""Connecting to Ray: a local Ray on loopback only, or a cluster by address with Ray's token authentication.

Split from :mod:`nas.search.executor` (which keeps the executors). Every failure a user can cause (nothing
listening, a refused token, something else on the port) is one :class:`~nas.errors.NasUserError` line.
"""

from __future__ import annotations

import os
from typing import Any

from nas.errors import NasUserError


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


# Ray 2.60 resolves a node IP of 127.0.0.1 to the machine's external address (services.resolve_ip_for_localhost)
# unless this variable is 0, the setting Ray itself uses on macOS and Windows to keep a local Ray on loopback.
# With the node IP on loopback, GCS, raylet, workers, the driver's core worker and the runtime-env agent all
# bind 127.0.0.1 (measured with ss; without it they listen on '*' and the agent on the external address).
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_saved_cluster_env: list[str | None] = []


def _bind_loopback_only(ray: Any) -> str:
    """Make the local Ray about to start listen on 127.0.0.1 only; returns the node IP to pass to ``ray.init``.

    The variable is set in this process's environment (Ray's processes inherit it when ``ray.init`` starts
    them) and in Ray's already-imported constants; :func:`restore_cluster_mode` undoes both at shutdown, so
    a later ``ray.init(address=...)`` to a real cluster in the same process is not affected.
    """
    from ray._private import ray_constants

    _saved_cluster_env.append(os.environ.get(_LOOPBACK_ENV))
    os.environ[_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    return "127.0.0.1"


def restore_cluster_mode(ray: Any) -> None:
    from ray._private import ray_constants

    if not _saved_cluster_env:
        return
    previous = _saved_cluster_env.pop()
    if previous is None:
        os.environ.pop(_LOOPBACK_ENV, None)
    else:
        os.environ[_LOOPBACK_ENV] = previous
    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(_LOOPBACK_ENV, not ray_constants.IS_WINDOWS_OR_OSX)


def start_local_ray(ray: Any, num_cpus: int, temp_dir: str | None) -> None:
    """Start a Ray instance for this campaign alone, listening on loopback only."""
    # Measured here: ~4-5 s and ~0.4 GB without the dashboard (../shared/STACK.md).
    node_ip = _bind_loopback_only(ray)
    try:
        ray.init(num_cpus=num_cpus, _temp_dir=temp_dir, _node_ip_address=node_ip, include_dashboard=False,
                 log_to_driver=False)
    except BaseException:
        restore_cluster_mode(ray)
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
        restore_cluster_mode(ray)
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
