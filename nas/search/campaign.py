"""A campaign: an Optuna multi-objective study driven by ask/tell, trials run by an executor.

The driver is the only process that writes the study (SQLite in the campaign folder), which avoids
SQLite's "database is locked" failures under parallel writers; workers only compute and return metrics.
A stopped campaign resumes from its folder: finished trials are kept, trials that were running are
marked FAIL ("interrupted") and their parameters queued again.
"""

from __future__ import annotations

import json
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import yaml

from nas.config import CampaignConfig, load_campaign_config
from nas.errors import MissingDependencyError, NasUserError, is_disk_full
from nas.output import Output

if TYPE_CHECKING:
    import optuna

    from nas.search.executor import Executor
    from nas.search.objective import TrialContext

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


@dataclass(frozen=True)
class CampaignResult:
    paths: CampaignPaths
    study_name: str
    n_complete: int
    n_failed: int
    n_pruned: int
    pareto: list[dict[str, Any]]
    tracking_uri: str
    wall_s: float


def make_sampler(name: str, seed: int, n_objectives: int, constrained: bool = False) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of a campaign (NSGA-II by default).

    Constraint values are set on each trial before it is told (``trial.set_constraint``); samplers that
    support constraints read them back through ``constraints_func``. TPE uses the constant liar so trials
    asked while others run (Ray) do not all land on the same point.
    """
    import optuna

    cf = _stored_constraints if constrained else None
    samplers = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=8, constraints_func=cf),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, constraints_func=cf),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, constraints_func=cf),
    }
    with warnings.catch_warnings():
        # Optuna 5 deprecates constraints_func (it reads set_constraint values too); the warning is Optuna's
        # internals, not the user's to act on, and printed even with --quiet.
        warnings.filterwarnings("ignore", message=r".*`constraints_func`", category=FutureWarning)
        return samplers[name]()


def _stored_constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Constraint values the driver stored on the trial (``trial.set_constraint``), in a stable order."""
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    prefix = f"{_CONSTRAINTS_KEY}:"
    return [v for k, v in sorted(trial.system_attrs.items()) if k.startswith(prefix)]


def make_storage(config: CampaignConfig, paths: CampaignPaths, *, writer: bool = False) -> Any:
    """The study's storage: SQLite in the folder (default), Optuna's journal file, or a database URL.

    ``writer``: the campaign's driver, which creates the SQLite file; everyone else (status, reports,
    select) only opens it, so a reader polling a starting campaign never races the driver to create it.
    """
    if config.storage is None:
        return sqlite_storage(paths.root / STUDY_FILE, writer=writer)
    if config.storage == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(paths.journal)))
    return config.storage


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


def make_executor(config: CampaignConfig, campaign_dir: Path, ray_address: str | None = None) -> Executor:
    from nas.search.executor import InProcessExecutor, RayExecutor

    spec = config.executor
    if spec.kind == "inprocess" and not ray_address:
        return InProcessExecutor(memory_mib_per_trial=spec.memory_mib_per_trial)
    return RayExecutor(
        workers=spec.workers,
        cpus_per_trial=spec.cpus_per_trial,
        address=ray_address or spec.address,
        max_retries=spec.max_retries,
        memory_mib_per_trial=spec.memory_mib_per_trial,
    )


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


