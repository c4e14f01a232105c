"""Latency predictor for profiles that cannot be reached from here (experimental).

Per fused kernel (one launch of the compiled graph, :mod:`nas.hardware.graph`), the predicted time is

    t_op = flops_op / (P · e_category) + bytes_op / (B · e_mem) + t_launch

where ``P`` and ``B`` are the device's peak compute and memory bandwidth (its profile's ``peak``), and the
efficiencies ``e`` and the launch overhead are *fitted* on models measured on the host (non-negative
least squares on relative error), then transferred: a device with twice the host's peak FLOP/s runs
each category's FLOPs in half the time at the same efficiency; the launch overhead scales with the
clock. This is the nn-Meter idea (kernel-level prediction after fusion) with a roofline-shaped model
instead of per-kernel regressors.

Quantized weights (≤ 8 bits) are accounted for, not timed as fp32: weight bytes shrink to the bit-width,
and FLOPs of weight matrices run at the device's int8 peak (``peak.int8_gops``) with the same fitted
efficiency. Such estimates say so in their note.

Microcontrollers use a separate, simpler model: MACs ÷ (MACs per cycle × clock), with the int8 rate of
CMSIS-NN-style kernels for ≤ 8-bit weights; see :func:`estimate_mcu_ms`.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nas.hardware.graph import GraphSummary
    from nas.hardware.profiles import HardwareProfile

COMPUTE_CATEGORIES = ("matmul", "attention_matmul", "softmax", "layer_norm", "elementwise")
BUNDLED_CALIBRATION = Path(__file__).with_name("calibration.json")


@dataclass(frozen=True)
class Calibration:
    """Fitted constants of the predictor, with where they come from.

    Attributes:
        source: What was measured, e.g. ``tvm untuned, host znver5, 2 threads``.
        host_fp32_gflops: Peak fp32 GFLOP/s of the host the fit used (measured, see :func:`measure_host_peaks`).
        host_bandwidth_gbs: Host memory bandwidth the fit used, GB/s (measured).
        host_clock_mhz: Host clock, MHz (scales the launch overhead to other devices).
        s_per_flop: Fitted host seconds per FLOP, by category (``1 / (P · e)``).
        s_per_byte: Fitted host seconds per byte moved (``1 / (B · e_mem)``).
        launch_s: Fitted host seconds per kernel launch.
        n_models: Models the fit used.
        cpu_model: The CPU the fit was measured on, as :func:`nas.hardware.calibrate.host_cpu_model` names it
            (e.g. ``AMD EPYC (znver5)``); empty in files written before it was recorded. Predicting the host
            profile with another CPU's calibration warns once and points to ``nas calibrate --profile host``.
    """

    source: str
    host_fp32_gflops: float
    host_bandwidth_gbs: float
    host_clock_mhz: float
    s_per_flop: dict[str, float]
    s_per_byte: float
    launch_s: float
    n_models: int
    cpu_model: str = ""

    def efficiency(self) -> dict[str, float | None]:
        """Fitted share of the host's peak each category reaches (``None``: its FLOPs cost nothing extra)."""
        peak = self.host_fp32_gflops * 1e9
        eff: dict[str, float | None] = {k: (1 / (v * peak) if v > 0 else None) for k, v in self.s_per_flop.items()}
        eff["memory"] = 1 / (self.s_per_byte * self.host_bandwidth_gbs * 1e9) if self.s_per_byte > 0 else None
        return eff

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path | None = None) -> Calibration:
        """Load a calibration; default: this host's from ``nas calibrate`` (``$LIGHTNAS_CACHE/predictor/
        calibration-<cpu>.json``) if present, else ``$LIGHTNAS_CACHE/predictor/calibration.json``, else the bundled
        one (fitted on the reference machine by ``benchmarks/predictor_accuracy.py``)."""
        if path is None:
            from nas.hardware.calibrate import preferred_calibration_path

            path = preferred_calibration_path()
        return cls.from_dict(json.loads(Path(path).read_text()))


def _cache_path() -> Path:
    base = os.environ.get("LIGHTNAS_CACHE") or str(Path.home() / ".cache" / "lightnas")
    return Path(base) / "predictor" / "calibration.json"


