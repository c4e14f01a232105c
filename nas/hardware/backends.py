"""Latency and feasibility of a torch model on a profile: the registered backends and the entry points ``nas.search`` calls.

:func:`measure_latency` gets a :class:`~nas.hardware.measure.LatencyResult` from the backend the profile's
``latency.method`` names in :data:`LATENCY_BACKENDS` (each one composed of a plain backend and the wrappers
of :mod:`nas.hardware.latency`):

- ``local``: build with TVM for this machine (MetaSchedule-tuned from the shared database when the
  settings ask for it) and time it with the Relax VM's time evaluator, under the machine-wide lock;
- ``rpc``: build for the device, link with its cross compiler, upload to the TVM RPC tracker's device
  and time it there; when the device cannot be reached, estimate instead and warn once;
- ``estimate``: predict from the fused graph (:mod:`nas.hardware.predictor`); MCUs from MACs and MACs
  per cycle.

Candidates with ≤ 8-bit weights are never reported as their fp32 timing: the timed backends are wrapped in
:class:`~nas.hardware.latency.LowBitAccounting`, which scales the fp32 measurement by the predictor's
int8/fp32 ratio and says ``estimated`` with both figures in its note.

:func:`check_profile_feasibility` builds the candidate for the device (cross-compiling; MCU object
archives for Thumb and C) and checks memory limits; a candidate that does not compile is infeasible.

The model's TVM import is cached per model object (weakly), so timing and feasibility for several
profiles export and import it once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import weakref
from typing import TYPE_CHECKING, Any

from nas.hardware.latency import (  # noqa: F401 - PreparedModel, measurement_lock: re-exported for callers
    EstimateFallback,
    HostLock,
    LatencyBackend,
    LatencySettings,
    LowBitAccounting,
    PreparedModel,
    measurement_lock,
)
from nas.registry import Registry

if TYPE_CHECKING:
    import torch

    from nas.hardware.measure import LatencyResult
    from nas.hardware.memory import Feasibility
    from nas.hardware.profiles import HardwareProfile
    from nas.hardware.tuning import MetaScheduleTuner, TuningReport

# A profile's ``latency.method`` → its backend (composed with its wrappers); profiles validate against it.
LATENCY_BACKENDS: Registry[LatencyBackend] = Registry("latency backend")


def backend_for(profile: HardwareProfile) -> LatencyBackend:
    """The registered backend of ``profile.latency.method``."""
    return LATENCY_BACKENDS.get(profile.latency.method, where=f"profile {profile.name}: latency.method")


# model → its PreparedModel; weak keys, so an entry lives exactly as long as its model object.
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepare(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], weight_bits: int = 32) -> PreparedModel:
    """Import ``model`` into TVM Relax, reusing the import for the same model object and input shapes.

    The cache holds the model weakly and assumes its weights are not changed between calls (trials
    measure after compression, once).
    """
    from nas.hardware.compile import import_model

    shapes = tuple(tuple(x.shape) for x in example_inputs)
    cached = _PREPARED.get(model)
    if cached is not None and cached.shapes == shapes:  # the same import, timed on this call's inputs
        prepared = dataclasses.replace(cached, inputs=tuple(example_inputs), weight_bits=weight_bits)
    else:
        mod, _ = import_model(model, example_inputs)
        dtypes = tuple(str(x.dtype).removeprefix("torch.") for x in example_inputs)
        prepared = PreparedModel(mod, dtypes, shapes, tuple(example_inputs), weight_bits)
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
        settings: Repeats, and whether to tune (``settings.tune``; see :meth:`LocalTVM.tuner_for`).
        weight_bits: The candidate's stored weight bit-width; ≤ 8 is accounted as int8 (see module doc).

    Raises:
        CompileError: If TVM cannot take the model at all.
    """
    return backend_for(profile).measure(prepare(model, example_inputs, weight_bits), profile, settings)


