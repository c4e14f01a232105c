"""A campaign: an Optuna multi-objective study driven by ask/tell, trials run by an executor.

:func:`run_campaign` composes the pieces, each in its own module:

* :mod:`~nas.search.folder`: the campaign folder, its config snapshot and the one-driver lock;
* :mod:`~nas.search.store`: the study's storage, opening and resuming it (``load_study`` for readers);
* :mod:`~nas.search.context`: the teacher and supernet, built once (``build_context``);
* :mod:`~nas.search.driver` with :mod:`~nas.search.schedule` and :mod:`~nas.search.tell`: the ask/tell loop;
* :mod:`~nas.search.record`: the typed trial record and the MLflow schema.

The report is not built here: ``nas search`` and ``nas resume`` build it from the folder afterwards.
The names re-exported below keep ``from nas.search.campaign import ...`` working for existing callers.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.config import CampaignConfig
from nas.errors import NasUserError, is_disk_full
from nas.output import Output
from nas.samplers import build_sampler
from nas.search.context import STALE_TEMP_S, build_context, cache_root, prepare_supernet_dir, sweep_stale_teacher_temps
from nas.search.driver import MAX_CONSECUTIVE_REPEATS, Driver, run_trial
from nas.search.folder import (
    CONFIG_FILE, LOCK_FILE, STUDY_FILE, CampaignLock, CampaignPaths, discard_new_campaign, entries, has_finished_trials,
    lock_holder, prepare_campaign_dir, read_campaign_config,
)
from nas.search.record import n_finished, tuning_totals
from nas.search.schedule import make_scheduler, non_dominated
from nas.search.store import (
    check_same_space, check_storage, check_study_file, folder_is_writable, load_study, make_storage, open_study,
    requeue_interrupted, sqlite_storage, storage_text,
)
from nas.search.tell import Teller

if TYPE_CHECKING:
    import optuna

    from nas.search.executor import Executor

__all__ = [
    "CONFIG_FILE", "LOCK_FILE", "MAX_CONSECUTIVE_REPEATS", "STALE_TEMP_S", "STUDY_FILE", "CampaignLock", "CampaignPaths",
    "CampaignResult", "build_context", "cache_root", "check_storage", "check_study_file", "folder_is_writable",
    "load_study", "lock_holder", "make_executor", "make_sampler", "make_storage", "n_finished", "non_dominated",
    "prepare_campaign_dir", "prepare_supernet_dir", "read_campaign_config", "run_campaign", "run_trial",
    "sqlite_storage", "sweep_stale_teacher_temps", "tuning_totals", "validate_campaign",
]


@dataclass(frozen=True)
class CampaignResult:
    """What :func:`run_campaign` returns: counts (repeats left out), the Pareto set, and where things are."""

    paths: CampaignPaths
    study_name: str
    n_complete: int
    n_failed: int
    n_pruned: int
    pareto: list[dict[str, Any]]
    tracking_uri: str
    wall_s: float


def make_sampler(name: str, seed: int, constrained: bool = False, n_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """The campaign's Optuna sampler, from :data:`nas.samplers.SAMPLERS`, sized to the budget ``n_trials``.

    Constraint values are set on each trial before it is told (``trial.set_constraint``); samplers that
    support constraints read them back through ``constraints_func``.
    """
    from nas.search.optuna_private import stored_constraints

    return build_sampler(name, seed, stored_constraints if constrained else None, n_trials=n_trials)


def make_executor(config: CampaignConfig, ray_address: str | None = None) -> Executor:
    """The campaign's executor: in this process, or Ray (``executor.kind: ray`` or a Ray address)."""
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
        gpus_per_trial=spec.gpus_per_trial,
    )