def build_context(config: CampaignConfig, out: Output, study: optuna.Study | None = None, task: Any = None,
                  space: Any = None) -> TrialContext:
    """Build the expensive shared state once: data, tokens, the fine-tuned teacher and its logits.

    With ``study``, the teacher's accuracy is recorded as its ``teacher`` user attribute (the report's baseline).
    With ``fidelity.scorer: supernet`` (and ``space``), the supernet is trained once or loaded from the cache.
    """
    import os

    from nas.data.loaders import load_task
    from nas.data.tokenize import tokenize_task
    from nas.hardware.profiles import load_profile
    from nas.models.teacher import load_tokenizer, prepare_teacher
    from nas.search.objective import LatencySettings, TrialContext
    from nas.train import TrainSettings

    profiles = [load_profile(name) for name in config.profiles]
    task = task if task is not None else load_task(config.task)
    out.info(f"task [bold]{task.name}[/]: " + ", ".join(f"{k} {len(v.texts)}" for k, v in task.splits.items()))
    tensors = tokenize_task(task, load_tokenizer(config.teacher.model), config.max_seq_len)
    sweep_stale_teacher_temps(cache_root(), out)
    teacher = prepare_teacher(tensors, config.teacher, cache_root(), source=config.teacher.model, progress=not out.quiet)
    source = "cache" if teacher.from_cache else "fine-tuned now"
    out.info(f"teacher ({source}): validation accuracy {teacher.validation_accuracy:.3f}")
    if study is not None:
        study.set_user_attr("teacher", {"name": "teacher",
                                        "validation_accuracy": teacher.validation_accuracy,
                                        "test_accuracy": teacher.test_accuracy, "train_time_s": teacher.train_time_s})
    threads = config.executor.cpus_per_trial if config.executor.kind == "ray" else (os.cpu_count() or 1)
    ctx = TrialContext(
        train=tensors["train"],
        validation=tensors["validation"],
        teacher_logits=teacher.train_logits,
        teacher_dir=str(teacher.model_dir),
        num_labels=task.num_labels,
        train_settings=TrainSettings(steps=config.fidelity.steps, batch_size=config.fidelity.batch_size, lr=config.fidelity.lr),
        profiles=profiles,
        latency=LatencySettings(
            seq_len=config.max_seq_len,
            repeats=config.latency.repeats,
            number=config.latency.number,
            reference_backends=tuple(config.latency.reference_backends),
            tune=config.latency.tune,
            trials_per_task=config.latency.trials_per_task,
            max_new_tasks=config.latency.max_new_tasks,
            check_compile=config.latency.check_compile,
        ),
        threads=threads,
        onnx_dir=str(cache_root() / "onnx-staging") if config.log_onnx else None,
    )
    if config.fidelity.scorer == "supernet":
        ctx.supernet_dir = str(_prepare_supernet(config, ctx, space, out))
    return ctx


def _prepare_supernet(config: CampaignConfig, ctx: TrialContext, space: Any, out: Output) -> Path:
    """Train the campaign's supernet once (or find it in the cache); returns its cache folder."""
    import torch

    from nas.search.objective import student_positions
    from nas.supernet import SupernetSettings, SupernetSpec, prepare_supernet

    if space is None:
        from nas.search.space import load_space

        space = load_space(config.space)
    spec = SupernetSpec.from_space(space, num_labels=ctx.num_labels, max_positions=student_positions(ctx),
                                   where=f"space '{config.space}'")
    # The training seed is fixed, not the campaign's: campaigns that differ only in their seed (a benchmark's
    # seeds, a rerun) share one supernet instead of each retraining it (38 min on SST-2 here).
    settings = SupernetSettings(steps=config.fidelity.supernet_steps, batch_size=config.fidelity.batch_size,
                                lr=config.fidelity.lr, seed=0)
    out.info(f"supernet: {settings.steps} sandwich-rule steps over {spec.max_layers} x {spec.max_hidden} "
             f"(FFN {spec.max_ffn}, blocks {', '.join(spec.block_types)}), or the cached one")
    threads = torch.get_num_threads()
    torch.set_num_threads(ctx.threads)
    try:
        prepared = prepare_supernet(spec, train=ctx.train, teacher_logits=ctx.teacher_logits, teacher_dir=ctx.teacher_dir,
                                    settings=settings, cache_root=cache_root())
    finally:
        torch.set_num_threads(threads)
    how = "cache" if prepared.from_cache else "trained now"
    out.info(f"supernet ({how}): {prepared.path} (training took {prepared.train_time_s:.0f} s)")
    return prepared.path


# A teacher fine-tune writes into $LIGHTNAS_CACHE/.tmp-teacher-*/ and renames it into place; it removes the
# folder itself on any error or Ctrl-C, so only a killed process (SIGKILL, OOM killer, power cut) leaves one.
# Older than this, no live fine-tune can still own it (the longest measured here: SST-2, 1,990 s).
STALE_TEMP_S = 24 * 3600


def sweep_stale_teacher_temps(root: Path, out: Output, max_age_s: float = STALE_TEMP_S) -> int:
    """Delete ``.tmp-teacher-*`` folders older than ``max_age_s`` under ``root``; returns how many went."""
    import shutil

    try:
        candidates = list(Path(root).glob(".tmp-teacher-*"))
    except OSError:
        return 0
    now, removed = time.time(), 0
    for folder in candidates:
        try:
            if folder.is_dir() and now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder)
                removed += 1
        except OSError:  # another process removed it first, or it is not ours to remove: leave it
            continue
    if removed:
        out.info(f"removed {removed} unfinished teacher folder(s) left in {root} by killed runs")
    return removed


def cache_root() -> Path:
    """Cache of fine-tuned teachers (and later tuning records): ``$LIGHTNAS_CACHE`` or ``~/.cache/lightnas``."""
    import os

    return Path(os.environ.get("LIGHTNAS_CACHE", Path.home() / ".cache" / "lightnas"))


