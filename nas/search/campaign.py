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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nas.config import CampaignConfig, load_campaign_config
from nas.errors import NasUserError
from nas.output import Output

if TYPE_CHECKING:
    import optuna

    from nas.search.executor import Executor
    from nas.search.objective import TrialContext

CONFIG_FILE = "campaign.yaml"
STUDY_FILE = "study.db"


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
    pareto: list[dict[str, Any]]
    tracking_uri: str
    wall_s: float


def make_sampler(name: str, seed: int, n_objectives: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of a campaign (NSGA-II by default)."""
    import optuna

    samplers = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=8),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    return samplers[name]()


def make_executor(config: CampaignConfig, campaign_dir: Path, ray_address: str | None = None) -> Executor:
    from nas.search.executor import InProcessExecutor, RayExecutor

    spec = config.executor
    if spec.kind == "inprocess" and not ray_address:
        return InProcessExecutor()
    return RayExecutor(
        workers=spec.workers,
        cpus_per_trial=spec.cpus_per_trial,
        address=ray_address or spec.address,
        max_retries=spec.max_retries,
    )


def prepare_campaign_dir(config: CampaignConfig | None, campaign_dir: Path, resume: bool) -> CampaignConfig:
    """Create (or, to resume, read) the campaign folder and return the campaign's config."""
    paths = CampaignPaths(Path(campaign_dir))
    if resume:
        if not paths.config.is_file():
            raise NasUserError(f"{campaign_dir}: no campaign here ({CONFIG_FILE} is missing); start one with 'nas search --out {campaign_dir}'.")
        return load_campaign_config(paths.config)
    if paths.config.exists():
        raise NasUserError(f"{campaign_dir}: a campaign already exists here; continue it with 'nas resume {campaign_dir}' or choose another --out.")
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.config.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    except OSError as exc:
        raise NasUserError(f"{campaign_dir}: cannot write the campaign folder ({exc.strerror}); choose a writable --out.") from None
    return config


def build_context(config: CampaignConfig, out: Output) -> TrialContext:
    """Build the expensive shared state once: data, tokens, the fine-tuned teacher and its logits."""
    import os

    from nas.data.loaders import load_task
    from nas.data.tokenize import tokenize_task
    from nas.hardware.profiles import load_profile
    from nas.models.teacher import load_tokenizer, prepare_teacher
    from nas.search.objective import LatencySettings, TrialContext
    from nas.train import TrainSettings

    profiles = [load_profile(name) for name in config.profiles]
    task = load_task(config.task)
    out.info(f"task [bold]{task.name}[/]: " + ", ".join(f"{k} {len(v.texts)}" for k, v in task.splits.items()))
    tensors = tokenize_task(task, load_tokenizer(), config.max_seq_len)
    teacher = prepare_teacher(tensors, config.teacher, cache_root(), progress=not out.quiet)
    source = "cache" if teacher.from_cache else "fine-tuned now"
    out.info(f"teacher ({source}): validation accuracy {teacher.validation_accuracy:.3f}")
    threads = config.executor.cpus_per_trial if config.executor.kind == "ray" else (os.cpu_count() or 1)
    return TrialContext(
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
        ),
        threads=threads,
    )


