"""Apply a whole :class:`~nas.compress.recipe.CompressionRecipe` to a trained model.

:func:`compress_model` runs ``recipe.steps()`` (registered in :mod:`nas.compress.steps`) in the order a
deployment would: prune (one-shot, or gradually on a cubic schedule with recovery fine-tuning between
steps), quantize the weights (post-training, or quantization-aware fine-tuning with straight-through fake
quantization and then conversion), calibrate and fake-quantize the activations; then it accounts the stored
bytes. Fine-tuning is the caller's: it passes
``recover(model, steps, masks)``, which trains ``model`` in place for ``steps`` optimiser steps and keeps the
masked weights at zero (``nas.train.distil(..., masks=masks)`` does exactly that). This module knows nothing
of Optuna, Ray or MLflow.

A calibration batch is a mapping with ``input_ids`` and ``attention_mask`` (int64 ``(B, L)``) and, for
Taylor importance with the default loss, ``labels`` (int64 ``(B,)``). Models may return a logits tensor (the
lightnas student) or an object with ``.logits`` (Hugging Face).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nas.compress.prune import attention_blocks, ffn_blocks, prunable_weights
from nas.compress.quantize import quantizable_modules, resolve_bits
from nas.compress.recipe import CompressionRecipe
from nas.compress.size import SizeReport, stored_size_bytes
from nas.compress.steps import STEPS, CompressionRun, CompressionStep, cross_entropy_loss
from nas.compress.steps import layer_index as _layer_index
from nas.errors import NasUserError

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    RecoverFn = Callable[[nn.Module, int, dict[str, torch.Tensor]], Any]
    LossFn = Callable[[nn.Module, Any], torch.Tensor]



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
    steps = [(STEPS.get(step.name)(), step.params) for step in recipe.steps()]
    _check_arguments(recipe, steps, calibration_batches, recover, recovery_steps, prune_stages, loss_fn)
    total_before = sum(w.numel() for w in prunable_weights(model).values())
    run = CompressionRun(model, calibration_batches, recover, recovery_steps, prune_stages, loss_fn or cross_entropy_loss,
                         act_calibration, describe_shapes=_update_config)
    timings = {"prune_s": 0.0, "quantize_s": 0.0}
    for step, params in steps:
        start = time.perf_counter()
        step.apply(run, **params)
        timings[f"{step.stage}_s"] = timings.get(f"{step.stage}_s", 0.0) + time.perf_counter() - start
    return _outcome(model, recipe, run, total_before, timings)


def _outcome(model: nn.Module, recipe: CompressionRecipe, run: CompressionRun, total_before: int,
             timings: dict[str, float]) -> CompressionOutcome:
    """What the steps did (from ``run``) and what the result costs to store."""
    size, is_sparse = _stored_size(model, recipe, run.masks)
    bits = recipe.weight_bits_spec()
    kept = sum(int(run.masks[n].sum()) if n in run.masks else w.numel() for n, w in prunable_weights(model).items())
    return CompressionOutcome(
        recipe=recipe,
        masks=run.masks,
        sparsity=1.0 - kept / total_before if total_before else 0.0,
        removed_heads=run.removed_heads,
        removed_neurons=run.removed_neurons,
        layer_shapes=_layer_shapes(model),
        bits_by_layer={name: resolve_bits(name, bits) or 32 for name in quantizable_modules(model)},
        size=size,
        is_stored_sparse=is_sparse,
        activation_ranges=run.activation_ranges,
        activation_hooks=run.activation_hooks,
        recovery_steps=run.spent_steps,
        timings_s=timings,
    )


def _stored_size(model: nn.Module, recipe: CompressionRecipe, masks: dict[str, torch.Tensor]) -> tuple[SizeReport, bool]:
    """The smaller of dense and sparse storage, as a serialiser would choose, and whether it is the sparse one."""
    bits = recipe.weight_bits_spec()
    size = stored_size_bytes(model, weight_bits=bits, scheme=recipe.quant_scheme, per_channel=True)
    if masks:
        sparse = stored_size_bytes(model, weight_bits=bits, masks=masks, scheme=recipe.quant_scheme, per_channel=True, store_sparse=True)
        if sparse.total_bytes < size.total_bytes:
            return sparse, True
    return size, False


def _check_arguments(
    recipe: CompressionRecipe,
    steps: list[tuple[CompressionStep, dict[str, Any]]],
    calibration_batches: Sequence[Any],
    recover: RecoverFn | None,
    recovery_steps: int,
    prune_stages: int,
    loss_fn: LossFn | None,
) -> None:
    """Refuse a call the recipe's steps cannot run, before any of them changes the model."""
    if recovery_steps < 0:
        raise NasUserError(f"recovery_steps={recovery_steps!r} is negative; use 0 (no recovery) or more.")
    if prune_stages < 1:
        raise NasUserError(f"prune_stages={prune_stages!r} is too few; gradual pruning needs prune_stages ≥ 1.")
    if recover is None and any(step.needs_recover(params, recovery_steps) for step, params in steps):
        raise NasUserError(
            f"recipe {recipe.key} fine-tunes (recovery_steps={recovery_steps}, qat_steps={recipe.qat_steps}) but "
            "recover= is None; pass recover(model, steps, masks) or set both budgets to 0."
        )
    if not calibration_batches and any(step.needs_batches(params) for step, params in steps):
        raise NasUserError(
            f"recipe {recipe.key} needs calibration_batches (Taylor importance or activation ranges); pass at least one batch."
        )
    if loss_fn is None and any(step.needs_labels(params) for step, params in steps) and "labels" not in calibration_batches[0]:
        raise NasUserError("Taylor pruning with the default loss needs 'labels' in each calibration batch; add them or pass loss_fn=.")


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
