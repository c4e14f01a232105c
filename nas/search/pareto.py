"""The campaign's Pareto front: which trials count, which are optimal, and ``pareto.json``'s entries.

The search owns this (the driver writes ``pareto.json`` and MLflow tags from it, :mod:`nas.search.finalize`
times the front's shipped builds), and :mod:`nas.report`, ``nas status`` and ``nas select`` read it; so it
lives here, below the report. Fronts come from Optuna's own dominance code
(:func:`nas.search.optuna_private.is_pareto_front`, the code behind ``study.best_trials``); the "real
trial" filters are :class:`nas.search.record.TrialRecord`'s predicates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.search.record import TrialRecord

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from nas.config import CampaignConfig


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials that recorded metrics, in trial-number order, each candidate once.

    A repeat (a sampler's second proposal of a finished candidate, told that trial's values without running,
    :attr:`TrialRecord.is_repeat`) is left out: it would list one measured point twice.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    kept = [t for t in trials if _counts(TrialRecord.from_trial(t))]
    return sorted(kept, key=lambda t: t.number)


def _counts(record: TrialRecord) -> bool:
    return record.metrics_dict is not None and not record.is_repeat


def front_trials(study: optuna.Study, config: CampaignConfig) -> list[FrozenTrial]:
    """The study's Pareto-optimal feasible trials, at one fidelity, each candidate once.

    When supernet-scored (inherited) and stand-alone trained trials are mixed, their accuracies do not
    compare, so the front is taken over the stand-alone (promoted) trials alone. Repeats are left out
    (:func:`complete_trials`). Otherwise this is Optuna's ``best_trials``: feasible trials no other
    feasible trial dominates.
    """
    import numpy as np

    from nas.search.optuna_private import is_pareto_front

    complete = [(t, TrialRecord.from_trial(t)) for t in complete_trials(study)]
    standalone = [(t, r) for t, r in complete if r.fidelity == "standalone"]
    pool = standalone if standalone else complete
    feasible = [t for t, r in pool if r.is_feasible]
    if not feasible:
        return []
    signs = [-1.0 if o.direction == "maximize" else 1.0 for o in config.objectives]
    losses = np.array([[s * v for s, v in zip(signs, t.values)] for t in feasible])
    return [t for t, keep in zip(feasible, is_pareto_front(losses)) if keep]


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
        entry = _entry(TrialRecord.from_trial(trial), names, config.profiles)
        _use_final_latency(entry, study.user_attrs.get(f"final_latency:{trial.number}") or {})
        entries.append(entry)
    reverse = config.objectives[0].direction == "maximize"
    return sorted(entries, key=lambda e: e["objectives"][names[0]], reverse=reverse)


def _entry(record: TrialRecord, names: list[str], profiles: list[str]) -> dict[str, Any]:
    """A front trial's ``pareto.json`` entry, with the search's own figures."""
    metrics = record.metrics_dict or {}
    return {
        "trial": record.number,
        "candidate": record.candidate,
        "objectives": dict(zip(names, record.values or ())),
        "accuracy": metrics.get("accuracy"),
        "validation_size": record.validation_size,  # sentences; None in records from before it was stored
        "accuracy_stderr": record.accuracy_stderr,  # one standard error of "accuracy" (nas.metrics)
        "size_bytes": metrics.get("size_bytes"),
        "packed_bytes": metrics.get("packed_bytes"),
        "peak_mem_mib": {p: peak_memory_mib(metrics, p) for p in profiles},
        "num_params": metrics.get("num_params"),
        "latency": dict(metrics.get("latency", {})),
        "reference_latency": dict(metrics.get("reference_latency", {})),
    }


def _use_final_latency(entry: dict[str, Any], final: dict[str, Any]) -> None:
    """Replace ``entry``'s search latencies by the shipped builds' (``final``, by profile), keeping the search's aside."""
    if final:
        entry.update(search_latency=dict(entry["latency"]), search_objectives=dict(entry["objectives"]),
                     final_latency={}, faster={})
    for profile, record in final.items():
        shown = record.get("tvm") or record["onnxruntime"]  # never the partly tuned TVM time
        entry["latency"][profile] = shown
        entry["reference_latency"][record["onnxruntime"]["backend"]] = record["onnxruntime"]
        if f"latency_ms@{profile}" in entry["objectives"]:
            entry["objectives"][f"latency_ms@{profile}"] = shown["median_ms"]
        entry["final_latency"][profile] = {k: record.get(k) for k in ("tvm", "onnxruntime", "tvm_over_ort", "tvm_excluded", "onnx")}
        entry["faster"][profile] = record.get("faster")


def write_pareto_json(pareto: list[dict[str, Any]], path: Path) -> None:
    Path(path).write_text(json.dumps(pareto, indent=2))


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
    verdict = (TrialRecord.from_trial(trial).metrics_dict or {}).get("feasibility", {}).get(profile)
    return verdict is None or bool(verdict.get("is_feasible", True))


def usable_on(trial: FrozenTrial, config: CampaignConfig, profile: str) -> bool:
    """A model that can ship on ``profile``: it meets the campaign's own constraints and fits that device.

    Unlike the trial's ``feasible`` (the search's verdict, over every profile the search targets), a
    student too big for the MCU is still usable on the host.
    """
    from nas.search.optuna_private import stored_constraints_by_name

    names = {c.name for c in config.constraints}
    meets = all(v <= 0 for k, v in stored_constraints_by_name(trial).items() if k in names)
    return meets and fits_profile(trial, profile)
