"""Time a model on a profile with TVM, ONNX Runtime or torch, and report it as a :class:`LatencyResult`.

Every backend runs with the profile's core count as its thread count, warms up, then times ``repeats``
repeats of ``number`` back-to-back runs each; a repeat's time is the mean of its runs. Latency on a
shared 2-vCPU machine varies 20–40 % between runs (shared/STACK.md): compare medians, ideally measured
in one process.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from nas.hardware.compile import CompiledModel
    from nas.hardware.profiles import HardwareProfile


# Backends whose kernels come tuned or not from TVM (``compile_relax``, RPC builds); every other backend runs a
# library's own hand-written kernels (ONNX Runtime's MLAS, torch's ATen), where "tuned" has no meaning.
TVM_BACKENDS = ("tvm", "tvm-rpc")


def provenance(is_measured: bool, is_tuned: bool, backend: str = "tvm") -> str:
    """How a latency was obtained, in the words every table, report and CLI line uses.

    An estimate is not itself tuned or untuned; what matters is what it stands for: kernels as tuned
    ones would run (the predictor, calibrated on tuned builds) or an untuned build scaled (e.g. to int8).
    A timing of ONNX Runtime or torch is ``measured (onnxruntime)``: nothing was tuned for it, and calling
    it "tuned" would put it next to MetaSchedule-tuned TVM builds as if it were one.

    Example:
        >>> provenance(True, False), provenance(True, True, "onnxruntime")
        ('measured, untuned', 'measured (onnxruntime)')
    """
    if is_measured:
        if backend not in TVM_BACKENDS:
            return f"measured ({backend})"
        return "measured, tuned" if is_tuned else "measured, untuned"
    return "estimated for tuned kernels" if is_tuned else "estimated from an untuned build"


@dataclass(frozen=True)
class LatencyResult:
    """One latency figure with everything needed to judge it.

    Attributes:
        profile: Name of the hardware profile it was measured (or estimated) for.
        backend: ``tvm``, ``onnxruntime`` or ``torch``.
        median_ms: Median over repeats of the per-run time, in milliseconds.
        mean_ms: Mean over repeats, in milliseconds.
        std_ms: Population standard deviation over repeats, in milliseconds.
        min_ms: Fastest repeat, in milliseconds.
        max_ms: Slowest repeat, in milliseconds.
        repeats: Timed repeats the statistics are over.
        number: Runs averaged inside each repeat.
        threads: Threads the backend actually used.
        is_measured: True if timed on the device; False if estimated.
        is_tuned: True if the kernels were tuned for the target (only TVM builds can be untuned); ONNX Runtime
            and torch timings carry True ("nothing left untuned") and are labelled by backend instead
            (:func:`provenance`).
        target: The resolved TVM target as JSON (``""`` for other backends).
        note: Free text, e.g. why a number is estimated.

    Example:
        .. code-block:: python

            from nas.hardware.measure import LatencyResult

            r = LatencyResult(profile="host", backend="tvm", median_ms=1.13, mean_ms=1.15, std_ms=0.04,
                              min_ms=1.1, max_ms=1.3, repeats=30, number=5, threads=2,
                              is_measured=True, is_tuned=True, target='{"kind": "llvm"}')
            assert LatencyResult.from_dict(r.to_dict()) == r
            assert r.label == "1.13 ms measured, tuned (tvm, 2 threads, median of 30)"
    """

    profile: str
    backend: str
    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    number: int
    threads: int
    is_measured: bool
    is_tuned: bool
    target: str
    note: str = ""
    tune_s: float = 0.0  # MetaSchedule seconds spent for this build (0: none, or all records reused)
    tune_tasks: int = 0  # distinct workloads of the model (0: no tuning database used)
    tune_hits: int = 0  # workloads whose schedule came from the shared database

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; :meth:`from_dict` restores an equal value."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyResult:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ``TypeError``."""
        return cls(**data)

    @property
    def label(self) -> str:
        """Human-readable summary, e.g. ``1.13 ms measured, tuned (tvm, 2 threads, median of 30)``."""
        how = provenance(self.is_measured, self.is_tuned, self.backend)
        if self.repeats == 0:  # a pure prediction: nothing was timed
            return f"{self.median_ms:.3g} ms {how} ({self.backend}, {self.threads} threads)"
        return f"{self.median_ms:.3g} ms {how} ({self.backend}, {self.threads} threads, median of {self.repeats})"