def _tuning_totals(study: optuna.Study) -> dict[str, float]:
    """Tuning seconds and database hit rate over every trial of the campaign (all profiles)."""
    tune_s = tasks = hits = 0.0
    for trial in study.get_trials(deepcopy=False):
        for lat in (trial.user_attrs.get("metrics") or {}).get("latency", {}).values():
            tune_s += lat.get("tune_s", 0.0) or 0.0
            tasks += lat.get("tune_tasks", 0) or 0
            hits += lat.get("tune_hits", 0) or 0
    return {"tune_s": round(tune_s, 1), "tasks": int(tasks), "hits": int(hits), "hit_rate": hits / tasks if tasks else 0.0}


def _storage_text(config: CampaignConfig, paths: CampaignPaths) -> str:
    if config.storage is None:
        return paths.storage_url
    if config.storage == "journal":
        return f"journal file {paths.journal}"
    return config.storage.split("@")[-1] if "@" in config.storage else config.storage  # never print a password


def _check_same_space(study: optuna.Study, space: Any, config: CampaignConfig, resume: bool) -> None:
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


def run_trial(candidate: Any, ctx: TrialContext, seed: int, steps: int | None = None, scorer: str = "standalone") -> Any:
    """One trial's work at a given training budget; what executors run (in this process or on Ray).

    ``scorer`` is ``standalone`` (train the candidate: :func:`~nas.search.objective.evaluate_candidate`) or
    ``supernet`` (inherit the supernet's weights, ``steps`` of recovery: ``evaluate_inherited``).
    """
    import dataclasses

    from nas.search import objective  # looked up at call time, so tests can substitute evaluate_candidate

    if steps is not None and steps != ctx.train_settings.steps:
        ctx = dataclasses.replace(ctx, train_settings=dataclasses.replace(ctx.train_settings, steps=steps))
    if scorer == "supernet":
        return objective.evaluate_inherited(candidate, ctx, seed)
    return objective.evaluate_candidate(candidate, ctx, seed)


