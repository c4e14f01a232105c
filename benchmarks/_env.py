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
