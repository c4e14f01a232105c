"""Structured pruning: remove whole attention heads or FFN neurons and rebuild the ``nn.Linear`` layers smaller.

Unlike unstructured masks (:mod:`nas.compress.prune`), this shrinks the FLOPs a compiled model runs.
Structured pruning finds its targets by attribute names shared by Hugging Face BERT and the lightnas
student (the *BERT layer protocol*):

* an attention block is a module with ``.self.query``, ``.self.key``, ``.self.value`` and
  ``.output.dense``, all ``nn.Linear``; the head size is ``.self.attention_head_size`` (or the
  ``head_size`` argument), and ``.self.num_attention_heads`` / ``.self.all_head_size`` are updated when
  present;
* a feed-forward block is a module with ``.intermediate.dense`` and ``.output.dense``, both ``nn.Linear``.

Blocks are numbered in ``named_modules()`` order, which is the layer order in both models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nas.compress.prune import check_rate
from nas.compress.taylor import accumulate_taylor
from nas.errors import NasUserError

if TYPE_CHECKING:
    LossFn = Callable[[nn.Module, Any], torch.Tensor]

STRUCTURED_SCOPES = ("per_layer", "global")
STRUCTURED_IMPORTANCE = ("magnitude", "taylor")


@dataclass
class _AttentionBlock:
    name: str
    module: nn.Module  # has .self (query/key/value) and .output.dense
    head_size: int

    @property
    def n_heads(self) -> int:
        return self.module.self.query.out_features // self.head_size


def _is_linear(module: nn.Module, *path: str) -> bool:
    for attr in path:
        module = getattr(module, attr, None)
        if module is None:
            return False
    return isinstance(module, nn.Linear)


def attention_blocks(model: nn.Module, head_size: int | None = None) -> list[_AttentionBlock]:
    """Attention blocks of a BERT-protocol model, in layer order (see the module docstring)."""
    blocks = []
    for name, module in model.named_modules():
        has_qkv = all(_is_linear(module, "self", proj) for proj in ("query", "key", "value"))
        if not (has_qkv and _is_linear(module, "output", "dense")):
            continue
        size = head_size or getattr(module.self, "attention_head_size", None)
        if not size:
            raise NasUserError(
                f"{name}.self has no attention_head_size attribute; pass head_size= to structured pruning."
            )
        blocks.append(_AttentionBlock(name, module, int(size)))
    return blocks


def ffn_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of each feed-forward block (``.intermediate.dense`` + ``.output.dense``)."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if _is_linear(module, "intermediate", "dense") and _is_linear(module, "output", "dense")
    ]


@torch.no_grad()
def _shrunk_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new ``nn.Linear`` holding only the ``keep`` output rows (dim 0) or input columns (dim 1)."""
    weight = linear.weight.index_select(dim, keep)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight.copy_(weight)
    if linear.bias is not None:
        # Removing input columns leaves every output, hence the whole bias.
        new.bias.copy_(linear.bias.index_select(0, keep) if dim == 0 else linear.bias)
    new.train(linear.training)
    new.weight.requires_grad_(linear.weight.requires_grad)
    return new