def _requeue_interrupted(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a dead driver as FAIL and queue their parameters again."""
    from optuna.trial import TrialState

    n = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "interrupted: the driver stopped")
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, skip_if_exists=False)
        n += 1
    return n


def _n_finished(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED))
        if not (t.user_attrs.get("interrupted") or t.user_attrs.get("duplicate") or "repeat_of" in t.user_attrs)
    )


def run_campaign(
    config: CampaignConfig | None,
    campaign_dir: str | Path,
    *,
    resume: bool = False,
    ray_address: str | None = None,
    tracking_uri: str | None = None,
    out: Output | None = None,
) -> CampaignResult:
    """Run (or resume) a campaign until it has ``n_trials`` finished trials or its time is up.

    Args:
        config: The campaign; None with ``resume`` reads it from the folder.
        campaign_dir: Folder holding the study, config snapshot, MLflow store and reports.
        resume: Continue the campaign already in ``campaign_dir``.
        ray_address: Run trials on this Ray cluster (implies the Ray executor).
        tracking_uri: MLflow tracking URI; default ``MLFLOW_TRACKING_URI`` or SQLite in the folder.
        out: Where messages and progress go.

    Returns:
        Counts, the Pareto set and where everything was written.

    Raises:
        NasUserError: For a bad folder, config, space or profile, or when another live driver holds the
            folder's lock. A new campaign rejected before any trial finished leaves no files behind, so the
            corrected command can run on the same ``--out``.
    """
    out = out or Output()
    paths = CampaignPaths(Path(campaign_dir))
    if resume:
        config = read_campaign_config(paths.root)
    elif paths.config.exists():  # before the validation's seconds: say at once that this folder is taken
        prepare_campaign_dir(config, paths.root, resume=False)
    space, task = validate_campaign(config, ray_address)
    existed = _entries(paths.root)
    lock = CampaignLock(paths.root)
    lock.acquire(create=not resume)
    started: dict[str, Any] = {}  # what _run_locked has created so far: the study, the tracker
    try:
        config = prepare_campaign_dir(config, paths.root, resume)
        return _run_locked(config, paths, space, task, started, resume=resume, ray_address=ray_address,
                           tracking_uri=tracking_uri, out=out)
    except KeyboardInterrupt:  # Ctrl-C: keep everything (the CLI exits 130); nas resume continues
        if "tracker" in started:
            started["tracker"].finish(status="KILLED")
        out.error(f"stopped; finished trials are saved. Resume with: nas resume {paths.root}")
        raise
    except Exception:
        if not resume and not _has_finished_trials(started.get("study")):
            _discard_new_campaign(paths, config, existed, started)
        raise
    finally:
        lock.release()


def _open_study(config: CampaignConfig, paths: CampaignPaths, constrained: bool, resume: bool) -> optuna.Study:
    """Create (or, to resume, load) the campaign's study; a database that does not answer is one line."""
    import optuna
    from sqlalchemy.exc import OperationalError

    try:
        return optuna.create_study(
            study_name=config.name,
            storage=make_storage(config, paths, writer=True),
            directions=[o.direction for o in config.objectives],
            sampler=make_sampler(config.sampler, config.seed, len(config.objectives), constrained=constrained),
            load_if_exists=resume,
        )
    except OperationalError as exc:
        if is_disk_full(exc):
            raise
        where = _storage_text(config, paths)
        raise NasUserError(f"storage {where}: cannot open the study ({_first_line(exc.orig or exc)}); "
                           "check that the database server runs and the URL, user and password are right.") from None


def _entries(folder: Path) -> set[str] | None:
    """Names in ``folder``, or None when it does not exist (what a rejected new campaign must not leave)."""
    try:
        return {p.name for p in folder.iterdir()}
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return set()


def _has_finished_trials(study: Any) -> bool:
    """True when ``study`` holds a told trial, or cannot be read (then nothing may be deleted)."""
    if study is None:
        return False
    try:
        return any(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    except Exception:  # unreadable (disk full, server gone): keep the files, the safe side
        return True


def _discard_new_campaign(paths: CampaignPaths, config: CampaignConfig, existed: set[str] | None,
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
    for name in sorted(set(_entries(paths.root) or ()) - existed):
        target = paths.root / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


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
                                     "not installed; install it (for PostgreSQL: pip install psycopg2-binary).") from None


def validate_campaign(config: CampaignConfig, ray_address: str | None = None) -> tuple[Any, Any]:
    """Check everything a user can get wrong before anything is written; returns the space and the task.

    Nothing here creates a file, a study, an MLflow run or a teacher, so a mistake costs seconds.
    """
    from nas.hardware.profiles import load_profile
    from nas.search.space import load_space

    space = load_space(config.space)
    from nas.data.loaders import load_task
    from nas.models.teacher import load_tokenizer

    profiles = {name: load_profile(name) for name in config.profiles}
    for item in [*config.objectives, *config.constraints]:  # memory figures exist for MCU profiles only
        if item.metric in ("flash_bytes", "peak_memory_bytes") and not profiles[item.profile].is_mcu:
            raise NasUserError(
                f"{item.metric} on profile '{item.profile}': flash and peak memory are computed for MCU profiles "
                "(hw_class: mcu) only; use an MCU profile or size_bytes."
            )
    load_tokenizer(config.teacher.model)  # a teacher folder that is not a model fails here, in one line
    if ray_address or config.executor.address:
        from nas.search.executor import check_ray_address

        check_ray_address(ray_address or config.executor.address)
    check_storage(config)
    task = load_task(config.task)
    if config.fidelity.scorer == "supernet":  # a space the supernet cannot share weights over fails here, in one line
        from nas.supernet import SupernetSpec

        SupernetSpec.from_space(space, num_labels=task.num_labels, max_positions=config.max_seq_len, where=f"space '{config.space}'")

    return space, task


def _run_locked(config: CampaignConfig, paths: CampaignPaths, space: Any, task: Any, started: dict[str, Any], *,
                resume: bool, ray_address: str | None, tracking_uri: str | None, out: Output) -> CampaignResult:
    """:func:`run_campaign` once the folder is locked and validated: study, MLflow run, teacher, trials, report.

    ``started`` receives the study and the tracker as soon as they exist, for the caller's clean-up.
    """
    import optuna

    from nas.tracking import CampaignTracker, default_tracking_uri

    started_s = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # device fit (compiles, fits flash/SRAM) constrains the non-host profiles the search targets
    constrained = bool(config.constraints) or any(p != "host" for p in config.search_profiles())
    if resume and config.storage is None and (paths.root / STUDY_FILE).is_file():
        check_study_file(paths.root / STUDY_FILE, config.name)  # lost results are said, not restarted over
    study = _open_study(config, paths, constrained, resume)
    started["study"] = study
    if resume and study.trials:
        # A sampler rebuilt with the same seed would replay its first proposals (NSGA-II's first generation is
        # seeded random sampling), which are all finished: continue from a seed this study has not used.
        study.sampler = make_sampler(config.sampler, config.seed + len(study.trials), len(config.objectives),
                                     constrained=constrained)
    with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2, and stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.name for o in config.objectives])
    _check_same_space(study, space, config, resume)
    requeued = _requeue_interrupted(study) if resume else 0
    tracking_uri = tracking_uri or default_tracking_uri(paths.root)
    tracker = CampaignTracker(
        tracking_uri, experiment_name=f"lightnas/{config.name}", pending_path=paths.mlflow_pending, warn=out.warn,
        artifact_location=(paths.root / "mlartifacts").resolve().as_uri() if tracking_uri.startswith("sqlite:") else None,
    )
    started["tracker"] = tracker
    parent_run = tracker.start_campaign(
        config.name,
        params={"space": config.space, "profiles": ",".join(config.profiles), "sampler": config.sampler,
                "n_trials": config.n_trials, "steps": config.fidelity.steps, "seed": config.seed},
        artifacts={"campaign.json": config.model_dump(mode="json"), "space.json": space.model_dump(mode="json")},
        resume_run_id=study.user_attrs.get("mlflow_parent_run_id"),
    )
    if parent_run:
        study.set_user_attr("mlflow_parent_run_id", parent_run)
    out.info(
        f"campaign [bold]{config.name}[/] in {paths.root}\n  study: {_storage_text(config, paths)} (study name '{config.name}')\n"
        f"  mlflow: {tracking_uri} (experiment 'lightnas/{config.name}')"
        + (f"\n  resumed: {requeued} interrupted trial(s) queued again" if requeued else "")
    )

    ctx = build_context(config, out, study, task=task, space=space)
    executor = make_executor(config, paths.root, ray_address)
    try:
        _drive(study, space, ctx, executor, tracker, config, out)
    except Exception as exc:
        if is_disk_full(exc):  # SQLite commits whole transactions: the study holds every trial told so far
            raise NasUserError(
                f"{paths.root}: no space left on the device; the study keeps every finished trial. "
                f"Free some space, then continue with: nas resume {paths.root}"
            ) from None
        raise
    finally:
        executor.shutdown()

    from nas.report import build_report
    from nas.report.pareto import pareto_summary, write_pareto_json

    tuning = _tuning_totals(study)
    study.set_user_attr("tuning", tuning)
    if tuning["tasks"]:
        out.info(f"TVM tuning: {tuning['tune_s']:.0f} s on {tuning['tasks'] - tuning['hits']} new workload(s); "
                 f"{tuning['hits']}/{tuning['tasks']} workloads came from the shared database (hit rate {tuning['hit_rate']:.0%})")
    pareto = pareto_summary(study, config)
    write_pareto_json(pareto, paths.pareto)
    _warn_if_nothing_feasible(study, config, out)
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        build_report(paths.root, tracking_uri=tracking_uri)  # report.html, report.json, trials.csv, pareto.csv
    else:
        out.warn("no trial completed, so there is no report; see 'nas status' for the failures")
    tracker.mark_pareto({p["trial"] for p in pareto})
    tracker.finish(summary={"pareto": pareto})
    if tracker.parent_run_id and study.user_attrs.get("mlflow_parent_run_id") != tracker.parent_run_id:
        study.set_user_attr("mlflow_parent_run_id", tracker.parent_run_id)
    if tracker.n_pending:
        out.warn(f"{tracker.n_pending} MLflow record(s) wait in {paths.mlflow_pending}; 'nas resume {paths.root}' sends them")
    states = [t.state for t in study.get_trials(deepcopy=False) if "repeat_of" not in t.user_attrs]
    return CampaignResult(
        paths=paths,
        study_name=config.name,
        n_complete=sum(s == optuna.trial.TrialState.COMPLETE for s in states),
        n_failed=sum(s == optuna.trial.TrialState.FAIL for s in states),
        n_pruned=sum(s == optuna.trial.TrialState.PRUNED for s in states),
        pareto=pareto,
        tracking_uri=tracking_uri,
        wall_s=time.perf_counter() - started_s,
    )


