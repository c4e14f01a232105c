"""Pruning: unstructured (magnitude, Taylor) weight masks and structured head / FFN-neuron removal.

Unstructured pruning zeroes single weights and keeps every matrix its shape, so a dense kernel (and the
compiled latency TVM measures) does not change; it only pays off in stored size (``store_sparse``) or on
sparse kernels. Structured pruning removes whole attention heads or FFN neurons and rebuilds the
``nn.Linear`` layers smaller, which does shrink the FLOPs a compiled model runs.

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

from nas.errors import NasUserError

if TYPE_CHECKING:
    Include = Callable[[str, nn.Module], bool]
    LossFn = Callable[[nn.Module, Any], torch.Tensor]

SCOPES = ("per_tensor", "global")
STRUCTURED_SCOPES = ("per_layer", "global")
STRUCTURED_IMPORTANCE = ("magnitude", "taylor")


# ----------------------------------------------------------------------------------------------------------
# Arguments and targets


def check_rate(rate: float, name: str = "rate") -> float:
    """Return ``rate`` as a float, or raise :class:`NasUserError` unless ``0 ≤ rate < 1``."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
        raise NasUserError(f"{name}={rate!r} is not a pruning rate; choose a fraction in [0, 1), e.g. 0.5.")
    return float(rate)


def default_prunable(module_name: str, module: nn.Module) -> bool:
    """Encoder ``nn.Linear`` layers: the default target of unstructured pruning.

    Embeddings, the pooler and the classifier are left dense: they are a small share of the weights in an
    encoder and pruning the classifier costs accuracy out of proportion (Gordon et al. 2020,
    https://arxiv.org/abs/2002.08307).
    """
    return isinstance(module, nn.Linear) and "encoder.layer." in f"{module_name}."


def prunable_weights(model: nn.Module, include: Include | None = None) -> dict[str, nn.Parameter]:
    """The ``weight`` parameters of the modules ``include(name, module)`` selects, keyed by parameter name."""
    include = include or default_prunable
    weights: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and include(module_name, module):
            weights[f"{module_name}.weight" if module_name else "weight"] = weight
    return weights


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise NasUserError(f"scope={scope!r} is not a pruning scope; choose one of {', '.join(SCOPES)}.")


# ----------------------------------------------------------------------------------------------------------
# Unstructured pruning


def _lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask of ``scores``' shape with exactly its ``k`` lowest entries False.

    A stable sort breaks ties by flat index (the earlier element is pruned first), so the result is
    deterministic even for all-equal scores.
    """
    flat = scores.detach().flatten()
    keep = torch.ones_like(flat, dtype=torch.bool)
    if k > 0:
        order = torch.sort(flat.float(), stable=True).indices
        keep[order[:k]] = False
    return keep.view_as(scores)


def masks_from_scores(
    scores: Mapping[str, torch.Tensor], rate: float, *, scope: str = "per_tensor"
) -> dict[str, torch.Tensor]:
    """Keep-masks that drop the lowest-scoring ``round(rate · numel)`` entries.

    Args:
        scores: Importance per parameter name; higher is kept.
        rate: Fraction of entries to prune, in [0, 1).
        scope: ``"per_tensor"`` prunes ``round(rate · numel)`` in each tensor; ``"global"`` ranks all
            entries together and prunes ``round(rate · total)``, so layers end up with different sparsity.

    Returns:
        Boolean masks (True = kept), one per name in ``scores``.
    """
    rate = check_rate(rate)
    _check_scope(scope)
    if scope == "per_tensor":
        return {name: _lowest_k_mask(s, round(rate * s.numel())) for name, s in scores.items()}
    names = list(scores)
    flat = torch.cat([scores[n].detach().flatten().float() for n in names]) if names else torch.zeros(0)
    keep = _lowest_k_mask(flat, round(rate * flat.numel()))
    masks, start = {}, 0
    for name in names:
        numel = scores[name].numel()
        masks[name] = keep[start : start + numel].view_as(scores[name])
        start += numel
    return masks


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Multiply each named parameter by its mask in place (``W' = W ⊙ M``).

    Call it after every optimiser step while fine-tuning a pruned model: the optimiser's update (and
    momentum) would otherwise regrow the pruned weights.

    Raises:
        NasUserError: A mask names a parameter the model does not have, or its shape differs (as after
            structured pruning, which invalidates earlier masks).
    """
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        param = params.get(name)
        if param is None or param.shape != mask.shape:
            found = "missing" if param is None else f"shape {tuple(param.shape)}"
            raise NasUserError(
                f"mask {name!r} of shape {tuple(mask.shape)} does not fit the model ({found}); "
                "compute masks after structured pruning."
            )
        param.mul_(mask.to(param.dtype))


