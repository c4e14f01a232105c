"""Reports of a campaign: Pareto sets, hypervolume, importances, HTML, JSON, CSV and PNG.

:func:`build_report` is what ``nas report`` runs (and ``nas search`` after the campaign). The report reads
the study through :mod:`nas.search` (store, front, trial record); nothing in ``nas.search`` imports it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReportFiles:
    """Where :func:`build_report` wrote each file."""

    html: Path
    json: Path
    trials_csv: Path
    pareto_csv: Path
    png: dict[str, Path] = field(default_factory=dict)  # plot key → PNG


def build_report(campaign_dir: str | Path, out_dir: str | Path | None = None, *, png: bool = False,
                 tracking_uri: str | None = None) -> ReportFiles:
    """Write a campaign's report: ``report.html``, ``report.json``, ``trials.csv``, ``pareto.csv`` and PNGs.

    Args:
        campaign_dir: The campaign folder.
        out_dir: Where to write; default the campaign folder (PNGs go to ``<out_dir>/img``).
        png: Also save the main plots as PNG (needs Chromium; see :mod:`nas.report.png`).
        tracking_uri: MLflow URI to read the campaign's environment from; default as the campaign used.

    Returns:
        The paths written.

    Raises:
        NasUserError: When the folder holds no campaign or the campaign has no complete trial.
        MissingDependencyError: With ``png`` when no Chromium is installed.
    """
    from nas.errors import NasUserError
    from nas.report.html import baselines, report_figures, write_report
    from nas.report.pareto import hypervolume_history, param_importances, trial_table
    from nas.search.pareto import pareto_summary
    from nas.search.store import load_study
    from nas.tracking import campaign_environment, default_tracking_uri

    study, config = load_study(campaign_dir)
    table = trial_table(study, config)
    if not table:
        raise NasUserError(f"{campaign_dir}: campaign {config.name} has no complete trial yet; run 'nas resume {campaign_dir}' first.")
    out_dir = Path(out_dir or campaign_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    environment = campaign_environment(tracking_uri or default_tracking_uri(Path(campaign_dir)), study.user_attrs.get("mlflow_parent_run_id"))
    pareto = pareto_summary(study, config)

    html_path = out_dir / "report.html"
    write_report(study, config, pareto, html_path, environment=environment, table_rows=table)
    summary = {
        "campaign": config.name, "objectives": [o.name for o in config.objectives], "profiles": config.profiles,
        "pareto": pareto, "hypervolume": hypervolume_history(study), "importances": param_importances(study),
        "baselines": baselines(study), "environment": environment, "trials": table,
    }
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    trials_csv, pareto_csv = out_dir / "trials.csv", out_dir / "pareto.csv"
    _write_csv(trials_csv, table)
    _write_csv(pareto_csv, [r for r in table if r["pareto"]])

    pngs: dict[str, Path] = {}
    if png:
        from nas.report.png import figure_png

        figures = report_figures(study, config, summary["importances"])
        for key in [k for k in figures if k.startswith("front-latency-")] + ["front-size", "hypervolume"]:
            pngs[key] = figure_png(figures[key], out_dir / "img" / f"{key}.png")
    return ReportFiles(html=html_path, json=json_path, trials_csv=trials_csv, pareto_csv=pareto_csv, png=pngs)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