def _warn_if_nothing_feasible(study: optuna.Study, config: CampaignConfig, out: Output) -> None:
    """Say so when trials completed but none met the constraints: the Pareto set is empty for that reason."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "repeat_of" not in t.user_attrs]
    if complete and not any(t.user_attrs.get("feasible", True) for t in complete):
        reasons = sorted({t.user_attrs.get("infeasible_reason", "?") for t in complete})
        out.warn(f"none of the {len(complete)} complete trials met the constraints, so the Pareto set is empty "
                 f"({'; '.join(reasons[:3])}); loosen the constraints in the campaign file and run a new campaign.")


def _drive(study, space, ctx, executor, tracker, config: CampaignConfig, out: Output) -> None:
    """The ask/tell loop: keep ``executor.max_parallel`` jobs in flight until the budget is spent.

    With successive halving (``fidelity.min_steps``), a trial's job at one rung finishing may start its
    next rung's job: the trial stays RUNNING in the study until it is told COMPLETE, PRUNED or FAIL.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    scorer = config.fidelity.scorer
    rungs = [config.fidelity.recovery_steps] if scorer == "supernet" else config.fidelity.rungs()
    deadline = time.monotonic() + config.timeout_s if config.timeout_s else None
    shared_ctx = executor.share(ctx)
    pending: dict[Any, tuple[Any, Any, int]] = {}  # job → (trial, candidate, rung index)
    finished = _finished_by_candidate(study, scorer)
    repeats = consecutive_repeats = 0
    rung_values = _rung_values_so_far(study, config, rungs)
    done = _n_finished(study)
    best = _best_accuracy(study, config)
    columns = (TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[best]}"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with out.progress(*columns) as progress:
        bar = progress.add_task("trials", total=config.n_trials, completed=done, best=_best_text(best))
        while done + len(pending) < config.n_trials or pending:
            out_of_time = deadline is not None and time.monotonic() > deadline
            exhausted = consecutive_repeats >= MAX_CONSECUTIVE_REPEATS
            while not (out_of_time or exhausted) and done + len(pending) < config.n_trials and len(pending) < executor.max_parallel:
                trial = study.ask()
                candidate = space.sample(trial)
                trial.set_user_attr("candidate", candidate.to_dict())
                twin = next((t for t, c, _ in pending.values() if c == candidate), None)
                if twin is not None:  # a sampler proposed a point already in flight: don't spend a slot on it
                    trial.set_user_attr("fail_reason", f"duplicate of running trial {twin.number}")
                    trial.set_user_attr("duplicate", True)
                    study.tell(trial, state=optuna_state("FAIL"))
                    continue
                source = finished.get(_identity(candidate.to_dict()))
                if source is not None:  # a point already scored at this fidelity: its numbers, not a second run
                    _tell_repeat(study, trial, source)
                    repeats += 1
                    consecutive_repeats += 1
                    exhausted = consecutive_repeats >= MAX_CONSECUTIVE_REPEATS
                    continue
                consecutive_repeats = 0
                job = executor.submit(run_trial, candidate, shared_ctx, config.seed + trial.number, rungs[0], scorer)
                pending[job] = (trial, candidate, 0)
            if not pending:
                break
            for outcome in executor.wait(list(pending)):
                trial, candidate, rung = pending.pop(outcome.job)
                if outcome.error is None and rung + 1 < len(rungs):
                    values = _objective_values(outcome.result, config)
                    rung_values.setdefault(rung, []).append(values)
                    trial.set_user_attr(f"rung_{rungs[rung]}_steps", {"values": values, "metrics": outcome.result.to_dict()})
                    if _non_dominated(values, rung_values[rung], [o.direction for o in config.objectives]):
                        job = executor.submit(run_trial, candidate, shared_ctx, config.seed + trial.number, rungs[rung + 1], scorer)
                        pending[job] = (trial, candidate, rung + 1)
                        continue
                    _tell(study, trial, candidate, outcome, tracker, config, out, steps=rungs[rung], pruned=True)
                else:
                    _tell(study, trial, candidate, outcome, tracker, config, out, steps=rungs[rung], fidelity=scorer)
                    if outcome.error is None:
                        finished.setdefault(_identity(candidate.to_dict()), study._storage.get_trial(trial._trial_id))
                done += 1
                if outcome.error is None and rung + 1 == len(rungs):
                    best = max(best or 0.0, outcome.result.accuracy)
                progress.update(bar, completed=done, best=_best_text(best))
    if repeats:
        out.info(f"{repeats} proposal(s) repeated a finished candidate and took its values without running (repeat_of)")
    if consecutive_repeats >= MAX_CONSECUTIVE_REPEATS:
        out.warn(f"the sampler proposed only finished candidates {MAX_CONSECUTIVE_REPEATS} times in a row: the space looks "
                 f"exhausted, so the search stopped at {done} of {config.n_trials} trials")
    if scorer == "supernet" and config.fidelity.promote_top and not (deadline is not None and time.monotonic() > deadline):
        _promote(study, space, shared_ctx, executor, tracker, config, out)