def validate_campaign(config: CampaignConfig, ray_address: str | None = None) -> tuple[Any, Any]:
    """Check everything a user can get wrong before anything is written; returns the space and the task.

    Nothing here creates a file, a study, an MLflow run or a teacher, so a mistake costs seconds.
    """
    from nas.hardware.profiles import load_profile
    from nas.search.space import load_space

    space = load_space(config.space)
    from nas.data.loaders import load_task
    from nas.device import resolve_device
    from nas.models.teacher import load_tokenizer

    profiles = {name: load_profile(name) for name in config.profiles}
    for item in [*config.objectives, *config.constraints]:  # memory figures exist for MCU profiles only
        if item.metric in ("flash_bytes", "peak_memory_bytes") and not profiles[item.profile].is_mcu:
            raise NasUserError(
                f"{item.metric} on profile '{item.profile}': flash and peak memory are computed for MCU profiles "
                "(hw_class: mcu) only; use an MCU profile or size_bytes."
            )
    load_tokenizer(config.teacher.model)  # a teacher folder that is not a model fails here, in one line
    resolve_device(config.device)  # device: cuda without a GPU fails here, in one line (the teacher trains on this machine)
    if ray_address or config.executor.address:
        from nas.search.executor import check_ray_address

        check_ray_address(ray_address or config.executor.address)
    check_storage(config)
    task = load_task(config.task)
    if config.fidelity.scorer == "supernet":  # a space the supernet cannot share weights over fails here, in one line
        from nas.supernet import SupernetSpec

        SupernetSpec.from_space(space, num_labels=task.num_labels, max_positions=config.max_seq_len, where=f"space '{config.space}'")

    return space, task




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
        campaign_dir: Folder holding the study, config snapshot, MLflow store and ``pareto.json``.
        resume: Continue the campaign already in ``campaign_dir``.
        ray_address: Run trials on this Ray cluster (implies the Ray executor).
        tracking_uri: MLflow tracking URI; default ``MLFLOW_TRACKING_URI`` or SQLite in the folder.
        out: Where messages and progress go.

    Returns:
        Counts, the Pareto set and where everything was written. The HTML report is the caller's to build
        (``nas.report.build_report``), as ``nas search`` does.

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
    existed = entries(paths.root)
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
        if not resume and not has_finished_trials(started.get("study")):
            discard_new_campaign(paths, config, existed, started)
        raise
    finally:
        lock.release()


def _run_locked(config: CampaignConfig, paths: CampaignPaths, space: Any, task: Any, started: dict[str, Any], *,
                resume: bool, ray_address: str | None, tracking_uri: str | None, out: Output) -> CampaignResult:
    """:func:`run_campaign` once the folder is locked and validated: study, MLflow run, teacher, trials, summary.

    ``started`` receives the study and the tracker as soon as they exist, for the caller's clean-up.
    """
    from nas.tracking import default_tracking_uri

    started_s = time.perf_counter()
    study, requeued = _prepare_study(config, paths, space, started, resume)
    tracking_uri = tracking_uri or default_tracking_uri(paths.root)
    tracker = _start_tracker(config, paths, space, study, tracking_uri, started, out)
    out.info(
        f"campaign {config.name} in {paths.root}\n  study: {storage_text(config, paths)} (study name '{config.name}')\n"
        f"  mlflow: {tracking_uri} (experiment 'lightnas/{config.name}')"
        + (f"\n  resumed: {requeued} interrupted trial(s) queued again" if requeued else "")
    )
    ctx = build_context(config, out, study, task=task, space=space)
    _search(config, paths, study, space, ctx, tracker, ray_address, out)
    pareto = _summarise(config, paths, study, tracker, out)
    return _result(config, paths, study, pareto, tracking_uri, time.perf_counter() - started_s)


def _prepare_study(config: CampaignConfig, paths: CampaignPaths, space: Any, started: dict[str, Any],
                   resume: bool) -> tuple[optuna.Study, int]:
    """Open (or create) the study with the campaign's sampler; on resume, requeue interrupted trials.

    Returns the study and how many interrupted trials were queued again.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # device fit (compiles, fits flash/SRAM) constrains the non-host profiles the search targets
    constrained = bool(config.constraints) or any(p != "host" for p in config.search_profiles())
    if resume and config.storage is None and (paths.root / STUDY_FILE).is_file():
        check_study_file(paths.root / STUDY_FILE, config.name)  # lost results are said, not restarted over
    study = open_study(config, paths, make_sampler(config.sampler, config.seed, constrained, config.n_trials), resume)
    started["study"] = study
    if resume and study.trials:
        # A sampler rebuilt with the same seed would replay its first proposals (NSGA-II's first generation is
        # seeded random sampling), which are all finished: continue from a seed this study has not used.
        study.sampler = make_sampler(config.sampler, config.seed + len(study.trials), constrained, config.n_trials)
    with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2, and stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.name for o in config.objectives])
    check_same_space(study, space, config, resume)
    return study, requeue_interrupted(study) if resume else 0


def _start_tracker(config: CampaignConfig, paths: CampaignPaths, space: Any, study: optuna.Study, tracking_uri: str,
                   started: dict[str, Any], out: Output) -> Any:
    """The campaign's MLflow parent run (resumed when the study names one); returns the tracker."""
    from nas.tracking import CampaignTracker

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
    return tracker


