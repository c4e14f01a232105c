"""``nas select``: choose, rebuild, check and export the model for one profile (:func:`nas.select.select_model`), then print it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from nas.commands.options import CampaignDirArg, JsonOpt, QuietOpt, TrackingUriOpt
from nas.output import Output

SELECT_EXAMPLES = """
Examples:

  nas select campaigns/demo --profile host

  nas select campaigns/demo --profile host --max-latency-ms 20 --min-accuracy 0.8

  nas select campaigns/demo --profile host --max-size-kb 2048 --finalize --export-dir dist/host
"""



def select(
    campaign_dir: CampaignDirArg,
    profile: Annotated[str, typer.Option("--profile", "-p", help="Hardware profile to select for (one of the campaign's).")],
    max_latency_ms: Annotated[Optional[float], typer.Option("--max-latency-ms", help="Latency limit on the profile, ms (median, batch 1); default: none.")] = None,
    min_accuracy: Annotated[Optional[float], typer.Option("--min-accuracy", help="Validation accuracy floor in [0, 1]; default: none.")] = None,
    max_size_kb: Annotated[Optional[float], typer.Option("--max-size-kb", help="Stored size limit, KiB; default: none.")] = None,
    finalize: Annotated[bool, typer.Option("--finalize", help="Retrain with the full distillation budget (+ QAT if quantized) before exporting.")] = False,
    finalize_steps: Annotated[Optional[int], typer.Option("--finalize-steps", min=1, help="Distillation steps with --finalize; default: 4x the search budget.")] = None,
    export_dir: Annotated[Optional[Path], typer.Option("--export-dir", help="Where to write the exports; default: <campaign>/selected/<profile>.")] = None,
    tune_trials: Annotated[int, typer.Option("--tune-trials", min=1, help="MetaSchedule trials per workload the shared tuning database lacks, for the TVM library.")] = 16,
    no_tune: Annotated[bool, typer.Option("--no-tune", help="Export the TVM library untuned (TVM's default loops; minutes faster, 10-100x slower to run).")] = False,
    require_parity: Annotated[bool, typer.Option("--require-parity", help="Fail when a shipped file's test accuracy is more than 0.5 points from the torch student's (default: warn).")] = False,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Pick the best model for a profile, test it on held-out data and export it (HF, ONNX, TVM, model card)."""
    from nas.select import SelectionCriteria, select_model

    out = Output(quiet=quiet, as_json=as_json)
    criteria = SelectionCriteria(profile=profile, max_latency_ms=max_latency_ms, min_accuracy=min_accuracy, max_size_kb=max_size_kb)
    result = select_model(campaign_dir, criteria, export_dir=export_dir, finalize=finalize, finalize_steps=finalize_steps,
                          tracking_uri=tracking_uri, tune_trials=None if no_tune else tune_trials,
                          require_parity=require_parity, out=out)
    card = json.loads(Path(result.files["selection"]).read_text(encoding="utf-8"))
    summary = {"trial": result.choice.trial, "profile": profile, "reasons": result.choice.reasons,
               "validation_accuracy": result.validation_accuracy, "test_accuracy": result.test_accuracy,
               "latency": card["latency"], "final_latency": card.get("final_latency"), "parity": card.get("parity"),
               "steps": result.steps, "finalized": result.finalized,
               "files": result.files, "registered": result.registered, "notes": result.notes}
    if as_json:
        out.result(json.dumps(summary, indent=2, default=str))
        return
    lat = card["latency"]
    parity = card.get("parity") or {"artefacts": {}}
    scored = ", ".join(f"{k} {v['accuracy']:.4f}" if v.get("accuracy") is not None else f"{k} not scored" for k, v in parity["artefacts"].items())
    out.result("\n".join([
        f"selected trial {result.choice.trial} for {profile}: test accuracy {result.test_accuracy:.4f} "
        f"(validation {result.validation_accuracy:.4f}), {lat['median_ms']:.3f} ms "
        f"({'measured' if lat['is_measured'] else 'estimated'}, {'tuned' if lat['is_tuned'] else 'untuned'} {lat['backend']})",
        *(f"  {r}" for r in result.choice.reasons),
        *([f"  {card['final_latency']['faster']}"] if card.get("final_latency") else []),
        f"  parity on the test split: torch {result.test_accuracy:.4f}; {scored or 'not checked'}",
        *(f"  {kind}: {path}" for kind, path in result.files.items()),
        f"  registered: {result.registered['model_name']} version {result.registered['version']} (run {result.registered['run_id']})",
        *(f"  note: {n}" for n in result.notes),
    ]))
