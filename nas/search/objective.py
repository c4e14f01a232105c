"""One trial: Candidate → student → (pretrained →) distilled → pruned → quantized → accuracy, size and latency.

:func:`evaluate_candidate` is what an executor runs (here or on a Ray worker), in the order the work happens; shared
state (tokens, teacher logits and weights) arrives once in a :class:`TrialContext`. :func:`evaluate_inherited` is the supernet scorer's trial (``fidelity.scorer: supernet``): weights sliced out of
the trained supernet instead of trained, then compressed and scored the same way, latency estimated.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nas.hardware.latency import LatencySettings  # moved to nas.hardware; re-exported for callers

if TYPE_CHECKING:
    import torch

    from nas.candidate import Candidate
    from nas.data.tokenize import TokenizedSplit
    from nas.hardware.measure import LatencyResult
    from nas.hardware.memory import Feasibility
    from nas.hardware.profiles import HardwareProfile
    from nas.train import TrainSettings


@dataclass
class TrialContext:
    """Shared, read-only state of a campaign, built once by the driver and shipped to every trial."""

    train: TokenizedSplit
    validation: TokenizedSplit
    teacher_logits: torch.Tensor  # (N_train, C), rows aligned with ``train``
    teacher_dir: str  # a save_pretrained folder of the fine-tuned teacher; its weights are inherited
    num_labels: int
    train_settings: TrainSettings
    profiles: list[HardwareProfile]
    latency: LatencySettings = field(default_factory=LatencySettings)
    threads: int = 1  # torch threads for training; latency uses each profile's own core count
    onnx_dir: str | None = None  # if set, each trial exports its compressed student here as ONNX (for MLflow)
    supernet_dir: str | None = None  # the cached trained supernet (nas.supernet), for fidelity.scorer: supernet
    device: str = "auto"  # where distillation trains, resolved in the trial's process (nas.device.trial_device_setting)


@dataclass(frozen=True)
class TrialMetrics:
    """What one trial measured. Plain values only, so it crosses process boundaries and JSON."""

    accuracy: float  # validation split, in [0, 1]
    latency: dict[str, LatencyResult]  # by profile name: the compiled (TVM) latency the search optimises
    reference_latency: dict[str, LatencyResult]  # by backend name, on the host, for cross-checks
    size_bytes: int  # exact bytes of the ONNX file every CPU profile ships (nas.export.export_shipped_onnx)
    num_params: int
    sparsity: float  # share of zeros in the pruned weights
    final_loss: float
    timings_s: dict[str, float]  # wall seconds of each stage
    feasibility: dict[str, Feasibility] = field(default_factory=dict)  # by profile: compiles and fits memory
    artifacts: dict[str, str] = field(default_factory=dict)  # name → file the driver logs to MLflow, then deletes
    fidelity: str = "standalone"  # what produced these numbers: standalone (trained) or supernet (inherited)
    packed_bytes: int | None = None  # bits × kept weights, packed and sparse: MCU flash accounting, no shipped file
    validation_size: int | None = None  # sentences ``accuracy`` was measured on (its standard error: nas.metrics)

    @property
    def is_feasible(self) -> bool:
        """Whether the candidate compiles for and fits every profile."""
        return all(f.is_feasible for f in self.feasibility.values())

    def hardware_constraints(self) -> dict[str, float]:
        """Optuna constraint values (≤ 0 feasible) per profile, named ``fits@<profile>``.

        Profiles where nothing was checked (the host: no build for a device, no memory limits) are left out.
        """
        return {
            f"fits@{name}": f.constraint()
            for name, f in self.feasibility.items()
            if f.build or f.flash_limit_bytes or f.sram_limit_bytes or not f.is_feasible
        }

    def objective(self, metric: str, profile: str | None = None) -> float:
        """The value of one objective or constraint metric (``nas.config.METRICS``); per-profile ones need ``profile``."""
        if metric == "accuracy":
            return self.accuracy
        if metric == "latency_ms":
            return self.latency[profile].median_ms
        if metric == "size_bytes":
            return float(self.size_bytes)
        if metric == "flash_bytes":
            return float(self.feasibility[profile].flash_bytes)
        if metric == "peak_memory_bytes":
            return float(self.feasibility[profile].peak_memory_bytes)
        raise KeyError(f"unknown metric {metric!r}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["latency"] = {k: v.to_dict() for k, v in self.latency.items()}
        data["reference_latency"] = {k: v.to_dict() for k, v in self.reference_latency.items()}
        data["feasibility"] = {k: v.to_dict() for k, v in self.feasibility.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialMetrics:
        """The inverse of :meth:`to_dict`; unknown keys are skipped, so a newer lightnas's study still reads."""
        from nas.hardware.measure import LatencyResult
        from nas.hardware.memory import Feasibility

        known = {f.name for f in dataclasses.fields(cls)}
        plain = {k: v for k, v in data.items() if k in known}
        plain["latency"] = {k: LatencyResult.from_dict(v) for k, v in data.get("latency", {}).items()}
        plain["reference_latency"] = {k: LatencyResult.from_dict(v) for k, v in data.get("reference_latency", {}).items()}
        plain["feasibility"] = {k: Feasibility.from_dict(v) for k, v in data.get("feasibility", {}).items()}
        return cls(**plain)