def magnitude_prune_(
    model: nn.Module, rate: float, *, scope: str = "per_tensor", include: Include | None = None
) -> dict[str, torch.Tensor]:
    """Zero the smallest-magnitude weights in place and return the masks.

    Importance is ``|w|`` (Han et al. 2015, https://arxiv.org/abs/1506.02626). Exactly
    ``round(rate · numel)`` weights are pruned per tensor (or over all selected tensors with
    ``scope="global"``); ties go to the lower flat index.

    Args:
        model: Model to prune in place.
        rate: Fraction of the selected weights to zero, in [0, 1).
        scope: ``"per_tensor"`` or ``"global"``.
        include: ``(module_name, module) -> bool`` choosing whose ``weight`` to prune; defaults to
            :func:`default_prunable` (encoder ``nn.Linear`` layers).

    Returns:
        Boolean keep-masks keyed by parameter name, for :func:`apply_masks_` and :func:`sparsity`.

    Example:
        >>> layer = nn.Sequential(nn.Linear(4, 4))
        >>> masks = magnitude_prune_(layer, 0.5, include=lambda name, m: isinstance(m, nn.Linear))
        >>> int((layer[0].weight == 0).sum())
        8
    """
    weights = prunable_weights(model, include)
    masks = masks_from_scores({name: w.abs() for name, w in weights.items()}, rate, scope=scope)
    apply_masks_(model, masks)
    return masks