def _group_scores(
    model: nn.Module,
    groups: list[tuple[nn.Linear, list[nn.Linear], int]],
    importance: str,
    batches: Iterable[Any] | None,
    loss_fn: LossFn | None,
) -> list[torch.Tensor]:
    """Importance of each group (a head or a neuron) for each ``(out_proj, in_projs, group_size)``.

    ``magnitude``: squared L2 norm of every weight the group owns (rows of the input projections and
    columns of the output projection). ``taylor``: ``Σ_batches |Σ_group W_o ⊙ ∂L/∂W_o|`` over the group's
    columns of the output projection, which equals ``|∂L/∂ξ|`` for a gate ξ multiplying the group's
    output, the head importance of Michel et al. 2019 (https://arxiv.org/abs/1905.10650).
    """
    if importance not in STRUCTURED_IMPORTANCE:
        raise NasUserError(
            f"importance={importance!r} is not a structured importance; choose one of {', '.join(STRUCTURED_IMPORTANCE)}."
        )
    if importance == "magnitude":
        scores = []
        for out_proj, in_projs, size in groups:
            per_group = out_proj.weight.detach().float().pow(2).sum(0).view(-1, size).sum(1)
            for proj in in_projs:
                per_group = per_group + proj.weight.detach().float().pow(2).sum(1).view(-1, size).sum(1)
            scores.append(per_group)
        return scores
    if batches is None or loss_fn is None:
        raise NasUserError("importance='taylor' needs batches= and loss_fn=; pass both or use importance='magnitude'.")
    out_weights = [out_proj.weight for out_proj, _, _ in groups]
    sizes = [size for _, _, size in groups]
    sums = accumulate_taylor(model, batches, loss_fn, out_weights, lambda wg, i: wg.sum(0).view(-1, sizes[i]).sum(1).abs())
    # a weight no batch reached (no gradient) scores 0, like the untouched entries of the weight-level version
    return [s if torch.is_tensor(s) else torch.zeros(w.shape[1] // n) for s, w, n in zip(sums, out_weights, sizes)]


def head_importance(
    model: nn.Module,
    importance: str = "magnitude",
    *,
    batches: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    head_size: int | None = None,
) -> list[torch.Tensor]:
    """Importance of every attention head, one ``(n_heads,)`` tensor per attention block in layer order.

    Args:
        model: A BERT-protocol model (see the module docstring).
        importance: ``"magnitude"`` or ``"taylor"`` (needs ``batches`` and ``loss_fn``); see :func:`prune_heads_`.
        batches: Calibration batches for ``taylor``.
        loss_fn: ``loss_fn(model, batch)`` returning a scalar loss, for ``taylor``.
        head_size: Head size when the ``.self`` modules lack ``attention_head_size``.

    Returns:
        Non-negative scores; higher is more important.
    """
    groups = [
        (b.module.output.dense, [b.module.self.query, b.module.self.key, b.module.self.value], b.head_size)
        for b in attention_blocks(model, head_size)
    ]
    return _group_scores(model, groups, importance, batches, loss_fn)


def ffn_neuron_importance(
    model: nn.Module,
    importance: str = "magnitude",
    *,
    batches: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
) -> list[torch.Tensor]:
    """Importance of every FFN neuron, one ``(ffn_size,)`` tensor per feed-forward block in layer order."""
    groups = [(module.output.dense, [module.intermediate.dense], 1) for _, module in ffn_blocks(model)]
    return _group_scores(model, groups, importance, batches, loss_fn)


def _choose_lowest(scores: list[torch.Tensor], rate: float, scope: str) -> dict[int, list[int]]:
    """Groups to remove per block: ``round(rate · n)`` lowest, always keeping one group per block."""
    removed: dict[int, list[int]] = {}
    if scope == "per_layer":
        for block, score in enumerate(scores):
            k = min(round(rate * score.numel()), score.numel() - 1)
            removed[block] = sorted(torch.sort(score, stable=True).indices[:k].tolist())
        return removed
    flat = [(float(s), block, group) for block, score in enumerate(scores) for group, s in enumerate(score)]
    budget = round(rate * len(flat))
    left = [score.numel() for score in scores]
    for _, block, group in sorted(flat):  # ties: lower block, then lower group index first
        if budget == 0:
            break
        if left[block] > 1:
            removed.setdefault(block, []).append(group)
            left[block] -= 1
            budget -= 1
    return {block: sorted(removed.get(block, [])) for block in range(len(scores))}


def _check_structured_choice(
    to_remove: Mapping[int, Sequence[int]] | None, rate: float | None, what: str
) -> None:
    if (to_remove is None) == (rate is None):
        raise NasUserError(f"pass either {what}= or rate= to structured pruning, not both or neither.")


def _check_indices(to_remove: Mapping[int, Sequence[int]], counts: list[int], what: str) -> dict[int, list[int]]:
    cleaned = {}
    for block, indices in to_remove.items():
        if not isinstance(block, int) or not 0 <= block < len(counts):
            raise NasUserError(f"{what}: layer {block!r} does not exist; the model has layers 0..{len(counts) - 1}.")
        unique = sorted(set(int(i) for i in indices))
        if any(not 0 <= i < counts[block] for i in unique):
            raise NasUserError(f"{what}[{block}]={list(indices)} names an index outside 0..{counts[block] - 1}.")
        if len(unique) >= counts[block]:
            raise NasUserError(f"{what}[{block}] removes all {counts[block]} of the layer's units; keep at least one.")
        cleaned[block] = unique
    return cleaned


def _units_to_remove(model: nn.Module, explicit: Mapping[int, Sequence[int]] | None, what: str, counts: list[int],
                     groups: list, rate: float | None, importance: str, scope: str, batches: Iterable[Any] | None,
                     loss_fn: LossFn | None) -> dict[int, list[int]]:
    """The checked ``{block: [unit]}`` to remove: ``explicit``, or the least important ``rate`` share of ``groups``
    (``(consumer, producers, unit size)`` per block, :func:`_group_scores`); heads and neurons differ only there."""
    if rate is not None:
        rate = check_rate(rate)
        if scope not in STRUCTURED_SCOPES:
            raise NasUserError(f"scope={scope!r} is not a structured scope; choose one of {', '.join(STRUCTURED_SCOPES)}.")
        explicit = _choose_lowest(_group_scores(model, groups, importance, batches, loss_fn), rate, scope)
    return _check_indices(explicit, counts, what)


def _keep_index(n_groups: int, removed: Sequence[int], size: int, device: torch.device) -> torch.Tensor:
    """Flat indices of the rows/columns that survive when ``removed`` groups of ``size`` are dropped."""
    dropped = set(removed)
    kept_groups = [g for g in range(n_groups) if g not in dropped]
    return (torch.tensor(kept_groups, device=device)[:, None] * size + torch.arange(size, device=device)).flatten()


def prune_heads_(
    model: nn.Module,
    heads_to_remove: Mapping[int, Sequence[int]] | None = None,
    *,
    rate: float | None = None,
    importance: str = "magnitude",
    scope: str = "per_layer",
    batches: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    head_size: int | None = None,
) -> dict[int, list[int]]:
    """Remove attention heads, shrinking ``query``/``key``/``value`` rows and ``output.dense`` columns.

    Each removed head of size ``d`` in a layer of width ``H`` takes ``3·(H·d + d) + d·H`` parameters
    with it. The head-count attributes of the ``.self`` module are updated; a model config is not (it
    describes the unpruned architecture; per-layer head counts live in the weight shapes). Parameters
    are replaced, so build optimisers and unstructured masks after this call.

    Args:
        model: A BERT-protocol model (see the module docstring), pruned in place.
        heads_to_remove: ``{layer_index: [head, ...]}``, 0-based, in the current (already pruned)
            numbering. Exclusive with ``rate``.
        rate: Fraction of heads to remove, in [0, 1): ``round(rate · heads)`` per layer (``per_layer``) or
            over all layers (``global``). Every layer keeps at least one head.
        importance: ``"magnitude"`` or ``"taylor"`` (needs ``batches`` and ``loss_fn``); used with ``rate``.
        scope: ``"per_layer"`` or ``"global"``; used with ``rate``.
        batches: Calibration batches for ``taylor``.
        loss_fn: ``loss_fn(model, batch)`` returning a scalar loss, for ``taylor``.
        head_size: Head size when the ``.self`` modules lack ``attention_head_size``.

    Returns:
        The removed heads per layer index (``[]`` where none), in the numbering before this call.
    """
    _check_structured_choice(heads_to_remove, rate, "heads_to_remove")
    blocks = attention_blocks(model, head_size)
    counts = [block.n_heads for block in blocks]
    groups = [(b.module.output.dense, [b.module.self.query, b.module.self.key, b.module.self.value], b.head_size) for b in blocks]
    removed = _units_to_remove(model, heads_to_remove, "heads_to_remove", counts, groups, rate, importance, scope, batches, loss_fn)
    for index, block in enumerate(blocks):
        heads = removed.get(index, [])
        if not heads:
            continue
        attn = block.module.self
        keep = _keep_index(counts[index], heads, block.head_size, attn.query.weight.device)
        for proj in ("query", "key", "value"):
            setattr(attn, proj, _shrunk_linear(getattr(attn, proj), keep, dim=0))
        block.module.output.dense = _shrunk_linear(block.module.output.dense, keep, dim=1)
        n_left = counts[index] - len(heads)
        if hasattr(attn, "num_attention_heads"):
            attn.num_attention_heads = n_left
        if hasattr(attn, "all_head_size"):
            attn.all_head_size = n_left * block.head_size
    return {index: removed.get(index, []) for index in range(len(blocks))}


def prune_ffn_neurons_(
    model: nn.Module,
    neurons_to_remove: Mapping[int, Sequence[int]] | None = None,
    *,
    rate: float | None = None,
    importance: str = "magnitude",
    scope: str = "per_layer",
    batches: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
) -> dict[int, list[int]]:
    """Remove FFN neurons: rows of ``intermediate.dense``, columns of ``output.dense`` (and, through the
    block's ``keep_ffn_units_(keep)`` when it has one, any other per-neuron tensor). Parameters are
    replaced, so build optimisers and masks after this call.

    Args:
        model: A BERT-protocol model (see the module docstring), pruned in place.
        neurons_to_remove: ``{layer_index: [neuron, ...]}``, 0-based. Exclusive with ``rate``.
        rate: Fraction of neurons to remove, in [0, 1), per layer or globally (``scope``); every layer
            keeps at least one neuron.
        importance: ``"magnitude"`` or ``"taylor"`` (needs ``batches`` and ``loss_fn``).
        scope: ``"per_layer"`` or ``"global"``.
        batches: Calibration batches for ``taylor``.
        loss_fn: ``loss_fn(model, batch)`` returning a scalar loss, for ``taylor``.

    Returns:
        The removed neurons per layer index, in the numbering before this call.
    """
    _check_structured_choice(neurons_to_remove, rate, "neurons_to_remove")
    blocks = [module for _, module in ffn_blocks(model)]
    counts = [block.intermediate.dense.out_features for block in blocks]
    groups = [(b.output.dense, [b.intermediate.dense], 1) for b in blocks]
    removed = _units_to_remove(model, neurons_to_remove, "neurons_to_remove", counts, groups, rate, importance, scope, batches, loss_fn)
    for index, block in enumerate(blocks):
        if neurons := removed.get(index, []):
            keep = _keep_index(counts[index], neurons, 1, block.intermediate.dense.weight.device)
            block.intermediate.dense = _shrunk_linear(block.intermediate.dense, keep, dim=0)
            block.output.dense = _shrunk_linear(block.output.dense, keep, dim=1)
            getattr(block, "keep_ffn_units_", lambda keep: None)(keep)  # other per-neuron tensors (a depthwise conv)
    return {index: removed.get(index, []) for index in range(len(blocks))}