@functools.lru_cache(maxsize=2)
def teacher_state_of(teacher_dir: str) -> tuple[dict[str, torch.Tensor], int, int]:
    """The fine-tuned teacher's weights, layer and head count, read once per process (safetensors: no pickle)."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(teacher_dir)
    config = json.loads((folder / "config.json").read_text())
    return load_file(folder / "model.safetensors"), config["num_hidden_layers"], config["num_attention_heads"]


@functools.lru_cache(maxsize=1)
def _teacher_model(teacher_dir: str) -> torch.nn.Module:
    """The fine-tuned teacher as a module, for feature distillation and teacher-aligned pretraining."""
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification.from_pretrained(teacher_dir, local_files_only=True, attn_implementation="eager").eval()


@dataclass
class TrainedCandidate:
    """A candidate's compressed student and how it got there (what :func:`train_candidate` returns)."""

    model: torch.nn.Module
    losses: list[float]  # distillation loss per step
    outcome: Any  # nas.compress.pipeline.CompressionOutcome: masks, sparsity, stored size
    timings_s: dict[str, float]


def student_positions(ctx: TrialContext) -> int:
    """Position-embedding rows of every student (and of the supernet): the longest input it will see."""
    return max(ctx.train.input_ids.shape[1], ctx.latency.seq_len)