class LocalTVM(LatencyBackend):
    """A TVM build for this machine, timed with the Relax VM's time evaluator.

    It owns the process's MetaSchedule tuners, one per tuning settings, for its (the process's) lifetime: a
    tuner keeps a running :attr:`~nas.hardware.tuning.MetaScheduleTuner.total` of tuning time and hits for the
    campaign; the database itself is shared on disk across processes and campaigns.
    """

    measures_host = True
    activity = "building with TVM and timing"

    def __init__(self) -> None:
        self.tuners: dict[tuple, MetaScheduleTuner] = {}

    def tuner_for(self, settings: LatencySettings) -> MetaScheduleTuner | None:
        """The tuner for these settings (``None`` when ``settings.tune`` is false or absent)."""
        if not getattr(settings, "tune", False):
            return None
        from nas.hardware.tuning import MetaScheduleTuner, TuningSettings

        tuning = TuningSettings(
            trials_per_task=getattr(settings, "trials_per_task", 64),
            max_new_tasks=getattr(settings, "max_new_tasks", None),
            cache_dir=getattr(settings, "tuning_cache_dir", None),
        )
        key = dataclasses.astuple(tuning)
        if key not in self.tuners:
            self.tuners[key] = MetaScheduleTuner(tuning)
        return self.tuners[key]

    def build(self, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> Any:
        from nas.hardware.compile import build_relax

        tuner = self.tuner_for(settings)
        return build_relax(prepared.mod, profile, prepared.input_dtypes, tuning=tuner), tuner

    def time(self, built: Any, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> LatencyResult:
        from nas.hardware.measure import measure_tvm

        compiled, tuner = built
        result = measure_tvm(compiled, prepared.inputs, profile, repeats=settings.repeats, number=settings.number)
        return result if tuner is None or tuner.last_report is None else _with_tuning(result, tuner.last_report)


class RemoteTVM(LatencyBackend):
    """A TVM build for the device, timed on it through the profile's RPC tracker (:mod:`nas.hardware.rpc`)."""

    activity = "building and timing over RPC"

    def time(self, built: Any, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> LatencyResult:
        from nas.hardware.rpc import measure_rpc

        return measure_rpc(prepared.mod, prepared.inputs, prepared.input_dtypes, profile, repeats=settings.repeats,
                           number=settings.number)


class Estimate(LatencyBackend):
    """The predictor on the fused graph; MCUs from MACs at the peak MAC rate. Accounts ≤ 8-bit weights itself."""

    def time(self, built: Any, prepared: PreparedModel, profile: HardwareProfile, settings: LatencySettings) -> LatencyResult:
        from nas.hardware.measure import LatencyResult
        from nas.hardware.predictor import LatencyPredictor
        from nas.hardware.profiles import resolve_target

        graph, weight_bits = prepared.graph, prepared.weight_bits
        precision = "int8 kernels assumed (≤ 8-bit weights)" if weight_bits <= 8 else "fp32"
        if profile.is_mcu:
            from nas.hardware.predictor import estimate_mcu_ms

            value_ms = estimate_mcu_ms(graph, profile, weight_bits)
            rate = profile.peak.int8_macs_per_cycle if weight_bits <= 8 else profile.peak.fp32_macs_per_cycle
            note = (f"estimated: {graph.macs / 1e6:.1f} M MACs at {rate:g} MACs/cycle x {profile.peak.clock_mhz:g} MHz "
                    f"(peak rate, a lower bound); {precision}")
            is_tuned, backend = True, "mcu-estimate"
        else:
            predictor = LatencyPredictor()
            value_ms = predictor.predict_ms(graph, profile, weight_bits)
            note = f"estimated by the predictor (calibrated on {predictor.calibration.source}); {precision}"
            is_tuned, backend = "untuned" not in predictor.calibration.source, "predictor"
        return LatencyResult(
            profile=profile.name, backend=backend, median_ms=value_ms, mean_ms=value_ms, std_ms=0.0, min_ms=value_ms,
            max_ms=value_ms, repeats=0, number=0, threads=profile.resolved_cores(), is_measured=False, is_tuned=is_tuned,
            target=json.dumps(resolve_target(profile), sort_keys=True), note=note,
        )


LOCAL_TVM = LocalTVM()  # this process's local backend: its tuners keep the campaign's running tuning totals
LATENCY_BACKENDS.register("local")(LowBitAccounting(HostLock(LOCAL_TVM)))
LATENCY_BACKENDS.register("rpc")(EstimateFallback(LowBitAccounting(RemoteTVM()), fallback=Estimate()))
LATENCY_BACKENDS.register("estimate")(Estimate())


def _with_tuning(result: LatencyResult, report: TuningReport) -> LatencyResult:
    note = f"tuning: {report.hits}/{report.n_tasks} workloads from the database, {report.tuned} tuned in {report.tune_s:.0f} s"
    if report.fallback:
        note += f", {len(report.fallback)} untuned (fallback: {', '.join(report.fallback[:3])})"
    if report.untunable:
        note += f", {len(report.untunable)} with nothing to tune ({', '.join(report.untunable[:3])})"
    return dataclasses.replace(result, tune_s=report.tune_s, tune_tasks=report.n_tasks, tune_hits=report.hits, note=note)


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
    stored = None if stored_weight_bytes is None else stored_weight_bytes + token_map_bytes(model)
    return prepared_feasibility(prepare(model, example_inputs, weight_bits), profile,
                                compile_for_device=compile_for_device, stored_bytes=stored)


def prepared_feasibility(prepared: PreparedModel, profile: HardwareProfile, *, compile_for_device: bool = True,
                         stored_bytes: int | None = None) -> Feasibility:
    """:func:`check_profile_feasibility` of an imported model (batch 1); ``stored_bytes`` are its exact flash bytes."""
    from nas.hardware.cross import cross_compile
    from nas.hardware.memory import check_feasibility

    build = cross_compile(prepared.mod, profile) if compile_for_device and not backend_for(profile).measures_host else None
    return check_feasibility(profile, prepared.graph, prepared.weight_bits, build, stored_bytes=stored_bytes)


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


def host_profile(profiles: list[HardwareProfile]) -> HardwareProfile | None:
    """The first profile timed on this machine, or None."""
    return next((p for p in profiles if backend_for(p).measures_host), None)


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

    host = host_profile(profiles)
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


def default_threads() -> int:
    """CPUs this process may run on (respects affinity masks and cgroups' cpusets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def tuning_summary() -> dict[str, Any]:
    """Tuning time and hit rate this process has accumulated (per tuner settings), for campaign reports."""
    return {str(k): t.total.to_dict() for k, t in LOCAL_TVM.tuners.items()}
