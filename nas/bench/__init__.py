"""Benchmark an existing model on hardware profiles: the library behind ``nas bench``.

A user who already has a model (a Hugging Face folder, e.g. a fine-tuned BERT, or an ``.onnx`` file)
gets the same figures a campaign records for its students, from the same machinery:

- latency per profile from :mod:`nas.hardware.backends` (``local``: a TVM build timed here; ``rpc``: timed
  on the device, estimated when it is unreachable; ``estimate``: the predictor, MACs ÷ MACs/cycle on MCUs),
  each a :class:`~nas.hardware.measure.LatencyResult` that says whether it was measured and tuned;
- feasibility per profile (the model cross-compiled for the device, flash/SRAM/RAM checked at batch 1);
- FLOPs, weights and peak activation memory from the fused TVM graph (:mod:`nas.hardware.graph`), stored
  size from :func:`nas.compress.size.stored_size_bytes`;
- on a ``local`` profile, torch eager and ONNX Runtime timed next to TVM with the same thread count.

:func:`run_bench` returns a :class:`BenchResult` (plain values, JSON-ready) and logs it to MLflow as a run
in the ``bench`` experiment; it prints nothing except progress through an :class:`~nas.output.Output`.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.bench.load import (  # noqa: F401 - load_model, single_output: part of this package's API
    ONNX_TOKEN_ID_RANGE,
    LoadedModel,
    default_seq_len,
    load_model,
    single_output,
)
from nas.errors import NasUserError

if TYPE_CHECKING:
    from nas.hardware.latency import LatencySettings
    from nas.hardware.measure import LatencyResult
    from nas.hardware.memory import Feasibility
    from nas.hardware.profiles import HardwareProfile
    from nas.output import Output

DEFAULT_PROFILES = ("host", "phone-flagship", "mcu-m7")
QUANTIZE_BITS = {"none": 32, "int8": 8}  # --quantize value → stored weight bits


@dataclass(frozen=True)
class ProfileBench:
    """One profile's figures: latency (with its provenance) and whether the model fits."""

    profile: str
    hw_class: str
    latency: LatencyResult
    feasibility: Feasibility

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "hw_class": self.hw_class, "latency": self.latency.to_dict(),
                "latency_label": self.latency.label, "feasibility": self.feasibility.to_dict()}


