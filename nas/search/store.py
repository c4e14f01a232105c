"""The campaign's Optuna study: its storage, opening it to write or to read, and resuming it.

The driver is the only process that writes the study (SQLite in the campaign folder by default), which
avoids SQLite's "database is locked" failures under parallel writers; workers only compute and return
metrics. Status, reports and ``nas select`` open it read-only through :func:`load_study`, which says in one
line why a study cannot be read. On resume, trials a dead driver left RUNNING are marked FAIL
("interrupted") and their parameters queued again (:func:`requeue_interrupted`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from nas.config import CampaignConfig, load_campaign_config
from nas.errors import MissingDependencyError, NasUserError, is_disk_full
from nas.search.folder import CONFIG_FILE, STUDY_FILE, CampaignPaths, lock_holder

if TYPE_CHECKING:
    import optuna


def make_storage(config: CampaignConfig, paths: CampaignPaths, *, writer: bool = False) -> Any:
    """The study's storage: SQLite in the folder (default), Optuna's journal file, or a database URL.

    A server URL (PostgreSQL, MySQL) gets :class:`nas.search.postgres.ReconnectingStorage`, which waits out a
    server restart and otherwise stops with one line.

    ``writer``: the campaign's driver, which creates the SQLite file; everyone else (status, reports,
    select) only opens it, so a reader polling a starting campaign never races the driver to create it.
    """
    if config.storage is None:
        return sqlite_storage(paths.root / STUDY_FILE, writer=writer)
    if config.storage == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(paths.journal)))
    if config.storage.startswith("sqlite"):
        return config.storage
    from nas.search.postgres import server_storage  # rides out a server restart (nas/search/postgres.py)

    return server_storage(config.storage, writer=writer)


def sqlite_storage(path: Path, *, writer: bool = False) -> Any:
    """Optuna storage on a local SQLite file in WAL mode with ``synchronous=NORMAL``.

    SQLite's default (rollback journal, an fsync per commit) cost the driver 0.85–1.2 s per trial here;
    WAL with ``synchronous=NORMAL`` measured 3–8× less (benchmarks/scaling.py, storage part). A killed
    process still loses nothing committed; only a power cut or OS crash may lose the last commits, which
    ``nas resume`` re-runs. WAL needs a local file system (not NFS), like SQLite's locking already does.

    Only the ``writer`` (the driver) sets the journal mode (stored in the file) and creates Optuna's tables;
    a reader that did either could lock the file while the driver creates it, and the driver would fail.
    """
    import sqlite3

    from optuna.storages import RDBStorage
    from sqlalchemy import event

    path = Path(path).resolve()
    url = f"sqlite:///{path}"
    if writer:
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path, timeout=60) as db:  # before Optuna opens the file
            db.execute("PRAGMA journal_mode=WAL")
    elif not folder_is_writable(path.parent):
        url = f"sqlite:///{_read_only_uri(path)}&uri=true"
    storage = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}, skip_table_creation=not writer)
    event.listen(storage.engine, "connect", _synchronous_normal)  # per connection, so reopen them all
    storage.engine.dispose()
    return storage


def folder_is_writable(folder: Path) -> bool:
    """True if files can be created in ``folder`` (a read-only mount counts as not, even for root)."""
    import os

    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _read_only_uri(db: Path) -> str:
    """A SQLite URI that reads ``db`` in a folder where its ``-shm`` file cannot be created.

    ``immutable=1`` (no locks, no ``-shm``) is exact when no ``-wal`` file holds changes not yet merged into the
    file, which is the case after a driver closed it; with a ``-wal`` left by a killed driver nothing can read
    it without writing, which is a user error.
    """
    wal = db.with_name(db.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        raise NasUserError(f"{db}: the folder is read-only and {wal.name} holds changes not yet merged into the study "
                           "(the driver was killed); open it once in a writable copy of the folder.")
    return f"file:{quote(str(db))}?mode=ro&immutable=1"


def _synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def check_storage(config: CampaignConfig) -> None:
    """A ``storage`` URL must parse, name a known database and have its driver installed (one line each)."""
    if config.storage in (None, "journal"):
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = config.storage
    try:
        url = make_url(config.storage)
        shown = url.render_as_string(hide_password=True)  # never print a password
        dialect = url.get_dialect()
    except NoSuchModuleError:  # a subclass of ArgumentError: first
        raise NasUserError(f"storage = '{shown}': unknown database kind '{config.storage.split(':', 1)[0]}'; "
                           "use postgresql://, mysql:// or sqlite:///, or leave it out.") from None
    except ArgumentError:
        raise NasUserError(f"storage = '{shown}' is not a database URL; use e.g. postgresql://user:password@host/db, "
                           "'journal', or leave it out for SQLite in the campaign folder.") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise MissingDependencyError(f"storage = '{shown}' needs the database driver {exc.name or dialect.driver}, which is "
                                     "not installed; install it (for PostgreSQL: pip install 'lightnas[postgres]', "
                                     "which is psycopg 3).") from None


def open_study(config: CampaignConfig, paths: CampaignPaths, sampler: optuna.samplers.BaseSampler,
               resume: bool) -> optuna.Study:
    """Create (or, to resume, load) the campaign's study; a database that does not answer is one line."""
    import optuna
    from sqlalchemy.exc import OperationalError

    try:
        return optuna.create_study(
            study_name=config.name,
            storage=make_storage(config, paths, writer=True),
            directions=[o.direction for o in config.objectives],
            sampler=sampler,
            load_if_exists=resume,
        )
    except OperationalError as exc:
        if is_disk_full(exc):
            raise
        where = storage_text(config, paths)
        raise NasUserError(f"storage {where}: cannot open the study ({first_line(exc.orig or exc)}); "
                           "check that the database server runs and the URL, user and password are right.") from None


