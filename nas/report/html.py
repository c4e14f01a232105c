"""A self-contained HTML report of a campaign: plotly.js is embedded once, so the page opens offline.

:func:`report_figures` builds every plot as a plotly figure (the PNG export reuses them);
:func:`write_report` lays them out with the sortable Pareto table, the baselines, the environment and
the cost of the campaign. Latency points keep their provenance: filled circles are measured, open
diamonds estimated, and every hover label says tuned or untuned.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.metrics import flatten, format_accuracy
from nas.report.pareto import axis_values, front_numbers, hypervolume_history, param_importances
from nas.search.pareto import complete_trials, fits_profile
from nas.search.record import TrialRecord

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go
    from optuna.trial import FrozenTrial

    from nas.config import CampaignConfig

_GREY, _RED, _BLUE = "#9aa5b1", "#d62728", "#1f77b4"
_AXES = {
    "latency_ms": "latency on {profile} (ms, median, batch 1)",
    "size_kib": "shipped ONNX file (KiB, exact bytes)",
    "peak_mem_mib": "peak memory on {profile} (MiB, estimated: SRAM on an MCU, weights + activations elsewhere)",
}


def _latency_label(lat: dict[str, Any]) -> str:
    from nas.hardware.measure import provenance

    how = provenance(bool(lat.get("is_measured")), bool(lat.get("is_tuned")), lat.get("backend", "tvm"))
    return f"{lat['median_ms']:.3f} ms ({how}, {lat['backend']})"


def _metrics(trial: FrozenTrial) -> dict[str, Any]:
    """A complete trial's stored metrics (:attr:`TrialRecord.metrics_dict`)."""
    return TrialRecord.from_trial(trial).metrics_dict


def _hover(trial: FrozenTrial, profile: str) -> str:
    metrics = _metrics(trial)
    lat = metrics.get("latency", {}).get(profile)
    lines = [f"trial {trial.number}", f"accuracy {format_accuracy(metrics['accuracy'], metrics.get('validation_size'), 4, ' ± ')}"
             + (" (inherited from the supernet)" if _fidelity(trial) == "supernet" else "")]
    if lat:
        lines.append(f"{profile}: {_latency_label(lat)}")
    lines.append(f"shipped file {metrics.get('size_bytes', 0) / 1024:.1f} KiB"
                 + (f" (packed accounting {metrics['packed_bytes'] / 1024:.1f} KiB)" if metrics.get("packed_bytes") else ""))
    peak_mib = axis_values(trial, profile)["peak_mem_mib"]
    if peak_mib is not None:
        lines.append(f"peak memory on {profile} {peak_mib:.3f} MiB (estimated)")
    lines += [f"{k}={v}" for k, v in flatten(TrialRecord.from_trial(trial).candidate or {}).items()]
    return "<br>".join(lines)


def baselines(study: optuna.Study) -> list[dict[str, Any]]:
    """Reference points the campaign recorded: the teacher, then any ``baselines`` study attribute.

    Each is ``{"name", "accuracy", "validation_size", "latency": {profile: LatencyResult dict}, "size_bytes"}``; missing
    values are None/empty, and such a baseline is drawn as a horizontal accuracy line instead of a point.
    """
    points = []
    teacher = study.user_attrs.get("teacher")
    if teacher and teacher.get("validation_accuracy") is not None:
        points.append({"name": teacher.get("name", "teacher"), "accuracy": teacher["validation_accuracy"],
                       "validation_size": teacher.get("validation_size"),
                       "latency": teacher.get("latency", {}), "size_bytes": teacher.get("size_bytes")})
    for entry in study.user_attrs.get("baselines", []):
        points.append({"name": entry["name"], "accuracy": entry.get("accuracy"), "validation_size": entry.get("validation_size"),
                       "latency": entry.get("latency", {}), "size_bytes": entry.get("size_bytes")})
    return points