def train_candidate(candidate: Candidate, ctx: TrialContext, seed: int, *, steps: int | None = None,
                    qat_steps: int = 0, initial_model: torch.nn.Module | None = None) -> TrainedCandidate:
    """Build, (pre)train, distil and compress one candidate: the part of a trial before it is scored.

    Deterministic for a given seed and thread count, so ``nas select`` and ``nas bench`` rebuild a trial's
    exact student by calling it again with the trial's seed and steps.

    Args:
        candidate: The student.
        ctx: Shared campaign state.
        seed: Seeds weight init, batch order and dropout.
        steps: Distillation steps; None = the campaign's budget.
        qat_steps: Quantization-aware fine-tuning for a quantized recipe that has none (finalizing only).
        initial_model: Start from this student instead of building one (the supernet scorer passes the
            candidate's slice of the supernet, :func:`nas.supernet.extract_student`); trained in place.
    """
    import torch

    from nas.pretrain import pretrain
    from nas.train import DistilLoss, distil

    torch.set_num_threads(ctx.threads)
    torch.manual_seed(seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    learn = candidate.distill
    model = initial_model if initial_model is not None else _build_student(candidate, ctx)
    needs_teacher = learn.hidden_weight > 0 or learn.attention_weight > 0 or (
        candidate.pretrain.is_active and candidate.pretrain.contrastive_target == "teacher"
    )
    teacher = _teacher_model(ctx.teacher_dir) if needs_teacher else None
    settings = dataclasses.replace(ctx.train_settings, seed=seed, steps=ctx.train_settings.steps if steps is None else steps)

    # pretrain (optional, task-agnostic): MLM or contrastive on the train split's text, labels unused
    pretrain(model, ctx.train.input_ids, ctx.train.attention_mask, candidate.pretrain, settings, teacher=teacher)
    timings["pretrain_s"] = time.perf_counter() - t0

    # distil against the cached teacher logits, plus hidden-state / attention terms when weighted
    loss = DistilLoss(learn.alpha, learn.temperature, learn.hidden_weight, learn.attention_weight)
    losses = distil(model, ctx.train, ctx.teacher_logits, settings, loss=loss, teacher=teacher, device=ctx.device)
    timings["train_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    outcome = _compress(model, candidate, ctx, settings, qat_steps)
    timings["compress_s"] = time.perf_counter() - t1
    return TrainedCandidate(model=model, losses=losses, outcome=outcome, timings_s=timings)


def _build_student(candidate: Candidate, ctx: TrialContext) -> torch.nn.Module:
    """A new student: a trimmed vocabulary keeps the train split's most frequent tokens; weights inherit from the
    fine-tuned teacher (layer selection, importance-ordered width slicing) unless the candidate says not to."""
    from nas.models.student import build_student
    from nas.models.vocab import most_frequent_tokens

    arch = candidate.architecture
    teacher_state, teacher_layers, teacher_heads = teacher_state_of(ctx.teacher_dir)
    kept = most_frequent_tokens(ctx.train.input_ids, arch.vocab_size) if arch.vocab_size else None
    return build_student(
        candidate, ctx.num_labels, teacher_state=teacher_state if candidate.distill.inherit else None,
        teacher_layers=teacher_layers, teacher_heads=teacher_heads, kept_token_ids=kept,
        max_positions=student_positions(ctx),
    )


def _compress(model: torch.nn.Module, candidate: Candidate, ctx: TrialContext, settings: TrainSettings, qat_steps: int) -> Any:
    """The candidate's recipe (prune, quantize, size) on ``model``; recovery and QAT fine-tune by distillation."""
    from nas.compress.pipeline import compress_model
    from nas.train import DistilLoss, distil

    recipe, learn = candidate.compression, candidate.distill
    if qat_steps and recipe.weight_bits < 16 and not recipe.qat_steps:  # finalizing a quantized student
        recipe = dataclasses.replace(recipe, qat_steps=qat_steps)
    recovery_calls: list[int] = []

    def recover(model: torch.nn.Module, steps: int, masks: dict[str, torch.Tensor]) -> None:
        # A fresh optimiser per call (structured pruning replaces parameters) and a new batch order each time;
        # logits only: feature terms would need projections rebuilt for the pruned widths.
        recovery_calls.append(steps)
        recovery = dataclasses.replace(settings, steps=steps, seed=settings.seed + 1000 * len(recovery_calls))
        distil(model, ctx.train, ctx.teacher_logits, recovery, loss=DistilLoss(learn.alpha, learn.temperature), masks=masks)

    calibration = [  # the first 4 train batches: Taylor importance and activation ranges
        {"input_ids": ctx.train.input_ids[i : i + 32], "attention_mask": ctx.train.attention_mask[i : i + 32],
         "labels": ctx.train.labels[i : i + 32]}
        for i in range(0, min(len(ctx.train), 128), 32)
    ]
    return compress_model(
        model, recipe, calibration_batches=calibration, recover=recover,
        recovery_steps=settings.steps // 4 if recipe.prune_rate > 0 else 0,  # a quarter of the training budget
    )


def evaluate_candidate(candidate: Candidate, ctx: TrialContext, seed: int = 0) -> TrialMetrics:
    """Build, (pre)train, distil, compress, measure and score one candidate.

    Args:
        candidate: The student to evaluate.
        ctx: Shared campaign state.
        seed: Seeds weight init, batch order and dropout.

    Returns:
        The trial's metrics; latency for every profile in ``ctx.profiles``.
    """
    from nas.hardware.backends import check_profile_feasibility, measure_latency, measure_reference

    trained = train_candidate(candidate, ctx, seed)
    model, losses, timings = trained.model, trained.losses, trained.timings_s
    size, sparsity = trained.outcome.size, trained.outcome.sparsity
    val_accuracy = _validation_accuracy(model, ctx, timings)  # the test split stays held out for reports

    # measure: latency per profile (measured, or estimated and labelled so; ≤ 8-bit weights accounted as
    # int8), whether the candidate compiles for and fits each device, and host reference backends
    t2 = time.perf_counter()
    example = _example_inputs(ctx)
    bits = candidate.weight_bits
    latency = {p.name: measure_latency(model, example, p, ctx.latency, weight_bits=bits) for p in ctx.profiles}
    feasibility = {
        p.name: check_profile_feasibility(model, example, p, weight_bits=bits, compile_for_device=ctx.latency.check_compile,
                                          stored_weight_bytes=int(size.total_bytes))
        for p in ctx.profiles
    }
    reference = measure_reference(model, example, ctx.profiles, ctx.latency, weight_bits=bits)
    timings["latency_s"] = time.perf_counter() - t2

    artifacts, shipped_bytes = _shipped_file(model, candidate, ctx, seed)

    return TrialMetrics(
        accuracy=val_accuracy,
        validation_size=len(ctx.validation),
        latency=latency,
        reference_latency=reference,
        size_bytes=shipped_bytes,
        packed_bytes=int(size.total_bytes),
        num_params=sum(p.numel() for p in model.parameters()),
        sparsity=sparsity,
        final_loss=losses[-1] if losses else float("nan"),
        timings_s=timings,
        feasibility=feasibility,
        artifacts=artifacts,
    )


def _validation_accuracy(model: torch.nn.Module, ctx: TrialContext, timings: dict[str, float]) -> float:
    """Accuracy on the validation split, in [0, 1]; its wall seconds go to ``timings["eval_s"]``."""
    from nas.train import accuracy

    t0 = time.perf_counter()
    value = accuracy(model, ctx.validation)
    timings["eval_s"] = time.perf_counter() - t0
    return value


def _example_inputs(ctx: TrialContext) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of one sequence of the latency length: what latency is measured on."""
    import torch

    return (torch.ones(1, ctx.latency.seq_len, dtype=torch.long), torch.ones(1, ctx.latency.seq_len, dtype=torch.long))


def _shipped_file(model: torch.nn.Module, candidate: Candidate, ctx: TrialContext, seed: int, keep: bool = True) -> tuple[dict, int]:
    """Bytes of the shipped ONNX file (the size axis, ≤ 1 % of the file), and with ``ctx.onnx_dir`` the fp32 ``model.onnx``."""
    import tempfile
    from pathlib import Path

    from nas.export import export_onnx, shipped_onnx_bytes  # arithmetic, ~50 ms: no file per trial

    size = shipped_onnx_bytes(model, candidate.compression, ctx.latency.seq_len)
    if not (keep and ctx.onnx_dir):
        return {}, size
    Path(ctx.onnx_dir).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"trial-{seed}-", dir=ctx.onnx_dir)) / "model.onnx"
    return {"model.onnx": str(export_onnx(model, ctx.latency.seq_len, path))}, size


def evaluate_inherited(candidate: Candidate, ctx: TrialContext, seed: int = 0) -> TrialMetrics:
    """Score one candidate at supernet fidelity: slice, (fine-tune,) compress, accuracy, estimated latency.

    The candidate's weights come from the campaign's trained supernet (``ctx.supernet_dir``) instead of
    stand-alone distillation; ``ctx.train_settings.steps`` (the campaign's ``fidelity.recovery_steps``) is
    the optional recovery fine-tune before its compression recipe runs, exactly as in
    :func:`train_candidate`. Latency is the hardware predictor's estimate for every profile (no TVM
    build or timing: that would cost more than the rest), labelled ``estimated``; device feasibility is
    checked from the fused graph without cross-compiling. Every number is marked ``fidelity="supernet"``.

    Args:
        candidate: The student to score; its architecture must be a subnet of the supernet.
        ctx: Shared campaign state with ``supernet_dir`` set.
        seed: Seeds the recovery fine-tune and calibration order.

    Returns:
        The trial's metrics (``reference_latency`` empty).
    """
    import torch

    from nas.hardware.backends import LATENCY_BACKENDS, check_profile_feasibility, prepare
    from nas.supernet import extract_student, load_supernet

    if ctx.supernet_dir is None:
        raise RuntimeError("evaluate_inherited needs ctx.supernet_dir (the campaign builds it for fidelity.scorer: supernet)")
    torch.set_num_threads(ctx.threads)

    # inherit: the candidate's slice of the supernet, as a stand-alone student; then the usual (short) training
    # and compression path, starting from it
    t0 = time.perf_counter()
    student = extract_student(load_supernet(ctx.supernet_dir), candidate)
    trained = train_candidate(candidate, ctx, seed, initial_model=student)
    model, timings = trained.model, {"extract_s": time.perf_counter() - t0, **trained.timings_s}
    val_accuracy = _validation_accuracy(model, ctx, timings)

    # estimate: the predictor on the fused graph (one TVM import, no build), and memory feasibility
    t2 = time.perf_counter()
    example = _example_inputs(ctx)
    bits = candidate.weight_bits
    prepared = prepare(model, example, bits)
    latency = {p.name: LATENCY_BACKENDS.get("estimate").measure(prepared, p, ctx.latency) for p in ctx.profiles}
    feasibility = {p.name: check_profile_feasibility(model, example, p, weight_bits=bits, compile_for_device=False,
                                                     stored_weight_bytes=int(trained.outcome.size.total_bytes))
                   for p in ctx.profiles}
    timings["latency_s"] = time.perf_counter() - t2

    return TrialMetrics(
        accuracy=val_accuracy,
        validation_size=len(ctx.validation),
        latency=latency,
        reference_latency={},
        size_bytes=_shipped_file(model, candidate, ctx, seed, keep=False)[1],
        packed_bytes=int(trained.outcome.size.total_bytes),
        num_params=sum(p.numel() for p in model.parameters()),
        sparsity=trained.outcome.sparsity,
        final_loss=trained.losses[-1] if trained.losses else float("nan"),
        timings_s=timings,
        feasibility=feasibility,
        fidelity="supernet",
    )