def load_study(campaign_dir: str | Path) -> tuple[optuna.Study, CampaignConfig]:
    """Open a campaign's study for reading (status, reports, select), or say in one line why it cannot be.

    "Not started yet" is said only when it is true: there is no ``study.db`` (or no study in a configured
    storage), or the driver holding the folder's lock is creating it right now. An empty, truncated,
    corrupt or foreign ``study.db`` is reported as such, so lost results are never mistaken for a campaign
    that has yet to start (``nas resume`` would start it again from nothing).
    """
    import optuna

    paths = CampaignPaths(Path(campaign_dir))
    if paths.root.is_file():
        raise NasUserError(f"{campaign_dir}: is a file, not a campaign folder; give the folder that 'nas search --out' created.")
    if not paths.config.is_file():
        raise NasUserError(f"{campaign_dir}: no campaign here ({CONFIG_FILE} is missing).")
    config = load_campaign_config(paths.config)
    not_started = f"{campaign_dir}: campaign {config.name} has not started a study yet; 'nas resume {campaign_dir}' starts it."
    db = paths.root / STUDY_FILE
    if config.storage is None:
        if not db.is_file():
            raise NasUserError(not_started)
        if lock_holder(paths.root) is None:  # no driver is creating it: it must be a whole Optuna database
            check_study_file(db, config.name)
    try:
        study = optuna.load_study(study_name=config.name, storage=make_storage(config, paths))
    except KeyError:  # Optuna: no study of that name in the storage
        raise NasUserError(not_started) from None
    except Exception as exc:
        if config.storage is None and lock_holder(paths.root) is not None and _mentions(exc, "no such table"):
            raise NasUserError(not_started) from None  # the driver is creating Optuna's tables right now
        if config.storage is None and _mentions(exc, "unable to open database", "readonly", "read-only"):
            raise NasUserError(f"{db}: cannot be opened for reading ({first_line(exc)}); a read-only folder "
                               "needs its study.db-wal and study.db-shm files, or a writable copy of the folder.") from None
        raise
    return study, config


def check_study_file(db: Path, study_name: str) -> None:
    """Refuse a ``study.db`` that is empty, not SQLite, damaged, or holds no lightnas study of this name.

    Read-only, with the ``-wal`` file a killed driver may have left (its changes count); in a read-only folder
    through :func:`_read_only_uri`. Called only when no driver holds the campaign's lock.
    """
    import sqlite3

    size = db.stat().st_size
    gone = "the campaign's results are not in it; restore study.db from a backup, or move the folder away and start again"
    if size == 0:
        raise NasUserError(f"{db}: the study file is empty (0 bytes): {gone}.")
    db = db.resolve()
    uri = f"file:{quote(str(db))}?mode=ro" if folder_is_writable(db.parent) else _read_only_uri(db)
    try:
        with sqlite3.connect(uri, uri=True) as conn:
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            names = [r[0] for r in conn.execute("SELECT study_name FROM studies")] if "studies" in tables else []
    except sqlite3.DatabaseError as exc:
        raise NasUserError(f"{db}: not a readable SQLite database ({exc}; {size} bytes), so it is corrupt, "
                           f"truncated or not a study file: {gone}.") from None
    if check != "ok":
        raise NasUserError(f"{db}: the SQLite database is damaged (integrity check: {check}): {gone}.")
    if not {"studies", "trials"} <= tables:
        found = ", ".join(sorted(tables)[:5]) or "none"
        raise NasUserError(f"{db}: a SQLite database, but not an Optuna study file (its tables: {found}): {gone}.")
    if study_name not in names:
        raise NasUserError(f"{db}: holds no study named '{study_name}' (it has: {', '.join(names) or 'none'}), so it is "
                           f"another campaign's file or the campaign was renamed: {gone}.")


def _mentions(exc: BaseException, *needles: str) -> bool:
    """True if ``exc`` or an exception in its cause/context chain mentions one of ``needles``."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if any(n in str(seen) for n in needles):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def storage_text(config: CampaignConfig, paths: CampaignPaths) -> str:
    if config.storage is None:
        return paths.storage_url
    if config.storage == "journal":
        return f"journal file {paths.journal}"
    return config.storage.split("@")[-1] if "@" in config.storage else config.storage  # never print a password


def check_same_space(study: optuna.Study, space: Any, config: CampaignConfig, resume: bool) -> None:
    """Record the space's fingerprint; on resume, refuse a space that changed (its trials would not compare)."""
    import hashlib

    fingerprint = hashlib.sha256(json.dumps(space.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
    recorded = study.user_attrs.get("space_fingerprint")
    if resume and recorded and recorded != fingerprint:
        raise NasUserError(
            f"space '{config.space}' changed since this campaign started (fingerprint {recorded} → {fingerprint}); "
            "restore the file, or start a new campaign with another --out."
        )
    if not recorded:
        study.set_user_attr("space_fingerprint", fingerprint)


def requeue_interrupted(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a dead driver as FAIL ("interrupted") and queue their parameters again."""
    from optuna.trial import TrialState

    from nas.search.optuna_private import fail_orphaned_trial

    n = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        fail_orphaned_trial(study, trial, {"fail_reason": "interrupted: the driver stopped", "interrupted": True})
        study.enqueue_trial(trial.params, skip_if_exists=False)
        n += 1
    return n
