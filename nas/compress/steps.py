"""The compression steps :func:`~nas.compress.pipeline.compress_model` runs, registered by name in :data:`STEPS`.

A :class:`~nas.compress.recipe.CompressionRecipe` becomes an ordered list of
:class:`~nas.compress.recipe.StepConfig` (``recipe.steps()``); each names a :class:`CompressionStep` here
and gives its arguments. Steps share one :class:`CompressionRun`: the model, the caller's calibration
batches and fine-tuning callback, and what earlier steps left (masks, removed units, activation hooks).
A step says what it needs of the caller (``needs_recover``, ``needs_batches``, ``needs_labels``) so that
the pipeline can refuse a bad call before any step changes the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.compress.prune import (
    apply_masks_,
    attention_blocks,
    cubic_sparsity_schedule,
    ffn_blocks,
    ffn_neuron_importance,
    head_importance,
    masks_from_scores,
    prunable_weights,
    prune_ffn_neurons_,
    prune_heads_,
    taylor_importance,
)
from nas.compress.quantize import (
    calibrate_activations,
    convert_qat_,
    fake_quantize_activations_,
    fake_quantize_weights_,
    prepare_qat_,
)
from nas.registry import Registry

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    RecoverFn = Callable[[nn.Module, int, dict[str, torch.Tensor]], Any]
    LossFn = Callable[[nn.Module, Any], torch.Tensor]

_LAYER_INDEX = re.compile(r"encoder\.layer\.(\d+)(\.|$)")


def run_logits(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Logits of ``model`` on a calibration batch (a lightnas student returns a tensor, Hugging Face ``.logits``)."""
    output = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
    return output if isinstance(output, torch.Tensor) else output.logits


def cross_entropy_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The default Taylor-importance loss: cross-entropy on ``batch["labels"]``."""
    return F.cross_entropy(run_logits(model, batch), batch["labels"])


def layer_index(module_name: str, fallback: int) -> int:
    """Encoder layer index in a module name (``encoder.layer.3.…`` → 3), else ``fallback``."""
    match = _LAYER_INDEX.search(module_name)
    return int(match.group(1)) if match else fallback


@dataclass
class CompressionRun:
    """What the steps of one :func:`~nas.compress.pipeline.compress_model` call share (see its arguments).

    ``describe_shapes(model)`` makes ``model.config`` describe pruned shapes; the fields after it are what
    steps did, read back into the :class:`~nas.compress.pipeline.CompressionOutcome`.
    """

    model: nn.Module
    batches: Sequence[Mapping[str, torch.Tensor]]
    recover: RecoverFn | None
    recovery_steps: int
    prune_stages: int
    loss_fn: LossFn
    act_calibration: str
    describe_shapes: Callable[[nn.Module], None]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    removed_heads: dict[int, list[int]] = field(default_factory=dict)
    removed_neurons: dict[int, list[int]] = field(default_factory=dict)
    spent_steps: int = 0
    activation_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    activation_hooks: list[RemovableHandle] = field(default_factory=list)

    def fine_tune(self, steps: int) -> None:
        """Hand ``steps`` optimiser steps to the caller's ``recover``, keeping the current masks."""
        self.recover(self.model, steps, self.masks)
        self.spent_steps += steps


class CompressionStep:
    """One registered step. ``stage`` names the ``timings_s`` entry (``<stage>_s``) its wall time adds to."""

    stage = "quantize"

    def needs_recover(self, params: dict[str, Any], recovery_steps: int) -> bool:
        """True when the step calls ``recover`` (so the call must pass one)."""
        return False

    def needs_batches(self, params: dict[str, Any]) -> bool:
        """True when the step runs calibration batches."""
        return False

    def needs_labels(self, params: dict[str, Any]) -> bool:
        """True when the step's default loss reads ``labels`` from the batches."""
        return False

    def apply(self, run: CompressionRun, **params: Any) -> None:
        raise NotImplementedError


STEPS: Registry[type[CompressionStep]] = Registry("compression step")


