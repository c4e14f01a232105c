"""The report's analyses of a campaign: 2-D fronts per axis, hypervolume, importances and the trial table.

Pure functions over a study's frozen trials. The campaign's own front (which trials count, which are
optimal, ``pareto.json``) is :mod:`nas.search.pareto`; dominance and
hypervolume come from Optuna's code through :mod:`nas.search.optuna_private`, so nothing here re-derives
them. A trial's ``candidate`` user attribute is read generically: it is flattened to dotted keys
(:func:`nas.metrics.flatten`), so new Candidate fields show up in tables without edits here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas.hardware.measure import provenance
from nas.metrics import flatten
from nas.search.pareto import complete_trials, front_trials, peak_memory_mib
from nas.search.record import TrialRecord

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from nas.config import CampaignConfig


def axis_values(trial: FrozenTrial, profile: str) -> dict[str, float | None]:
    """The plotted quantities of a trial on ``profile``: accuracy, latency (ms), size of the shipped file (KiB),
    peak memory (MiB; None where not computed, see :func:`peak_memory_mib`)."""
    metrics = TrialRecord.from_trial(trial).metrics_dict
    latency = metrics.get("latency", {}).get(profile)
    size_bytes = metrics.get("size_bytes")
    return {
        "accuracy": metrics.get("accuracy"),
        "latency_ms": latency["median_ms"] if latency else None,
        "size_kib": size_bytes / 1024 if size_bytes is not None else None,
        "peak_mem_mib": peak_memory_mib(metrics, profile),
    }


def front_numbers(trials: list[FrozenTrial], profile: str, cost: str) -> set[int]:
    """Trial numbers on the 2-D Pareto front of accuracy (maximised) against ``cost`` (minimised) on ``profile``.

    Args:
        trials: Complete trials.
        profile: Hardware profile whose latency or memory is the cost.
        cost: ``latency_ms``, ``size_kib`` or ``peak_mem_mib`` (see :func:`axis_values`).

    Returns:
        Numbers of the non-dominated trials among those that recorded both values.
    """
    import numpy as np

    from nas.search.optuna_private import is_pareto_front

    points = [(t.number, axis_values(t, profile)) for t in trials]
    points = [(n, v) for n, v in points if v["accuracy"] is not None and v[cost] is not None]
    if not points:
        return set()
    losses = np.array([[-v["accuracy"], v[cost]] for _, v in points], dtype=float)  # both minimised
    on_front = is_pareto_front(losses)
    return {n for (n, _), keep in zip(points, on_front) if keep}


def _loss_matrix(trials: list[FrozenTrial], study: optuna.Study) -> Any:
    import numpy as np
    from optuna.study import StudyDirection

    signs = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in study.directions])
    return np.array([t.values for t in trials], dtype=float) * signs  # every column minimised


def hypervolume_history(study: optuna.Study) -> dict[str, Any]:
    """Hypervolume of the study's Pareto front after each complete trial.

    Objectives are turned into losses (maximised ones negated) and each scaled to [0, 1] by the range seen
    over the whole study, so accuracy and milliseconds weigh alike; the reference point is 1.1 in every
    scaled loss (10 % beyond the worst value seen), as is common when no natural bound exists.

    Returns:
        ``{"trial": [numbers], "hypervolume": [values], "reference_point": [...], "scaled": True}``; empty
        lists when fewer than one trial completed.
    """
    import numpy as np

    from nas.search.optuna_private import compute_hypervolume

    trials = [t for t in complete_trials(study) if t.values is not None]
    if not trials:
        return {"trial": [], "hypervolume": [], "reference_point": [], "scaled": True}
    losses = _loss_matrix(trials, study)
    low, high = losses.min(axis=0), losses.max(axis=0)
    scaled = (losses - low) / np.where(high > low, high - low, 1.0)
    reference = np.full(losses.shape[1], 1.1)
    volumes = [compute_hypervolume(scaled[: i + 1], reference) for i in range(len(trials))]
    return {"trial": [t.number for t in trials], "hypervolume": volumes, "reference_point": reference.tolist(), "scaled": True}


def param_importances(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Optuna's fANOVA parameter importances for each objective, by objective name.

    Returns:
        ``{objective name: {param: importance}}`` (importances sum to 1 per objective); an objective is
        left out when Optuna cannot compute importances (fewer than two complete trials, or no parameter
        that varied), and the reason is kept under ``"_skipped"``.
    """
    import optuna

    trials = complete_trials(study)
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    importances: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if len(trials) < 2:
        return {"_skipped": {n: f"needs ≥ 2 complete trials, have {len(trials)}" for n in names}}
    for i, name in enumerate(names):
        try:
            importances[name] = optuna.importance.get_param_importances(
                study, target=lambda t, i=i: t.values[i], evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        except (RuntimeError, ValueError) as exc:  # optuna raises these when no parameter can be scored
            skipped[name] = str(exc).splitlines()[0]
    if skipped:
        importances["_skipped"] = skipped
    return importances


def trial_table(study: optuna.Study, config: CampaignConfig) -> list[dict[str, Any]]:
    """One flat row per complete trial: number, objective values, per-profile latency with provenance,
    size, memory, every candidate setting (dotted keys) and whether the trial is on the campaign's Pareto
    front (:func:`front_trials`)."""
    profiles = config.profiles
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    best = {t.number for t in front_trials(study, config)}
    rows = []
    for trial in complete_trials(study):
        record = TrialRecord.from_trial(trial)
        metrics = record.metrics_dict
        row: dict[str, Any] = {"trial": trial.number, "pareto": trial.number in best}
        row.update(dict(zip(names, trial.values)))
        row["accuracy"] = metrics.get("accuracy")
        row["accuracy_stderr"] = record.accuracy_stderr  # one standard error (nas.metrics); None in old records
        row["validation_size"] = record.validation_size
        for profile in profiles:
            lat = metrics.get("latency", {}).get(profile)
            if lat:
                row[f"latency_ms.{profile}"] = lat["median_ms"]
                row[f"latency_std_ms.{profile}"] = lat.get("std_ms")
                row[f"latency_kind.{profile}"] = provenance(bool(lat.get("is_measured")), bool(lat.get("is_tuned")),
                                                                  lat.get("backend", "tvm"))
            mem = peak_memory_mib(metrics, profile)
            if mem is not None:
                row[f"peak_mem_mib.{profile}"] = mem
        for backend, lat in metrics.get("reference_latency", {}).items():
            row[f"reference_latency_ms.{backend}"] = lat["median_ms"]
            row[f"reference_latency_kind.{backend}"] = provenance(bool(lat.get("is_measured")), bool(lat.get("is_tuned")), backend)
        row["size_kib"] = metrics["size_bytes"] / 1024 if metrics.get("size_bytes") is not None else None
        if metrics.get("packed_bytes") is not None:
            row["packed_kib"] = metrics["packed_bytes"] / 1024
        row["num_params"] = metrics.get("num_params")
        row.update(flatten(record.candidate or {}, "candidate"))
        rows.append(row)
    return rows
