"""Apply a whole :class:`~nas.compress.recipe.CompressionRecipe` to a trained model.

:func:`compress_model` runs the recipe in the order a deployment would: prune (one-shot, or gradually on a
cubic schedule with recovery fine-tuning between steps), quantize the weights (post-training, or
quantization-aware fine-tuning with straight-through fake quantization and then conversion), calibrate and
fake-quantize the activations, and account the stored bytes. Fine-tuning is the caller's: it passes
``recover(model, steps, masks)``, which trains ``model`` in place for ``steps`` optimiser steps and keeps the
masked weights at zero (``nas.train.distil(..., masks=masks)`` does exactly that). This module knows nothing
of Optuna, Ray or MLflow.

A calibration batch is a mapping with ``input_ids`` and ``attention_mask`` (int64 ``(B, L)``) and, for
Taylor importance with the default loss, ``labels`` (int64 ``(B,)``). Models may return a logits tensor (the
lightnas student) or an object with ``.logits`` (Hugging Face).
"""

from __future__ import annotations

import re
import time
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
    INT_BITS,
    calibrate_activations,
    convert_qat_,
    fake_quantize_activations_,
    fake_quantize_weights_,
    prepare_qat_,
    quantizable_modules,
    resolve_bits,
)
from nas.compress.recipe import CompressionRecipe
from nas.compress.size import SizeReport, stored_size_bytes
from nas.errors import NasUserError

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    RecoverFn = Callable[[nn.Module, int, dict[str, torch.Tensor]], Any]
    LossFn = Callable[[nn.Module, Any], torch.Tensor]

_LAYER_INDEX = re.compile(r"encoder\.layer\.(\d+)(\.|$)")


@dataclass
class CompressionOutcome:
    """What :func:`compress_model` did and what the compressed model costs.

    Args:
        recipe: The recipe applied.
        masks: Boolean keep-masks of unstructured pruning by parameter name (empty for structured or none);
            re-apply with :func:`~nas.compress.prune.apply_masks_` after any further training step.
        sparsity: Share of the encoder's prunable weights removed (structured) or zeroed (unstructured),
            relative to the model before compression, in [0, 1).
        removed_heads: Attention heads removed per encoder layer index, in the original numbering.
        removed_neurons: FFN neurons removed per encoder layer index, in the original numbering.
        layer_shapes: Per encoder layer index after pruning: ``heads``, ``head_size``, ``ffn_size`` (where
            the layer has them).
        bits_by_layer: Weight bit width per quantizable module name (32 = float32, 16 = float16).
        size: Stored bytes (:class:`~nas.compress.size.SizeReport`), for the size objective and flash limits.
        is_stored_sparse: True when ``size`` uses the sparse format (kept values + 1-bit bitmap), chosen
            because it is smaller than dense storage.
        activation_ranges: Calibrated input range per ``nn.Linear`` (empty when activations stay float).
        activation_hooks: Pre-hooks that fake-quantize those inputs; ``.remove()`` each to undo.
        recovery_steps: Fine-tuning steps handed to ``recover`` (pruning recovery and QAT together).
        timings_s: Wall seconds per stage (``prune_s``, ``quantize_s``, including recovery).
    """

    recipe: CompressionRecipe
    masks: dict[str, torch.Tensor]
    sparsity: float
    removed_heads: dict[int, list[int]]
    removed_neurons: dict[int, list[int]]
    layer_shapes: dict[int, dict[str, int]]
    bits_by_layer: dict[str, int]
    size: SizeReport
    is_stored_sparse: bool
    activation_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    activation_hooks: list[RemovableHandle] = field(default_factory=list)
    recovery_steps: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        """Stored bytes of the compressed model."""
        return int(self.size.total_bytes)


