"""The CLI: help is instant, user errors are one red line with exit code 1."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _nas(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_help_lists_commands_without_importing_heavy_packages():
    code = "import sys; from nas.cli import app; import nas.cli; print(sorted(m for m in ('torch','tvm','ray','mlflow') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]"
    proc = _nas("--help")
    assert proc.returncode == 0
    for command in ("search", "resume", "status", "profiles"):
        assert command in proc.stdout


@pytest.mark.parametrize(
    "content, message",
    [
        ("n_trails: 3\n", "unknown key 'n_trails'; did you mean 'n_trials'?"),
        ("n_trials: -1\n", "n_trials = -1 is invalid"),
        ("sampler: cmaes\n", "sampler = 'cmaes' is invalid"),
        ("profiles: [host]\nobjectives: [{metric: latency_ms, direction: minimize, profile: pixel}]\n", "profile 'pixel'"),
        ("n_trials: [\n", "YAML syntax error at line"),
    ],
)
def test_bad_campaign_file_is_one_line_and_exit_1(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    proc = _nas("search", "--config", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_config_file(tmp_path):
    proc = _nas("search", "--config", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 1 and "file not found" in proc.stderr


def test_usage_error_is_exit_2():
    proc = _nas("search", "--n-trials", "zero")
    assert proc.returncode == 2


def test_status_of_a_folder_without_campaign(tmp_path):
    proc = _nas("status", str(tmp_path))
    assert proc.returncode == 1 and "no campaign here" in proc.stderr


def test_profiles_lists_host():
    proc = _nas("profiles")
    assert proc.returncode == 0 and "host" in proc.stdout
    proc = _nas("profiles", "show", "host")
    assert proc.returncode == 0 and "target" in proc.stdout