def _search(config: CampaignConfig, paths: CampaignPaths, study: optuna.Study, space: Any, ctx: Any, tracker: Any,
            ray_address: str | None, out: Output) -> None:
    """Run the ask/tell loop on the campaign's executor; a full disk is a user error naming ``nas resume``."""
    executor = make_executor(config, ray_address)
    try:
        teller = Teller(study, tracker, config, out)
        Driver(study, space, ctx, executor, teller, make_scheduler(config, study), config, out).run()
    except Exception as exc:
        if is_disk_full(exc):  # SQLite commits whole transactions: the study holds every trial told so far
            raise NasUserError(
                f"{paths.root}: no space left on the device; the study keeps every finished trial. "
                f"Free some space, then continue with: nas resume {paths.root}"
            ) from None
        raise
    finally:
        executor.shutdown()


def _summarise(config: CampaignConfig, paths: CampaignPaths, study: optuna.Study, tracker: Any,
               out: Output) -> list[dict[str, Any]]:
    """Tuning totals, ``pareto.json``, Pareto tags in MLflow and the parent run's end; returns the Pareto set."""
    from nas.search.pareto import pareto_summary, write_pareto_json

    tuning = tuning_totals(study)
    study.set_user_attr("tuning", tuning)
    if tuning["tasks"]:
        out.info(f"TVM tuning: {tuning['tune_s']:.0f} s on {tuning['tasks'] - tuning['hits']} new workload(s); "
                 f"{tuning['hits']}/{tuning['tasks']} workloads came from the shared database (hit rate {tuning['hit_rate']:.0%})")
    pareto = pareto_summary(study, config)
    write_pareto_json(pareto, paths.pareto)
    _warn_if_nothing_feasible(study, out)
    tracker.mark_pareto({p["trial"] for p in pareto})
    tracker.finish(summary={"pareto": pareto})
    if tracker.parent_run_id and study.user_attrs.get("mlflow_parent_run_id") != tracker.parent_run_id:
        study.set_user_attr("mlflow_parent_run_id", tracker.parent_run_id)
    if tracker.n_pending:
        out.warn(f"{tracker.n_pending} MLflow record(s) wait in {paths.mlflow_pending}; 'nas resume {paths.root}' sends them")
    return pareto


def _warn_if_nothing_feasible(study: optuna.Study, out: Output) -> None:
    """Say so when trials completed but none met the constraints: the Pareto set is empty for that reason."""
    from nas.search.record import records

    complete = [r for r in records(study, "COMPLETE") if not r.is_repeat]
    if complete and not any(r.is_feasible for r in complete):
        reasons = sorted({r.attrs.get("infeasible_reason", "?") for r in complete})
        out.warn(f"none of the {len(complete)} complete trials met the constraints, so the Pareto set is empty "
                 f"({'; '.join(reasons[:3])}); loosen the constraints in the campaign file and run a new campaign.")


def _result(config: CampaignConfig, paths: CampaignPaths, study: optuna.Study, pareto: list[dict[str, Any]],
            tracking_uri: str, wall_s: float) -> CampaignResult:
    from nas.search.record import records

    states = [r.state for r in records(study) if not r.is_repeat]
    return CampaignResult(paths=paths, study_name=config.name, n_complete=states.count("COMPLETE"),
                          n_failed=states.count("FAIL"), n_pruned=states.count("PRUNED"), pareto=pareto,
                          tracking_uri=tracking_uri, wall_s=wall_s)
