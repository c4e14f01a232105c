"""The campaign report: Pareto fronts and hypervolume from Optuna, tables, and an HTML page that draws
its plots in headless Chromium without touching the network."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import threading

import optuna
import pytest

from nas.metrics import flatten
from nas.report.pareto import front_numbers, hypervolume_history, trial_table
from nas.report.png import BROWSER_SERVICE_HOSTS, find_chromium

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no Chromium on PATH: install Debian's 'chromium' package")


def _latency(ms: float, is_measured: bool = True) -> dict:
    return {"profile": "host", "backend": "tvm", "median_ms": ms, "mean_ms": ms, "std_ms": 0.0, "min_ms": ms, "max_ms": ms,
            "repeats": 3, "number": 1, "threads": 1, "is_measured": is_measured, "is_tuned": False, "target": "", "note": ""}


def _synthetic_study(points: list[tuple[float, float, int]], fidelities: list[str] | None = None) -> optuna.Study:
    """A study of (accuracy, latency_ms on host, size_bytes) trials, in memory; ``fidelities`` per trial if given."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "latency_ms@host"])
    for i, (acc, ms, size) in enumerate(points):
        study.add_trial(optuna.trial.create_trial(
            params={"n_layers": i % 3 + 1}, distributions={"n_layers": optuna.distributions.IntDistribution(1, 4)},
            values=[acc, ms],
            user_attrs={"candidate": {"n_layers": i % 3 + 1, "recipe": {"bits": 8}},
                        "metrics": {"accuracy": acc, "latency": {"host": _latency(ms, i % 2 == 0)}, "size_bytes": size},
                        **({"fidelity": fidelities[i]} if fidelities else {})},
        ))
    return study


def test_fronts_and_hypervolume_follow_dominance():
    study = _synthetic_study([(0.9, 10.0, 4000), (0.8, 5.0, 1000), (0.7, 20.0, 500), (0.95, 30.0, 8000)])
    trials = study.get_trials()
    assert front_numbers(trials, "host", "latency_ms") == {0, 1, 3}  # trial 2 is slower and worse than 0 and 1
    assert front_numbers(trials, "host", "size_kib") == {0, 1, 2, 3}
    assert {t.number for t in study.best_trials} == {0, 1, 3}
    history = hypervolume_history(study)
    assert history["trial"] == [0, 1, 2, 3]
    hv = history["hypervolume"]
    assert hv[2] == pytest.approx(hv[1])  # a dominated trial adds nothing
    assert hv[0] < hv[1] < hv[3]
    # scaled losses: trial 0 alone spans (1.1 - 0.2) × (1.1 - 0.2) of the unit box around the reference point
    assert hv[0] == pytest.approx((1.1 - (-0.9 - -0.95) / 0.25) * (1.1 - (10 - 5) / 25))


def test_the_front_compares_one_fidelity():
    """With supernet-scored and promoted (stand-alone) trials mixed, the front (pareto.json, nas status, the
    report's pareto column) is the stand-alone trials' own; a campaign scored one way keeps Optuna's."""
    from nas.config import CampaignConfig
    from nas.search.pareto import front_trials, pareto_summary

    points = [(0.95, 1.0, 100), (0.80, 5.0, 100), (0.85, 9.0, 100), (0.70, 2.0, 100)]
    mixed = _synthetic_study(points, ["supernet", "standalone", "standalone", "standalone"])
    config = CampaignConfig()
    assert sorted(t.number for t in front_trials(mixed, config)) == [1, 2, 3]  # trial 0 would dominate 1 and 3
    assert [p["trial"] for p in pareto_summary(mixed, config)] == [2, 1, 3]
    assert [r["pareto"] for r in trial_table(mixed, config)] == [False, True, True, True]
    single = _synthetic_study(points)
    assert [t.number for t in front_trials(single, config)] == [0]
    # the report's plot agrees: trial 0 is drawn apart, and the drawn front is 1, 2, 3
    from nas.report.html import report_figures

    figure = report_figures(mixed, config, importances={})["front-latency-host"]
    by_name = {trace.name: trace for trace in figure.data}
    assert list(by_name["supernet-scored (inherited accuracy; not on the front)"].y) == [0.95]
    assert sorted(by_name["Pareto front"].y) == [0.70, 0.80, 0.85]


def test_trial_table_flattens_any_candidate():
    from nas.config import CampaignConfig

    study = _synthetic_study([(0.9, 10.0, 4096), (0.8, 5.0, 1024)])
    rows = trial_table(study, CampaignConfig())
    assert [r["trial"] for r in rows] == [0, 1]
    assert rows[0]["candidate.recipe.bits"] == 8 and rows[1]["size_kib"] == 1.0
    assert rows[0]["latency_kind.host"] == "measured, untuned" and rows[1]["latency_kind.host"] == "estimated from an untuned build"
    assert flatten({"a": [{"b": 1}], "c": 2}) == {"a[0].b": 1, "c": 2}


