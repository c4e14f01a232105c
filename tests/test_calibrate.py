"""Host calibration of the latency predictor: CPU mismatch warning, the two-scale refit, the cache, `nas calibrate`."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch
from typer.testing import CliRunner

from nas.cli import app
from nas.hardware import calibrate
from nas.hardware.calibrate import CALIBRATION_SHAPES, fit_host_scales, host_cache_path, host_cpu_model
from nas.hardware.predictor import BUNDLED_CALIBRATION, Calibration, LatencyPredictor, legacy_cache_path
from nas.hardware.profiles import load_profile

OTHER_CPU = "Imaginary CPU 9000 (zen9)"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty $LIGHTNAS_CACHE and a fresh once-per-process warning memory."""
    monkeypatch.setenv("LIGHTNAS_CACHE", str(tmp_path))
    calibrate.forget_cpu_warnings()
    return tmp_path


@pytest.fixture(scope="module")
def graphs():
    """Fused graphs of three calibration students (real TVM import, no build), seq len 16."""
    from nas.candidate import Candidate
    from nas.hardware.graph import summarize_model
    from nas.models.student import build_student

    ids = torch.ones(1, 16, dtype=torch.long)
    out = []
    for shape in CALIBRATION_SHAPES[:3]:
        torch.manual_seed(0)
        out.append(summarize_model(build_student(Candidate(**shape), num_labels=2).eval(), (ids, ids)))
    return out


def _shipped(**changes) -> Calibration:
    return dataclasses.replace(Calibration.load(BUNDLED_CALIBRATION), **changes)


def test_the_shipped_calibration_names_its_cpu():
    assert Calibration.load(BUNDLED_CALIBRATION).cpu_model == "AMD EPYC (znver5)"
    assert "(" in host_cpu_model() and host_cpu_model().endswith(")")  # OS name (LLVM name)


def test_another_cpus_calibration_warns_once_naming_both_cpus_and_the_command(cache, graphs):
    _shipped(cpu_model=OTHER_CPU).save(legacy_cache_path())  # e.g. copied from another machine
    host = load_profile("host")
    with pytest.warns(RuntimeWarning) as caught:
        LatencyPredictor().predict_ms(graphs[0], host)
    [message] = [str(w.message) for w in caught if "calibrated on" in str(w.message)]
    assert OTHER_CPU in message and host_cpu_model() in message and "nas calibrate --profile host" in message
    assert message.count(". ") == 0  # one sentence
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: a second prediction is silent
        LatencyPredictor().predict_ms(graphs[1], host)
        LatencyPredictor().predict_ms(graphs[0], load_profile("phone-flagship"))  # not the host: no warning either


def test_this_hosts_cached_calibration_is_preferred_and_silent(cache, graphs):
    _shipped(cpu_model=OTHER_CPU).save(legacy_cache_path())
    mine = _shipped(cpu_model=host_cpu_model(), launch_s=2e-6, source="test: this host")
    path = mine.save(host_cache_path())
    assert path.parent == cache / "predictor" and path.name.startswith("calibration-")
    assert Calibration.load() == mine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predicted = LatencyPredictor().predict_ms(graphs[0], load_profile("host"))
    assert predicted == pytest.approx(LatencyPredictor(mine).predict_ms(graphs[0], load_profile("host")))
    assert json.loads(path.read_text())["cpu_model"] == host_cpu_model()


def test_two_scale_refit_recovers_a_slower_host_and_keeps_other_devices_estimates(graphs):
    """Timings made from the shipped fit with FLOPs 1.7× and launches 0.6× as costly: the refit finds both, and
    the phone estimate is the shipped calibration's (the refit changes the host, not the transfer)."""
    base = _shipped()
    truth = dataclasses.replace(base, s_per_flop={k: 1.7 * v for k, v in base.s_per_flop.items()},
                                s_per_byte=1.7 * base.s_per_byte, launch_s=0.6 * base.launch_s)
    host, phone = load_profile("host"), load_profile("phone-flagship")
    measured = [LatencyPredictor(truth).predict_ms(g, host) for g in graphs]
    fitted, scales = fit_host_scales(base, graphs, measured, source="test", cpu_model=OTHER_CPU)
    assert scales["compute_scale"] == pytest.approx(1.7, rel=1e-3) and scales["launch_scale"] == pytest.approx(0.6, rel=1e-3)
    assert fitted.cpu_model == OTHER_CPU and fitted.n_models == 3
    for g, m in zip(graphs, measured):
        assert LatencyPredictor(fitted).predict_ms(g, host) == pytest.approx(m, rel=1e-3)
        assert LatencyPredictor(fitted).predict_ms(g, phone) == pytest.approx(LatencyPredictor(base).predict_ms(g, phone), rel=1e-6)
    one, scales_one = fit_host_scales(base, graphs[:1], measured[:1], source="test", cpu_model=OTHER_CPU)
    assert scales_one["compute_scale"] == scales_one["launch_scale"]  # one model: one common scale
    assert LatencyPredictor(one).predict_ms(graphs[0], host) == pytest.approx(measured[0], rel=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--profile", "phone-flagship"], "not timed on this machine"),
    (["--candidates", "9"], "--candidates must be between 1 and 6"),
    (["--trials", "0"], "--trials must be at least 1"),
])
def test_nas_calibrate_refuses_user_mistakes_in_one_sentence(cache, args, message):
    result = CliRunner().invoke(app, ["calibrate", *args])
    assert result.exit_code != 0 and message in str(result.exception)
    assert not (cache / "predictor").exists()


@pytest.mark.slow  # ~3-5 min here: two tuned builds, and MetaSchedule's worker start-up dominates
def test_nas_calibrate_fits_caches_and_the_predictor_then_prefers_it(cache, graphs):
    result = CliRunner().invoke(app, ["calibrate", "--profile", "host", "--candidates", "2", "--trials", "2"])
    assert result.exit_code == 0, result.output
    saved = host_cache_path()
    assert saved.is_file() and str(saved) in result.output.replace("\n", "")
    calibration = Calibration.load()
    assert calibration.cpu_model == host_cpu_model() and calibration.n_models == 2
    assert "nas calibrate" in calibration.source and calibration.launch_s > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LatencyPredictor().predict_ms(graphs[0], load_profile("host")) > 0