# Proposals in a row that only repeat finished candidates before a search is called exhausted (a small
# discrete space, fully explored); each costs an ask and a tell, no training.
MAX_CONSECUTIVE_REPEATS = 100


def _identity(candidate: dict[str, Any]) -> str:
    return json.dumps(candidate, sort_keys=True)


def _finished_by_candidate(study, scorer: str) -> dict[str, Any]:
    """COMPLETE trials scored by ``scorer`` at the full budget, by candidate: what a repeated proposal reuses.

    Promoted trials and repeats themselves are left out (a repeat points at its source).
    """
    from optuna.trial import TrialState

    found: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = t.user_attrs
        if attrs.get("fidelity", "standalone") == scorer and "candidate" in attrs and "repeat_of" not in attrs \
                and "promoted_from" not in attrs:
            found.setdefault(_identity(attrs["candidate"]), t)
    return found


def _tell_repeat(study, trial, source) -> None:
    """Tell ``trial`` the values of ``source``, an earlier trial of the same candidate, without running it.

    Samplers re-propose finished points (NSGA-II's crossover and mutation of a small discrete space often
    do; Optuna's FAQ suggests returning the stored value). Training it again would cost a full trial for a
    second noisy reading of the same number. Instead the sampler learns the known value; the trial does not
    count toward ``n_trials`` (the budget buys new candidates), and reports leave it out (``repeat_of``),
    so no point is listed twice.
    """
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    for key in ("metrics", "feasible", "infeasible_reason", "fidelity", "fidelity_steps"):
        if key in source.user_attrs:
            trial.set_user_attr(key, source.user_attrs[key])
    trial.set_user_attr("repeat_of", source.number)
    prefix = f"{_CONSTRAINTS_KEY}:"
    for key, value in source.system_attrs.items():
        if key.startswith(prefix):
            trial.set_constraint(key[len(prefix):], value)
    study.tell(trial, list(source.values))


