"""Options shared by several ``nas`` commands, and the small formatters their output shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

CampaignDirArg = Annotated[Path, typer.Argument(help="Campaign folder (the --out of 'nas search').")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Campaign YAML file; default: the bundled demo campaign.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Campaign folder to create; default: campaigns/<name>.")]
RayAddressOpt = Annotated[
    Optional[str],
    typer.Option("--ray-address", envvar="RAY_ADDRESS", help="Run trials on this Ray cluster (e.g. 127.0.0.1:6379); default: as the campaign says."),
]
TrackingUriOpt = Annotated[
    Optional[str],
    typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI; default: SQLite in the campaign folder."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or informational output.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def latency_text(name: str, v: dict) -> str:
    """``host 22.03 ms (estimated from an untuned build; tvm)``: every latency the CLI prints says how it was obtained."""
    from nas.hardware.measure import provenance

    return f"{name} {v['median_ms']:.2f} ms ({provenance(v['is_measured'], v['is_tuned'], v['backend'])}; {v['backend']})"
