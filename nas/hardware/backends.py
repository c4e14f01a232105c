"""Latency and feasibility of a torch model on a profile: the entry points ``nas.search`` calls.

:func:`measure_latency` gets a :class:`~nas.hardware.measure.LatencyResult` the way the profile says:

- ``local``: build with TVM for this machine (MetaSchedule-tuned from the shared database when the
  settings ask for it) and time it with the Relax VM's time evaluator;
- ``rpc``: build for the device, link with its cross compiler, upload to the TVM RPC tracker's device
  and time it there; when the device cannot be reached, estimate instead and warn once;
- ``estimate``: predict from the fused graph (:mod:`nas.hardware.predictor`); MCUs from MACs and MACs
  per cycle.

Candidates with ≤ 8-bit weights are never reported as their fp32 timing: TVM 0.27 emits no fast int8
code here (shared/STACK.md), so the fp32 measurement is scaled by the predictor's int8/fp32 ratio
(fewer weight bytes, int8 MAC rate) and the result says ``estimated`` with both figures in its note.

:func:`check_profile_feasibility` builds the candidate for the device (cross-compiling; MCU object
archives for Thumb and C) and checks memory limits; a candidate that does not compile is infeasible.

The model's TVM import is cached per model object (weakly), so timing and feasibility for several
profiles export and import it once. Timings on one machine are serialised by a machine-wide file lock,
so parallel trials (Ray workers) never time while another trial is timing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    import tvm

    from nas.hardware.graph import GraphSummary
    from nas.hardware.measure import LatencyResult
    from nas.hardware.memory import Feasibility
    from nas.hardware.profiles import HardwareProfile
    from nas.hardware.tuning import MetaScheduleTuner, TuningReport
    from nas.search.objective import LatencySettings

LOCK_PATH = Path(tempfile.gettempdir()) / "lightnas-measure.lock"

# name → backend; a backend takes the prepared model and returns a LatencyResult.
LATENCY_BACKENDS: dict[str, Callable[..., LatencyResult]] = {}


def register_latency_backend(method: str) -> Callable:
    """Register a backend for a profile's ``latency.method``."""

    def decorate(func: Callable[..., LatencyResult]) -> Callable[..., LatencyResult]:
        if method in LATENCY_BACKENDS:
            warnings.warn(f"latency backend {method!r} registered twice; the later one wins", RuntimeWarning, stacklevel=2)
        LATENCY_BACKENDS[method] = func
        return func

    return decorate


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


@dataclass
class PreparedModel:
    """A model imported into TVM once, with its fused-graph summary (built on first use)."""

    mod: tvm.IRModule
    input_dtypes: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    _graph: GraphSummary | None = None

    @property
    def graph(self) -> GraphSummary:
        if self._graph is None:
            from nas.hardware.graph import summarize_imported

            self._graph = summarize_imported(self.mod)
        return self._graph


