"""What every benchmark records about where it ran: versions, CPU model, core count and git commit.

The versions and CPU come from :func:`nas.tracking.environment_info` (what MLflow runs are tagged with),
so benchmark JSON and tracked runs describe a machine the same way.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def environment() -> dict:
    """Python, torch, optuna, ray, mlflow versions, ``cpu_model``, ``cpus`` and the short git commit."""
    from nas.tracking import environment_info

    info = environment_info()
    env = {k: info[k] for k in ("python", "cpu_model", "cpus", "torch", "optuna", "ray", "mlflow") if k in info}
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        env["commit"] = os.environ.get("LIGHTNAS_COMMIT", "unknown")
    return env


def write_docs_block(path: Path, marker: str, text: str, heading: str) -> None:
    """Replace the block between ``<!-- marker:begin -->`` and ``<!-- marker:end -->`` of a markdown file.

    Other sections (and the hand-written text around the block) are left alone; a file without the markers
    gets a new ``heading`` section holding the block.
    """
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    path.write_text(doc)