@dataclass
class BenchResult:
    """What :func:`run_bench` measured, as plain values.

    Attributes:
        model: The model path as given.
        kind: ``huggingface`` or ``onnx``.
        architecture: The loaded class (``BertForSequenceClassification``) or ``onnx``.
        seq_len: Tokens per sequence of the benchmark input.
        batch: Sequences per run.
        weight_bits: Stored weight bit-width (32, or 8 with ``--quantize int8``).
        num_params: Parameters (distinct tensors; tied weights counted once); for an ONNX file, the elements of
            its initializers (exporters fold a few small constants, so this can differ slightly from torch's count).
        stored_size_bytes: Bytes the weights take stored at ``weight_bits`` (fp32 biases and norms).
        flops: FLOPs of one run of the compiled graph (TVM's count over every fused kernel: matrix
            products at 2 per multiply-add, plus bias adds, norms, softmax and other elementwise ops).
        matmul_flops: The share of ``flops`` in matrix-product kernels (weights and attention), including
            the bias adds TVM fuses into them.
        peak_activation_bytes: Largest sum of simultaneously live activations at batch 1 (inputs included,
            weights excluded), what an ideal static memory planner needs.
        profiles: Per-profile latency and feasibility, in the order asked.
        reference: Host reference timings (``torch``, ``onnxruntime``, ``onnxruntime-int8``) when a
            ``local`` profile was benchmarked.
        notes: Anything the figures need to be read correctly.
        wall_s: Seconds the whole benchmark took.
        tracking_uri: Where the MLflow run was logged.
        run_id: The MLflow run.
    """

    model: str
    kind: str
    architecture: str
    seq_len: int
    batch: int
    weight_bits: int
    num_params: int
    stored_size_bytes: int
    flops: float
    matmul_flops: float
    peak_activation_bytes: int
    profiles: list[ProfileBench] = field(default_factory=list)
    reference: dict[str, LatencyResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    tracking_uri: str = ""
    run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every figure."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("profiles", "reference")}
        data["profiles"] = [p.to_dict() for p in self.profiles]
        data["reference"] = {name: {**r.to_dict(), "label": r.label} for name, r in self.reference.items()}
        return data

    def mlflow_fields(self) -> tuple[dict[str, float], dict[str, str]]:
        """The run's MLflow metrics and tags: latencies named as a campaign trial's
        (:func:`nas.search.record.latency_fields`), so one query compares bench runs and trials; plus the
        size figures and ``fits.<profile>`` (1 or 0)."""
        from nas.search.record import latency_fields

        flat, tags = latency_fields({p.profile: p.latency for p in self.profiles}, self.reference)
        sizes = {k: float(getattr(self, k)) for k in ("num_params", "stored_size_bytes", "flops", "matmul_flops",
                                                        "peak_activation_bytes", "wall_s")}
        fits = {f"fits.{p.profile}": float(p.feasibility.is_feasible) for p in self.profiles}
        return {**sizes, **flat, **fits}, tags


def run_bench(
    model_path: str | Path,
    profile_names: list[str] | tuple[str, ...] = DEFAULT_PROFILES,
    *,
    seq_len: int | None = None,
    batch: int = 1,
    quantize: str = "none",
    tune_trials: int = 0,
    repeats: int = 10,
    tracking_uri: str | None = None,
    out: Output | None = None,
) -> BenchResult:
    """Load a model, compile it with TVM for each profile, and measure or estimate it there.

    Args:
        model_path: A Hugging Face model folder (``config.json`` + weights; sequence classification or a
            plain encoder), an ``.onnx`` file, or ``CAMPAIGN_DIR:TRIAL`` (the trial's student, rebuilt).
        profile_names: Hardware profiles (names or ``.yaml`` paths); at least one.
        seq_len: Tokens per sequence; 1..the model's maximum positions. None: a campaign trial's
            ``max_seq_len`` (what the campaign timed), else 128.
        batch: Sequences per run; ≥ 1.
        quantize: ``none`` or ``int8`` (weights fake-quantized per channel to 8 bits, stored size and
            latency accounted at int8, as campaigns do; Hugging Face models only).
        tune_trials: MetaSchedule trials per new workload for ``local`` profiles (reusing the shared
            tuning database); 0 builds untuned (minutes per workload otherwise).
        repeats: Timed repeats per measurement; ≥ 1.
        tracking_uri: MLflow tracking URI; None: :func:`nas.tracking.default_bench_tracking_uri`.
        out: Where progress goes; None shows none.

    Returns:
        The figures, also logged to MLflow (``result.run_id``).

    Raises:
        NasUserError: For an unknown profile, a bad option value, a path that is not a model, or a model
            TVM cannot compile (the message names the operators it could not take).
    """
    from nas.hardware.profiles import load_profile

    start = time.perf_counter()
    seq_len = default_seq_len(model_path) if seq_len is None else seq_len
    _check_options(profile_names, seq_len, batch, quantize, tune_trials, repeats)
    profiles = [load_profile(name) for name in profile_names]  # an unknown name fails here, before loading
    settings = _settings(seq_len, repeats, tune_trials)
    on_host = any(p.backend.measures_host for p in profiles)
    with _progress(out) as progress:
        next_step = _stepper(progress, "loading the model", total=2 + 2 * len(profiles) + on_host)
        loaded = load_model(model_path, seq_len=seq_len, batch=batch, weight_bits=QUANTIZE_BITS[quantize],
                            on_import=lambda: next_step("importing into TVM and fusing the graph"))
        weight_bits = loaded.weight_bits or QUANTIZE_BITS[quantize]  # a campaign trial comes at its own bit-width
        profile_results = [_bench_profile(loaded, p, settings, weight_bits, next_step) for p in profiles]
        reference = {}
        if on_host:
            next_step("host: timing torch eager and ONNX Runtime")
            reference = _reference(loaded, profiles, settings, weight_bits)
        next_step("done")
    result = _result(str(model_path), loaded, seq_len, batch, weight_bits, profile_results, reference)
    result.notes, result.wall_s = _notes(loaded, profile_results, tune_trials), time.perf_counter() - start
    return _log(result, tracking_uri)


def _result(model: str, loaded: LoadedModel, seq_len: int, batch: int, weight_bits: int,
            profiles: list[ProfileBench], reference: dict[str, LatencyResult]) -> BenchResult:
    """The figures: size from loading, FLOPs from the fused graph, peak memory at batch 1, and each profile's."""
    graph = loaded.prepared.graph
    return BenchResult(
        model=model, kind=loaded.kind, architecture=loaded.architecture, seq_len=seq_len, batch=batch,
        weight_bits=weight_bits, num_params=loaded.num_params, stored_size_bytes=loaded.stored_size_bytes,
        flops=graph.flops, matmul_flops=sum(op.flops for op in graph.ops if op.category in ("matmul", "attention_matmul")),
        peak_activation_bytes=loaded.prepared_batch1.graph.peak_activation_bytes, profiles=profiles, reference=reference,
    )


def _stepper(progress: Any, description: str, total: int):
    """A ``next_step(description)`` that marks the previous step done and says what runs now (no-op without a bar)."""
    task = progress.add_task(description, total=total) if progress else None

    def next_step(description: str) -> None:
        if progress:
            progress.update(task, advance=1, description=description)

    return next_step


def _settings(seq_len: int, repeats: int, tune_trials: int) -> LatencySettings:
    """What a campaign's trials are timed with, from the bench options (torch and ONNX Runtime as references)."""
    from nas.hardware.latency import LatencySettings

    return LatencySettings(seq_len=seq_len, repeats=repeats, number=_runs_per_repeat(repeats),
                           reference_backends=("torch", "onnxruntime"), tune=tune_trials > 0,
                           trials_per_task=max(tune_trials, 1))


def _bench_profile(loaded: LoadedModel, profile: HardwareProfile, settings: LatencySettings, weight_bits: int,
                   next_step) -> ProfileBench:
    """Latency (the profile's backend) and feasibility (cross-compiled, memory checked at batch 1) on one profile."""
    from nas.hardware.backends import prepared_feasibility

    backend = profile.backend
    next_step(f"{profile.name}: {backend.activity}" + (" (tuning)" if settings.tune and backend.measures_host else ""))
    latency = backend.measure(loaded.prepared.at_bits(weight_bits), profile, settings)
    next_step(f"{profile.name}: compiling for the device and checking memory")
    feasibility = prepared_feasibility(loaded.prepared_batch1.at_bits(weight_bits), profile)
    return ProfileBench(profile.name, profile.hw_class, latency, feasibility)


def _check_options(profile_names: Any, seq_len: int, batch: int, quantize: str, tune_trials: int, repeats: int) -> None:
    if not profile_names:
        raise NasUserError("--profiles is empty; name at least one profile (see 'nas profiles').")
    twice = sorted({name for name in profile_names if list(profile_names).count(name) > 1})
    if twice:
        raise NasUserError(f"--profiles: profile '{twice[0]}' is listed twice; name each profile once.")
    if seq_len < 1 or batch < 1 or repeats < 1 or tune_trials < 0:
        raise NasUserError(f"need --seq-len ≥ 1, --batch ≥ 1, --repeats ≥ 1 and --tune-trials ≥ 0; got "
                           f"{seq_len=}, {batch=}, {repeats=}, {tune_trials=}.")
    if quantize not in QUANTIZE_BITS:
        raise NasUserError(f"--quantize {quantize!r} is not supported; choose one of {', '.join(QUANTIZE_BITS)}.")


def _runs_per_repeat(repeats: int) -> int:
    # Few repeats means a quick look: one run each. Otherwise average 5 runs per repeat, as campaigns do.
    return 1 if repeats < 5 else 5


def _progress(out: Output | None):
    if out is None or out.quiet:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

    return out.progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), transient=True)


