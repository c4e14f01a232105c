"""A campaign's folder: where its files live, its config snapshot, the one-driver lock, and clean-up.

The folder is the campaign's identity on disk: ``nas search --out`` creates it, ``nas resume`` reads the
config back from it, and only one live driver may hold it (:class:`CampaignLock`). A new campaign rejected
before any trial finished removes what it created (:func:`discard_new_campaign`), so the corrected command
can run on the same ``--out``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.config import CampaignConfig, load_campaign_config
from nas.errors import NasUserError

CONFIG_FILE = "campaign.yaml"
STUDY_FILE = "study.db"
LOCK_FILE = "driver.lock"  # see CampaignLock


@dataclass(frozen=True)
class CampaignPaths:
    """Where a campaign keeps its files."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{(self.root / STUDY_FILE).resolve()}"

    @property
    def journal(self) -> Path:
        return self.root / "study.journal"

    @property
    def mlflow_pending(self) -> Path:
        return self.root / "mlflow-pending.jsonl"

    @property
    def pareto(self) -> Path:
        return self.root / "pareto.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"



def read_campaign_config(campaign_dir: Path) -> CampaignConfig:
    """The config of the campaign in ``campaign_dir`` (to resume it); a folder without one is a user error."""
    paths = CampaignPaths(Path(campaign_dir))
    if paths.root.is_file():
        raise NasUserError(f"{campaign_dir}: is a file, not a campaign folder; give the folder that 'nas search --out' created.")
    if not paths.config.is_file():
        raise NasUserError(f"{campaign_dir}: no campaign here ({CONFIG_FILE} is missing); start one with 'nas search --out {campaign_dir}'.")
    return load_campaign_config(paths.config)


def prepare_campaign_dir(config: CampaignConfig | None, campaign_dir: Path, resume: bool) -> CampaignConfig:
    """Create (or, to resume, read) the campaign folder and return the campaign's config."""
    paths = CampaignPaths(Path(campaign_dir))
    if resume:
        return read_campaign_config(paths.root)
    if paths.config.exists():
        holder = lock_holder(paths.root)
        if holder is not None:
            raise NasUserError(f"{campaign_dir}: a campaign is running here (driver PID {holder}); wait for it to finish "
                               f"('nas status {campaign_dir}' shows progress) or choose another --out.")
        raise NasUserError(f"{campaign_dir}: a campaign already exists here; continue it with 'nas resume {campaign_dir}' or choose another --out.")
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.config.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    except OSError as exc:
        raise NasUserError(f"{campaign_dir}: cannot write the campaign folder ({exc.strerror}); choose a writable --out.") from None
    return config


class CampaignLock:
    """One driver per campaign folder: an exclusive ``flock`` on ``CAMPAIGN/driver.lock``, holding its PID.

    The kernel releases a ``flock`` when its process dies, however it dies (``kill -9`` included), so a lock
    file left by a killed driver blocks nothing; only a live driver's lock refuses a second ``nas search`` or
    ``nas resume`` (which would otherwise mark the live trials "interrupted" and re-run them). The file
    descriptor is not inherited across ``exec`` (Python's default), so Ray's and TVM's helper processes do
    not keep the lock alive after the driver. A local file system is needed (``flock`` over NFS is not
    reliable), as SQLite's WAL already requires.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, create: bool) -> None:
        """Take the lock, creating the folder first when ``create``; a live holder is a user error naming its PID."""
        import fcntl
        import os

        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise NasUserError(f"{self.root}: cannot write the campaign folder ({exc.strerror}); "
                               "make it writable or choose a writable --out.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise NasUserError(
                f"{self.root}: another driver (PID {holder or '?'}) is running this campaign; wait for it to finish "
                f"('nas status {self.root}' shows progress) or stop it, then run 'nas resume {self.root}'."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        import fcntl
        import os

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lock_holder(campaign_dir: str | Path) -> int | None:
    """PID of the live driver holding the campaign's lock, or None (no lock file, or a stale one: free)."""
    import fcntl
    import os

    try:
        fd = os.open(Path(campaign_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    import os

    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None



def entries(folder: Path) -> set[str] | None:
    """Names in ``folder``, or None when it does not exist (what a rejected new campaign must not leave)."""
    try:
        return {p.name for p in folder.iterdir()}
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return set()


def has_finished_trials(study: Any) -> bool:
    """True when ``study`` holds a told trial, or cannot be read (then nothing may be deleted)."""
    if study is None:
        return False
    try:
        return any(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    except Exception:  # unreadable (disk full, server gone): keep the files, the safe side
        return True


def discard_new_campaign(paths: CampaignPaths, config: CampaignConfig, existed: set[str] | None,
                          started: dict[str, Any]) -> None:
    """Remove what a new campaign that failed before any trial finished created, so the fix can rerun it.

    Only what this run created goes: the folder when it did not exist before, else the entries that were not
    there. A study in a database server (``storage`` URL) is deleted, and an MLflow parent run on a server is
    marked FAILED; a trial that was running is lost, as it would be to ``kill -9``.
    """
    import shutil

    if "tracker" in started:
        started["tracker"].finish(status="FAILED")
    if "study" in started and config.storage not in (None, "journal"):
        import optuna

        optuna.delete_study(study_name=config.name, storage=config.storage)
    if existed is None:
        shutil.rmtree(paths.root, ignore_errors=True)
        return
    for name in sorted(set(entries(paths.root) or ()) - existed):
        target = paths.root / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)

