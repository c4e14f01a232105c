"""``nas select``: pick the model to ship on one hardware profile, rebuild it, check it, export it.

The choice is a pure function of the study (:func:`choose_trial`): among complete, feasible trials that
meet the user's limits, take the most accurate, then the fastest on the profile, then the smallest. That
trial is always on the (accuracy, latency, size) Pareto front: anything dominating it would also meet
the limits and win the tie-breaks.

Trials do not keep their weights, so the chosen student is rebuilt from its ``candidate`` the way the
trial built it (same seed, same steps), and the rebuild is checked against the validation accuracy the
trial recorded. ``finalize`` instead retrains with a larger distillation budget, plus quantization-aware
fine-tuning when the candidate is quantized. The student is then scored on the held-out test split,
exported (Hugging Face folder, ONNX, TVM library, model card) and registered in MLflow's model registry.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasUserError
from nas.output import Output
from nas.search.pareto import complete_trials, peak_memory_mib, usable_on
from nas.select_checks import check_parity, export_checked, held_out_split, shipped_latency  # noqa: F401 - nas.select's API

if TYPE_CHECKING:
    import optuna
    import torch

    from nas.candidate import Candidate
    from nas.config import CampaignConfig
    from nas.search.objective import TrialContext

FINALIZE_FACTOR = 4  # --finalize default: 4× the search's step budget (a starting point, not tuned; see --finalize-steps)
QAT_SHARE = 0.25  # share of the finalize budget spent on quantization-aware fine-tuning after pruning
SELECT_TUNE_TRIALS = 16  # --tune-trials default: MetaSchedule trials per workload the shared database lacks


@dataclass(frozen=True)
class SelectionCriteria:
    """What the user asked for.

    Args:
        profile: Hardware profile to select for; one of the campaign's profiles.
        max_latency_ms: Upper bound on the median latency on ``profile`` in ms, or None.
        min_accuracy: Lower bound on validation accuracy in [0, 1], or None.
        max_size_kb: Upper bound on the stored size in KiB (1024 bytes), or None.
    """

    profile: str
    max_latency_ms: float | None = None
    min_accuracy: float | None = None
    max_size_kb: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_latency_ms", "max_size_kb"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise NasUserError(f"--{name.replace('_', '-')} {value:g} must be positive.")
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise NasUserError(f"--min-accuracy {self.min_accuracy:g} must lie in [0, 1] (a share, not a percentage).")

    def violations(self, row: dict[str, float]) -> dict[str, float]:
        """Relative amount by which ``row`` misses each limit (0 when met), by option name."""
        misses = {}
        if self.max_latency_ms is not None:
            misses["--max-latency-ms"] = max(0.0, row["latency_ms"] / self.max_latency_ms - 1)
        if self.min_accuracy is not None:
            misses["--min-accuracy"] = max(0.0, 1 - row["accuracy"] / self.min_accuracy) if self.min_accuracy else 0.0
        if self.max_size_kb is not None:
            misses["--max-size-kb"] = max(0.0, row["size_kib"] / self.max_size_kb - 1)
        return misses


@dataclass(frozen=True)
class Choice:
    """The selected trial and why: ``reasons`` are sentences for the user."""

    trial: int
    candidate: dict[str, Any]
    metrics: dict[str, Any]
    latency: dict[str, Any]  # the trial's LatencyResult on the profile, as a dict
    reasons: list[str]
    n_feasible: int
    n_considered: int


def _describe(number: int, row: dict[str, Any]) -> str:
    lat = row["latency"]
    from nas.hardware.measure import provenance

    how = provenance(lat["is_measured"], lat["is_tuned"], lat["backend"])
    return f"trial {number} (accuracy {row['accuracy']:.4f}, {row['latency_ms']:.3f} ms {how}, {row['size_kib']:.0f} KiB)"


def _usable_rows(study: optuna.Study, config: CampaignConfig, profile: str) -> tuple[dict, dict, list, list]:
    """``(rows, trials, feasible_trials, standalone)``: the trials choosable on ``profile`` and their axis values.

    Usable on a profile means the campaign's constraints and this device's fit, not the other devices'.
    Supernet-scored (inherited) accuracies rank candidates but are not what training gives; once some trials
    were trained stand-alone (promoted), only those are choosable.
    """
    from nas.report.pareto import axis_values
    from nas.search.record import TrialRecord

    feasible_trials = [t for t in complete_trials(study) if usable_on(t, config, profile)]
    standalone = [t for t in feasible_trials if TrialRecord.from_trial(t).fidelity == "standalone"]
    trials = {t.number: t for t in (standalone or feasible_trials)}
    rows: dict[int, dict[str, Any]] = {}
    for number, trial in trials.items():
        values = axis_values(trial, profile)
        if values["latency_ms"] is not None:
            rows[number] = {**values, "latency": TrialRecord.from_trial(trial).metrics_dict["latency"][profile]}
    return rows, trials, feasible_trials, standalone


def choose_trial(study: optuna.Study, config: CampaignConfig, criteria: SelectionCriteria) -> Choice:
    """The best trial for ``criteria``: most accurate, then fastest on the profile, then smallest.

    Raises:
        NasUserError: For an unknown profile, a campaign without complete trials, or when no trial meets
            the limits (the message names the closest trial and the limit to relax).
    """
    from nas.report.pareto import front_numbers
    from nas.search.record import TrialRecord

    if criteria.profile not in config.profiles:
        raise NasUserError(f"--profile '{criteria.profile}' is not a profile of campaign {config.name}; choose one of {', '.join(config.profiles)}.")
    rows, trials, feasible_trials, standalone = _usable_rows(study, config, criteria.profile)
    if not rows:
        if complete_trials(study):
            raise NasUserError(f"no complete trial of campaign {config.name} can ship on {criteria.profile}: none meets the "
                               "campaign's constraints and fits that device; 'nas status' says which limits they missed.")
        raise NasUserError(f"campaign {config.name} has no complete trial with a latency on {criteria.profile}; run or resume the search first.")
    feasible = [n for n, r in rows.items() if not any(criteria.violations(r).values())]
    if not feasible:
        closest = min(rows, key=lambda n: sum(criteria.violations(rows[n]).values()))
        worst = max(criteria.violations(rows[closest]).items(), key=lambda kv: kv[1])[0]
        raise NasUserError(
            f"no trial of campaign {config.name} meets the limits on {criteria.profile}; the closest is "
            f"{_describe(closest, rows[closest])}, so relax {worst}."
        )
    ranked = sorted(feasible, key=lambda n: (-rows[n]["accuracy"], rows[n]["latency_ms"], rows[n]["size_kib"], n))
    best = ranked[0]
    on_front = best in front_numbers(list(trials.values()), criteria.profile, "latency_ms")
    reasons = _reasons(criteria, rows, ranked, on_front, n_screened=len(feasible_trials) - len(standalone),
                       any_standalone=bool(standalone))
    record = TrialRecord.from_trial(trials[best])
    return Choice(trial=best, candidate=record.candidate, metrics=record.metrics_dict, latency=rows[best]["latency"],
                  reasons=reasons, n_feasible=len(feasible), n_considered=len(rows))


def _reasons(criteria: SelectionCriteria, rows: dict[int, dict[str, Any]], ranked: list[int], on_front: bool, *,
             n_screened: int, any_standalone: bool) -> list[str]:
    """The sentences that say why ``ranked[0]`` was chosen (``n_screened``: supernet-scored trials set aside)."""
    best = ranked[0]
    limits = ", ".join(text.format(v) for text, v in (("latency ≤ {:g} ms", criteria.max_latency_ms), ("accuracy ≥ {:g}", criteria.min_accuracy),
                                                     ("size ≤ {:g} KiB", criteria.max_size_kb)) if v is not None)
    reasons = [
        f"{len(ranked)} of {len(rows)} complete trials that can ship on {criteria.profile} meet " + (f"{limits}." if limits else "the limits (none given)."),
        f"Chose {_describe(best, rows[best])}: the most accurate of them"
        + (", ties broken by latency then size." if len(ranked) > 1 else "."),
        f"It is {'on' if on_front else 'off'} the accuracy-latency Pareto front of {criteria.profile}.",
    ]
    if n_screened and any_standalone:
        reasons.append(f"{n_screened} supernet-scored trial(s) were left out: only "
                       "stand-alone trained (promoted) trials are chosen from once there are some.")
    elif n_screened:
        reasons.append("All trials were scored by supernet inheritance (fidelity: supernet); the numbers rank "
                       "candidates, and --finalize trains the chosen one stand-alone.")
    if len(ranked) > 1:
        faster = min(ranked[1:], key=lambda n: rows[n]["latency_ms"])
        reasons.append(f"Fastest alternative that meets the limits: {_describe(faster, rows[faster])}.")
    return reasons


def rebuild_student(candidate: Candidate, ctx: TrialContext, seed: int, steps: int, *, qat_steps: int = 0,
                    inherited: bool = False) -> torch.nn.Module:
    """Train ``candidate`` again exactly as its trial did (:func:`nas.search.objective.train_candidate`).

    With the trial's seed and ``steps`` the weights match the trial's; tests/test_select.py checks the
    rebuilt validation accuracy against the recorded one.

    Args:
        candidate: The trial's candidate.
        ctx: The campaign's context (from :func:`nas.search.campaign.build_context`).
        seed: The trial's seed (``config.seed + trial.number``).
        steps: Distillation steps; ≥ 0.
        qat_steps: Quantization-aware fine-tuning steps for a quantized recipe that has none (finalize only).
        inherited: Start from the candidate's slice of the campaign's supernet (``ctx.supernet_dir``), as a
            trial of ``fidelity: supernet`` did, instead of the teacher-initialised student.

    Returns:
        The compressed student in eval mode.
    """
    from nas.search.objective import train_candidate

    initial = None
    if inherited:
        from nas.supernet import extract_student, load_supernet

        initial = extract_student(load_supernet(ctx.supernet_dir), candidate)
    return train_candidate(candidate, ctx, seed, steps=steps, qat_steps=qat_steps, initial_model=initial).model.eval()


def rebuild_trial(campaign_dir: str | Path, number: int) -> tuple[torch.nn.Module, Candidate]:
    """The compressed student of complete trial ``number`` of a campaign, trained again as the trial was.

    Raises:
        NasUserError: If the folder holds no campaign or the trial is missing or not complete.
    """
    from nas.candidate import Candidate
    from nas.search.campaign import build_context, load_study
    from nas.search.record import records

    study, config = load_study(campaign_dir)
    by_number = {r.number: r for r in records(study)}
    record = by_number.get(number)
    if record is None:
        raise NasUserError(f"{campaign_dir}: campaign {config.name} has no trial {number}; 'nas status {campaign_dir}' lists them.")
    if record.is_repeat:  # its numbers are the source trial's: rebuild that one
        record = by_number[record.repeat_of]
    if not record.is_complete or record.candidate is None:
        raise NasUserError(f"{campaign_dir}: trial {number} is {record.state}, not COMPLETE; pick a complete trial.")
    ctx = build_context(config, Output(quiet=True))
    candidate = Candidate.from_dict(record.candidate)
    model = rebuild_student(candidate, ctx, config.seed + record.number, record.steps(config.fidelity.steps),
                            inherited=record.fidelity == "supernet")
    return model, candidate


@dataclass
class SelectionResult:
    """What ``nas select`` produced."""

    choice: Choice
    export_dir: Path
    files: dict[str, str]  # kind → path
    validation_accuracy: float  # of the rebuilt (or finalized) student
    test_accuracy: float
    steps: int
    finalized: bool
    registered: dict[str, str] = field(default_factory=dict)  # model name, version, run id
    notes: list[str] = field(default_factory=list)
    model: Any = None  # the exported torch student (eval mode)


def select_model(
    campaign_dir: str | Path,
    criteria: SelectionCriteria,
    *,
    export_dir: str | Path | None = None,
    finalize: bool = False,
    finalize_steps: int | None = None,
    tracking_uri: str | None = None,
    tune_trials: int | None = SELECT_TUNE_TRIALS,
    require_parity: bool = False,
    out: Output | None = None,
) -> SelectionResult:
    """Choose, rebuild, test, export and register the model for one profile.

    Args:
        campaign_dir: The campaign folder.
        criteria: Profile and limits.
        export_dir: Where to write the exports; default ``<campaign>/selected/<profile>``.
        finalize: Retrain with ``finalize_steps`` (and QAT when quantized) instead of the search budget.
        finalize_steps: Distillation steps when finalizing; default ``FINALIZE_FACTOR`` × the search budget.
        tracking_uri: MLflow tracking URI; default ``MLFLOW_TRACKING_URI`` or the campaign's SQLite store.
        tune_trials: MetaSchedule trials per workload the shared database lacks, for the exported TVM library;
            None exports it untuned (TVM's default loops, labelled so).
        require_parity: Raise instead of warning when a shipped file's test accuracy is more than
            ``PARITY_POINTS`` from the torch student's.
        out: Where messages go.

    Returns:
        The choice, accuracies, exported files and the registered model version.

    Raises:
        NasUserError: For a bad campaign, profile or limits, when nothing meets the limits, or (with
            ``require_parity``) when an exported file disagrees with the torch student.
    """
    from nas.search.campaign import build_context, load_study
    from nas.tracking import default_tracking_uri
    from nas.train import accuracy

    out = out or Output()
    study, config = load_study(campaign_dir)
    choice = choose_trial(study, config, criteria)
    for reason in choice.reasons:
        out.info(reason)
    _check_options(finalize, finalize_steps, tune_trials)
    ctx = build_context(config, Output(quiet=True))
    rebuilt = _rebuild(choice, study, config, ctx, finalize, finalize_steps, out)
    test = held_out_split(config)
    test_accuracy = accuracy(rebuilt.model, test)
    out.info(f"validation accuracy {rebuilt.validation_accuracy:.4f}, test accuracy {test_accuracy:.4f} ({len(test)} held-out sentences)")
    root = Path(campaign_dir)
    export_dir = Path(export_dir) if export_dir else root / "selected" / criteria.profile
    tracking_uri = tracking_uri or default_tracking_uri(root)
    card = _card(root, study, config, criteria, choice, rebuilt, test, test_accuracy, tracking_uri)
    files, card = export_checked(rebuilt.model, export_dir, card, config, criteria, choice, test, test_accuracy,
                                  tune_trials, require_parity, out)
    registered = _register(tracking_uri, study, config, criteria, choice, export_dir, card, rebuilt.validation_accuracy,
                           test_accuracy, finalize)
    return SelectionResult(choice=choice, export_dir=export_dir, files=files, validation_accuracy=rebuilt.validation_accuracy,
                           test_accuracy=test_accuracy, steps=rebuilt.steps, finalized=finalize, registered=registered,
                           notes=rebuilt.notes + card["parity"]["warnings"], model=rebuilt.model)


def _check_options(finalize: bool, finalize_steps: int | None, tune_trials: int | None) -> None:
    """The option combinations ``nas select`` refuses, checked before minutes of training."""
    if finalize_steps is not None and not finalize:
        raise NasUserError("--finalize-steps only applies with --finalize; add --finalize or drop --finalize-steps.")
    if tune_trials is not None and tune_trials < 1:
        raise NasUserError(f"--tune-trials {tune_trials} must be at least 1; use --no-tune to export an untuned library.")


@dataclass
class _Rebuilt:
    """The student ``nas select`` trained again (or finalized), with what the card says about that training."""

    model: Any
    validation_accuracy: float
    steps: int
    search_steps: int
    train_s: float
    finalized: bool
    notes: list[str]


def _rebuild(choice: Choice, study: optuna.Study, config: CampaignConfig, ctx: TrialContext, finalize: bool,
             finalize_steps: int | None, out: Output) -> _Rebuilt:
    """Rebuild the chosen trial as it trained (or finalize it: ``FINALIZE_FACTOR`` × the budget, plus QAT) and
    check the rebuilt validation accuracy against the recorded one (a warning and a note when they differ)."""
    from nas.candidate import Candidate
    from nas.search.record import records
    from nas.train import accuracy

    record = next(r for r in records(study) if r.number == choice.trial)
    search_steps = record.steps(config.fidelity.steps)
    inherited = record.fidelity == "supernet"
    # an inherited trial's own steps are its recovery fine-tune (often 0): finalizing trains the campaign's full budget
    steps = (finalize_steps or FINALIZE_FACTOR * (config.fidelity.steps if inherited else search_steps)) if finalize else search_steps
    started = time.perf_counter()
    out.info(f"{'finalizing' if finalize else 'rebuilding'} trial {choice.trial} ({steps} distillation steps)")
    model = rebuild_student(Candidate.from_dict(choice.candidate), ctx, config.seed + choice.trial, steps,
                            qat_steps=int(QAT_SHARE * steps) if finalize else 0, inherited=inherited)
    train_s = time.perf_counter() - started
    validation_accuracy = accuracy(model, ctx.validation)
    notes = []
    recorded = choice.metrics["accuracy"]
    if not finalize and abs(validation_accuracy - recorded) > 1e-6:
        notes.append(f"rebuilt validation accuracy {validation_accuracy:.4f} differs from the trial's {recorded:.4f}")
        warnings.warn(
            f"trial {choice.trial} rebuilt to validation accuracy {validation_accuracy:.4f}, not the recorded {recorded:.4f}: "
            "the thread count or library versions differ from the campaign's.",
            RuntimeWarning, stacklevel=3,
        )
    return _Rebuilt(model, validation_accuracy, steps, search_steps, train_s, finalize, notes)


def _card(root: Path, study: optuna.Study, config: CampaignConfig, criteria: SelectionCriteria, choice: Choice,
          rebuilt: _Rebuilt, test: Any, test_accuracy: float, tracking_uri: str) -> dict[str, Any]:
    """The selection's facts for the model card (``selection.json``), before export adds the files' own."""
    from nas.tracking import find_trial_run

    trial_run_id = find_trial_run(tracking_uri, f"lightnas/{config.name}", choice.trial)
    return {
        "campaign": config.name, "campaign_dir": str(root.resolve()), "profile": criteria.profile, "trial": choice.trial,
        "criteria": dataclasses.asdict(criteria), "reasons": choice.reasons, "candidate": choice.candidate,
        "validation_accuracy": rebuilt.validation_accuracy, "search_validation_accuracy": choice.metrics["accuracy"],
        "test_accuracy": test_accuracy, "test_size": len(test), "validation_size": choice.metrics.get("validation_size"),
        "steps": rebuilt.steps, "search_steps": rebuilt.search_steps, "finalized": rebuilt.finalized, "train_s": rebuilt.train_s,
        "latency": choice.latency, "reference_latency": choice.metrics.get("reference_latency", {}),
        "size_bytes": choice.metrics.get("size_bytes"), "num_params": choice.metrics.get("num_params"),
        "peak_mem_mib": peak_memory_mib(choice.metrics, criteria.profile),
        "mlflow": {"tracking_uri": tracking_uri, "campaign_run_id": study.user_attrs.get("mlflow_parent_run_id"),
                   "trial_run_id": trial_run_id},
    }


def _register(tracking_uri: str, study: optuna.Study, config: CampaignConfig, criteria: SelectionCriteria, choice: Choice,
              export_dir: Path, card: dict[str, Any], validation_accuracy: float, test_accuracy: float,
              finalize: bool) -> dict[str, str]:
    """Register the export folder as a new version of ``lightnas-<campaign>-<profile>`` in MLflow's registry."""
    from nas.search.record import latency_metric
    from nas.tracking import register_selection

    return register_selection(
        tracking_uri, f"lightnas/{config.name}", export_dir, model_name=f"lightnas-{config.name}-{criteria.profile}",
        parent_run_id=study.user_attrs.get("mlflow_parent_run_id"),
        metrics={"validation_accuracy": validation_accuracy, "test_accuracy": test_accuracy,
                 latency_metric(criteria.profile): card["latency"]["median_ms"]},
        tags={"lightnas.trial": str(choice.trial), "lightnas.profile": criteria.profile, "lightnas.finalized": str(finalize).lower(),
              "lightnas.trial_run_id": card["mlflow"]["trial_run_id"] or "", "lightnas.candidate": json.dumps(choice.candidate)[:5000]},
    )
