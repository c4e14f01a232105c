"""The Pareto set of a campaign, from Optuna's own multi-objective code (``study.best_trials``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from nas.config import CampaignConfig


def pareto_summary(study: optuna.Study, config: CampaignConfig) -> list[dict[str, Any]]:
    """One entry per Pareto-optimal trial, sorted by the first objective (best first).

    Each entry carries the trial number, its candidate, its objective values by name, and every latency
    with its provenance (measured/estimated, tuned/untuned, backend, spread).
    """
    names = [o.name for o in config.objectives]
    entries = []
    for trial in study.best_trials:
        metrics = trial.user_attrs.get("metrics", {})
        entries.append(
            {
                "trial": trial.number,
                "candidate": trial.user_attrs.get("candidate"),
                "objectives": dict(zip(names, trial.values)),
                "accuracy": metrics.get("accuracy"),
                "size_bytes": metrics.get("size_bytes"),
                "num_params": metrics.get("num_params"),
                "latency": metrics.get("latency", {}),
                "reference_latency": metrics.get("reference_latency", {}),
            }
        )
    reverse = config.objectives[0].direction == "maximize"
    return sorted(entries, key=lambda e: e["objectives"][names[0]], reverse=reverse)


def write_pareto_json(pareto: list[dict[str, Any]], path: Path) -> None:
    Path(path).write_text(json.dumps(pareto, indent=2))
