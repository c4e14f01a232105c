"""Pareto sets, hypervolume and importances of a campaign, from Optuna's own multi-objective code.

Pure functions over a study's frozen trials. Fronts come from ``optuna.study._multi_objective`` (the code
behind ``study.best_trials``) and hypervolumes from ``optuna._hypervolume.compute_hypervolume``; nothing
here re-derives dominance. A trial's ``candidate`` user attribute is read generically: it is flattened to
dotted keys, so new Candidate fields show up in tables without edits here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.hardware.measure import provenance

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from nas.config import CampaignConfig


def front_trials(study: optuna.Study, config: CampaignConfig) -> list[FrozenTrial]:
    """The study's Pareto-optimal feasible trials, at one fidelity, each candidate once.

    When supernet-scored (inherited) and stand-alone trained trials are mixed, their accuracies do not
    compare, so the front is taken over the stand-alone (promoted) trials alone. Repeats (a sampler's
    second proposal of a finished candidate, told the first one's values: ``repeat_of``) are left out.
    Otherwise this is Optuna's ``best_trials``: feasible trials no other feasible trial dominates.
    """
    import numpy as np
    from optuna.study._multi_objective import _is_pareto_front

    complete = complete_trials(study)
    standalone = [t for t in complete if t.user_attrs.get("fidelity", "standalone") == "standalone"]
    pool = standalone if standalone else complete
    feasible = [t for t in pool if t.user_attrs.get("feasible", True)]
    if not feasible:
        return []
    signs = [-1.0 if o.direction == "maximize" else 1.0 for o in config.objectives]
    losses = np.array([[s * v for s, v in zip(signs, t.values)] for t in feasible])
    return [t for t, keep in zip(feasible, _is_pareto_front(losses, assume_unique_lexsorted=False)) if keep]


def pareto_summary(study: optuna.Study, config: CampaignConfig) -> list[dict[str, Any]]:
    """One entry per Pareto-optimal trial (:func:`front_trials`), sorted by the first objective (best first).

    Each entry carries the trial number, its candidate, its objective values by name, and every latency
    with its provenance (measured/estimated, tuned/untuned, backend, spread). Where the campaign measured
    the trial's shipped builds after the search (:mod:`nas.search.finalize`, study user attribute
    ``final_latency:<trial>``), those replace the search's figures for that profile: the tuned TVM library
    (or, when it is only partly tuned, the ONNX file on ONNX Runtime) becomes ``latency[profile]`` and the
    latency objective, ``final_latency[profile]`` holds both runtimes with their ratio, ``faster[profile]``
    says which runtime is faster (e.g. "onnxruntime faster on host"), and the search's own figures move to
    ``search_latency`` / ``search_objectives``. An untuned TVM time is never shown there.
    """
    names = [o.name for o in config.objectives]
    entries = []
    for trial in front_trials(study, config):
        metrics = trial.user_attrs.get("metrics", {})
        entry = {
            "trial": trial.number,
            "candidate": trial.user_attrs.get("candidate"),
            "objectives": dict(zip(names, trial.values)),
            "accuracy": metrics.get("accuracy"),
            "size_bytes": metrics.get("size_bytes"),
            "packed_bytes": metrics.get("packed_bytes"),
            "peak_mem_mib": {p: peak_memory_mib(metrics, p) for p in config.profiles},
            "num_params": metrics.get("num_params"),
            "latency": dict(metrics.get("latency", {})),
            "reference_latency": dict(metrics.get("reference_latency", {})),
        }
        final = study.user_attrs.get(f"final_latency:{trial.number}") or {}
        if final:
            entry.update(search_latency=metrics.get("latency", {}), search_objectives=dict(entry["objectives"]),
                         final_latency={}, faster={})
        for profile, record in final.items():
            shown = record.get("tvm") or record["onnxruntime"]  # never the partly tuned TVM time
            entry["latency"][profile] = shown
            entry["reference_latency"][record["onnxruntime"]["backend"]] = record["onnxruntime"]
            if f"latency_ms@{profile}" in entry["objectives"]:
                entry["objectives"][f"latency_ms@{profile}"] = shown["median_ms"]
            entry["final_latency"][profile] = {k: record.get(k) for k in ("tvm", "onnxruntime", "tvm_over_ort", "tvm_excluded", "onnx")}
            entry["faster"][profile] = record.get("faster")
        entries.append(entry)
    reverse = config.objectives[0].direction == "maximize"
    return sorted(entries, key=lambda e: e["objectives"][names[0]], reverse=reverse)


def write_pareto_json(pareto: list[dict[str, Any]], path: Path) -> None:
    Path(path).write_text(json.dumps(pareto, indent=2))


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials that recorded metrics, in trial-number order, each candidate once.

    A repeat (a sampler's second proposal of a finished candidate, told that trial's values without running,
    user attribute ``repeat_of``) is left out: it would list one measured point twice.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted((t for t in trials if "metrics" in t.user_attrs and "repeat_of" not in t.user_attrs), key=lambda t: t.number)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and lists) as one level of dotted keys: ``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(data, (list, tuple)):
        flat = {}
        for i, value in enumerate(data):
            flat.update(flatten(value, f"{prefix}[{i}]"))
        return flat
    return {prefix: data}


def peak_memory_mib(metrics: dict[str, Any], profile: str) -> float | None:
    """Peak memory of a trial on ``profile`` in MiB, or None where the campaign did not compute it.

    The figure is the feasibility check's ``peak_memory_bytes`` (:class:`nas.hardware.memory.Feasibility`:
    SRAM on an MCU, weights at their stored width plus peak live activations elsewhere; estimated).
    """
    verdict = (metrics.get("feasibility") or {}).get(profile) or {}
    value = verdict.get("peak_memory_bytes") or verdict.get("sram_bytes")  # trials from before peak_memory_bytes
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        return None
    return float(value) / 2**20


def fits_profile(trial: FrozenTrial, profile: str) -> bool:
    """Whether the trial's student compiles for ``profile`` and fits its memory (True where nothing was checked)."""
    verdict = (trial.user_attrs.get("metrics") or {}).get("feasibility", {}).get(profile)
    return verdict is None or bool(verdict.get("is_feasible", True))


