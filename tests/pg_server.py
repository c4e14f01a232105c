"""A real, throw-away PostgreSQL server for tests and benchmarks: ``initdb`` + ``pg_ctl`` in a temporary folder.

The server binaries come from the Debian ``postgresql`` package (``make test`` installs it, see the Makefile's
sysdeps) under ``/usr/lib/postgresql/<version>/bin``, or from ``$PATH`` (or ``$LIGHTNAS_PG_BIN``). The package's
own cluster is never started or touched. ``initdb`` refuses to run as root, so as root both run as the
``postgres`` system user (or ``nobody``) through ``runuser``, in a folder that user owns.

The server listens on 127.0.0.1 only, on a free port, with no Unix socket, and a password (scram-sha-256) for
its superuser: the URL the tests give lightnas is what a user's would be. Nothing is fixed (folder, port), so
tests may run in parallel (pytest-xdist).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "lightnas"


def bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest Debian version first), or None."""
    if os.environ.get("LIGHTNAS_PG_BIN"):
        return Path(os.environ["LIGHTNAS_PG_BIN"])
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def why_unavailable() -> str | None:
    """None if a server can be started here, else the reason (for ``pytest.skip``)."""
    try:
        import psycopg  # noqa: F401  (SQLAlchemy 2.1's default driver for postgresql://)
    except ImportError:
        return "the PostgreSQL driver is not installed (pip install 'lightnas[postgres]'; make test installs it)"
    if bin_dir() is None or not (bin_dir() / "pg_ctl").exists():
        return "PostgreSQL server binaries (initdb, pg_ctl) not found (Debian: apt-get install postgresql; make test installs it)"
    if os.geteuid() == 0 and run_as_user() is None:
        return "running as root and neither a 'postgres' nor a 'nobody' user exists to run initdb as"
    return None


def run_as_user() -> str | None:
    """As root: the unprivileged user the server runs as; otherwise None (it runs as the caller)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster: :meth:`start`, :meth:`stop`, :meth:`restart`, :meth:`url`, :meth:`remove`."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        self.user = run_as_user()
        # Not pytest's tmp_path: its parents are root-only (0700), which the server's user cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="lightnas-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.password = secrets.token_hex(12)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}\n{log}")
        return done

    def init(self) -> PgServer:
        """``initdb`` (password auth for everyone) and the settings: loopback only, this port, no Unix socket."""
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                  "--encoding=UTF8", "--no-instructions")
        pwfile.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = ''\n")
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "120", "-m", mode, "stop")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every open connection is terminated; the server is back when it returns."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "-m", "fast", "restart")

    def is_running(self) -> bool:
        cmd = [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"]
        cmd = ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=self.password, dbname=database,
                               connect_timeout=10)

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        with self.connect() as conn:
            conn.autocommit = True
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        """Stop the server (immediately) if it runs, and delete its folder."""
        try:
            if self.data.exists() and self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
