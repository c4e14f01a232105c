"""Activation quantization: calibrate the input ranges of layers, then fake-quantize those inputs.

Inputs are what an integer GEMM quantizes (its outputs are int32 accumulators), so the inputs of the
selected modules are observed and quantized, through forward pre-hooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nas.compress.qtensor import check_bits
from nas.compress.quantize import linear_only
from nas.errors import NasUserError

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    from nas.compress.quantize import Include

OBSERVER_MODES = ("minmax", "percentile")


def run_batch(model: nn.Module, batch: Any) -> Any:
    """Call ``model`` on a calibration batch: a mapping as keywords, a tuple/list as positionals, else one argument."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


class ActivationObserver:
    """Running range of the values it sees: global min/max, or the mean of per-batch percentiles.

    ``percentile`` clips rare outliers (e.g. a few huge GELU outputs), which gives a finer step to the
    bulk of the values; averaging per-batch percentiles keeps memory constant over calibration.

    Args:
        mode: ``"minmax"`` or ``"percentile"``.
        percentile: Upper percentile for ``percentile`` mode, in (50, 100]; the lower one is
            ``100 − percentile``.

    Example:
        >>> obs = ActivationObserver()
        >>> obs.observe(torch.tensor([-1.0, 3.0])); obs.range()
        (-1.0, 3.0)
    """

    def __init__(self, mode: str = "minmax", percentile: float = 99.99) -> None:
        if mode not in OBSERVER_MODES:
            raise NasUserError(f"mode={mode!r} is not an observer mode; choose one of {', '.join(OBSERVER_MODES)}.")
        if not 50.0 < percentile <= 100.0:
            raise NasUserError(f"percentile={percentile!r} is outside (50, 100]; use e.g. 99.99.")
        self.mode, self.percentile = mode, percentile
        self._lo: list[float] = []
        self._hi: list[float] = []

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Record one batch of values."""
        x = x.detach().float().flatten()
        if x.numel() == 0:
            return
        if self.mode == "minmax":
            lo, hi = float(x.min()), float(x.max())
            self._lo, self._hi = [min(self._lo + [lo])], [max(self._hi + [hi])]
            return
        if x.numel() > 1 << 24:  # torch.quantile's input limit; a strided subsample keeps the estimate
            x = x[:: math.ceil(x.numel() / (1 << 24))]
        q = torch.tensor([1.0 - self.percentile / 100.0, self.percentile / 100.0])
        lo, hi = torch.quantile(x, q).tolist()
        self._lo.append(lo)
        self._hi.append(hi)

    def range(self) -> tuple[float, float]:
        """The calibrated ``(lo, hi)``, widened to include 0 so that zero (padding) stays exact."""
        if not self._lo:
            raise RuntimeError("observer saw no values; run calibration batches through the model first")
        lo, hi = sum(self._lo) / len(self._lo), sum(self._hi) / len(self._hi)
        return min(lo, 0.0), max(hi, 0.0)


@torch.no_grad()
def calibrate_activations(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    mode: str = "minmax",
    percentile: float = 99.99,
    include: Include | None = None,
    run: Callable[[nn.Module, Any], Any] | None = None,
) -> dict[str, tuple[float, float]]:
    """Ranges of the *inputs* of selected modules over calibration batches, via forward hooks.

    Inputs are what an integer GEMM quantizes (its outputs are int32 accumulators), so those are what
    is observed. The model runs in eval mode and the hooks are removed afterwards.

    Args:
        model: Model to calibrate (not changed).
        batches: Calibration batches; at least one.
        mode: ``"minmax"`` or ``"percentile"`` (see :class:`ActivationObserver`).
        percentile: Upper percentile for ``percentile`` mode.
        include: ``(module_name, module) -> bool``; defaults to every ``nn.Linear``.
        run: ``run(model, batch)``; defaults to ``model(**batch)`` for dicts, ``model(*batch)`` for
            tuples and ``model(batch)`` otherwise.

    Returns:
        ``(lo, hi)`` per module name.
    """
    include, run = include or linear_only, run or run_batch
    observers = {name: ActivationObserver(mode, percentile) for name, m in model.named_modules() if include(name, m)}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_pre_hook(lambda _m, args, obs=obs: obs.observe(args[0]))
        for name, obs in observers.items()
    ]
    was_training = model.training
    model.eval()
    n_batches = 0
    try:
        for batch in batches:
            run(model, batch)
            n_batches += 1
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if n_batches == 0:
        raise NasUserError("batches is empty; activation calibration needs at least one batch.")
    return {name: obs.range() for name, obs in observers.items() if obs._lo}


def fake_quantize_activation(x: torch.Tensor, lo: float, hi: float, bits: int) -> torch.Tensor:
    """Asymmetric fake quantization of ``x`` to ``[lo, hi]`` with ``2^b`` levels; values outside clip."""
    levels = 2**bits - 1
    step = (hi - lo) / levels if hi > lo else 1.0
    return torch.clamp(torch.round((x - lo) / step), 0, levels) * step + lo


def fake_quantize_activations_(
    model: nn.Module, ranges: Mapping[str, tuple[float, float]], bits: int = 8
) -> list[RemovableHandle]:
    """Fake-quantize the inputs of the calibrated modules with forward pre-hooks.

    Args:
        model: Model whose modules ``ranges`` names.
        ranges: From :func:`calibrate_activations`.
        bits: Activation bit width, 2..8.

    Returns:
        The hook handles; call ``.remove()`` on each to return to float activations.
    """
    bits = check_bits(bits, allow_float=False)
    modules = dict(model.named_modules())
    missing = sorted(set(ranges) - set(modules))
    if missing:
        raise NasUserError(f"ranges name modules the model lacks ({', '.join(missing[:3])}); recalibrate this model.")

    def hook(lo: float, hi: float) -> Callable:
        return lambda _m, args: (fake_quantize_activation(args[0], lo, hi, bits), *args[1:])

    return [modules[name].register_forward_pre_hook(hook(lo, hi)) for name, (lo, hi) in ranges.items()]
