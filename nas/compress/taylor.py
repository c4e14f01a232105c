"""Taylor importance: how much the loss changes when a weight (or a group of weights) is set to zero.

``|w · ∂L/∂w|`` summed over calibration batches (Molchanov et al. 2019, https://arxiv.org/abs/1906.10771).
:func:`accumulate_taylor` is the one loop behind the weight-level score here and the head / neuron scores
of :mod:`nas.compress.structured`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nas.compress.prune import apply_masks_, check_rate, check_scope, masks_from_scores, prunable_weights
from nas.errors import NasUserError

if TYPE_CHECKING:
    from nas.compress.prune import Include

    LossFn = Callable[[nn.Module, Any], torch.Tensor]


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
        include: As in :func:`~nas.compress.prune.magnitude_prune_`.

    Returns:
        Non-negative importance per parameter name, shaped like the weight.
    """
    weights = prunable_weights(model, include)
    sums = accumulate_taylor(model, batches, loss_fn, list(weights.values()), lambda wg, _: wg.abs())
    # a weight no batch reached (no gradient) scores 0 everywhere
    return {name: s if torch.is_tensor(s) else torch.zeros_like(p, dtype=torch.float32)
            for (name, p), s in zip(weights.items(), sums)}


def accumulate_taylor(
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
        include: As in :func:`~nas.compress.prune.magnitude_prune_`.

    Returns:
        Boolean keep-masks keyed by parameter name.
    """
    rate = check_rate(rate)
    check_scope(scope)
    masks = masks_from_scores(taylor_importance(model, batches, loss_fn, include=include), rate, scope=scope)
    apply_masks_(model, masks)
    return masks