def summarize(
    repeat_ms: Sequence[float], *, profile: str, backend: str, number: int, threads: int,
    is_tuned: bool, target: str = "", note: str = "",
) -> LatencyResult:
    """A measured :class:`LatencyResult` from per-repeat times in milliseconds (each a mean of ``number`` runs)."""
    if not repeat_ms:
        raise ValueError("need at least one repeat")
    return LatencyResult(
        profile=profile,
        backend=backend,
        median_ms=float(statistics.median(repeat_ms)),
        mean_ms=float(statistics.fmean(repeat_ms)),
        std_ms=float(statistics.pstdev(repeat_ms)),
        min_ms=float(min(repeat_ms)),
        max_ms=float(max(repeat_ms)),
        repeats=len(repeat_ms),
        number=number,
        threads=threads,
        is_measured=True,
        is_tuned=is_tuned,
        target=target,
        note=note,
    )


def measure_tvm(
    compiled: CompiledModel,
    inputs: Sequence[Any],
    profile: HardwareProfile,
    repeats: int = 10,
    number: int = 5,
    warmup: int = 2,
) -> LatencyResult:
    """Time a TVM-compiled model with the Relax VM's time evaluator.

    Args:
        compiled: Output of :func:`nas.hardware.compile.compile_relax` for ``profile``.
        inputs: Inputs (numpy arrays or torch tensors) shaped like the compile-time examples.
        profile: The profile; its core count sets TVM's threads.
        repeats: Timed repeats; ≥ 1.
        number: Runs averaged per repeat; ≥ 1.
        warmup: Untimed runs first (page in weights, allocate the VM's memory pool); ≥ 0.

    Returns:
        A measured result; ``is_tuned`` and ``target`` come from ``compiled``.
    """
    from nas.hardware.compile import set_tvm_threads

    check_counts(repeats, number, warmup)
    threads = set_tvm_threads(profile.resolved_cores())
    args = compiled.to_tvm_inputs(*inputs)
    for _ in range(warmup):
        compiled.vm["main"](*args)
    evaluator = compiled.vm.time_evaluator("main", compiled.device, number=number, repeat=repeats)
    result = evaluator(*args)  # BenchmarkResult; .results holds each repeat's mean per run, in seconds
    return summarize(
        [t * 1e3 for t in result.results], profile=profile.name, backend="tvm", number=number, threads=threads,
        is_tuned=compiled.is_tuned, target=json.dumps(compiled.target, sort_keys=True),
    )


