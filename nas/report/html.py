"""A self-contained HTML report of a campaign (plotly.js is embedded: it opens offline)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from nas.config import CampaignConfig


def _latency_label(lat: dict[str, Any]) -> str:
    kind = "measured" if lat.get("is_measured") else "estimated"
    tuned = "tuned" if lat.get("is_tuned") else "untuned"
    return f"{lat['median_ms']:.3f} ms ({kind}, {tuned}, {lat['backend']})"


def write_report(study: optuna.Study, config: CampaignConfig, pareto: list[dict[str, Any]], path: Path) -> None:
    """Write accuracy-vs-latency plots per profile and a table of the Pareto trials to ``path``."""
    import plotly.graph_objects as go
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "metrics" in t.user_attrs]
    pareto_numbers = {p["trial"] for p in pareto}
    figures = []
    for profile in config.profiles:
        fig = go.Figure()
        for on_front, name, color in ((False, "trials", "#9aa5b1"), (True, "Pareto front", "#d62728")):
            points = [t for t in trials if (t.number in pareto_numbers) == on_front and profile in t.user_attrs["metrics"]["latency"]]
            points.sort(key=lambda t: t.user_attrs["metrics"]["latency"][profile]["median_ms"])
            lat = [t.user_attrs["metrics"]["latency"][profile] for t in points]
            fig.add_trace(
                go.Scatter(
                    x=[v["median_ms"] for v in lat],
                    y=[t.user_attrs["metrics"]["accuracy"] for t in points],
                    mode="lines+markers" if on_front else "markers",
                    line={"shape": "hv"} if on_front else None,
                    marker={"color": color, "size": 10, "symbol": ["circle" if v["is_measured"] else "diamond-open" for v in lat]},
                    name=name,
                    text=[f"trial {t.number}<br>{_latency_label(v)}" for t, v in zip(points, lat)],
                )
            )
        kinds = sorted({"measured" if t.user_attrs["metrics"]["latency"][profile]["is_measured"] else "estimated"
                        for t in trials if profile in t.user_attrs["metrics"]["latency"]})
        tuned = sorted({"tuned" if t.user_attrs["metrics"]["latency"][profile]["is_tuned"] else "untuned"
                        for t in trials if profile in t.user_attrs["metrics"]["latency"]})
        fig.update_layout(
            title=f"Accuracy vs latency on {profile} ({', '.join(kinds + tuned)}; batch 1, {config.max_seq_len} tokens)",
            xaxis_title=f"latency on {profile} (ms, median)",
            yaxis_title="validation accuracy",
            template="plotly_white",
        )
        figures.append(fig)

    rows = []
    for p in pareto:
        c = p["candidate"] or {}
        lat = "<br>".join(f"{k}: {_latency_label(v)}" for k, v in p["latency"].items())
        ref = "<br>".join(f"{k}: {_latency_label(v)}" for k, v in p["reference_latency"].items())
        rows.append(
            f"<tr><td>{p['trial']}</td><td>{p['accuracy']:.4f}</td><td>{lat}</td><td>{ref}</td>"
            f"<td>{p['size_bytes'] / 1024:.0f}</td><td>{html.escape(', '.join(f'{k}={v}' for k, v in c.items()))}</td></tr>"
        )
    plots = "".join(
        fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>lightnas campaign {html.escape(config.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}</style>
</head><body><h1>Campaign {html.escape(config.name)}</h1>
<p>{len(trials)} complete trials; space <code>{html.escape(config.space)}</code>; profiles {html.escape(', '.join(config.profiles))};
objectives {html.escape(', '.join(f'{o.direction} {o.name}' for o in config.objectives))}.
Untuned TVM latencies are not deployment latencies: they are labelled in every point and row.</p>
{plots}
<h2>Pareto set</h2><table><tr><th>trial</th><th>val. accuracy</th><th>latency</th><th>reference (host)</th><th>size (KiB)</th><th>candidate</th></tr>
{''.join(rows)}</table></body></html>"""
    Path(path).write_text(page, encoding="utf-8")