def _front_figure(trials: list[FrozenTrial], profile: str, cost: str, refs: list[dict[str, Any]], title: str) -> go.Figure:
    import plotly.graph_objects as go

    # Inherited (supernet-scored) accuracies do not compare with trained ones: once some trials were trained
    # stand-alone, the front is theirs (as in pareto.json) and the inherited ones are drawn apart.
    mixed = {_fidelity(t) for t in trials} == {"standalone", "supernet"}
    comparable = [t for t in trials if not mixed or _fidelity(t) == "standalone"]
    front = front_numbers([t for t in comparable if fits_profile(t, profile)], profile, cost)  # what can ship there
    fig = go.Figure()
    plotted = [t for t in trials if axis_values(t, profile)[cost] is not None]
    screened = [t for t in plotted if mixed and _fidelity(t) != "standalone"]
    if screened:
        fig.add_trace(go.Scatter(
            x=[axis_values(t, profile)[cost] for t in screened], y=[axis_values(t, profile)["accuracy"] for t in screened],
            mode="markers", marker={"color": _GREY, "size": 8, "symbol": "x-thin-open", "line": {"width": 1, "color": _GREY}},
            name="supernet-scored (inherited accuracy; not on the front)", text=[_hover(t, profile) for t in screened],
            hoverinfo="text",
        ))
    for is_measured in (True, False):
        for on_front in (False, True):
            group = [t for t in plotted if t not in screened and (t.number in front) == on_front
                     and _is_measured(t, profile, cost) == is_measured]
            if not group:
                continue
            fig.add_trace(go.Scatter(
                x=[axis_values(t, profile)[cost] for t in group],
                y=[axis_values(t, profile)["accuracy"] for t in group],
                mode="markers",
                marker={"color": _RED if on_front else _GREY, "size": 11, "line": {"width": 2, "color": _RED if on_front else _GREY},
                        "symbol": "circle" if is_measured else "diamond-open"},
                name=f"{'Pareto' if on_front else 'other'} trials" + (f" ({'measured' if is_measured else 'estimated'})" if cost == "latency_ms" else ""),
                text=[_hover(t, profile) for t in group], hoverinfo="text",
                error_y={"type": "data", "array": [TrialRecord.from_trial(t).accuracy_stderr or 0.0 for t in group],
                         "thickness": 1, "width": 0},  # ± one standard error of the validation accuracy
            ))
    steps = sorted((axis_values(t, profile)[cost], axis_values(t, profile)["accuracy"]) for t in plotted if t.number in front)
    if steps:
        fig.add_trace(go.Scatter(x=[s[0] for s in steps], y=[s[1] for s in steps], mode="lines", line={"shape": "hv", "color": _RED},
                                 name="Pareto front", hoverinfo="skip"))
    for ref in refs:
        x = _ref_value(ref, profile, cost)
        if x is None:
            fig.add_hline(y=ref["accuracy"], line_dash="dash", line_color=_BLUE, annotation_text=f"{ref['name']} (accuracy only)")
        else:
            fig.add_trace(go.Scatter(x=[x], y=[ref["accuracy"]], mode="markers+text", text=[ref["name"]], textposition="top center",
                                     marker={"symbol": "star", "size": 14, "color": _BLUE}, name=ref["name"]))
    fig.update_layout(title=title, xaxis_title=_AXES[cost].format(profile=profile), yaxis_title="validation accuracy",
                      template="plotly_white", legend={"orientation": "h", "y": -0.2})
    return fig


def _fidelity(trial: FrozenTrial) -> str:
    return TrialRecord.from_trial(trial).fidelity


def _is_measured(trial: FrozenTrial, profile: str, cost: str) -> bool:
    if cost != "latency_ms":
        return True  # one marker style: size is the shipped file's exact bytes; memory is an estimate (axis title)
    return bool(_metrics(trial)["latency"][profile].get("is_measured"))


