"""``nas search`` and ``nas resume``: run a campaign, time its front as shipped, build the report, print the front."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from nas.commands.options import CampaignDirArg, ConfigOpt, JsonOpt, OutOpt, QuietOpt, RayAddressOpt, TrackingUriOpt
from nas.metrics import format_accuracy
from nas.output import Output

SEARCH_EXAMPLES = """
Examples:

  nas search                                  # the demo: sample task, default space, host CPU

  nas search --config sst2.yaml --out campaigns/sst2

  nas search -c sst2.yaml --n-trials 40 --ray-address 127.0.0.1:6379
"""


def print_summary(out: Output, result, as_json: bool) -> None:
    if as_json:
        out.result(json.dumps({"campaign": str(result.paths.root), "pareto": result.pareto}, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"Pareto set ({result.n_complete} complete, {result.n_failed} failed, {result.wall_s:.0f} s)")
    profiles = list(dict.fromkeys(name for p in result.pareto for name in p["latency"]))
    for col in ("trial", "acc.", *(f"{name} ms" for name in profiles), "KiB"):
        table.add_column(col, no_wrap=True)
    table.add_column("candidate", no_wrap=True, overflow="ellipsis", max_width=28)
    for p in result.pareto:
        cells = [_short_latency(p["latency"].get(name)) for name in profiles]
        table.add_row(str(p["trial"]), format_accuracy(p["accuracy"], p.get("validation_size")), *cells, f"{p['size_bytes'] / 1024:.0f}",
                      p["candidate_key"] if "candidate_key" in p else _key(p["candidate"]))
    out.result(table)
    out.result("ms: median, batch 1; tvm/ort = measured (tuned TVM library, ONNX Runtime on the shipped file), "
               "est = estimated, untuned = an untuned TVM build. KiB: the shipped ONNX file. acc.: validation, ± one "
               "standard error. Details: --json, the report.")
    out.result(f"report: {result.paths.report}\npareto: {result.paths.pareto}\nmlflow: {result.tracking_uri}")


def _build_report(out: Output, result) -> None:
    """report.html, report.json, trials.csv and pareto.csv of a finished ``nas search`` or ``nas resume``."""
    if not result.n_complete:
        out.warn("no trial completed, so there is no report; see 'nas status' for the failures")
        return
    from nas.report import build_report

    build_report(result.paths.root, tracking_uri=result.tracking_uri)


def _short_latency(v: dict | None) -> str:
    """``0.82 ort``: one latency in a table cell, tagged by how it was obtained (legend under the table)."""
    if not v:
        return "—"
    if not v["is_measured"]:
        tag = "est"
    elif v["backend"].startswith("tvm"):
        tag = "tvm" if v["is_tuned"] else "untuned"
    else:
        tag = "ort8" if v["backend"].endswith("int8") else "ort" if v["backend"].startswith("onnxruntime") else v["backend"]
    return f"{v['median_ms']:.2f} {tag}"


def _key(candidate: dict | None) -> str:
    from nas.candidate import Candidate

    return Candidate.from_dict(candidate).key if candidate else "?"


def search(
    config: ConfigOpt = None,
    out_dir: OutOpt = None,
    n_trials: Annotated[Optional[int], typer.Option("--n-trials", "-n", min=1, help="Trials to run; default: the campaign's n_trials.")] = None,
    ray_address: RayAddressOpt = None,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a search campaign and write its Pareto set and report."""
    from nas.config import load_campaign_config
    from nas.search.campaign import run_campaign

    out = Output(quiet=quiet, as_json=as_json)
    campaign = load_campaign_config(config)
    if n_trials is not None:
        campaign = campaign.model_copy(update={"n_trials": n_trials})
    out_dir = out_dir or Path("campaigns") / campaign.name
    result = run_campaign(campaign, out_dir, ray_address=ray_address, tracking_uri=tracking_uri, out=out)
    if campaign.latency.final_measure and result.pareto:
        result = _finalize(result, campaign, out)
    _build_report(out, result)
    print_summary(out, result, as_json)


def _finalize(result, campaign, out: Output):
    """Time the Pareto trials' shipped builds on this host, then rewrite pareto.json with them (the report follows)."""
    import dataclasses

    from nas.search.pareto import pareto_summary, write_pareto_json
    from nas.search.campaign import load_study
    from nas.search.finalize import finalize_front

    done = finalize_front(result.paths.root, tune_trials=campaign.latency.final_tune_trials,
                          max_new_tasks=campaign.latency.final_max_new_tasks, out=out)
    if not done.measured:
        return result
    out.info(f"final front: {len(done.measured)} trial(s) timed as shipped in {done.seconds:.0f} s")
    study, config = load_study(result.paths.root)
    pareto = pareto_summary(study, config)
    write_pareto_json(pareto, result.paths.pareto)
    return dataclasses.replace(result, pareto=pareto)


def resume(
    campaign_dir: CampaignDirArg,
    ray_address: RayAddressOpt = None,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Continue a stopped campaign: finished trials are kept, interrupted ones run again.

    Example: nas resume campaigns/demo
    """
    from nas.search.campaign import run_campaign

    out = Output(quiet=quiet, as_json=as_json)
    result = run_campaign(None, campaign_dir, resume=True, ray_address=ray_address, tracking_uri=tracking_uri, out=out)
    if result.pareto:  # trials measured before an interruption are skipped
        from nas.search.campaign import load_study

        config = load_study(result.paths.root)[1]
        if config.latency.final_measure:
            result = _finalize(result, config, out)
    _build_report(out, result)
    print_summary(out, result, as_json)
