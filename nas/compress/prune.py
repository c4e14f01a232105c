"""Unstructured pruning: weight masks by magnitude, the targets they select, sparsity and its schedule.

Unstructured pruning zeroes single weights and keeps every matrix its shape, so a dense kernel (and the
compiled latency TVM measures) does not change; it only pays off in stored size (``store_sparse``) or on
sparse kernels. Structured pruning, which removes whole attention heads or FFN neurons and so does shrink
the FLOPs a compiled model runs, is in :mod:`nas.compress.structured`; Taylor (gradient) importance, for
both, is in :mod:`nas.compress.taylor`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from nas.errors import NasUserError

if TYPE_CHECKING:
    Include = Callable[[str, nn.Module], bool]

SCOPES = ("per_tensor", "global")


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


def check_scope(scope: str) -> None:
    """Raise :class:`NasUserError` unless ``scope`` is an unstructured pruning scope (:data:`SCOPES`)."""
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
    check_scope(scope)
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