def _ref_value(ref: dict[str, Any], profile: str, cost: str) -> float | None:
    if cost == "latency_ms":
        lat = ref["latency"].get(profile)
        return lat["median_ms"] if lat else None
    if cost == "size_kib":
        return ref["size_bytes"] / 1024 if ref.get("size_bytes") is not None else None
    return None


def report_figures(study: optuna.Study, config: CampaignConfig, importances: dict[str, Any] | None = None) -> dict[str, go.Figure]:
    """Every plot of the report, by a file-name-safe key (``front-latency-host``, ``hypervolume``, …).

    Args:
        study: The campaign's study.
        config: Its config (profiles, sequence length).
        importances: :func:`nas.report.pareto.param_importances` of the study; computed when None.
    """
    import plotly.graph_objects as go

    trials = complete_trials(study)
    refs = baselines(study)
    figures: dict[str, go.Figure] = {}
    for profile in config.profiles:
        kinds = _latency_kinds(trials, profile)
        figures[f"front-latency-{profile}"] = _front_figure(
            trials, profile, "latency_ms", refs,
            f"Accuracy vs latency on {profile} ({kinds}; batch 1, {config.max_seq_len} tokens)")
    figures["front-size"] = _front_figure(trials, config.profiles[0], "size_kib", refs, "Accuracy vs shipped file size")
    for profile in config.profiles:
        if any(axis_values(t, profile)["peak_mem_mib"] is not None for t in trials):
            figures[f"front-memory-{profile}"] = _front_figure(trials, profile, "peak_mem_mib", refs, f"Accuracy vs peak memory on {profile}")

    history = hypervolume_history(study)
    fig = go.Figure(go.Scatter(x=history["trial"], y=history["hypervolume"], mode="lines+markers", line={"shape": "hv"}, name="hypervolume"))
    fig.update_layout(title=f"Hypervolume of the Pareto front ({', '.join(study.metric_names or [])}; scaled, reference point 1.1)",
                      xaxis_title="trial", yaxis_title="hypervolume", template="plotly_white")
    figures["hypervolume"] = fig

    importances = importances if importances is not None else param_importances(study)
    fig = go.Figure()
    for objective, values in importances.items():
        if objective != "_skipped":
            fig.add_trace(go.Bar(x=list(values.values()), y=list(values.keys()), orientation="h", name=objective))
    fig.update_layout(title="Parameter importances (Optuna fANOVA, per objective)", xaxis_title="importance (sums to 1)",
                      template="plotly_white", barmode="group")
    figures["importances"] = fig
    return figures


def _latency_kinds(trials: list[FrozenTrial], profile: str) -> str:
    lats = [m["latency"][profile] for m in map(_metrics, trials) if profile in m.get("latency", {})]
    kinds = sorted({"measured" if v["is_measured"] else "estimated" for v in lats})
    tuned = sorted({"tuned" if v["is_tuned"] else "untuned" for v in lats})
    return ", ".join(kinds + tuned) or "no latency recorded"


_SORT_JS = """<script>
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], asc = th.dataset.asc !== '1';
    var rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.querySelectorAll('th').forEach(function (h) { h.dataset.asc = ''; });
    th.dataset.asc = asc ? '1' : '0';
  });
});
</script>"""


def _cell(value: Any, shown: str | None = None) -> str:
    text = shown if shown is not None else ("" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value))
    return f'<td data-v="{html.escape(str(value), quote=True)}">{html.escape(text)}</td>'


