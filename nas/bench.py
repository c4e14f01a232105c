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

from nas.errors import NasUserError

if TYPE_CHECKING:
    import torch

    from nas.hardware.backends import PreparedModel
    from nas.hardware.measure import LatencyResult
    from nas.hardware.memory import Feasibility
    from nas.hardware.profiles import HardwareProfile
    from nas.output import Output

DEFAULT_PROFILES = ("host", "phone-flagship", "mcu-m7")
QUANTIZE_BITS = {"none": 32, "int8": 8}  # --quantize value → stored weight bits
# Token ids for ONNX inputs whose vocabulary is unknown: small ids exist in every vocabulary.
ONNX_TOKEN_ID_RANGE = 100


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


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to benchmark: imported into TVM, with its inputs and size figures."""

    kind: str
    architecture: str
    prepared: PreparedModel  # at the benchmark batch
    prepared_batch1: PreparedModel  # for memory feasibility (MCUs run one sequence at a time)
    inputs: tuple  # torch tensors (Hugging Face) or numpy arrays (ONNX), at the benchmark batch
    num_params: int
    stored_size_bytes: int
    torch_model: Any = None  # the torch module (Hugging Face), for the reference backends
    onnx_path: Path | None = None
    weight_bits: int | None = None  # the bit-width its weights are stored at, when the model fixes it


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
    from nas.search.objective import LatencySettings

    start = time.perf_counter()
    if seq_len is None:
        seq_len = _default_seq_len(model_path)
    _check_options(profile_names, seq_len, batch, quantize, tune_trials, repeats)
    profiles = [load_profile(name) for name in profile_names]  # an unknown name fails here, before loading
    weight_bits = QUANTIZE_BITS[quantize]
    settings = LatencySettings(seq_len=seq_len, repeats=repeats, number=_runs_per_repeat(repeats),
                               reference_backends=("torch", "onnxruntime"), tune=tune_trials > 0,
                               trials_per_task=max(tune_trials, 1))
    steps = 2 + 2 * len(profiles) + (1 if any(p.latency.method == "local" for p in profiles) else 0)
    with _progress(out) as progress:
        task = progress.add_task("loading the model", total=steps) if progress else None

        def next_step(description: str) -> None:  # the previous step is done; say what runs now
            if progress:
                progress.update(task, advance=1, description=description)

        loaded = load_model(model_path, seq_len=seq_len, batch=batch, weight_bits=weight_bits,
                            on_import=lambda: next_step("importing into TVM and fusing the graph"))
        weight_bits = loaded.weight_bits or weight_bits  # a campaign trial comes at its own bit-width
        profile_results = []
        for profile in profiles:
            how = {"local": "building with TVM and timing", "rpc": "building and timing over RPC"}.get(
                profile.latency.method, "estimating latency")
            next_step(f"{profile.name}: {how}" + (" (tuning)" if tune_trials and profile.latency.method == "local" else ""))
            latency = _latency(loaded, profile, settings, weight_bits)
            next_step(f"{profile.name}: compiling for the device and checking memory")
            feasibility = _feasibility(loaded, profile, weight_bits)
            profile_results.append(ProfileBench(profile.name, profile.hw_class, latency, feasibility))
        reference = {}
        if any(p.latency.method == "local" for p in profiles):
            next_step("host: timing torch eager and ONNX Runtime")
            reference = _reference(loaded, profiles, settings, weight_bits)
        next_step("done")
    graph = loaded.prepared_batch1.graph
    result = BenchResult(
        model=str(model_path), kind=loaded.kind, architecture=loaded.architecture, seq_len=seq_len, batch=batch,
        weight_bits=weight_bits, num_params=loaded.num_params, stored_size_bytes=loaded.stored_size_bytes,
        flops=loaded.prepared.graph.flops,
        matmul_flops=sum(op.flops for op in loaded.prepared.graph.ops if op.category in ("matmul", "attention_matmul")),
        peak_activation_bytes=graph.peak_activation_bytes, profiles=profile_results, reference=reference,
        notes=_notes(loaded, profile_results, tune_trials), wall_s=time.perf_counter() - start,
    )
    return _log(result, tracking_uri)


def _check_options(profile_names: Any, seq_len: int, batch: int, quantize: str, tune_trials: int, repeats: int) -> None:
    if not profile_names:
        raise NasUserError("--profiles is empty; name at least one profile (see 'nas profiles').")
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


# --- loading -------------------------------------------------------------------------------------------


def _campaign_trial(model_path: str | Path) -> tuple[Path, int] | None:
    """``(campaign folder, trial number)`` when ``model_path`` is ``CAMPAIGN_DIR:TRIAL``, else None."""
    campaign, sep, number = str(model_path).rpartition(":")
    if sep and (Path(campaign) / "campaign.yaml").is_file():
        if not number.isdigit():
            raise NasUserError(f"{model_path}: '{number}' is not a trial number; write CAMPAIGN_DIR:TRIAL with TRIAL "
                               f"a whole number ('nas status {campaign}' lists the trials).")
        return Path(campaign), int(number)
    return None


def _default_seq_len(model_path: str | Path) -> int:
    """The sequence length a campaign trial was timed at (its campaign's ``max_seq_len``); 128 for files."""
    trial = _campaign_trial(model_path)
    if trial is None:
        return 128
    from nas.config import load_campaign_config

    return load_campaign_config(trial[0] / "campaign.yaml").max_seq_len


def load_model(model_path: str | Path, *, seq_len: int, batch: int, weight_bits: int = 32, on_import=None) -> LoadedModel:
    """Load a Hugging Face folder, an ONNX file or a campaign trial and import it into TVM at the benchmark shapes.

    Raises:
        NasUserError: If the path is not a model, or TVM cannot take it.
    """
    trial = _campaign_trial(model_path)
    if trial is not None:
        return _load_campaign_trial(*trial, seq_len, batch, weight_bits, on_import)
    path = Path(model_path)
    if path.is_file() and path.suffix.lower() == ".onnx":
        if weight_bits < 32:
            raise NasUserError(f"{path}: --quantize applies to Hugging Face models only; quantize the ONNX model "
                               f"before exporting it (e.g. onnxruntime.quantization.quantize_dynamic) and bench that.")
        return _load_onnx(path, seq_len, batch, on_import)
    if path.is_dir() and (path / "config.json").is_file():
        return _load_huggingface(path, seq_len, batch, weight_bits, on_import)
    if not path.exists():
        raise NasUserError(f"{path}: no such file or folder; pass a Hugging Face model folder or an .onnx file.")
    raise NasUserError(f"{path} is not a model: expected a Hugging Face folder with config.json (save_pretrained) "
                       f"or an .onnx file.")


def _load_campaign_trial(campaign: Path, number: int, seq_len: int, batch: int, weight_bits: int, on_import) -> LoadedModel:
    """``CAMPAIGN:TRIAL``: rebuild the trial's compressed student (as ``nas select`` does) and bench it.

    Its weights are already quantized to the trial's bit-width, which is also what its size is counted at
    unless ``--quantize`` asks for fewer bits.
    """
    import tempfile

    from nas.select import rebuild_trial

    model, candidate = rebuild_trial(campaign, number)
    bits = min(weight_bits, candidate.compression.weight_bits)
    folder = Path(tempfile.mkdtemp(prefix=f"lightnas-bench-trial{number}-"))
    model.save_pretrained(folder, safe_serialization=True)
    loaded = _load_huggingface(folder, seq_len, batch, bits, on_import)
    return dataclasses.replace(loaded, kind="campaign trial", weight_bits=bits)


def single_output(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` wrapped to return one tensor, as TVM's importer needs: logits ``(B, C)`` of a classifier,
    the last hidden state ``(B, L, H)`` of a plain encoder; lightnas students already return logits."""
    import torch

    class SingleOutput(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            output = self.inner(input_ids=input_ids, attention_mask=attention_mask)
            if isinstance(output, torch.Tensor):
                return output
            return output.logits if hasattr(output, "logits") else output.last_hidden_state

    return SingleOutput(model)


def _load_huggingface(path: Path, seq_len: int, batch: int, weight_bits: int, on_import) -> LoadedModel:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from nas.compress.size import stored_size_bytes
    from nas.models.student import register_with_auto_classes

    register_with_auto_classes()  # lightnas students load through the Auto classes too
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise NasUserError(f"{path}/config.json is not a Hugging Face model config ({_first_line(exc)}); "
                           f"save the model with save_pretrained.") from exc
    is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    auto = AutoModelForSequenceClassification if is_classifier else AutoModel
    try:
        model = auto.from_pretrained(path, local_files_only=True).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise NasUserError(f"{path}: transformers could not load it as {auto.__name__} ({_first_line(exc)}); "
                           f"pass a sequence-classification or encoder model folder.") from exc
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and seq_len > max_positions:
        raise NasUserError(f"--seq-len {seq_len} exceeds {path}'s max_position_embeddings = {max_positions}; "
                           f"use --seq-len {max_positions} or less.")
    if weight_bits < 32:
        from nas.compress.quantize import fake_quantize_weights_

        fake_quantize_weights_(model, weight_bits)  # per channel, asymmetric: what campaigns store
    size_bytes = stored_size_bytes(model, weight_bits=weight_bits).total_bytes
    num_params = sum(p.numel() for p in model.parameters())  # parameters() lists tied weights once
    vocab_size = int(getattr(config, "vocab_size", 0) or ONNX_TOKEN_ID_RANGE)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (batch, seq_len), generator=generator)  # (B, L)
    inputs = (input_ids, torch.ones_like(input_ids))
    wrapped = single_output(model)
    if on_import:
        on_import()
    prepared = _prepare_torch(wrapped, inputs, path)
    prepared_batch1 = prepared if batch == 1 else _prepare_torch(single_output(model), tuple(x[:1] for x in inputs), path)
    return LoadedModel("huggingface", type(model).__name__, prepared, prepared_batch1, inputs, num_params, size_bytes,
                       torch_model=wrapped)


def _prepare_torch(model: torch.nn.Module, inputs: tuple, path: Path) -> PreparedModel:
    from nas.hardware.backends import prepare
    from nas.hardware.compile import CompileError

    try:
        prepared = prepare(model, inputs)
        prepared.graph  # fuse now: a failure here is the model's, not a profile's
    except CompileError as exc:
        raise _unsupported(path, exc, exc.operators) from exc
    return prepared


def _unsupported(path: Path | str, exc: Exception, operators: list[str]) -> NasUserError:
    if operators:
        return NasUserError(f"{path}: TVM cannot compile this architecture: no converter for {', '.join(operators)}; "
                            f"rewrite those operators in the model or export it differently.")
    return NasUserError(f"{path}: TVM cannot compile this architecture: {exc}")


def _load_onnx(path: Path, seq_len: int, batch: int, on_import) -> LoadedModel:
    import numpy as np
    import onnx
    from tvm.error import OpNotImplemented
    from tvm.relax.frontend.onnx import from_onnx

    from nas.hardware.backends import PreparedModel

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, ValueError, ... for a bad file
        raise NasUserError(f"{path} is not a readable ONNX model ({_first_line(exc)}).") from exc
    initializer_names = {t.name for t in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializer_names]
    if not graph_inputs:
        raise NasUserError(f"{path}: the ONNX graph has no inputs; export it with its inputs (input_ids, attention_mask).")

    def example(one_batch: int) -> tuple[Any, ...]:
        rng = np.random.default_rng(0)
        arrays = []
        for value_info in graph_inputs:
            tensor_type = value_info.type.tensor_type
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
            dims = [d.dim_value if d.dim_value > 0 else None for d in tensor_type.shape.dim]
            shape = tuple(d if d is not None else (one_batch if i == 0 else seq_len) for i, d in enumerate(dims))
            if "mask" in value_info.name:
                arrays.append(np.ones(shape, dtype=dtype))
            elif "type" in value_info.name:  # token_type_ids
                arrays.append(np.zeros(shape, dtype=dtype))
            elif np.issubdtype(dtype, np.integer):
                arrays.append(rng.integers(0, ONNX_TOKEN_ID_RANGE, shape).astype(dtype))
            else:
                arrays.append(rng.standard_normal(shape).astype(dtype))
        return tuple(arrays)

    def imported(arrays: tuple) -> PreparedModel:
        shape_dict = {v.name: list(a.shape) for v, a in zip(graph_inputs, arrays)}
        dtype_dict = {v.name: str(a.dtype) for v, a in zip(graph_inputs, arrays)}
        try:
            mod = from_onnx(proto, shape_dict=shape_dict, dtype_dict=dtype_dict)
        except OpNotImplemented as exc:
            listed = str(exc).split("frontend ONNX:", 1)[-1]
            raise _unsupported(path, exc, sorted(op.strip() for op in listed.split(",") if op.strip())) from exc
        except Exception as exc:  # noqa: BLE001 - the frontend raises many types for graphs it cannot take
            raise _unsupported(path, _first_line(exc), []) from exc
        prepared = PreparedModel(mod, tuple(str(a.dtype) for a in arrays), tuple(a.shape for a in arrays))
        prepared.graph  # fuse now, so a failure names the model
        return prepared

    inputs = example(batch)
    if on_import:
        on_import()
    prepared = imported(inputs)
    prepared_batch1 = prepared if batch == 1 else imported(example(1))
    weights = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer]
    return LoadedModel("onnx", "onnx", prepared, prepared_batch1, inputs,
                       num_params=int(sum(w.size for w in weights)), stored_size_bytes=int(sum(w.nbytes for w in weights)),
                       onnx_path=path)


# --- measuring -----------------------------------------------------------------------------------------


def _latency(loaded: LoadedModel, profile: HardwareProfile, settings: Any, weight_bits: int) -> LatencyResult:
    """The profile's latency backend on the already imported model (what ``measure_latency`` dispatches to)."""
    from nas.hardware.backends import LATENCY_BACKENDS

    return LATENCY_BACKENDS[profile.latency.method](loaded.prepared, loaded.inputs, profile, settings, weight_bits)


def _feasibility(loaded: LoadedModel, profile: HardwareProfile, weight_bits: int) -> Feasibility:
    """Cross-compile for the device (non-local profiles) and check its memory limits at batch 1."""
    from nas.hardware.cross import cross_compile
    from nas.hardware.memory import check_feasibility

    build = cross_compile(loaded.prepared_batch1.mod, profile) if profile.latency.method != "local" else None
    return check_feasibility(profile, loaded.prepared_batch1.graph, weight_bits, build)


def _reference(loaded: LoadedModel, profiles: list[HardwareProfile], settings: Any, weight_bits: int) -> dict[str, LatencyResult]:
    """torch eager and ONNX Runtime on the host, with the host profile's threads."""
    if loaded.torch_model is not None:
        from nas.hardware.backends import measure_reference

        return measure_reference(loaded.torch_model, loaded.inputs, profiles, settings, weight_bits=weight_bits)
    host = next(p for p in profiles if p.latency.method == "local")
    return {"onnxruntime": _time_onnx_file(loaded.onnx_path, loaded.inputs, host, settings)}


def _time_onnx_file(path: Path, inputs: tuple, host: HardwareProfile, settings: Any) -> LatencyResult:
    """Time an ONNX file as given with ONNX Runtime (same session options as for torch models)."""
    import onnxruntime as ort

    from nas.hardware.backends import measurement_lock
    from nas.hardware.measure import summarize

    threads = host.resolved_cores()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {meta.name: array for meta, array in zip(session.get_inputs(), inputs)}
    repeat_ms = []
    with measurement_lock():
        for _ in range(2):  # warm-up
            session.run(None, feeds)
        for _ in range(settings.repeats):
            start = time.perf_counter()
            for _ in range(settings.number):
                session.run(None, feeds)
            repeat_ms.append((time.perf_counter() - start) * 1e3 / settings.number)
    return summarize(repeat_ms, profile=host.name, backend="onnxruntime", number=settings.number, threads=threads, is_tuned=True)


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
    run_id = log_bench_run(uri, result.to_dict())
    return dataclasses.replace(result, tracking_uri=uri, run_id=run_id)


def _first_line(exc: Any) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
