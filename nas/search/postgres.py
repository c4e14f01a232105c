"""A database server (PostgreSQL, MySQL) as the study's storage: it rides out a server restart, or says so in one line.

Optuna's ``RDBStorage`` keeps pooled connections; after ``pg_ctl restart`` (a failover, a maintenance window)
each of them is dead, and while the server is down every query fails. Unhandled, the driver would stop with
``StorageInternalError`` and a traceback at its next ``ask`` or ``tell``. :class:`ReconnectingStorage` instead

* checks a pooled connection before using it (SQLAlchemy's ``pool_pre_ping``), so a restart that is over
  costs one round trip per dead connection, not an error;
* retries a call that failed on a lost connection, with growing pauses, for up to ``wait_s`` seconds
  (``$LIGHTNAS_DB_WAIT_S``, default 120 s), saying on stderr once per outage that it waits and once that it
  reconnected; every call is one transaction, so a failed call wrote nothing and is safe to repeat;
* after that, raises :class:`~nas.errors.NasUserError`: one line naming the server (never the password) and
  ``nas resume``. The study keeps every trial told before the outage (each tell is committed), and ``nas
  resume`` queues the trials that were running again. Once it has given up, later calls (the driver's
  clean-up) fail at once instead of waiting again.

One write is not idempotent when its commit reached the server but the answer did not: telling a trial's
state. Its retry finds the trial already finished in that state and counts that as done. An ``ask`` whose
answer was lost leaves an unused RUNNING trial, which ``nas resume`` marks FAIL ("interrupted").
tests/test_postgres.py restarts a real server mid-campaign and stops one for longer than ``wait_s``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

from optuna.storages import BaseStorage

from nas.errors import NasUserError

WAIT_ENV = "LIGHTNAS_DB_WAIT_S"
DEFAULT_WAIT_S = 120.0
_MAX_PAUSE_S = 5.0


def wait_seconds() -> float:
    """How long a call waits for the database to answer again: ``$LIGHTNAS_DB_WAIT_S`` or 120 s."""
    raw = os.environ.get(WAIT_ENV, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else DEFAULT_WAIT_S
    except ValueError:
        raise NasUserError(f"{WAIT_ENV}={raw!r} is not a number of seconds; set it to e.g. 120 or unset it.") from None


def is_connection_error(exc: BaseException | None) -> bool:
    """True if ``exc`` or its cause chain is a lost or refused database connection (worth a retry).

    SQLAlchemy's ``OperationalError``/``InterfaceError`` wrap the driver's connection failures ("server closed
    the connection unexpectedly", "Connection refused", "the database system is starting up"); Optuna wraps
    those in ``StorageInternalError``. A constraint violation or bad SQL is not one of them.
    """
    from sqlalchemy import exc as sa_exc

    for _ in range(10):
        if exc is None:
            return False
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _reason(exc: BaseException) -> str:
    """The driver's own first line of a connection error (SQLAlchemy's adds SQL and a link)."""
    seen: BaseException | None = exc
    for _ in range(10):
        orig = getattr(seen, "orig", None)
        if orig is not None:
            seen = orig
            break
        if seen is None or seen.__cause__ is None:
            break
        seen = seen.__cause__
    text = str(seen or exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _stderr(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


class _Reconnecting(BaseStorage):
    """Delegates to Optuna's cached ``RDBStorage``, repeating a call that lost its connection (module docstring).

    Composition, not a subclass: Optuna wraps an ``RDBStorage`` in its trial cache and then calls private
    methods of it, while a storage that is not an ``RDBStorage`` receives only ``BaseStorage``'s public calls.
    The cache stays (``optuna.storages.get_storage``), inside: asking stays O(new trials), not O(all trials).
    """

    def __init__(self, url: str, *, wait_s: float | None = None, warn: Callable[[str], None] = _stderr,
                 skip_table_creation: bool = False) -> None:
        from optuna.storages import RDBStorage, get_storage

        self.wait_s = wait_seconds() if wait_s is None else wait_s
        self.warn = warn
        self.gave_up = False
        self.outages = 0  # how many times a call found the database gone (tests read it)
        self.rdb = RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, skip_table_creation=skip_table_creation)
        self.inner = get_storage(self.rdb)

    def where(self) -> str:
        """host:port/database of the server, never the user or password."""
        url = self.rdb.engine.url
        return f"{url.host or 'localhost'}:{url.port or 'default port'}/{url.database or ''}"

    def call_with_retries(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``inner.<name>``; on a lost connection wait and repeat it until ``wait_s`` is spent, then one line."""
        started = time.monotonic()
        pause, attempt = 0.2, 0
        while True:
            try:
                result = getattr(self.inner, name)(*args, **kwargs)
            except Exception as exc:
                if attempt and name == "set_trial_state_values" and self._state_already_told(exc, *args, **kwargs):
                    return True  # the first try committed; only its answer was lost
                if not is_connection_error(exc):
                    raise
                waited = time.monotonic() - started
                if self.gave_up or waited >= self.wait_s:
                    self.gave_up = True
                    raise NasUserError(
                        f"storage {self.where()}: the database server stopped answering ({_reason(exc)}) and did not come "
                        f"back within {self.wait_s:g} s; every trial told so far is kept in the study. Start the server, "
                        "then continue with: nas resume <campaign folder>") from None
                if attempt == 0:
                    self.outages += 1
                    self.warn(f"storage {self.where()}: lost the database connection ({_reason(exc)}); "
                              f"reconnecting for up to {self.wait_s:g} s ({WAIT_ENV})")
                time.sleep(min(pause, max(0.0, self.wait_s - waited)))
                pause, attempt = min(pause * 2, _MAX_PAUSE_S), attempt + 1
                continue
            if attempt:
                self.warn(f"storage {self.where()}: reconnected after {time.monotonic() - started:.1f} s")
            self.gave_up = False
            return result

    def _state_already_told(self, exc: BaseException, trial_id: int, state: Any, values: Any = None) -> bool:
        """True if a repeated ``set_trial_state_values`` failed only because its first try had committed it."""
        from optuna.exceptions import UpdateFinishedTrialError

        if not isinstance(exc, UpdateFinishedTrialError):
            return False
        trial = self.inner.get_trial(trial_id)
        same_values = values is None or (trial.values is not None and list(trial.values) == [float(v) for v in values])
        return trial.state == state and same_values


def _retrying(name: str) -> Callable[..., Any]:
    def call(self: _Reconnecting, *args: Any, **kwargs: Any) -> Any:
        return self.call_with_retries(name, *args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{name}`` of Optuna's storage, repeated while the database reconnects."
    return call


# Every public call of Optuna's storage interface, each one session (one transaction) of RDBStorage in Optuna 5.
# Built with type() so the abstract methods are defined when the class is made.
ReconnectingStorage = type("ReconnectingStorage", (_Reconnecting,), {
    "__doc__": "A database server's study storage that rides out a restart (see nas/search/postgres.py).",
    "__module__": __name__,
    **{n: _retrying(n) for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))},
})


def server_storage(url: str, *, writer: bool = False) -> ReconnectingStorage:
    """The study's storage on a database server; a server that does not answer at start is one line.

    ``writer`` (the driver) creates Optuna's tables in a new database; readers (status, reports) do not.
    """
    from sqlalchemy.engine import make_url

    try:
        return ReconnectingStorage(url, skip_table_creation=not writer)
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        where = make_url(url).render_as_string(hide_password=True)
        raise NasUserError(f"storage {where}: cannot open the study ({_reason(exc)}); check that the database server "
                           "runs and the URL, user and password are right.") from None