@pytest.fixture(scope="module")
def report(small_campaign, tmp_path_factory):
    from nas.report import build_report

    out = tmp_path_factory.mktemp("report")
    files = build_report(small_campaign, out, png=find_chromium() is not None)
    return small_campaign, files


@pytest.mark.slow
def test_report_files_agree_with_the_study(report):
    from nas.search.campaign import load_study

    folder, files = report
    study, config = load_study(folder)
    summary = json.loads(files.json.read_text())
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert {p["trial"] for p in summary["pareto"]} == {t.number for t in study.best_trials}
    assert summary["hypervolume"]["trial"] == [t.number for t in complete]
    assert all(b >= a for a, b in zip(summary["hypervolume"]["hypervolume"], summary["hypervolume"]["hypervolume"][1:]))
    for name in config.objectives:
        if name.name in summary["importances"]:
            assert sum(summary["importances"][name.name].values()) == pytest.approx(1.0)
    teacher = study.user_attrs["teacher"]
    assert summary["baselines"][0]["accuracy"] == teacher["validation_accuracy"] > 0.5
    assert summary["environment"]["torch"]  # versions recorded by the campaign's MLflow run
    with open(files.trials_csv) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["trial"]) for r in rows] == [t.number for t in complete]
    for row, trial in zip(rows, complete):
        assert float(row["latency_ms.host"]) == pytest.approx(trial.user_attrs["metrics"]["latency"]["host"]["median_ms"])
        for key, value in flatten(trial.user_attrs["candidate"], "candidate").items():
            assert row[key] == ("" if value is None else str(value))
    page = files.html.read_text()
    assert 'src="http' not in page  # plotly.js is inlined (its bundle merely mentions cdn.plot.ly in a default)
    assert page.count('class="plotly-graph-div"') == len(config.profiles) + 3  # latency per profile, size, hypervolume, importances


class _RecordingProxy:
    """A TCP listener that Chromium is told to use as its HTTP(S) proxy: any request it tries shows up here."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                self.requests.append(conn.recv(4096))
            except OSError:
                self.requests.append(b"")
            conn.close()

    def close(self) -> None:
        self.server.close()


def _chromium(page, tmp_path, proxy: _RecordingProxy, *args: str) -> subprocess.CompletedProcess:
    from nas.report.png import chromium_command

    cmd = chromium_command(page.resolve().as_uri(), width=1200, height=2400, user_data_dir=tmp_path / "profile",
                           extra=(f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>", *args))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
@needs_chromium
def test_report_draws_in_headless_chromium_without_network(report, tmp_path):
    from PIL import Image

    folder, files = report
    proxy = _RecordingProxy()
    try:
        # control: a page that does fetch from the network is caught by the proxy, so silence below means something
        control = tmp_path / "control.html"
        control.write_text('<html><body><script src="http://cdn.example.com/plotly.js"></script></body></html>')
        _chromium(control, tmp_path, proxy, "--dump-dom")
        assert any(b"cdn.example.com" in r for r in proxy.requests), proxy.requests
        proxy.requests.clear()

        dom = _chromium(files.html, tmp_path, proxy, "--dump-dom").stdout
        shot = tmp_path / "report.png"
        _chromium(files.html, tmp_path, proxy, f"--screenshot={shot}")
    finally:
        proxy.close()
    # nothing but Chromium's own start-up calls to its update and account services (see nas.report.png)
    page_requests = [r for r in proxy.requests if not any(host.encode() in r.split(b"\r\n")[0] for host in BROWSER_SERVICE_HOSTS)]
    assert page_requests == []
    # every plot container drew an SVG; the latency plot has one marker per complete trial
    n_plots = dom.count('class="plotly-graph-div')
    assert n_plots >= 4 and dom.count('class="main-svg"') >= n_plots
    summary = json.loads(files.json.read_text())
    latency_plot = dom.split('id="plot-front-latency-host"')[1].split('id="plot-front-size"')[0]
    assert latency_plot.count('class="point"') == len(summary["trials"])
    image = Image.open(shot).convert("RGB")
    pixels = list(image.getdata())
    non_white = sum(p != (255, 255, 255) for p in pixels) / len(pixels)
    red = sum(abs(p[0] - 214) < 30 and p[1] < 90 and p[2] < 90 for p in pixels)  # the Pareto front's #d62728
    assert non_white > 0.02 and red > 50, (non_white, red)
    for png in files.png.values():
        assert Image.open(png).size == (1000, 560)


@pytest.mark.slow
def test_report_cli(report, tmp_path):
    folder, _ = report
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "report", str(folder), "--out", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["html"] == str(tmp_path / "report.html")
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "report", str(empty)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no campaign here" in proc.stderr