class _Pruning(CompressionStep):
    """Shared by the pruning steps: one-shot, or ``prune_stages`` cubic-schedule stages each followed by recovery."""

    stage = "prune"

    def needs_recover(self, params, recovery_steps):
        return recovery_steps > 0

    def needs_batches(self, params):
        return params["method"] == "taylor"

    def needs_labels(self, params):
        return params["method"] == "taylor"

    @staticmethod
    def schedule(run: CompressionRun, rate: float, gradual: bool, prune_to: Callable[[float], None]) -> None:
        """Call ``prune_to(target)`` per stage, splitting ``run.recovery_steps`` evenly over the stages."""
        stages = run.prune_stages if gradual else 1
        steps_per_stage = [run.recovery_steps // stages + (i < run.recovery_steps % stages) for i in range(stages)]
        for stage in range(1, stages + 1):
            prune_to(cubic_sparsity_schedule(stage, stages, 0.0, rate))
            if steps_per_stage[stage - 1]:
                run.fine_tune(steps_per_stage[stage - 1])
                apply_masks_(run.model, run.masks)  # whatever the callback did, pruned weights end at exactly zero


@STEPS.register("prune-unstructured")
class PruneUnstructured(_Pruning):
    """Zero exactly ``round(rate · numel)`` weights per tensor (masks only grow across stages)."""

    def apply(self, run, *, rate, method, gradual):
        def prune_to(target: float) -> None:
            run.masks = _prune_unstructured(run.model, target, method, run.masks, run.batches, run.loss_fn)

        self.schedule(run, rate, gradual, prune_to)


@STEPS.register("prune-structured")
class PruneStructured(_Pruning):
    """Remove attention heads and/or FFN neurons, ``round(rate · original count)`` per layer; updates the config."""

    def apply(self, run, *, rate, method, gradual, heads, neurons):
        tracker = _StructureTracker(run.model)
        kwargs = {"batches": run.batches, "loss_fn": run.loss_fn} if method == "taylor" else {}

        def prune_to(target: float) -> None:
            if heads:
                scores = head_importance(run.model, method, **kwargs)
                prune_heads_(run.model, tracker.lowest(scores, tracker.heads_alive, tracker.removed_heads, tracker.head_layers, target))
            if neurons:
                scores = ffn_neuron_importance(run.model, method, **kwargs)
                prune_ffn_neurons_(run.model, tracker.lowest(scores, tracker.neurons_alive, tracker.removed_neurons, tracker.ffn_layers, target))

        self.schedule(run, rate, gradual, prune_to)
        run.removed_heads, run.removed_neurons = tracker.removed_heads, tracker.removed_neurons
        run.describe_shapes(run.model)


@STEPS.register("quantize-qat")
class QuantizeQAT(CompressionStep):
    """Quantization-aware fine-tuning of every ``nn.Linear`` (straight-through), then conversion; tables get PTQ."""

    def needs_recover(self, params, recovery_steps):
        return True

    def apply(self, run, *, bits, embedding_bits, scheme, act_bits, steps):
        prepare_qat_(run.model, bits, scheme=scheme, per_channel=True, act_bits=act_bits)
        run.fine_tune(steps)
        convert_qat_(run.model)
        if embedding_bits < 32:  # QAT wraps nn.Linear only; the tables get post-training codes
            fake_quantize_weights_(run.model, embedding_bits, scheme=scheme, include=_is_embedding)
        apply_masks_(run.model, run.masks)  # asymmetric codes move a pruned 0 by up to half a step


@STEPS.register("quantize-ptq")
class QuantizePTQ(CompressionStep):
    """Post-training fake quantization of the weights, per output channel."""

    def apply(self, run, *, bits, scheme):
        fake_quantize_weights_(run.model, bits, scheme=scheme, per_channel=True)
        apply_masks_(run.model, run.masks)  # asymmetric codes move a pruned 0 by up to half a step; sparse storage keeps it 0


@STEPS.register("quantize-activations")
class QuantizeActivations(CompressionStep):
    """Calibrate the inputs of every ``nn.Linear`` on the batches and fake-quantize them with pre-hooks."""

    def needs_batches(self, params):
        return True

    def apply(self, run, *, bits):
        run.activation_ranges = calibrate_activations(run.model, run.batches, mode=run.act_calibration, run=run_logits)
        run.activation_hooks = fake_quantize_activations_(run.model, run.activation_ranges, bits)


def _is_embedding(module_name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Embedding)


def _prune_unstructured(
    model: nn.Module,
    rate: float,
    method: str,
    previous: Mapping[str, torch.Tensor],
    batches: Sequence[Any],
    loss_fn: LossFn,
) -> dict[str, torch.Tensor]:
    """Masks with exactly ``round(rate · numel)`` zeros per tensor, containing every earlier pruned weight."""
    if method == "taylor":
        scores = taylor_importance(model, batches, loss_fn)
    else:
        scores = {name: w.detach().abs().float() for name, w in prunable_weights(model).items()}
    # Importance is ≥ 0, so -1 ranks weights pruned at an earlier step first: the masks only ever grow.
    scores = {name: torch.where(previous[name], s, -1.0) if name in previous else s for name, s in scores.items()}
    masks = masks_from_scores(scores, rate, scope="per_tensor")
    apply_masks_(model, masks)
    return masks


class _StructureTracker:
    """Original head/neuron indices still alive per block, so removals across stages report original numbers."""

    def __init__(self, model: nn.Module) -> None:
        self.head_layers = [layer_index(b.name, i) for i, b in enumerate(attention_blocks(model))]
        self.ffn_layers = [layer_index(name, i) for i, (name, _) in enumerate(ffn_blocks(model))]
        self.heads_alive = [list(range(b.n_heads)) for b in attention_blocks(model)]
        self.neurons_alive = [list(range(m.intermediate.dense.out_features)) for _, m in ffn_blocks(model)]
        self.removed_heads: dict[int, list[int]] = {layer: [] for layer in self.head_layers}
        self.removed_neurons: dict[int, list[int]] = {layer: [] for layer in self.ffn_layers}

    @staticmethod
    def lowest(
        scores: list[torch.Tensor], alive: list[list[int]], removed: dict[int, list[int]], layers: list[int], rate: float
    ) -> dict[int, list[int]]:
        """Current indices to drop per block, updating ``alive`` and ``removed`` (original numbering) in place."""
        chosen = {}
        for block, (score, units, layer) in enumerate(zip(scores, alive, layers)):
            n_original = len(units) + len(removed[layer])
            target = min(round(rate * n_original), n_original - 1)  # every layer keeps at least one unit
            k = max(target - len(removed[layer]), 0)
            drop = sorted(torch.sort(score, stable=True).indices[:k].tolist())
            chosen[block] = drop
            removed[layer].extend(units[i] for i in drop)
            removed[layer].sort()
            alive[block] = [u for i, u in enumerate(units) if i not in set(drop)]
        return chosen
