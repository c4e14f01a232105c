"""Latency of a torch model on a profile: the one entry point ``nas.search`` calls.

``measure_latency`` compiles with TVM for the profile's target and times it where the profile says
latency is obtained. Timings on one machine are serialised by a machine-wide file lock, so parallel
trials (Ray workers) never time while another trial is timing. (They may still be training on the other
cores: docs/latency.md says what that costs.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from nas.hardware.measure import LatencyResult
    from nas.hardware.profiles import HardwareProfile
    from nas.search.objective import LatencySettings

LOCK_PATH = Path(tempfile.gettempdir()) / "lightnas-measure.lock"


@contextlib.contextmanager
def measurement_lock():
    """Hold the machine-wide timing lock (blocks until no other lightnas process is timing)."""
    LOCK_PATH.touch(exist_ok=True)
    with open(LOCK_PATH, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def measure_latency(
    model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], profile: HardwareProfile, settings: LatencySettings
) -> LatencyResult:
    """Compile ``model`` for ``profile`` with TVM and time it (batch and length of ``example_inputs``).

    Raises:
        NotImplementedError: For profiles whose latency method is not ``local`` yet (rpc, estimate).
    """
    from nas.hardware.compile import compile_relax
    from nas.hardware.measure import measure_tvm

    if profile.latency.method != "local":
        raise NotImplementedError(f"profile {profile.name}: latency method '{profile.latency.method}' is not implemented yet")
    compiled = compile_relax(model, example_inputs, profile)
    with measurement_lock():
        return measure_tvm(compiled, example_inputs, profile, repeats=settings.repeats, number=settings.number)


def measure_reference(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    profiles: list[HardwareProfile],
    settings: LatencySettings,
) -> dict[str, LatencyResult]:
    """Host-only reference timings (ONNX Runtime, torch eager) with the host profile's thread count."""
    from nas.hardware.measure import measure_onnxruntime, measure_torch

    host = next((p for p in profiles if p.latency.method == "local"), None)
    if host is None or not settings.reference_backends:
        return {}
    backends = {"onnxruntime": measure_onnxruntime, "torch": measure_torch}
    results = {}
    with measurement_lock():
        for name in settings.reference_backends:
            results[name] = backends[name](model, example_inputs, host, repeats=settings.repeats, number=settings.number)
    return results


def default_threads() -> int:
    """CPUs this process may run on (respects affinity masks and cgroups' cpusets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