def compress_model(
    model: nn.Module,
    recipe: CompressionRecipe,
    *,
    calibration_batches: Sequence[Mapping[str, torch.Tensor]],
    recover: RecoverFn | None = None,
    recovery_steps: int = 0,
    prune_stages: int = 4,
    loss_fn: LossFn | None = None,
    act_calibration: str = "percentile",
) -> CompressionOutcome:
    """Prune, quantize and size ``model`` in place as ``recipe`` says.

    Args:
        model: A trained BERT-protocol model (the lightnas student or a Hugging Face BERT); changed in place.
            Structured pruning replaces its ``nn.Linear`` layers and updates ``model.config``.
        recipe: What to do; ``CompressionRecipe()`` leaves the model unchanged.
        calibration_batches: A few batches (see the module docstring) for Taylor importance and activation
            ranges; at least one when the recipe needs them.
        recover: ``recover(model, steps, masks)`` fine-tunes in place for ``steps`` optimiser steps keeping
            ``masks`` applied (for QAT the model holds :class:`~nas.compress.quantize.QATLinear` layers).
            Required when ``recovery_steps`` or ``recipe.qat_steps`` is > 0.
        recovery_steps: Fine-tuning steps after pruning, in total: one call after one-shot pruning, split
            evenly after each of the ``prune_stages`` steps of gradual pruning; ≥ 0.
        prune_stages: Pruning steps of the ``gradual`` schedule, sparsity following
            :func:`~nas.compress.prune.cubic_sparsity_schedule` up to ``recipe.prune_rate``; ≥ 1.
        loss_fn: ``loss_fn(model, batch)`` for Taylor importance; default cross-entropy on ``batch["labels"]``.
        act_calibration: ``"minmax"`` or ``"percentile"`` (99.99th) activation ranges.

    Returns:
        A :class:`CompressionOutcome`.

    Raises:
        NasUserError: A fine-tuning budget without ``recover``, no calibration batches where needed,
            negative steps, or a model without the layers the recipe prunes.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
        ...     num_attention_heads=4, intermediate_size=64)).eval()
        >>> batch = {"input_ids": torch.ones(2, 8, dtype=torch.long), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
        >>> out = compress_model(bert, CompressionRecipe(prune_structure="heads", prune_rate=0.5, weight_bits=8),
        ...     calibration_batches=[batch])
        >>> out.layer_shapes[0]["heads"], out.bits_by_layer["bert.encoder.layer.0.attention.self.query"]
        (2, 8)
    """
    _check_arguments(recipe, calibration_batches, recover, recovery_steps, prune_stages, loss_fn)
    loss_fn = loss_fn or _cross_entropy
    timings: dict[str, float] = {}
    total_before = sum(w.numel() for w in prunable_weights(model).values())

    # prune: exact share of weights, heads or neurons; gradual steps each followed by recovery fine-tuning
    start = time.perf_counter()
    masks: dict[str, torch.Tensor] = {}
    removed_heads: dict[int, list[int]] = {}
    removed_neurons: dict[int, list[int]] = {}
    spent_steps = 0
    if recipe.prune_rate > 0:
        stages = prune_stages if recipe.prune_schedule == "gradual" else 1
        steps_per_stage = [recovery_steps // stages + (i < recovery_steps % stages) for i in range(stages)]
        is_structured = recipe.prune_structure != "unstructured"
        tracker = _StructureTracker(model) if is_structured else None
        for stage in range(1, stages + 1):
            target = cubic_sparsity_schedule(stage, stages, 0.0, recipe.prune_rate)
            if is_structured:
                _prune_structured(model, target, recipe, tracker, calibration_batches, loss_fn)
            else:
                masks = _prune_unstructured(model, target, recipe.prune_method, masks, calibration_batches, loss_fn)
            if steps_per_stage[stage - 1]:
                recover(model, steps_per_stage[stage - 1], masks)
                spent_steps += steps_per_stage[stage - 1]
                apply_masks_(model, masks)  # whatever the callback did, pruned weights end at exactly zero
        if is_structured:
            removed_heads, removed_neurons = tracker.removed_heads, tracker.removed_neurons
            _update_config(model)
    timings["prune_s"] = time.perf_counter() - start

    # quantize: weights (QAT when asked and the weights get integer codes, else PTQ), then activations
    start = time.perf_counter()
    bits = _bits_spec(recipe)
    if recipe.qat_steps > 0 and recipe.weight_bits in INT_BITS:
        prepare_qat_(
            model, recipe.weight_bits, scheme=recipe.quant_scheme, per_channel=True,
            act_bits=recipe.act_bits if recipe.act_bits in INT_BITS else None,
        )
        recover(model, recipe.qat_steps, masks)
        spent_steps += recipe.qat_steps
        convert_qat_(model)
        embedding_bits = resolve_bits("embeddings", bits)
        if embedding_bits < 32:  # QAT wraps nn.Linear only; the tables get post-training codes
            fake_quantize_weights_(model, embedding_bits, scheme=recipe.quant_scheme, include=_is_embedding)
    elif recipe.weight_bits < 32 or (recipe.embedding_bits or 32) < 32:
        fake_quantize_weights_(model, bits, scheme=recipe.quant_scheme, per_channel=True)
    apply_masks_(model, masks)  # asymmetric codes move a pruned 0 by up to half a step; sparse storage keeps it 0
    ranges: dict[str, tuple[float, float]] = {}
    hooks: list[RemovableHandle] = []
    if recipe.act_bits < 32:
        ranges = calibrate_activations(model, calibration_batches, mode=act_calibration, run=_run_batch)
        hooks = fake_quantize_activations_(model, ranges, recipe.act_bits)
    timings["quantize_s"] = time.perf_counter() - start

    # size: the smaller of dense and sparse storage, as a serialiser would choose
    size = stored_size_bytes(model, weight_bits=bits, scheme=recipe.quant_scheme, per_channel=True)
    is_sparse = False
    if masks:
        sparse = stored_size_bytes(model, weight_bits=bits, masks=masks, scheme=recipe.quant_scheme, per_channel=True, store_sparse=True)
        if sparse.total_bytes < size.total_bytes:
            size, is_sparse = sparse, True
    kept = sum(int(masks[n].sum()) if n in masks else w.numel() for n, w in prunable_weights(model).items())
    return CompressionOutcome(
        recipe=recipe,
        masks=masks,
        sparsity=1.0 - kept / total_before if total_before else 0.0,
        removed_heads=removed_heads,
        removed_neurons=removed_neurons,
        layer_shapes=_layer_shapes(model),
        bits_by_layer={name: resolve_bits(name, bits) or 32 for name in quantizable_modules(model)},
        size=size,
        is_stored_sparse=is_sparse,
        activation_ranges=ranges,
        activation_hooks=hooks,
        recovery_steps=spent_steps,
        timings_s=timings,
    )


def _check_arguments(
    recipe: CompressionRecipe,
    calibration_batches: Sequence[Any],
    recover: RecoverFn | None,
    recovery_steps: int,
    prune_stages: int,
    loss_fn: LossFn | None,
) -> None:
    if recovery_steps < 0:
        raise NasUserError(f"recovery_steps={recovery_steps!r} is negative; use 0 (no recovery) or more.")
    if prune_stages < 1:
        raise NasUserError(f"prune_stages={prune_stages!r} is too few; gradual pruning needs prune_stages ≥ 1.")
    pruning = recipe.prune_rate > 0
    needs_recover = (pruning and recovery_steps > 0) or (recipe.qat_steps > 0 and recipe.weight_bits in INT_BITS)
    if needs_recover and recover is None:
        raise NasUserError(
            f"recipe {recipe.key} fine-tunes (recovery_steps={recovery_steps}, qat_steps={recipe.qat_steps}) but "
            "recover= is None; pass recover(model, steps, masks) or set both budgets to 0."
        )
    needs_batches = (pruning and recipe.prune_method == "taylor") or recipe.act_bits < 32
    if needs_batches and not calibration_batches:
        raise NasUserError(
            f"recipe {recipe.key} needs calibration_batches (Taylor importance or activation ranges); pass at least one batch."
        )
    if pruning and recipe.prune_method == "taylor" and loss_fn is None and "labels" not in calibration_batches[0]:
        raise NasUserError("Taylor pruning with the default loss needs 'labels' in each calibration batch; add them or pass loss_fn=.")


# ----------------------------------------------------------------------------------------------------------
# Batches


def _logits(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


def _run_batch(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return _logits(model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")))


def _cross_entropy(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(_run_batch(model, batch), batch["labels"])


def _is_embedding(module_name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Embedding)


def _bits_spec(recipe: CompressionRecipe) -> int | dict[str, int]:
    """``weight_bits`` everywhere, or a per-layer mapping when the embedding tables get their own width."""
    if recipe.embedding_bits is None or recipe.embedding_bits == recipe.weight_bits:
        return recipe.weight_bits
    return {"embeddings": recipe.embedding_bits, "default": recipe.weight_bits}


# ----------------------------------------------------------------------------------------------------------
# Pruning steps


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
    """Original head/neuron indices still alive per block, so removals across steps report original numbers."""

    def __init__(self, model: nn.Module) -> None:
        self.head_layers = [_layer_index(b.name, i) for i, b in enumerate(attention_blocks(model))]
        self.ffn_layers = [_layer_index(name, i) for i, (name, _) in enumerate(ffn_blocks(model))]
        self.heads_alive = [list(range(b.n_heads)) for b in attention_blocks(model)]
        self.neurons_alive = [list(range(m.intermediate.dense.out_features)) for _, m in ffn_blocks(model)]
        self.removed_heads: dict[int, list[int]] = {layer: [] for layer in self.head_layers}
        self.removed_neurons: dict[int, list[int]] = {layer: [] for layer in self.ffn_layers}


def _prune_structured(
    model: nn.Module,
    rate: float,
    recipe: CompressionRecipe,
    tracker: _StructureTracker,
    batches: Sequence[Any],
    loss_fn: LossFn,
) -> None:
    """Remove heads and/or neurons until each layer has lost ``round(rate · original count)`` of them."""
    kwargs = {"batches": batches, "loss_fn": loss_fn} if recipe.prune_method == "taylor" else {}
    if recipe.prune_structure in ("heads", "heads+neurons"):
        scores = head_importance(model, recipe.prune_method, **kwargs)
        chosen = _lowest_per_block(scores, tracker.heads_alive, tracker.removed_heads, tracker.head_layers, rate)
        prune_heads_(model, chosen)
    if recipe.prune_structure in ("neurons", "heads+neurons"):
        scores = ffn_neuron_importance(model, recipe.prune_method, **kwargs)
        chosen = _lowest_per_block(scores, tracker.neurons_alive, tracker.removed_neurons, tracker.ffn_layers, rate)
        prune_ffn_neurons_(model, chosen)


def _lowest_per_block(
    scores: list[torch.Tensor],
    alive: list[list[int]],
    removed: dict[int, list[int]],
    layers: list[int],
    rate: float,
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


def _layer_index(module_name: str, fallback: int) -> int:
    match = _LAYER_INDEX.search(module_name)
    return int(match.group(1)) if match else fallback


def _layer_shapes(model: nn.Module) -> dict[int, dict[str, int]]:
    shapes: dict[int, dict[str, int]] = {}
    for i, block in enumerate(attention_blocks(model)):
        shapes.setdefault(_layer_index(block.name, i), {}).update(heads=block.n_heads, head_size=block.head_size)
    ffn_sizes: dict[int, set[int]] = {}
    for i, (name, module) in enumerate(ffn_blocks(model)):
        ffn_sizes.setdefault(_layer_index(name, i), set()).add(module.intermediate.dense.out_features)
    for layer, sizes in ffn_sizes.items():  # a bottleneck's stacked FFNs may be pruned to different sizes
        shapes.setdefault(layer, {})["ffn_size"] = max(sizes)
    return shapes


def _update_config(model: nn.Module) -> None:
    """Make ``model.config`` describe the pruned shapes, so the model can be rebuilt and exported from it.

    A lightnas student's ``config.architecture`` (the truth it is built from) gets each pruned layer's
    shape, as its block type's ``pruned_settings`` maps it (a transformer's heads, head_size and ffn_size). The Hugging Face summary fields
    ``num_attention_heads``, ``attention_head_size`` and ``intermediate_size`` are set when all layers
    agree, and the per-layer shapes are also stored as ``pruned_layer_shapes``.
    """
    config = getattr(model, "config", None)
    if config is None:
        return
    shapes = _layer_shapes(model)
    config.pruned_layer_shapes = {str(layer): dict(shape) for layer, shape in shapes.items()}
    # every FFN's own width: the student shrinks these modules when it is rebuilt from its config
    config.pruned_ffn_sizes = {name: module.intermediate.dense.out_features for name, module in ffn_blocks(model)}
    for key, config_name in (("heads", "num_attention_heads"), ("ffn_size", "intermediate_size"), ("head_size", "attention_head_size")):
        values = {shape[key] for shape in shapes.values() if key in shape}
        if len(values) == 1:
            setattr(config, config_name, values.pop())
    architecture = getattr(config, "architecture", None)
    blocks = getattr(getattr(getattr(model, "bert", None), "encoder", None), "layer", None)
    if isinstance(architecture, dict) and isinstance(architecture.get("layers"), list) and blocks is not None:
        layers = architecture["layers"]
        for layer, shape in shapes.items():
            if layer < len(layers) and hasattr(blocks[layer], "pruned_settings"):  # the block type says what changed
                layers[layer] = blocks[layer].pruned_settings(layers[layer], shape)