def measure_onnxruntime(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    profile: HardwareProfile,
    repeats: int = 10,
    number: int = 5,
    warmup: int = 2,
    int8: bool = False,
) -> LatencyResult:
    """Export ``model`` to ONNX (torch.export-based exporter) and time it with ONNX Runtime's CPU provider.

    Args:
        model: Module with one tensor output; put in eval mode for export, restored afterwards.
        example_inputs: Inputs fixing shapes (the ONNX graph is static-shaped).
        profile: The profile; its core count sets ``intra_op_num_threads``.
        repeats: Timed repeats; ≥ 1.
        number: Runs averaged per repeat; ≥ 1.
        warmup: Untimed runs first; ≥ 0.
        int8: Quantize the exported graph with ONNX Runtime's dynamic int8 quantization first (int8
            weights, activations quantized per batch); the backend is then ``onnxruntime-int8``.

    Returns:
        A measured result with ``is_tuned=True`` (nothing to tune: ORT's kernels are hand-written for the CPU);
        its label says ``measured (onnxruntime)``, not "tuned".
    """
    check_counts(repeats, number, warmup)
    threads = profile.resolved_cores()
    with tempfile.TemporaryDirectory(prefix="lightnas-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        write_onnx(model, example_inputs, path)
        if int8:
            from nas.compress.quantize import onnxruntime_dynamic_int8

            path = onnxruntime_dynamic_int8(path, Path(tmp) / "model-int8.onnx")
        session = onnxruntime_session(path, threads)
    backend = "onnxruntime-int8" if int8 else "onnxruntime"
    return time_onnxruntime(session, example_inputs, profile, repeats, number, warmup, backend=backend)


def onnxruntime_session(model: str | Path | bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads, set up as every lightnas timing sets it up.

    ``model`` is an ``.onnx`` path or its bytes. The whole model is read into the session, so the file may
    be deleted afterwards.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # threads inside one op (GEMMs): the profile's cores
    options.inter_op_num_threads = 1  # the graph is a chain; parallel branches would only oversubscribe
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"])


def time_onnxruntime(
    session: Any,
    example_inputs: tuple[torch.Tensor, ...],
    profile: HardwareProfile,
    repeats: int = 10,
    number: int = 5,
    warmup: int = 2,
    backend: str = "onnxruntime",
) -> LatencyResult:
    """Time an existing ONNX Runtime session (see :func:`onnxruntime_session`) on ``example_inputs`` (tensors or arrays).

    Keeping sessions lets a benchmark time many models in interleaved passes, so that a slow spell of a
    shared machine hits every model a little instead of a few models a lot.
    """
    check_counts(repeats, number, warmup)
    feeds = {meta.name: x.detach().cpu().numpy() if hasattr(x, "detach") else x
             for meta, x in zip(session.get_inputs(), example_inputs)}
    repeat_ms = time_runs(lambda: session.run(None, feeds), repeats, number, warmup)
    threads = session.get_session_options().intra_op_num_threads
    return summarize(repeat_ms, profile=profile.name, backend=backend, number=number, threads=threads, is_tuned=True)


def measure_torch(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    profile: HardwareProfile,
    repeats: int = 10,
    number: int = 5,
    warmup: int = 2,
) -> LatencyResult:
    """Time ``model`` in torch eager mode under ``inference_mode`` with the profile's core count as threads.

    torch's global thread count and the model's train/eval mode are restored afterwards.

    Args:
        model: The module; run in eval mode.
        example_inputs: Inputs to time with.
        profile: The profile; its core count sets ``torch.set_num_threads``.
        repeats: Timed repeats; ≥ 1.
        number: Runs averaged per repeat; ≥ 1.
        warmup: Untimed runs first; ≥ 0.

    Returns:
        A measured result with ``is_tuned=True`` (eager kernels need no tuning); labelled ``measured (torch)``.
    """
    import torch

    check_counts(repeats, number, warmup)
    threads = profile.resolved_cores()
    old_threads, was_training = torch.get_num_threads(), model.training
    torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            repeat_ms = time_runs(lambda: model(*example_inputs), repeats, number, warmup)
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    return summarize(repeat_ms, profile=profile.name, backend="torch", number=number, threads=threads, is_tuned=True)


def time_runs(run: Callable[[], object], repeats: int, number: int, warmup: int = 0) -> list[float]:
    """Per-repeat mean time of ``run`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    repeat_ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            run()
        repeat_ms.append((time.perf_counter() - start) * 1e3 / number)
    return repeat_ms


def write_onnx(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path, **names: Any) -> Path:
    """Write ``model`` as ONNX with torch's torch.export-based exporter (the TorchScript one is deprecated).

    The model is exported in eval mode and its train/eval mode restored afterwards. ``names`` go to
    ``torch.onnx.export`` as they are (``input_names``, ``output_names``, ``dynamic_shapes``); without them the
    graph is static-shaped at ``example_inputs``. :func:`nas.export.export_onnx` (the shipped file) is this
    with named inputs and a dynamic batch.
    """
    import logging
    import warnings

    import torch

    # The exporter logs a warning per missing torchvision op and prints constant-folding notes; they say
    # nothing about this model.
    # ("Evaluation failed: cannot reshape ...", from onnxscript's constant folder, is one of those notes.)
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    old_levels, was_training = [lg.level for lg in loggers], model.training
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    model.eval()
    try:
        with warnings.catch_warnings():  # "axis name batch will not be used ...": inputs that share a dim, as meant
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints.*")
            torch.onnx.export(model, tuple(example_inputs), str(path), dynamo=True, external_data=False, verbose=False,
                              **names)
    finally:
        for lg, level in zip(loggers, old_levels):
            lg.setLevel(level)
        model.train(was_training)
    return Path(path)




def check_counts(repeats: int, number: int, warmup: int) -> None:
    """Raise ``ValueError`` unless repeats ≥ 1, number ≥ 1 and warmup ≥ 0 (every timing checks its counts)."""
    if repeats < 1 or number < 1 or warmup < 0:
        raise ValueError(f"need repeats ≥ 1, number ≥ 1 and warmup ≥ 0; got {repeats=}, {number=}, {warmup=}")