def _table(columns: list[str], rows: list[dict[str, Any]], table_id: str) -> str:
    head = "".join(f"<th title='click to sort'>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    return f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _costs(trials: list[FrozenTrial]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for t in trials:
        for key, value in _metrics(t).get("timings_s", {}).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def _accuracy_note(rows: list[dict[str, Any]]) -> str:
    """The sentence that says what the accuracies and their ± are (the validation size from the trial records)."""
    sizes = sorted({r["validation_size"] for r in rows if r.get("validation_size")})
    if not sizes:
        return "Accuracies are on the validation split; its size was not recorded, so no standard error is shown."
    return (f"Accuracies are on the validation split ({' / '.join(str(n) for n in sizes)} sentences); ± is one standard "
            "error, sqrt(p(1-p)/n), drawn as error bars: trials closer than about twice it are not told apart.")


def _baseline_row(ref: dict[str, Any]) -> str:
    latency = "; ".join(f"{p}: {_latency_label(v)}" for p, v in ref["latency"].items()) or "not recorded"
    size = "" if ref["size_bytes"] is None else f"{ref['size_bytes'] / 1024:.0f}"
    accuracy = format_accuracy(ref["accuracy"], ref.get("validation_size"), 4, " ± ")
    return f"<tr><td>{html.escape(ref['name'])}</td><td>{accuracy}</td><td>{html.escape(latency)}</td><td>{size}</td></tr>"


def write_report(
    study: optuna.Study,
    config: CampaignConfig,
    pareto: list[dict[str, Any]],
    path: Path,
    *,
    environment: dict[str, str] | None = None,
    table_rows: list[dict[str, Any]] | None = None,
) -> None:
    """Write the campaign's report to ``path`` as one self-contained HTML file.

    Args:
        study: The campaign's study.
        config: Its config.
        pareto: :func:`nas.search.pareto.pareto_summary` of the study.
        path: The ``.html`` file to write.
        environment: Versions and machine of the campaign (MLflow ``env.*`` tags); omitted when None.
        table_rows: Rows of :func:`nas.report.pareto.trial_table`; the Pareto ones form the sortable table.
    """
    from nas.report.pareto import trial_table

    trials = complete_trials(study)
    importances = param_importances(study)
    figures = report_figures(study, config, importances)
    plots = "".join(
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"plot-{key}", config={"displaylogo": False})
        for i, (key, fig) in enumerate(figures.items())
    )
    rows = [r for r in (table_rows if table_rows is not None else trial_table(study, config)) if r["pareto"]]
    columns = list(dict.fromkeys(k for r in rows for k in r if k != "pareto"))
    refs = baselines(study)
    ref_rows = "".join(_baseline_row(r) for r in refs) or "<tr><td colspan=4>the campaign recorded no baselines</td></tr>"
    costs = _costs(trials)
    n_tuned = sum(any(v.get("is_tuned") for v in _metrics(t).get("latency", {}).values()) for t in trials)
    env_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in (environment or {}).items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>lightnas campaign {html.escape(config.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}th{{cursor:pointer;background:#f3f4f6}}</style>
</head><body><h1>Campaign {html.escape(config.name)}</h1>
<p>{len(trials)} complete trials of {len(study.trials)}; space <code>{html.escape(config.space)}</code>; profiles {html.escape(', '.join(config.profiles))};
objectives {html.escape(', '.join(f'{o.direction} {o.name}' for o in config.objectives))}.
Filled circles are measured latencies, open diamonds estimated ones; hover a point for tuned/untuned and backend.
Untuned TVM latencies are not deployment latencies.
{html.escape(_accuracy_note(rows))}</p>
{plots}
<h2>Pareto trials</h2><p>Click a column to sort.</p>{_table(columns, rows, "pareto-table")}
<h2>Baselines</h2><table><tr><th>model</th><th>val. accuracy</th><th>latency</th><th>size (KiB)</th></tr>{ref_rows}</table>
<h2>Cost</h2><p>{html.escape(', '.join(f'{k} {v:.0f}' for k, v in costs.items()) or 'not recorded')} (seconds, summed over complete trials);
{n_tuned} of {len(trials)} trials have tuned latencies.</p>
<h2>Environment</h2><table>{env_rows or '<tr><td>not recorded</td></tr>'}</table>
<script type="application/json" id="importances">{html.escape(json.dumps(importances))}</script>
{_SORT_JS}</body></html>"""
    Path(path).write_text(page, encoding="utf-8")
