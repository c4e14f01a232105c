"""One trial: Candidate → student → distilled → pruned → quantized → accuracy, size and latency.

:func:`evaluate_candidate` is the function an executor runs, in this process or on a Ray worker. It reads
top to bottom in the order the work happens. Everything it needs that is expensive to build (tokenised
data, teacher logits, the teacher's weights) arrives once in a :class:`TrialContext`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from nas.candidate import Candidate
    from nas.data.tokenize import TokenizedSplit
    from nas.hardware.measure import LatencyResult
    from nas.hardware.profiles import HardwareProfile
    from nas.train import TrainSettings


@dataclass(frozen=True)
class LatencySettings:
    """How each trial is timed.

    Args:
        seq_len: Tokens per sequence of the timed input (batch 1); the campaign's ``max_seq_len``.
        repeats: Timed repeats; the median and spread are over these. ≥ 3.
        number: Runs averaged inside each repeat; ≥ 1.
        reference_backends: Host-only backends timed next to TVM for cross-checks (``onnxruntime``, ``torch``).
    """

    seq_len: int = 64
    repeats: int = 10
    number: int = 5
    reference_backends: tuple[str, ...] = ("onnxruntime",)


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


@dataclass(frozen=True)
class TrialMetrics:
    """What one trial measured. Plain values only, so it crosses process boundaries and JSON."""

    accuracy: float  # validation split, in [0, 1]
    latency: dict[str, LatencyResult]  # by profile name: the compiled (TVM) latency the search optimises
    reference_latency: dict[str, LatencyResult]  # by backend name, on the host, for cross-checks
    size_bytes: int  # stored size at the candidate's bit-width and sparsity
    num_params: int
    sparsity: float  # share of zeros in the pruned weights
    final_loss: float
    timings_s: dict[str, float]  # wall seconds of each stage

    def objective(self, metric: str, profile: str | None = None) -> float:
        """The value of one objective: ``accuracy``, ``latency_ms`` (needs ``profile``) or ``size_bytes``."""
        if metric == "accuracy":
            return self.accuracy
        if metric == "latency_ms":
            return self.latency[profile].median_ms
        if metric == "size_bytes":
            return float(self.size_bytes)
        raise KeyError(f"unknown metric {metric!r}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["latency"] = {k: v.to_dict() for k, v in self.latency.items()}
        data["reference_latency"] = {k: v.to_dict() for k, v in self.reference_latency.items()}
        return data


@functools.lru_cache(maxsize=2)
def _teacher_state(teacher_dir: str) -> tuple[dict[str, torch.Tensor], int]:
    """The fine-tuned teacher's weights and layer count, read once per process (safetensors: no pickle)."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    folder = Path(teacher_dir)
    n_layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
    return load_file(folder / "model.safetensors"), n_layers


def evaluate_candidate(candidate: Candidate, ctx: TrialContext, seed: int = 0) -> TrialMetrics:
    """Build, distil, compress, measure and score one candidate.

    Args:
        candidate: The student to evaluate.
        ctx: Shared campaign state.
        seed: Seeds weight init, batch order and dropout.

    Returns:
        The trial's metrics; latency for every profile in ``ctx.profiles``.
    """
    import torch

    from nas.compress.prune import magnitude_prune_
    from nas.compress.quantize import fake_quantize_weights_
    from nas.compress.size import stored_size_bytes
    from nas.hardware.backends import measure_latency, measure_reference
    from nas.models.student import build_student
    from nas.train import accuracy, distil

    torch.set_num_threads(ctx.threads)
    torch.manual_seed(seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # build: inherit the fine-tuned teacher's weights where shapes allow
    teacher_state, teacher_layers = _teacher_state(ctx.teacher_dir)
    model = build_student(
        candidate, ctx.num_labels, teacher_state=teacher_state, teacher_layers=teacher_layers,
        max_positions=max(ctx.train.input_ids.shape[1], ctx.latency.seq_len),
    )

    # distil against the cached teacher logits
    settings = dataclasses.replace(ctx.train_settings, seed=seed)
    losses = distil(
        model, ctx.train, ctx.teacher_logits, settings,
        alpha=candidate.distill_alpha, temperature=candidate.distill_temperature,
    )
    timings["train_s"] = time.perf_counter() - t0

    # compress: magnitude pruning, then post-training fake quantization of the weights
    masks = magnitude_prune_(model, candidate.prune_rate) if candidate.prune_rate > 0 else {}
    if candidate.weight_bits < 32:
        fake_quantize_weights_(model, candidate.weight_bits)
    size = stored_size_bytes(model, weight_bits=candidate.weight_bits, masks=masks or None)
    pruned_total = sum(m.numel() for m in masks.values())
    sparsity = sum((m == 0).sum().item() for m in masks.values()) / pruned_total if pruned_total else 0.0

    # evaluate on the validation split (the test split stays held out for reports)
    t1 = time.perf_counter()
    val_accuracy = accuracy(model, ctx.validation)
    timings["eval_s"] = time.perf_counter() - t1

    # measure: compiled latency per profile, plus host reference backends
    t2 = time.perf_counter()
    example = (
        torch.ones(1, ctx.latency.seq_len, dtype=torch.long),
        torch.ones(1, ctx.latency.seq_len, dtype=torch.long),
    )
    latency = {p.name: measure_latency(model, example, p, ctx.latency) for p in ctx.profiles}
    reference = measure_reference(model, example, ctx.profiles, ctx.latency)
    timings["latency_s"] = time.perf_counter() - t2

    return TrialMetrics(
        accuracy=val_accuracy,
        latency=latency,
        reference_latency=reference,
        size_bytes=int(size.total_bytes),
        num_params=sum(p.numel() for p in model.parameters()),
        sparsity=sparsity,
        final_loss=losses[-1] if losses else float("nan"),
        timings_s=timings,
    )