_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepare(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> PreparedModel:
    """Import ``model`` into TVM Relax, reusing the import for the same model object and input shapes.

    The cache holds the model weakly and assumes its weights are not changed between calls (trials
    measure after compression, once).
    """
    from nas.hardware.compile import import_model

    shapes = tuple(tuple(x.shape) for x in example_inputs)
    cached = _PREPARED.get(model)
    if cached is not None and cached.shapes == shapes:
        return cached
    mod, _ = import_model(model, example_inputs)
    prepared = PreparedModel(mod, tuple(str(x.dtype).removeprefix("torch.") for x in example_inputs), shapes)
    _PREPARED[model] = prepared
    return prepared


def measure_latency(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    profile: HardwareProfile,
    settings: LatencySettings,
    *,
    weight_bits: int = 32,
) -> LatencyResult:
    """Latency of ``model`` (batch and length of ``example_inputs``) on ``profile``, labelled with its provenance.

    Args:
        model: The (compressed, fake-quantized) model; one tensor output.
        example_inputs: Inputs fixing shapes.
        profile: Where to measure or estimate.
        settings: Repeats, and whether to tune (``settings.tune``; see :func:`tuner_for`).
        weight_bits: The candidate's stored weight bit-width; ≤ 8 is accounted as int8 (see module doc).

    Raises:
        CompileError: If TVM cannot take the model at all.
    """
    backend = LATENCY_BACKENDS[profile.latency.method]
    return backend(prepare(model, example_inputs), example_inputs, profile, settings, weight_bits)


@register_latency_backend("local")
def _local(prepared: PreparedModel, inputs: tuple, profile: HardwareProfile, settings: LatencySettings, weight_bits: int) -> LatencyResult:
    from nas.hardware.compile import build_relax
    from nas.hardware.measure import measure_tvm

    tuner = tuner_for(settings)
    compiled = build_relax(prepared.mod, profile, prepared.input_dtypes, tuning=tuner)
    with measurement_lock():
        result = measure_tvm(compiled, inputs, profile, repeats=settings.repeats, number=settings.number)
    if tuner is not None and tuner.last_report is not None:
        result = _with_tuning(result, tuner.last_report)
    return _account_low_bits(result, prepared.graph, profile, weight_bits)


@register_latency_backend("rpc")
def _rpc(prepared: PreparedModel, inputs: tuple, profile: HardwareProfile, settings: LatencySettings, weight_bits: int) -> LatencyResult:
    from nas.hardware.rpc import DeviceUnreachable, measure_rpc

    try:
        result = measure_rpc(prepared.mod, inputs, prepared.input_dtypes, profile, repeats=settings.repeats, number=settings.number)
    except DeviceUnreachable as exc:
        _warn_once(profile.name, f"{exc}; latency for '{profile.name}' is estimated by the predictor instead "
                   f"(labelled 'estimated'). Start the tracker and device server to measure it.")
        estimate = _estimate(prepared, inputs, profile, settings, weight_bits)
        return dataclasses.replace(estimate, note=f"RPC device unreachable; {estimate.note}")
    return _account_low_bits(result, prepared.graph, profile, weight_bits)


@register_latency_backend("estimate")
def _estimate(prepared: PreparedModel, inputs: tuple, profile: HardwareProfile, settings: LatencySettings, weight_bits: int) -> LatencyResult:
    from nas.hardware.measure import LatencyResult
    from nas.hardware.predictor import LatencyPredictor
    from nas.hardware.profiles import resolve_target

    graph = prepared.graph
    precision = "int8 kernels assumed (≤ 8-bit weights)" if weight_bits <= 8 else "fp32"
    if profile.is_mcu:
        from nas.hardware.predictor import estimate_mcu_ms

        value_ms = estimate_mcu_ms(graph, profile, weight_bits)
        rate = profile.peak.int8_macs_per_cycle if weight_bits <= 8 else profile.peak.fp32_macs_per_cycle
        note = (f"estimated: {graph.macs / 1e6:.1f} M MACs at {rate:g} MACs/cycle x {profile.peak.clock_mhz:g} MHz "
                f"(peak rate, a lower bound); {precision}")
        is_tuned = True
        backend = "mcu-estimate"
    else:
        predictor = LatencyPredictor()
        value_ms = predictor.predict_ms(graph, profile, weight_bits)
        note = f"estimated by the predictor (calibrated on {predictor.calibration.source}); {precision}"
        is_tuned = "untuned" not in predictor.calibration.source
        backend = "predictor"
    return LatencyResult(
        profile=profile.name, backend=backend, median_ms=value_ms, mean_ms=value_ms, std_ms=0.0, min_ms=value_ms,
        max_ms=value_ms, repeats=0, number=0, threads=profile.resolved_cores(), is_measured=False, is_tuned=is_tuned,
        target=json.dumps(resolve_target(profile), sort_keys=True), note=note,
    )


def _account_low_bits(result: LatencyResult, graph: GraphSummary, profile: HardwareProfile, weight_bits: int) -> LatencyResult:
    """Scale an fp32 timing of a ≤ 8-bit candidate by the predictor's int8/fp32 ratio, labelled estimated."""
    if weight_bits > 8:
        return result
    from nas.hardware.predictor import LatencyPredictor

    predictor = LatencyPredictor()
    ratio = predictor.predict_ms(graph, profile, weight_bits) / predictor.predict_ms(graph, profile, 32)
    scaled = {k: getattr(result, k) * ratio for k in ("median_ms", "mean_ms", "std_ms", "min_ms", "max_ms")}
    note = (f"{weight_bits}-bit weights: fp32 kernels measured {result.median_ms:.3g} ms, scaled by the predictor's "
            f"int{weight_bits if weight_bits <= 8 else ''}/fp32 ratio {ratio:.3f} (TVM 0.27 emits no fast int8 code here)")
    return dataclasses.replace(result, **scaled, is_measured=False, note=(result.note + "; " if result.note else "") + note)


def _with_tuning(result: LatencyResult, report: TuningReport) -> LatencyResult:
    note = f"tuning: {report.hits}/{report.n_tasks} workloads from the database, {report.tuned} tuned in {report.tune_s:.0f} s"
    if report.fallback:
        note += f", {len(report.fallback)} untuned (fallback: {', '.join(report.fallback[:3])})"
    if report.untunable:
        note += f", {len(report.untunable)} with nothing to tune ({', '.join(report.untunable[:3])})"
    return dataclasses.replace(result, tune_s=report.tune_s, tune_tasks=report.n_tasks, tune_hits=report.hits, note=note)


_TUNERS: dict[tuple, MetaScheduleTuner] = {}


def tuner_for(settings: LatencySettings) -> MetaScheduleTuner | None:
    """The process-wide tuner for these settings (``None`` when ``settings.tune`` is false or absent).

    One tuner per settings keeps a running :attr:`~nas.hardware.tuning.MetaScheduleTuner.total` of tuning
    time and hits for the campaign; the database itself is shared on disk across processes and campaigns.
    """
    if not getattr(settings, "tune", False):
        return None
    from nas.hardware.tuning import MetaScheduleTuner, TuningSettings

    tuning = TuningSettings(
        trials_per_task=getattr(settings, "trials_per_task", 64),
        max_new_tasks=getattr(settings, "max_new_tasks", None),
        cache_dir=getattr(settings, "tuning_cache_dir", None),
    )
    key = dataclasses.astuple(tuning)
    if key not in _TUNERS:
        _TUNERS[key] = MetaScheduleTuner(tuning)
    return _TUNERS[key]


def check_profile_feasibility(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    profile: HardwareProfile,
    *,
    weight_bits: int = 32,
    compile_for_device: bool = True,
    stored_weight_bytes: int | None = None,
) -> Feasibility:
    """Whether ``model`` can be deployed on ``profile``: it compiles for the device and fits its memory.

    Args:
        model: The compressed model.
        example_inputs: Inputs at batch 1 (activation memory is computed for these shapes).
        profile: The device.
        weight_bits: Stored weight bit-width (flash use when ``stored_weight_bytes`` is not given).
        compile_for_device: Cross-compile for non-local profiles (MCUs: Thumb objects and C); the
            code size then comes from the real build. Local profiles are compiled by the timing itself.
        stored_weight_bytes: The compression outcome's exact stored size (``CompressionOutcome.size``);
            flash then counts it plus the vocabulary id map, instead of estimating from ``weight_bits``.
    """
    from nas.hardware.cross import cross_compile
    from nas.hardware.memory import check_feasibility

    prepared = prepare(model, example_inputs)
    build = cross_compile(prepared.mod, profile) if compile_for_device and profile.latency.method != "local" else None
    stored = None if stored_weight_bytes is None else stored_weight_bytes + token_map_bytes(model)
    return check_feasibility(profile, prepared.graph, weight_bits, build, stored_bytes=stored)


def token_map_bytes(model: torch.nn.Module) -> int:
    """Flash taken by vocabulary-trimming id maps, stored at the narrowest unsigned width that holds them.

    The size accounting leaves buffers out; on a device the map (tokenizer id → table row, one entry per
    tokenizer id) must be stored too, unless the tokenizer itself is trimmed before deployment.
    """
    total = 0
    for name, buf in model.named_buffers():
        if name.endswith("token_map") and buf is not None and buf.numel():
            total += buf.numel() * (1 if int(buf.max()) < 2**8 else 2 if int(buf.max()) < 2**16 else 4)
    return total


def measure_reference(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    profiles: list[HardwareProfile],
    settings: LatencySettings,
    *,
    weight_bits: int = 32,
) -> dict[str, LatencyResult]:
    """Host-only reference timings (ONNX Runtime, torch eager) with the host profile's thread count.

    With ≤ 8-bit weights, ``onnxruntime`` is also timed with ONNX Runtime's dynamic int8 quantization
    (key ``onnxruntime-int8``), the fair int8 reference.
    """
    from nas.hardware.measure import measure_onnxruntime, measure_torch

    host = next((p for p in profiles if p.latency.method == "local"), None)
    if host is None or not settings.reference_backends:
        return {}
    backends = {"onnxruntime": measure_onnxruntime, "torch": measure_torch}
    results = {}
    with measurement_lock():
        for name in settings.reference_backends:
            results[name] = backends[name](model, example_inputs, host, repeats=settings.repeats, number=settings.number)
            if name == "onnxruntime" and weight_bits <= 8:
                results["onnxruntime-int8"] = measure_onnxruntime(
                    model, example_inputs, host, repeats=settings.repeats, number=settings.number, int8=True
                )
    return results


_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def default_threads() -> int:
    """CPUs this process may run on (respects affinity masks and cgroups' cpusets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def tuning_summary() -> dict[str, Any]:
    """Tuning time and hit rate this process has accumulated (per tuner settings), for campaign reports."""
    return {str(k): t.total.to_dict() for k, t in _TUNERS.items()}