def _promote(study, space, shared_ctx, executor, tracker, config: CampaignConfig, out: Output) -> None:
    """Re-run the best non-dominated supernet-scored trials stand-alone, as new trials of fidelity ``standalone``.

    Up to ``fidelity.promote_top`` of the feasible inherited trials no other inherited trial dominates, best
    first by the first objective, each trained like a standalone campaign's trial (``fidelity.steps``). A
    promoted trial records ``promoted_from`` (the inherited trial's number); after a resume, trials already
    promoted are not run again.
    """
    from optuna.trial import TrialState

    directions = [o.direction for o in config.objectives]
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    already = {t.user_attrs["promoted_from"] for t in finished if "promoted_from" in t.user_attrs}
    inherited = [t for t in finished if t.state == TrialState.COMPLETE and t.user_attrs.get("fidelity") == "supernet"
                 and t.user_attrs.get("feasible", True)]
    front = [t for t in inherited if _non_dominated(list(t.values), [list(o.values) for o in inherited], directions)]
    front.sort(key=lambda t: t.values[0], reverse=directions[0] == "maximize")
    chosen = [t for t in front[: config.fidelity.promote_top] if t.number not in already]
    if not chosen:
        return
    out.info(f"promoting {len(chosen)} supernet Pareto trial(s) to stand-alone training "
             f"({config.fidelity.steps} steps each): {', '.join(str(t.number) for t in chosen)}")
    pending: dict[Any, tuple[Any, Any]] = {}
    queue = list(chosen)
    while queue or pending:
        while queue and len(pending) < executor.max_parallel:
            source = queue.pop(0)
            study.enqueue_trial(source.params, skip_if_exists=False)
            trial = study.ask()
            candidate = space.sample(trial)
            trial.set_user_attr("candidate", candidate.to_dict())
            trial.set_user_attr("promoted_from", source.number)
            job = executor.submit(run_trial, candidate, shared_ctx, config.seed + trial.number, config.fidelity.steps, "standalone")
            pending[job] = (trial, candidate)
        for outcome in executor.wait(list(pending)):
            trial, candidate = pending.pop(outcome.job)
            _tell(study, trial, candidate, outcome, tracker, config, out, steps=config.fidelity.steps, fidelity="standalone")


def optuna_state(name: str) -> Any:
    from optuna.trial import TrialState

    return TrialState[name]


def _objective_values(metrics: Any, config: CampaignConfig) -> list[float]:
    return [float(metrics.objective(o.metric, o.profile)) for o in config.objectives]


def _dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    """True if ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]
    ge = all(s * x >= s * y for s, x, y in zip(sign, a, b))
    return ge and any(s * x > s * y for s, x, y in zip(sign, a, b))


def _non_dominated(values: list[float], others: list[list[float]], directions: list[str]) -> bool:
    """Successive halving's promotion rule: promote a result no other result at its rung dominates."""
    return not any(_dominates(o, values, directions) for o in others)