def features(graph: GraphSummary, weight_bits: int = 32) -> dict[str, float]:
    """The predictor's inputs for one graph: FLOPs by category, bytes moved and kernel launches.

    Args:
        graph: The fused graph.
        weight_bits: Bit-width of weight matrices (32 = fp32); sets the weight bytes moved.
    """
    row = {f"flops_{c}": 0.0 for c in COMPUTE_CATEGORIES}
    row["flops_matmul_int"] = 0.0  # weight-matrix FLOPs run by int8 kernels (weight_bits ≤ 8)
    bytes_moved = 0.0
    for op in graph.ops:
        category = op.category if op.category in COMPUTE_CATEGORIES else "elementwise"
        if category == "matmul" and weight_bits <= 8:
            row["flops_matmul_int"] += op.flops
        else:
            row[f"flops_{category}"] += op.flops
        bytes_moved += op.act_bytes + op.weight_bytes(weight_bits)
    row["bytes"] = bytes_moved
    row["launches"] = float(len(graph.ops))
    return row


class LatencyPredictor:
    """Predict a model's latency on a profile from its fused graph and a host calibration (experimental).

    Args:
        calibration: Fitted constants; default :meth:`Calibration.load`.

    Example:
        .. code-block:: python

            from nas.hardware.graph import summarize_model
            from nas.hardware.predictor import LatencyPredictor
            from nas.hardware.profiles import load_profile

            graph = summarize_model(model, example_inputs)
            ms = LatencyPredictor().predict_ms(graph, load_profile("phone-flagship"), weight_bits=8)
    """

    def __init__(self, calibration: Calibration | None = None) -> None:
        self.calibration = calibration or Calibration.load()
        self._check_cpu = calibration is None  # a calibration passed in on purpose is not second-guessed

    def predict_ms(self, graph: GraphSummary, profile: HardwareProfile, weight_bits: int = 32) -> float:
        """Predicted latency in milliseconds of ``graph`` on ``profile``.

        For a ``local`` profile (the host the calibration was fitted on) it applies as is.

        Raises:
            ValueError: If the profile lacks the peaks the transfer needs.
        """
        if profile.is_mcu:
            return estimate_mcu_ms(graph, profile, weight_bits)
        return self.predict_features_ms(features(graph, weight_bits), profile)

    def predict_features_ms(self, row: dict[str, float], profile: HardwareProfile) -> float:
        """Predicted latency in milliseconds from a graph's :func:`features` (not for MCUs: they need MACs).

        Raises:
            ValueError: If the profile lacks the peaks the transfer needs.
        """
        cal = self.calibration
        peak = profile.peak
        if self._check_cpu:
            from nas.hardware.calibrate import warn_if_other_cpu

            warn_if_other_cpu(cal, profile)
        if profile.backend.measures_host:
            # The host the calibration was fitted on: no transfer. Its int8 runs at fp32 speed (TVM emits no
            # VNNI code here, shared/STACK.md); only the smaller weight bytes count.
            compute_scale = int_scale = mem_scale = clock_scale = 1.0
        elif peak.fp32_gflops is None or peak.bandwidth_gbs is None:
            raise ValueError(f"profile {profile.name}: peak.fp32_gflops and peak.bandwidth_gbs are needed to predict")
        else:
            compute_scale = cal.host_fp32_gflops / peak.fp32_gflops
            int_scale = cal.host_fp32_gflops / (peak.int8_gops or peak.fp32_gflops)
            mem_scale = cal.host_bandwidth_gbs / peak.bandwidth_gbs
            clock_scale = cal.host_clock_mhz / peak.clock_mhz if peak.clock_mhz else 1.0
        seconds = sum(cal.s_per_flop[c] * row[f"flops_{c}"] * compute_scale for c in COMPUTE_CATEGORIES)
        seconds += cal.s_per_flop["matmul"] * row["flops_matmul_int"] * int_scale
        seconds += cal.s_per_byte * row["bytes"] * mem_scale
        seconds += cal.launch_s * row["launches"] * clock_scale
        return seconds * 1e3


def estimate_mcu_ms(graph: GraphSummary, profile: HardwareProfile, weight_bits: int = 32) -> float:
    """Latency of a microcontroller from MACs and its MACs per cycle, in milliseconds.

    ``≤ 8``-bit weights use the int8 rate (CMSIS-NN's SMLAD kernels: 2 MACs/cycle on Cortex-M4/M7, Lai et
    al. 2018, arXiv:1801.06601); wider weights the FPU's fp32 rate. This is the peak MAC rate: real kernels
    spend extra cycles on loads and requantization, so treat the figure as a lower bound.
    """
    peak = profile.peak
    rate = peak.int8_macs_per_cycle if weight_bits <= 8 else peak.fp32_macs_per_cycle
    if rate is None or peak.clock_mhz is None:
        raise ValueError(f"profile {profile.name}: peak.clock_mhz and peak.int8/fp32_macs_per_cycle are needed")
    return graph.macs / (rate * peak.clock_mhz * 1e6) * 1e3