def cache_root() -> Path:
    """Cache of fine-tuned teachers (and later tuning records): ``$LIGHTNAS_CACHE`` or ``~/.cache/lightnas``."""
    import os

    return Path(os.environ.get("LIGHTNAS_CACHE", Path.home() / ".cache" / "lightnas"))


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
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        if not t.user_attrs.get("interrupted")
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
        NasUserError: For a bad folder, config, space or profile.
    """
    import optuna

    from nas.hardware.profiles import load_profile
    from nas.search.objective import evaluate_candidate
    from nas.search.space import load_space
    from nas.tracking import CampaignTracker, default_tracking_uri

    out = out or Output()
    started = time.perf_counter()
    paths = CampaignPaths(Path(campaign_dir))
    config = prepare_campaign_dir(config, paths.root, resume)
    space = load_space(config.space)
    for name in config.profiles:  # validate before the expensive setup
        load_profile(name)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=config.name,
        storage=paths.storage_url,
        directions=[o.direction for o in config.objectives],
        sampler=make_sampler(config.sampler, config.seed, len(config.objectives)),
        load_if_exists=resume,
    )
    study.set_metric_names([o.name for o in config.objectives])
    requeued = _requeue_interrupted(study) if resume else 0
    tracking_uri = tracking_uri or default_tracking_uri(paths.root)
    tracker = CampaignTracker(tracking_uri, experiment_name=f"lightnas/{config.name}")
    parent_run = tracker.start_campaign(
        config.name,
        params={"space": config.space, "profiles": ",".join(config.profiles), "sampler": config.sampler,
                "n_trials": config.n_trials, "steps": config.fidelity.steps, "seed": config.seed},
        artifacts={"campaign.json": config.model_dump(mode="json"), "space.json": space.model_dump(mode="json")},
        resume_run_id=study.user_attrs.get("mlflow_parent_run_id"),
    )
    study.set_user_attr("mlflow_parent_run_id", parent_run)
    out.info(
        f"campaign [bold]{config.name}[/] in {paths.root}\n  study: {paths.storage_url} (study name '{config.name}')\n"
        f"  mlflow: {tracking_uri} (experiment 'lightnas/{config.name}')"
        + (f"\n  resumed: {requeued} interrupted trial(s) queued again" if requeued else "")
    )

    ctx = build_context(config, out)
    executor = make_executor(config, paths.root, ray_address)
    try:
        _drive(study, space, ctx, executor, tracker, config, out, evaluate_candidate)
    except KeyboardInterrupt:
        tracker.finish(status="KILLED")
        out.error(f"stopped; finished trials are saved. Resume with: nas resume {paths.root}")
        raise
    finally:
        executor.shutdown()

    from nas.report.pareto import pareto_summary, write_pareto_json
    from nas.report.html import write_report

    pareto = pareto_summary(study, config)
    write_pareto_json(pareto, paths.pareto)
    write_report(study, config, pareto, paths.report)
    tracker.mark_pareto({p["trial"] for p in pareto})
    tracker.finish(summary={"pareto": pareto})
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return CampaignResult(
        paths=paths,
        study_name=config.name,
        n_complete=sum(s == optuna.trial.TrialState.COMPLETE for s in states),
        n_failed=sum(s == optuna.trial.TrialState.FAIL for s in states),
        pareto=pareto,
        tracking_uri=tracking_uri,
        wall_s=time.perf_counter() - started,
    )


def _drive(study, space, ctx, executor, tracker, config: CampaignConfig, out: Output, objective_fn) -> None:
    """The ask/tell loop: keep ``executor.max_parallel`` trials in flight until the budget is spent."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    deadline = time.monotonic() + config.timeout_s if config.timeout_s else None
    shared_ctx = executor.share(ctx)
    pending: dict[Any, tuple[Any, Any]] = {}  # job → (trial, candidate)
    done = _n_finished(study)
    best = _best_accuracy(study, config)
    columns = (TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[best]}"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with out.progress(*columns) as progress:
        bar = progress.add_task("trials", total=config.n_trials, completed=done, best=_best_text(best))
        while done + len(pending) < config.n_trials or pending:
            out_of_time = deadline is not None and time.monotonic() > deadline
            while not out_of_time and done + len(pending) < config.n_trials and len(pending) < executor.max_parallel:
                trial = study.ask()
                candidate = space.sample(trial)
                trial.set_user_attr("candidate", candidate.to_dict())
                job = executor.submit(objective_fn, candidate, shared_ctx, config.seed + trial.number)
                pending[job] = (trial, candidate)
            if not pending:
                break
            for outcome in executor.wait(list(pending)):
                trial, candidate = pending.pop(outcome.job)
                _tell(study, trial, candidate, outcome, tracker, config, out)
                done += 1
                if outcome.error is None:
                    best = max(best or 0.0, outcome.result.accuracy)
                progress.update(bar, completed=done, best=_best_text(best))


def _tell(study, trial, candidate, outcome, tracker, config: CampaignConfig, out: Output) -> None:
    """Record one finished trial in the study and in MLflow."""
    from optuna.trial import TrialState

    params = {**trial.params, "candidate_key": candidate.key}
    if outcome.error is not None:
        reason = f"{type(outcome.error).__name__}: {outcome.error}"
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("traceback", "".join(traceback.format_exception(outcome.error))[-4000:])
        study.tell(trial, state=TrialState.FAIL)
        tracker.log_trial(trial.number, params, {}, {"lightnas.fail_reason": reason[:500]},
                          {"candidate.json": candidate.to_dict()}, failed=True)
        out.warn(f"trial {trial.number} ({candidate.key}) failed: {reason}")
        return
    metrics = outcome.result
    values = [metrics.objective(o.metric, o.profile) for o in config.objectives]
    trial.set_user_attr("metrics", metrics.to_dict())
    study.tell(trial, values)
    flat = {"accuracy": metrics.accuracy, "size_bytes": metrics.size_bytes, "num_params": metrics.num_params,
            "sparsity": metrics.sparsity, "final_loss": metrics.final_loss,
            **{f"time_{k}": v for k, v in metrics.timings_s.items()}}
    tags = {}
    for profile, lat in metrics.latency.items():
        flat[f"latency_ms.{profile}"] = lat.median_ms
        flat[f"latency_std_ms.{profile}"] = lat.std_ms
        tags[f"latency.{profile}"] = lat.label
    for backend, lat in metrics.reference_latency.items():
        flat[f"reference_latency_ms.{backend}"] = lat.median_ms
        tags[f"reference_latency.{backend}"] = lat.label
    tracker.log_trial(trial.number, params, flat, tags,
                      {"candidate.json": candidate.to_dict(), "metrics.json": metrics.to_dict()})


def _best_accuracy(study, config: CampaignConfig) -> float | None:
    from optuna.trial import TrialState

    accs = [t.user_attrs["metrics"]["accuracy"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "metrics" in t.user_attrs]
    return max(accs) if accs else None


def _best_text(best: float | None) -> str:
    return f"best acc {best:.3f}" if best is not None else "best acc -"


def load_study(campaign_dir: str | Path) -> tuple[optuna.Study, CampaignConfig]:
    """Open a campaign's study read-only style (for status and reports)."""
    import optuna

    paths = CampaignPaths(Path(campaign_dir))
    if not paths.config.is_file():
        raise NasUserError(f"{campaign_dir}: no campaign here ({CONFIG_FILE} is missing).")
    config = load_campaign_config(paths.config)
    study = optuna.load_study(study_name=config.name, storage=paths.storage_url)
    return study, config


def pareto_json_text(result: CampaignResult) -> str:
    return json.dumps(result.pareto, indent=2)