def _rung_values_so_far(study, config: CampaignConfig, rungs: list[int]) -> dict[int, list[list[float]]]:
    """Rung results of earlier runs of this campaign (for promotion decisions after a resume)."""
    found: dict[int, list[list[float]]] = {}
    for trial in study.get_trials(deepcopy=False):
        for i, steps in enumerate(rungs[:-1]):
            record = trial.user_attrs.get(f"rung_{steps}_steps")
            if record:
                found.setdefault(i, []).append(record["values"])
    return found


def _tell(study, trial, candidate, outcome, tracker, config: CampaignConfig, out: Output, steps: int, pruned: bool = False,
          fidelity: str = "standalone") -> None:
    """Record one finished trial in the study and in MLflow: COMPLETE (feasible or not), PRUNED or FAIL.

    ``fidelity`` says what produced the numbers (``standalone`` training or ``supernet`` inheritance); it is
    the trial's ``fidelity`` user attribute and its ``lightnas.fidelity`` MLflow tag.
    """
    from optuna.trial import TrialState

    params = {**trial.params, "candidate_key": candidate.key, "fidelity_steps": steps, "fidelity": fidelity}
    trial.set_user_attr("fidelity_steps", steps)
    trial.set_user_attr("fidelity", fidelity)
    if outcome.error is not None:
        reason = f"{type(outcome.error).__name__}: {outcome.error}"
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("traceback", "".join(traceback.format_exception(outcome.error))[-4000:])
        study.tell(trial, state=TrialState.FAIL)
        tracker.log_trial(trial.number, params, {}, {"lightnas.fail_reason": reason[:500], "lightnas.state": "FAIL",
                                                      "lightnas.fidelity": fidelity},
                          {"candidate.json": candidate.to_dict()}, failed=True)
        out.warn(f"trial {trial.number} ({candidate.key}) failed: {reason}")
        return
    metrics = outcome.result
    values = _objective_values(metrics, config)
    trial.set_user_attr("metrics", metrics.to_dict())
    violations = {c.name: c.violation(metrics.objective(c.metric, c.profile)) for c in config.constraints}
    searched = set(config.search_profiles())  # fits@<profile>: compiles for and fits each device the search targets
    violations.update({k: v for k, v in metrics.hardware_constraints().items() if k.split("@", 1)[1] in searched})
    for name, v in violations.items():
        trial.set_constraint(name, v)
    feasible = all(v <= 0 for v in violations.values())
    trial.set_user_attr("feasible", feasible)
    if not feasible:
        trial.set_user_attr("infeasible_reason", "; ".join(f"{k} violated by {v:g}" for k, v in violations.items() if v > 0))
    state = "PRUNED" if pruned else "COMPLETE"
    if pruned:
        trial.set_user_attr("pruned_reason", f"dominated at {steps} training steps (successive halving)")
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, values)
    flat = {"accuracy": metrics.accuracy, "size_bytes": metrics.size_bytes, "num_params": metrics.num_params,
            "sparsity": metrics.sparsity, "final_loss": metrics.final_loss,
            **{f"time_{k}": v for k, v in metrics.timings_s.items()},
            **{f"constraint.{k}": v for k, v in violations.items()}}
    tags = {"lightnas.state": state, "lightnas.feasible": str(feasible).lower(), "lightnas.fidelity": fidelity}
    for profile, lat in metrics.latency.items():
        flat[f"latency_ms.{profile}"] = lat.median_ms
        flat[f"latency_std_ms.{profile}"] = lat.std_ms
        tags[f"latency.{profile}"] = lat.label
        tags[f"latency.{profile}.source"] = "measured" if lat.is_measured else "estimated"
    for backend, lat in metrics.reference_latency.items():
        flat[f"reference_latency_ms.{backend}"] = lat.median_ms
        tags[f"reference_latency.{backend}"] = lat.label
    tracker.log_trial(trial.number, params, flat, tags,
                      {"candidate.json": candidate.to_dict(), "metrics.json": metrics.to_dict()},
                      files=metrics.artifacts)


def _best_accuracy(study, config: CampaignConfig) -> float | None:
    from optuna.trial import TrialState

    accs = [t.user_attrs["metrics"]["accuracy"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "metrics" in t.user_attrs]
    return max(accs) if accs else None


def _best_text(best: float | None) -> str:
    return f"best acc {best:.3f}" if best is not None else "best acc -"


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
            raise NasUserError(f"{db}: cannot be opened for reading ({_first_line(exc)}); a read-only folder "
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def pareto_json_text(result: CampaignResult) -> str:
    return json.dumps(result.pareto, indent=2)
