"""PNG export of report plots by screenshotting them in headless Chromium.

plotly's own PNG export (kaleido ≥ 1) drives a Chrome it downloads on first use, which fails offline; a
Debian ``chromium`` (``apt-get install chromium``) does the same job with no download. Chromium runs with
background networking off and every host resolved to nowhere, so a page that tried to reach a CDN would
render blank rather than fetch anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from nas.errors import MissingDependencyError

if TYPE_CHECKING:
    import plotly.graph_objects as go

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Flags that keep Chromium from talking to the network on its own (update checks, metrics, sync, safe
# browsing lists, ...); see https://peter.sh/experiments/chromium-command-line-switches/. Debian's chromium
# 156 still calls its own services (update.googleapis.com, accounts.google.com) at start-up whatever the
# flags; :data:`BROWSER_SERVICE_HOSTS` names them, and :func:`screenshot` resolves every host to nowhere.
QUIET_FLAGS = (
    "--headless",
    "--no-sandbox",  # root in containers has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,NetworkTimeServiceQuerying,"
    "CertificateTransparencyComponentUpdater,DialMediaRouteProvider,OptimizationGuideModelDownloading",
    "--disable-field-trial-config",  # no server-side experiment configuration
    "--no-service-autorun",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--hide-scrollbars",
    "--mute-audio",
)


BROWSER_SERVICE_HOSTS = ("update.googleapis.com", "accounts.google.com", "clients2.google.com")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$LIGHTNAS_CHROMIUM`` if set, else the first on ``PATH``."""
    explicit = os.environ.get("LIGHTNAS_CHROMIUM")
    if explicit:
        return explicit
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def chromium_command(*args: str, width: int = 1200, height: int = 800, user_data_dir: str | Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The full command line for one headless Chromium run with network-quiet flags.

    Raises:
        MissingDependencyError: When no Chromium is installed.
    """
    binary = find_chromium()
    if binary is None:
        raise MissingDependencyError(
            "PNG export needs a Chromium browser and none is on PATH; install it with 'apt-get install chromium' "
            "or point LIGHTNAS_CHROMIUM at a Chrome binary."
        )
    return [binary, *QUIET_FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}",
            "--virtual-time-budget=10000", *extra, *args]  # virtual time: let plotly finish drawing first


def screenshot(html_path: Path, png_path: Path, width: int = 1200, height: int = 800, timeout_s: float = 120) -> Path:
    """Render ``html_path`` in headless Chromium and save a ``width``×``height`` PNG at ``png_path``."""
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lightnas-chromium-") as profile_dir:
        cmd = chromium_command(Path(html_path).resolve().as_uri(), width=width, height=height, user_data_dir=profile_dir,
                               extra=(f"--screenshot={png_path}", "--host-resolver-rules=MAP * ~NOTFOUND"))
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not png_path.is_file():
        raise RuntimeError(f"chromium failed to screenshot {html_path} (exit {done.returncode}): {done.stderr[-500:]}")
    return png_path


def figure_png(fig: go.Figure, png_path: Path, width: int = 1000, height: int = 560) -> Path:
    """Save one plotly figure as a PNG through a temporary self-contained HTML page."""
    fig = fig.to_dict()
    import plotly.graph_objects as go

    figure = go.Figure(fig)
    figure.update_layout(width=width, height=height, margin={"l": 70, "r": 30, "t": 60, "b": 60})
    with tempfile.TemporaryDirectory(prefix="lightnas-png-") as tmp:
        page = Path(tmp) / "figure.html"
        page.write_text(
            "<html><head><meta charset='utf-8'><style>body{margin:0}</style></head><body>"
            + figure.to_html(full_html=False, include_plotlyjs=True, config={"staticPlot": True})
            + "</body></html>",
            encoding="utf-8",
        )
        return screenshot(page, png_path, width=width, height=height)
