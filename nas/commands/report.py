"""``nas report``: write a campaign's HTML report with its JSON and CSV tables, print where they went."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from nas.commands.options import CampaignDirArg, JsonOpt, TrackingUriOpt
from nas.errors import NasUserError
from nas.output import Output

REPORT_EXAMPLES = """
Examples:

  nas report campaigns/demo

  nas report campaigns/demo --png --out docs/report     # also PNGs of the main plots (needs chromium)
"""


def report(
    campaign_dir: CampaignDirArg,
    report_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder to write into; default: the campaign folder.")] = None,
    png: Annotated[bool, typer.Option("--png", help="Also save the main plots as PNG under <out>/img (needs chromium).")] = False,
    tracking_uri: TrackingUriOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a campaign's HTML report (self-contained, offline) with its JSON and CSV tables."""
    from nas.report import build_report

    if report_dir is not None and report_dir.exists() and not report_dir.is_dir():
        raise NasUserError(f"--out {report_dir}: is a file; the report needs a folder (it writes report.html, report.json "
                           "and CSV tables there), so give a folder or a new path.")
    files = build_report(campaign_dir, report_dir, png=png, tracking_uri=tracking_uri)
    paths = {"html": files.html, "json": files.json, "trials_csv": files.trials_csv, "pareto_csv": files.pareto_csv,
             **{f"png.{k}": v for k, v in files.png.items()}}
    out = Output(as_json=as_json)
    if as_json:
        out.result(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    else:
        out.result("\n".join(f"{k}: {v}" for k, v in paths.items()))