# --- measuring -----------------------------------------------------------------------------------------


def _reference(loaded: LoadedModel, profiles: list[HardwareProfile], settings: LatencySettings,
               weight_bits: int) -> dict[str, LatencyResult]:
    """torch eager and ONNX Runtime on the host, with the host profile's threads (an ONNX file: ONNX Runtime as given)."""
    from nas.hardware.backends import host_profile, measure_reference, measurement_lock
    from nas.hardware.measure import onnxruntime_session, time_onnxruntime

    if loaded.torch_model is not None:
        return measure_reference(loaded.torch_model, loaded.inputs, profiles, settings, weight_bits=weight_bits)
    host = host_profile(profiles)
    session = onnxruntime_session(loaded.onnx_path, host.resolved_cores())
    with measurement_lock():
        return {"onnxruntime": time_onnxruntime(session, loaded.inputs, host, settings.repeats, settings.number)}


def _notes(loaded: LoadedModel, profile_results: list[ProfileBench], tune_trials: int) -> list[str]:
    notes = []
    if tune_trials == 0 and any(p.latency.backend.startswith("tvm") for p in profile_results):
        notes.append("TVM builds are untuned (--tune-trials 0): unscheduled loops, far slower than ONNX Runtime's "
                     "kernels; pass --tune-trials 64 for scheduled ones (minutes per new workload).")
    if any(not p.latency.is_measured for p in profile_results):
        notes.append("estimated latencies come from the predictor (MCUs: MACs at the peak MAC rate, a lower bound); "
                     "see docs/latency.md.")
    if loaded.kind == "onnx":
        notes.append(f"ONNX inputs: integer ids drawn from 0..{ONNX_TOKEN_ID_RANGE - 1}, masks all ones; "
                     "torch eager is not timed for an ONNX file.")
    return notes


def _log(result: BenchResult, tracking_uri: str | None) -> BenchResult:
    from nas.tracking import default_bench_tracking_uri, log_bench_run

    uri = tracking_uri or default_bench_tracking_uri()
    metrics, tags = result.mlflow_fields()
    run_id = log_bench_run(uri, result.to_dict(), metrics=metrics, tags=tags)
    return dataclasses.replace(result, tracking_uri=uri, run_id=run_id)
