"""The latency-backend interface: the registry is the source of truth for ``latency.method``, and low-bit
accounting, the estimate fallback and the host lock are wrappers that compose around any backend.

A recording backend stands in for TVM where only the wrapper is under test; the accounting and the estimate run
on a real (tiny) TVM import. About 5 s on 2 cores.
"""

from __future__ import annotations

import fcntl
import warnings

import pytest
from conftest import tiny_mlp

from nas.errors import NasUserError
from nas.hardware.backends import LATENCY_BACKENDS, prepare
from nas.hardware import latency
from nas.hardware.latency import (
    DeviceUnreachable,
    EstimateFallback,
    HostLock,
    LatencyBackend,
    LatencySettings,
    LowBitAccounting,
)
from nas.hardware.measure import summarize
from nas.hardware.profiles import load_profile

torch = pytest.importorskip("torch")
pytest.importorskip("tvm")


def _inputs():
    return torch.randint(0, 100, (1, 8)), torch.ones(1, 8, dtype=torch.long)


def _lock_is_free() -> bool:
    with open(latency.LOCK_PATH, "r+") as handle:  # flock conflicts between open files, even in one process
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


class Recording(LatencyBackend):
    """A backend that times nothing: returns ``ms`` and records whether the lock was held in each phase."""

    def __init__(self, ms: float = 2.0, unreachable: bool = False) -> None:
        self.ms, self.unreachable, self.seen = ms, unreachable, []

    def build(self, prepared, profile, settings):
        self.seen.append(("build", _lock_is_free()))
        return "built"

    def time(self, built, prepared, profile, settings):
        self.seen.append(("time", _lock_is_free(), built))
        if self.unreachable:
            raise DeviceUnreachable("tracker 127.0.0.1:1 is unreachable")
        return summarize([self.ms] * 3, profile=profile.name, backend="tvm", number=1, threads=1, is_tuned=True)


@pytest.fixture(scope="module")
def prepared():
    return prepare(tiny_mlp(), _inputs())


@pytest.fixture(autouse=True)
def own_lock(tmp_path, monkeypatch):
    """A lock file of this test's own: the machine-wide one may be held by any other lightnas process."""
    monkeypatch.setattr(latency, "LOCK_PATH", tmp_path / "measure.lock")
    latency.LOCK_PATH.touch()


def test_every_profile_method_is_a_registered_backend_and_unknown_ones_list_them(tmp_path):
    assert LATENCY_BACKENDS.names() == ["estimate", "local", "rpc"]
    assert load_profile("host").backend.measures_host is True
    assert {load_profile(n).backend.measures_host for n in ("phone-flagship", "mcu-m7")} == {False}
    path = tmp_path / "board.yaml"
    path.write_text("name: board\nhw_class: cpu\ntarget: {kind: llvm}\ncores: 1\nlatency: {method: lokal}\n")
    with pytest.raises(NasUserError) as info:
        load_profile(str(path))
    assert "'lokal' is not a registered latency backend; choose one of estimate, local, rpc" in str(info.value)
    assert "\n" not in str(info.value)


def test_host_lock_builds_unlocked_and_times_locked(prepared):
    inner = Recording()
    result = HostLock(inner).measure(prepared, load_profile("host"), LatencySettings())
    assert inner.seen == [("build", True), ("time", False, "built")]
    assert result.median_ms == 2.0 and _lock_is_free()


def test_low_bits_are_scaled_by_the_predictor_ratio_and_labelled_estimated(prepared):
    from nas.hardware.predictor import LatencyPredictor

    host, wrapped = load_profile("host"), LowBitAccounting(Recording(ms=2.0))
    assert wrapped.measure(prepared, host, LatencySettings()).is_measured is True  # fp32: the timing as it is
    int8 = wrapped.measure(prepared.at_bits(8), host, LatencySettings())
    predictor = LatencyPredictor()
    ratio = predictor.predict_ms(prepared.graph, host, 8) / predictor.predict_ms(prepared.graph, host, 32)
    assert int8.median_ms == pytest.approx(2.0 * ratio) and int8.is_measured is False
    assert "fp32 kernels measured 2 ms" in int8.note


def test_unreachable_device_falls_back_to_the_estimate_and_warns_once_per_profile(prepared):
    phone = load_profile("phone-flagship")
    backend = EstimateFallback(LowBitAccounting(Recording(unreachable=True)), fallback=LATENCY_BACKENDS.get("estimate"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = backend.measure(prepared, phone, LatencySettings())
        second = backend.measure(prepared, phone, LatencySettings())
    assert first == second and first.backend == "predictor" and first.is_measured is False
    assert first.note.startswith("RPC device unreachable; estimated by the predictor")
    assert sum("estimated by the predictor instead" in str(w.message) for w in caught) == 1
    assert backend.warned == {"phone-flagship"} and backend.measures_host is False


def test_prepare_reuses_one_import_and_its_graph_across_bit_widths():
    model = tiny_mlp()
    fp32 = prepare(model, _inputs())
    graph = fp32.graph
    int8 = prepare(model, _inputs(), weight_bits=8)
    assert int8.mod is fp32.mod and int8.graph is graph and int8.weight_bits == 8
    estimate = LATENCY_BACKENDS.get("estimate")
    phone = load_profile("phone-flagship")
    assert estimate.measure(int8, phone, LatencySettings()).median_ms < estimate.measure(fp32, phone, LatencySettings()).median_ms
