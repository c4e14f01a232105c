"""The CLI: help is instant, user errors are one red line with exit code 1."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import run_nas as _nas


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
def test_bad_campaign_file_is_one_line_and_exit_1(tmp_path, content, message, nas_cli):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    proc = nas_cli("search", "--config", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_config_file(tmp_path, nas_cli):
    proc = nas_cli("search", "--config", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 1 and "file not found" in proc.stderr


def test_usage_error_is_exit_2(nas_cli):
    proc = nas_cli("search", "--n-trials", "zero")
    assert proc.returncode == 2


def test_status_of_a_folder_without_campaign(tmp_path, nas_cli):
    proc = nas_cli("status", str(tmp_path))
    assert proc.returncode == 1 and "no campaign here" in proc.stderr


def test_profiles_lists_host(nas_cli):
    proc = nas_cli("profiles")
    assert proc.returncode == 0 and "host" in proc.stdout
    proc = nas_cli("profiles", "show", "host")
    assert proc.returncode == 0 and "target" in proc.stdout


def test_pareto_table_is_readable_in_80_columns():
    """One latency per profile, tagged by how it was obtained; no cell wraps at 80 columns (details: --json)."""
    import io
    import types

    from rich.console import Console

    from nas.commands.search import print_summary
    from nas.output import Output

    def lat(ms, backend, measured=True, tuned=True):
        return {"median_ms": ms, "backend": backend, "is_measured": measured, "is_tuned": tuned}

    pareto = [{"trial": 11, "accuracy": 0.8512, "size_bytes": 1_234_567, "candidate_key": "H256-2*t4f1024-p0.4mu-w8-a0.5T4",
               "latency": {"host": lat(0.8213, "onnxruntime-int8"), "pixel-7": lat(3.1, "tvm", measured=False)},
               "reference_latency": {"torch": lat(2.0, "torch")}, "faster": {"host": "onnxruntime faster on host"}},
              {"trial": 3, "accuracy": 0.7, "size_bytes": 90_000, "candidate_key": "H64-1*c3f256",
               "latency": {"host": lat(0.51, "tvm"), "pixel-7": lat(1.2, "tvm", measured=False)}, "reference_latency": {}}]
    result = types.SimpleNamespace(pareto=pareto, n_complete=12, n_failed=0, wall_s=300.0, tracking_uri="sqlite:///m.db",
                                   paths=types.SimpleNamespace(report="r.html", pareto="p.json"))
    out = Output()
    buffer = io.StringIO()
    out.stdout = Console(file=buffer, width=80, soft_wrap=False)
    print_summary(out, result, as_json=False)
    text = buffer.getvalue()
    table = text.split("ms: median")[0].splitlines()
    assert max(len(line) for line in table) <= 80, text
    row = next(line for line in table if line.lstrip("│ ").startswith("11"))
    assert "0.82 ort8" in row and "3.10 est" in row and "1206" in row, text
    assert "untuned" not in row and any("0.51 tvm" in line for line in table)