def run_batch(model: nn.Module, batch: Any) -> Any:
    """Call ``model`` on a calibration batch: a mapping as keywords, a tuple/list as positionals, else one argument."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def taylor_importance(
    model: nn.Module, batches: Iterable[Any], loss_fn: LossFn, *, include: Include | None = None
) -> dict[str, torch.Tensor]:
    """First-order Taylor importance ``Σ_batches |w · ∂L/∂w|`` of each selected weight.

    ``|w · g|`` estimates how much the loss changes when ``w`` is set to zero (Molchanov et al. 2019,
    https://arxiv.org/abs/1906.10771). The model runs in eval mode (no dropout noise) and is put back in
    its previous mode; gradients come from ``torch.autograd.grad``, so ``.grad`` fields are not touched.

    Args:
        model: Model to score.
        batches: Calibration batches; at least one.
        loss_fn: ``loss_fn(model, batch)`` returning a scalar loss tensor.
        include: As in :func:`magnitude_prune_`.

    Returns:
        Non-negative importance per parameter name, shaped like the weight.
    """
    weights = prunable_weights(model, include)
    sums = _accumulate_taylor(model, batches, loss_fn, list(weights.values()), lambda wg, _: wg.abs())
    # a weight no batch reached (no gradient) scores 0 everywhere
    return {name: s if torch.is_tensor(s) else torch.zeros_like(p, dtype=torch.float32)
            for (name, p), s in zip(weights.items(), sums)}


def _accumulate_taylor(
    model: nn.Module, batches: Iterable[Any], loss_fn: LossFn, params: list[torch.Tensor],
    reduce: Callable[[torch.Tensor, int], torch.Tensor],
) -> list[torch.Tensor]:
    """``Σ_batches reduce(w ⊙ ∂L/∂w, i)`` for each parameter ``i``, in eval mode (no dropout noise).

    Gradients come from ``torch.autograd.grad``, so ``.grad`` fields are not touched; the model is put
    back in its previous mode. The one loop behind weight-level and group-level Taylor importance.
    """
    sums: list[torch.Tensor | float] = [0.0] * len(params)
    was_training, n_batches = model.training, 0
    model.eval()
    try:
        for batch in batches:
            grads = torch.autograd.grad(loss_fn(model, batch), params, allow_unused=True)
            for i, (param, grad) in enumerate(zip(params, grads)):
                if grad is not None:
                    sums[i] = sums[i] + reduce((param.detach() * grad).float(), i)
            n_batches += 1
    finally:
        model.train(was_training)
    if n_batches == 0:
        raise NasUserError("batches is empty; Taylor importance needs at least one calibration batch.")
    return sums


def taylor_prune_(
    model: nn.Module,
    rate: float,
    batches: Iterable[Any],
    loss_fn: LossFn,
    *,
    scope: str = "per_tensor",
    include: Include | None = None,
) -> dict[str, torch.Tensor]:
    """Zero the weights with the lowest :func:`taylor_importance` in place and return the masks.

    Args:
        model: Model to prune in place.
        rate: Fraction of the selected weights to zero, in [0, 1).
        batches: Calibration batches.
        loss_fn: ``loss_fn(model, batch)`` returning a scalar loss.
        scope: ``"per_tensor"`` or ``"global"``.
        include: As in :func:`magnitude_prune_`.

    Returns:
        Boolean keep-masks keyed by parameter name.
    """
    rate = check_rate(rate)
    _check_scope(scope)
    masks = masks_from_scores(taylor_importance(model, batches, loss_fn, include=include), rate, scope=scope)
    apply_masks_(model, masks)
    return masks


def sparsity(model: nn.Module, masks_or_include: Mapping[str, torch.Tensor] | Include | None = None) -> float:
    """Fraction of pruned weights, in [0, 1].

    Args:
        model: The model.
        masks_or_include: Masks from a pruning call (counts their False entries), or an include predicate
            / None (counts exact zeros in the selected weights, default :func:`default_prunable`).

    Returns:
        Pruned entries over all entries considered; 0.0 when nothing is selected.
    """
    if isinstance(masks_or_include, Mapping):
        total = sum(m.numel() for m in masks_or_include.values())
        pruned = sum(int((~m.bool()).sum()) for m in masks_or_include.values())
    else:
        weights = prunable_weights(model, masks_or_include).values()
        total = sum(w.numel() for w in weights)
        pruned = sum(int((w == 0).sum()) for w in weights)
    return pruned / total if total else 0.0


def cubic_sparsity_schedule(step: int, total: int, initial: float, final: float, *, begin_step: int = 0) -> float:
    """Target sparsity at ``step`` for gradual pruning (polynomial decay, power 3).

    ``s_t = s_f + (s_i − s_f) · (1 − (t − t_0) / n)³`` (Zhu & Gupta 2017, https://arxiv.org/abs/1710.01878;
    TF-MOT ``PolynomialDecay(power=3)``): prune fast while redundancy is high, slowly near the end.

    Args:
        step: Current optimiser step; clamped to ``[begin_step, begin_step + total]``.
        total: Steps over which sparsity ramps up; ≥ 1.
        initial: Sparsity at ``begin_step``, in [0, 1).
        final: Sparsity from ``begin_step + total`` on, in [0, 1).
        begin_step: First step of the ramp; ≥ 0.

    Returns:
        The target sparsity, between ``initial`` and ``final``.
    """
    initial, final = check_rate(initial, "initial"), check_rate(final, "final")
    if total < 1:
        raise NasUserError(f"total={total!r} steps is too few for a pruning schedule; use total ≥ 1.")
    if begin_step < 0:
        raise NasUserError(f"begin_step={begin_step!r} is negative; use begin_step ≥ 0.")
    progress = min(max((step - begin_step) / total, 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


# ----------------------------------------------------------------------------------------------------------
# Structured pruning


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
    sums = _accumulate_taylor(model, batches, loss_fn, out_weights, lambda wg, i: wg.sum(0).view(-1, sizes[i]).sum(1).abs())
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
