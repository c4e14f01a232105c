"""The rpc latency backend, for real: a TVM RPC tracker and server on 127.0.0.1, started by the test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings

import pytest
from conftest import tiny_mlp
import torch

from nas.hardware.profiles import HardwareProfile, host_cpu_name
from nas.hardware.latency import LatencySettings

SEQ_LEN = 16


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_key(port: int, key: str, procs: list, timeout_s: float = 240.0) -> None:
    from tvm import rpc

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = [p.args[2] for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead} exited early (is tornado installed? the TVM tracker needs it)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            servers = rpc.connect_tracker("127.0.0.1", port).summary().get("server_info", [])
            if any(key in str(s.get("key", "")) for s in servers):
                return
        except Exception:  # tracker still starting
            pass
        time.sleep(1.0)
    raise TimeoutError(f"no RPC server registered with key {key} within {timeout_s} s")


@pytest.fixture(scope="module")
def rpc_device():
    """A tracker and one server (the "device": this machine) registered under key ``loopback``."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
                               "--port-end", str(port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    time.sleep(1.0)
    server_port = _free_port()
    procs.append(subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                   "--port", str(server_port), "--port-end", str(server_port + 1),
                                   "--tracker", f"127.0.0.1:{port}", "--key", "loopback", "--no-fork"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    try:
        _wait_for_key(port, "loopback", procs)
        yield port
    finally:
        # Tracker and server each run their work in a TVM popen worker (a child process): end the whole
        # session each was started in, or those workers outlive the test.
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def _profile(port: int, key: str = "loopback") -> HardwareProfile:
    return HardwareProfile(
        name="loopback", hw_class="cpu", target={"kind": "llvm", "mcpu": host_cpu_name()}, cores=1,
        cross_compiler="g++", latency={"method": "rpc", "rpc_host": "127.0.0.1", "rpc_port": port, "rpc_key": key},
        peak={"fp32_gflops": 50, "int8_gops": 100, "bandwidth_gbs": 10, "clock_mhz": 3000},
    )


def _inputs():
    return torch.randint(0, 100, (1, SEQ_LEN)), torch.ones(1, SEQ_LEN, dtype=torch.long)


def test_rpc_backend_times_on_the_remote_server(rpc_device):
    from nas.hardware.backends import measure_latency

    result = measure_latency(tiny_mlp(), _inputs(), _profile(rpc_device), LatencySettings(repeats=3, number=2))
    print(result.label, result.note)
    assert result.backend == "tvm-rpc" and result.is_measured is True
    assert result.repeats == 3 and result.median_ms > 0
    assert result.threads == 1  # the remote pool was set to the profile's cores
    assert "127.0.0.1" in result.note


def test_unreachable_rpc_device_is_estimated_and_says_so(rpc_device):
    from nas.hardware.backends import measure_latency

    for profile in (_profile(_free_port()), _profile(rpc_device, key="no-such-device")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = measure_latency(tiny_mlp(), _inputs(), profile, LatencySettings(repeats=3, number=2))
        assert result.is_measured is False and result.backend == "predictor"
        assert result.note.startswith("RPC device unreachable")
        profile.backend.warned.clear()  # the fallback warns once per profile and process
        assert any("estimated by the predictor instead" in str(w.message) for w in caught)