def usable_on(trial: FrozenTrial, config: CampaignConfig, profile: str) -> bool:
    """A model that can ship on ``profile``: it meets the campaign's own constraints and fits that device.

    Unlike the trial's ``feasible`` (the search's verdict, over every profile the search targets), a
    student too big for the MCU is still usable on the host.
    """
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    names = {f"{_CONSTRAINTS_KEY}:{c.name}" for c in config.constraints}
    meets = all(v <= 0 for k, v in trial.system_attrs.items() if k in names)
    return meets and fits_profile(trial, profile)


def axis_values(trial: FrozenTrial, profile: str) -> dict[str, float | None]:
    """The plotted quantities of a trial on ``profile``: accuracy, latency (ms), size of the shipped file (KiB),
    peak memory (MiB; None where not computed, see :func:`peak_memory_mib`)."""
    metrics = trial.user_attrs["metrics"]
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
    from optuna.study._multi_objective import _is_pareto_front

    points = [(t.number, axis_values(t, profile)) for t in trials]
    points = [(n, v) for n, v in points if v["accuracy"] is not None and v[cost] is not None]
    if not points:
        return set()
    losses = np.array([[-v["accuracy"], v[cost]] for _, v in points], dtype=float)  # both minimised
    on_front = _is_pareto_front(losses, assume_unique_lexsorted=False)
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
    from optuna._hypervolume import compute_hypervolume

    trials = [t for t in complete_trials(study) if t.values is not None]
    if not trials:
        return {"trial": [], "hypervolume": [], "reference_point": [], "scaled": True}
    losses = _loss_matrix(trials, study)
    low, high = losses.min(axis=0), losses.max(axis=0)
    scaled = (losses - low) / np.where(high > low, high - low, 1.0)
    reference = np.full(losses.shape[1], 1.1)
    volumes = [float(compute_hypervolume(scaled[: i + 1], reference)) for i in range(len(trials))]
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
        metrics = trial.user_attrs["metrics"]
        row: dict[str, Any] = {"trial": trial.number, "pareto": trial.number in best}
        row.update(dict(zip(names, trial.values)))
        row["accuracy"] = metrics.get("accuracy")
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
        row.update(flatten(trial.user_attrs.get("candidate") or {}, "candidate"))
        rows.append(row)
    return rows