def fit_calibration(
    graphs: Sequence[GraphSummary],
    measured_ms: Sequence[float],
    *,
    source: str,
    host_fp32_gflops: float,
    host_bandwidth_gbs: float,
    host_clock_mhz: float | None = None,
    cpu_model: str = "",
) -> Calibration:
    """Fit the predictor's constants on host measurements (non-negative least squares, relative error).

    Args:
        graphs: Fused graphs of the measured models.
        measured_ms: Their measured median latencies, in milliseconds (same order).
        source: What was measured (backend, tuned or not, machine, threads), kept with the fit.
        host_fp32_gflops: Host peak, GFLOP/s (to express the fit as efficiencies and transfer it).
        host_bandwidth_gbs: Host bandwidth, GB/s.
        host_clock_mhz: Host clock; default read from ``/proc/cpuinfo``.
        cpu_model: The measured CPU (see :attr:`Calibration.cpu_model`).

    Raises:
        ValueError: With fewer models than fitted constants.
    """
    import numpy as np
    from scipy.optimize import nnls

    columns = [f"flops_{c}" for c in COMPUTE_CATEGORIES] + ["bytes", "launches"]
    if len(graphs) != len(measured_ms) or len(graphs) < len(columns):
        raise ValueError(f"need ≥ {len(columns)} measured models with one latency each, got {len(graphs)} and {len(measured_ms)}")
    # Measured host kernels are fp32 whatever the weights (fake quantization), so fit on fp32 features.
    rows = [features(g, 32) for g in graphs]
    a = np.array([[r[c] for c in columns] for r in rows], dtype=float)
    y = np.array(measured_ms, dtype=float) / 1e3
    scale = a.max(axis=0)
    scale[scale == 0] = 1.0
    weights = 1.0 / y  # relative error: each model counts the same whatever its size
    coef, _ = nnls((a / scale) * weights[:, None], y * weights)
    coef = coef / scale
    return Calibration(
        source=source,
        host_fp32_gflops=host_fp32_gflops,
        host_bandwidth_gbs=host_bandwidth_gbs,
        host_clock_mhz=host_clock_mhz or host_clock_mhz_from_os(),
        s_per_flop={c: float(coef[i]) for i, c in enumerate(COMPUTE_CATEGORIES)},
        s_per_byte=float(coef[len(COMPUTE_CATEGORIES)]),
        launch_s=float(coef[len(COMPUTE_CATEGORIES) + 1]),
        n_models=len(graphs),
        cpu_model=cpu_model,
    )


def host_clock_mhz_from_os() -> float:
    """The host's current clock from ``/proc/cpuinfo`` (Linux), or 3000 MHz when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1])
    except OSError:
        pass
    return 3000.0


def measure_host_peaks(threads: int, seconds: float = 2.0) -> tuple[float, float]:
    """Measured host peaks: fp32 GFLOP/s (numpy/OpenBLAS SGEMM 1024³) and copy bandwidth in GB/s.

    Each figure is the *best* of many short runs, not an average: on a shared machine other processes
    take whole time slices, and the fastest run is the one that shows what the cores can do. These are
    what the host really reaches (the predictor's transfer and the roofline floor use them), not datasheet
    numbers. ``threads`` caps the BLAS pool through threadpoolctl.
    """
    import time

    import contextlib

    import numpy as np

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without it BLAS uses its own default thread count
        threadpool_limits = None  # noqa: N806
    a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    out = np.empty_like(a)
    best_gemm_s = float("inf")
    with threadpool_limits(threads) if threadpool_limits else contextlib.nullcontext():
        np.matmul(a, a, out=out)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            np.matmul(a, a, out=out)
            best_gemm_s = min(best_gemm_s, time.perf_counter() - start)
    src = np.ones(16 * 1024 * 1024, dtype=np.float32)  # 64 MiB: far beyond any cache
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best_copy_s = float("inf")
    deadline = time.perf_counter() + seconds / 2
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        np.copyto(dst, src)
        best_copy_s = min(best_copy_s, time.perf_counter() - start)
    return 2 * 1024**3 / best_gemm_s / 1e9, 2 * src.nbytes / best_copy_s / 1e9  # copy: read + write


def host_description() -> str:
    return f"{platform.machine()} {platform.processor() or ''}".strip()
