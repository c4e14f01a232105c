"""Quantization: linear (asymmetric/symmetric), logarithmic and k-means weights; activations; QAT.

Post-training quantization (PTQ) here is *fake* quantization: weights are quantized and immediately
dequantized in float32, so the model computes exactly what an integer model with these codes would
(up to accumulation order) while every backend still runs it. Stored size is accounted separately by
:mod:`nas.compress.size`, from the same bit widths and schemes.

Bit widths are 2..8 for integer codes, 16 for a float16 cast and 32 for "leave in float32" (useful in a
per-layer mapping such as ``{"classifier": 32, "attention": 4, "default": 8}``).
"""

from __future__ import annotations

import copy
import fnmatch
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.compress.prune import run_batch
from nas.compress.schemes import SCHEMES, scheme_of
from nas.errors import MissingDependencyError, NasUserError

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    Include = Callable[[str, nn.Module], bool]
    BitsSpec = int | Mapping[str, int]

INT_BITS = range(2, 9)
FLOAT_BITS = (16, 32)
OBSERVER_MODES = ("minmax", "percentile")
_KMEANS_FIT_VALUES = 1 << 18


# ----------------------------------------------------------------------------------------------------------
# Arguments


def check_bits(bits: int, name: str = "bits", *, allow_float: bool = True) -> int:
    """Return ``bits`` or raise :class:`NasUserError` unless it is in 2..8 (or 16/32 when ``allow_float``)."""
    valid = isinstance(bits, int) and not isinstance(bits, bool)
    valid = valid and (bits in INT_BITS or (allow_float and bits in FLOAT_BITS))
    if not valid:
        choices = "2..8, 16 (float16) or 32 (float32)" if allow_float else "2..8"
        raise NasUserError(f"{name}={bits!r} is not a supported bit width; choose {choices}.")
    return bits


def check_scheme(scheme: str) -> str:
    """Return ``scheme`` or raise :class:`NasUserError` unless it is registered in :data:`~nas.compress.schemes.SCHEMES`."""
    scheme_of(scheme)
    return scheme


def default_quantizable(module_name: str, module: nn.Module) -> bool:
    """Weights of every ``nn.Linear`` and ``nn.Embedding``: the default target of weight quantization."""
    return isinstance(module, (nn.Linear, nn.Embedding))


def _pattern_matches(pattern: str, module_name: str) -> bool:
    # Glob patterns match the whole name; plain words match any substring ("attention" hits
    # "bert.encoder.layer.0.attention.self.query").
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(module_name, pattern)
    return pattern in module_name


def resolve_bits(module_name: str, bits: BitsSpec) -> int | None:
    """Bit width for one module from an int or a ``{pattern: bits, "default": bits}`` mapping.

    The longest matching pattern wins (so ``"attention.output"`` beats ``"attention"``); a name no
    pattern matches gets ``"default"``, or ``None`` (left in float32) when there is no default.
    """
    if isinstance(bits, int):
        return bits
    matching = [p for p in bits if p != "default" and _pattern_matches(p, module_name)]
    if matching:
        return bits[max(matching, key=len)]
    return bits.get("default")


def check_bits_spec(bits: BitsSpec, module_names: Iterable[str] | None = None) -> None:
    """Validate every bit width of a spec and, given module names, that each pattern matches one of them.

    Raises:
        NasUserError: A width outside 2..8/16/32, or a pattern that matches no module (a typo would
            otherwise leave those layers silently unquantized).
    """
    if isinstance(bits, int):
        check_bits(bits)
        return
    for pattern, width in bits.items():
        check_bits(width, f"bits[{pattern!r}]")
    if module_names is not None:
        names = list(module_names)
        for pattern in bits:
            if pattern != "default" and not any(_pattern_matches(pattern, n) for n in names):
                raise NasUserError(
                    f"bits pattern {pattern!r} matches no quantizable module; use a part of a module name "
                    f"such as {names[0]!r}." if names else f"bits pattern {pattern!r} matches no module."
                )


# ----------------------------------------------------------------------------------------------------------
# Tensors


@dataclass(frozen=True)
class QuantizedTensor:
    """Integer codes and what it takes to dequantize them.

    Args:
        q: Codes. ``asymmetric``: uint8 in ``[0, 2^b − 1]``; ``symmetric``: int8 in
            ``[−(2^(b−1) − 1), 2^(b−1) − 1]``; ``log``: int8 sign·exponent code; ``kmeans``: uint8
            centroid index; ``float16``: the float16 tensor.
        scale: Step size, broadcastable to ``q`` (per tensor: 0-d; per channel: ``(C, 1, …)``). For
            ``log`` the unit ``2^(e_max − n)``; None for ``kmeans`` and ``float16``.
        xmin: Asymmetric offset (the range minimum), broadcastable like ``scale``; None otherwise.
        bits: Bits per code, 2..8 (16 for ``float16``).
        scheme: ``asymmetric``, ``symmetric``, ``log``, ``kmeans`` or ``float16``.
        axis: Channel axis of per-channel parameters, or None for per tensor.
        codebook: ``kmeans`` centroids, float32 ``(2^b,)``; None otherwise.

    Example:
        >>> qt = linear_quantize(torch.tensor([0.0, 0.5, 1.0]), 2)
        >>> qt.q.tolist(), dequantize(qt).tolist()
        ([0, 2, 3], [0.0, 0.6666666865348816, 1.0])
    """

    q: torch.Tensor
    scale: torch.Tensor | None
    xmin: torch.Tensor | None
    bits: int
    scheme: str
    axis: int | None = None
    codebook: torch.Tensor | None = None

    @property
    def n_groups(self) -> int:
        """Number of (scale, offset) pairs: channels along ``axis``, or 1."""
        return 1 if self.axis is None else self.q.shape[self.axis]

    def codes(self) -> torch.Tensor:
        """Codes shifted into ``[0, 2^b)`` as uint8, ready for :func:`nas.compress.size.pack_bits`."""
        if self.scheme not in SCHEMES:
            raise ValueError(f"{self.scheme} tensors are not integer codes")
        return scheme_of(self.scheme).codes(self)


def _reduce_dims(x: torch.Tensor, axis: int | None) -> tuple[int, ...] | None:
    if axis is None:
        return None
    if not -x.dim() <= axis < x.dim():
        raise NasUserError(f"axis={axis!r} is outside the tensor's {x.dim()} dimensions; use None or 0.")
    axis %= x.dim()
    return tuple(d for d in range(x.dim()) if d != axis)


def _amin_amax(x: torch.Tensor, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    dims = _reduce_dims(x, axis)
    if dims is None:
        return x.min(), x.max()
    return x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)  # (C, 1, …)


def linear_quantize(x: torch.Tensor, bits: int, *, symmetric: bool = False, axis: int | None = None) -> QuantizedTensor:
    """Uniform quantization, per tensor (``axis=None``) or per channel (``axis=0``: per output row).

    Asymmetric: ``Q(x) = round((x − xmin) / (xmax − xmin) · (2^b − 1))``, dequantized as
    ``x̂ = Q / (2^b − 1) · (xmax − xmin) + xmin``. Symmetric: ``s = max|x| / (2^(b−1) − 1)``,
    ``Q = round(x / s)`` in the restricted signed range (zero is exact, no offset to store). Either way
    ``|x − x̂| ≤ s / 2``. A constant group gets step 0 and dequantizes exactly. ``bits=16`` casts to
    float16.

    Args:
        x: Float tensor.
        bits: 2..8, or 16.
        symmetric: Signed range around 0 instead of ``[xmin, xmax]``.
        axis: None (per tensor) or the channel axis (0 for ``nn.Linear`` output channels).

    Returns:
        The codes and their scale / offset.
    """
    bits = check_bits(bits)
    if bits == 32:
        raise NasUserError("bits=32 leaves a tensor in float32 and has no quantized form; use 2..8 or 16.")
    x = x.detach().float()
    if bits == 16:
        return QuantizedTensor(x.half(), None, None, 16, "float16", None)
    lo, hi = _amin_amax(x, axis)
    if symmetric:
        q_max = 2 ** (bits - 1) - 1
        scale = torch.maximum(hi.abs(), lo.abs()) / q_max
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero group: any step reproduces it
        q = torch.clamp(torch.round(x / safe), -q_max, q_max).to(torch.int8)
        return QuantizedTensor(q, scale, None, bits, "symmetric", axis)
    levels = 2**bits - 1
    span = hi - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    q = torch.clamp(torch.round((x - lo) / safe * levels), 0, levels).to(torch.uint8)
    return QuantizedTensor(q, span / levels, lo, bits, "asymmetric", axis)


def log_quantize(x: torch.Tensor, bits: int, *, axis: int | None = None) -> QuantizedTensor:
    """Logarithmic (power-of-two) quantization with a sign bit.

    One bit holds the sign and ``b − 1`` bits an exponent code ``c`` in ``0..n`` with ``n = 2^(b−1) − 1``:
    ``c = 0`` is zero and ``c ≥ 1`` is ``2^(e_max − n + c)``, where ``e_max = round(log2 max|x|)``. Values
    are rounded in the log domain and those below half the smallest level become 0. Multiplying by a
    power of two is a shift, which is why the scheme is used on accelerators (Miyashita et al. 2016,
    https://arxiv.org/abs/1603.01025); its error grows with magnitude.

    Args:
        x: Float tensor.
        bits: 2..8.
        axis: None (per tensor) or the channel axis.

    Returns:
        Codes ``sign · c`` (int8) and the unit ``2^(e_max − n)`` as ``scale``.
    """
    bits = check_bits(bits, allow_float=False)
    x = x.detach().float()
    n = 2 ** (bits - 1) - 1
    dims = _reduce_dims(x, axis)
    peak = x.abs().max() if dims is None else x.abs().amax(dim=dims, keepdim=True)
    e_max = torch.round(torch.log2(torch.clamp(peak, min=torch.finfo(torch.float32).tiny)))
    unit = torch.exp2(e_max - n)  # level c is unit · 2^c
    magnitude = x.abs()
    code = torch.clamp(torch.round(torch.log2(torch.clamp(magnitude, min=torch.finfo(torch.float32).tiny) / unit)), 1, n)
    code = torch.where(magnitude < unit, torch.zeros_like(code), code)  # below half of level 1 (= 2·unit)
    q = (torch.sign(x) * code).to(torch.int8)
    return QuantizedTensor(q, unit, None, bits, "log", axis)


def kmeans_quantize(x: torch.Tensor, bits: int, *, iters: int = 20) -> QuantizedTensor:
    """Non-uniform quantization to a per-tensor codebook of ``2^b`` centroids (Lloyd's k-means, 1-D).

    Lloyd's algorithm (Deep Compression, Han et al. 2016, https://arxiv.org/abs/1510.00149) runs from two
    deterministic initialisations and keeps the lower-MSE codebook: the ``(i + ½) / 2^b`` quantiles, which
    converge best at 2–5 bits, and the uniform grid ``linspace(min, max, 2^b)`` of
    :func:`linear_quantize`, which is better at 6–8 bits. Lloyd steps never increase the MSE, so the
    result is never worse than per-tensor asymmetric linear quantization (exactly so for tensors of up to
    2^18 values; larger ones are fitted on 2^18 evenly spaced order statistics). An empty cluster keeps
    its centroid.

    Args:
        x: Float tensor.
        bits: 2..8.
        iters: Lloyd iterations per initialisation; ≥ 0 (0 keeps the better initialisation).

    Returns:
        Centroid indices (uint8) and the float32 codebook.
    """
    bits = check_bits(bits, allow_float=False)
    if iters < 0:
        raise NasUserError(f"iters={iters!r} is negative; use iters ≥ 0.")
    flat = x.detach().float().flatten()
    k = 2**bits
    ranked = torch.sort(flat).values
    positions = ((torch.arange(k, dtype=torch.float64) + 0.5) / k * (flat.numel() - 1)).round().long()
    # Fit on at most 2^18 evenly spaced order statistics (every value of an encoder matrix; a 4 M-value
    # embedding table would otherwise take seconds), then assign every value.
    sample = ranked[:: math.ceil(ranked.numel() / _KMEANS_FIT_VALUES)].contiguous()
    best_codebook, best_mse = None, math.inf
    for codebook in (ranked[positions].clone(), torch.linspace(float(ranked[0]), float(ranked[-1]), k)):
        codebook = _lloyd(sample, codebook, iters)
        mse = float((codebook[nearest_centroid(sample, codebook)] - sample).pow(2).mean())
        if mse < best_mse:
            best_codebook, best_mse = codebook, mse
    q = nearest_centroid(flat, best_codebook).to(torch.uint8).view_as(x)
    return QuantizedTensor(q, None, None, bits, "kmeans", None, best_codebook)


def _lloyd(flat: torch.Tensor, codebook: torch.Tensor, iters: int) -> torch.Tensor:
    k = codebook.numel()
    for _ in range(iters):
        index = nearest_centroid(flat, codebook)
        sums = torch.zeros(k).index_add_(0, index, flat)
        counts = torch.bincount(index, minlength=k).float()
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), codebook)
        if torch.equal(updated, codebook):
            break
        codebook = updated
    return codebook


def nearest_centroid(values: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid for each value, via the sorted centroids' midpoints (O(N log K))."""
    order = torch.argsort(codebook, stable=True)
    ranked = codebook[order]
    midpoints = (ranked[1:] + ranked[:-1]) / 2
    return order[torch.bucketize(values, midpoints)]


def dequantize(qt: QuantizedTensor) -> torch.Tensor:
    """Float32 values the codes stand for (the inverse of the quantize functions, up to rounding)."""
    if qt.scheme == "float16":
        return qt.q.float()
    if qt.scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {qt.scheme!r}")
    return scheme_of(qt.scheme).dequantize(qt)


def quantize_tensor(
    x: torch.Tensor, bits: int, *, scheme: str = "asymmetric", per_channel: bool = True, iters: int = 20
) -> QuantizedTensor:
    """Quantize with any scheme by name; ``per_channel`` means axis 0 (ignored by ``kmeans``), ``bits=16`` casts.

    ``iters`` are the fitting iterations of schemes that fit their levels (``kmeans``' Lloyd steps).
    """
    entry = scheme_of(scheme)
    axis = 0 if per_channel and x.dim() > 1 else None
    if bits == 16:
        return linear_quantize(x, bits, axis=axis)
    return entry.quantize(x, bits, axis=axis, iters=iters)


# ----------------------------------------------------------------------------------------------------------
# Models: post-training weight quantization


def quantizable_modules(model: nn.Module, include: Include | None = None) -> dict[str, nn.Module]:
    """Modules whose ``weight`` quantization touches, by name (default :func:`default_quantizable`)."""
    include = include or default_quantizable
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(getattr(module, "weight", None), nn.Parameter) and include(name, module)
    }


@dataclass(frozen=True)
class LayerQuantization:
    """What :func:`fake_quantize_weights_` did to one weight: its bits, scheme and mean squared error."""

    bits: int
    scheme: str
    per_channel: bool
    mse: float


@torch.no_grad()
def fake_quantize_weights_(
    model: nn.Module,
    bits: BitsSpec,
    *,
    scheme: str = "asymmetric",
    per_channel: bool = True,
    include: Include | None = None,
    kmeans_iters: int = 20,
) -> dict[str, LayerQuantization]:
    """Post-training quantization in place: replace each selected weight by its dequantized codes.

    Biases and LayerNorm parameters stay float32 (they are a tiny share of the bytes and quantizing them
    costs accuracy). Exact zeros from pruning stay zero with ``symmetric``, ``log`` and ``kmeans``
    (``asymmetric`` moves them by up to half a step unless 0 is on the grid).

    Args:
        model: Model to quantize in place.
        bits: One width for all, or ``{pattern: bits, "default": bits}`` (see :func:`resolve_bits`);
            widths 2..8, 16 (float16) or 32 (left alone).
        scheme: ``asymmetric``, ``symmetric``, ``log`` or ``kmeans``.
        per_channel: One scale per output channel (axis 0) instead of per tensor; not used by ``kmeans``.
        include: ``(module_name, module) -> bool``; defaults to :func:`default_quantizable`.
        kmeans_iters: Lloyd iterations for ``kmeans``.

    Returns:
        A :class:`LayerQuantization` per quantized module name (modules left in float32 are absent).
    """
    scheme = check_scheme(scheme)
    modules = quantizable_modules(model, include)
    check_bits_spec(bits, modules)
    report = {}
    for name, module in modules.items():
        width = resolve_bits(name, bits)
        if width is None or width == 32:
            continue
        weight = module.weight
        qt = quantize_tensor(weight, width, scheme=scheme, per_channel=per_channel, iters=kmeans_iters)
        restored = dequantize(qt).to(weight.dtype)
        report[name] = LayerQuantization(width, qt.scheme, qt.axis is not None, float((restored - weight).pow(2).mean()))
        weight.copy_(restored)
    return report


# ----------------------------------------------------------------------------------------------------------
# Activations: calibration and fake quantization


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


def _linear_only(module_name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Linear)


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
    include, run = include or _linear_only, run or run_batch
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


# ----------------------------------------------------------------------------------------------------------
# Quantization-aware training


class FakeQuantSTE(torch.autograd.Function):
    """Linear fake quantization whose backward is the straight-through estimator.

    ``round`` has zero gradient almost everywhere; the STE (Bengio et al. 2013,
    https://arxiv.org/abs/1308.3432) passes the incoming gradient through unchanged, so the float
    weights behind the quantizer keep learning. Ranges come from the tensor itself, so nothing clips
    and no gradient needs masking.

    ``FakeQuantSTE.apply(x, bits, symmetric, axis)`` returns ``dequantize(linear_quantize(x, …))``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bits: int, symmetric: bool, axis: int | None) -> torch.Tensor:
        return dequantize(linear_quantize(x, bits, symmetric=symmetric, axis=axis)).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return grad_output, None, None, None


class _StraightThrough(torch.autograd.Function):
    """Forward returns ``restored`` exactly; backward hands the gradient to ``x`` unchanged (the STE)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        return restored

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output, None


class QATLinear(nn.Linear):
    """An ``nn.Linear`` that fake-quantizes its weight (and optionally its input) in every forward.

    It shares the wrapped layer's ``weight`` and ``bias`` Parameters, so parameter names, an existing
    optimizer and ``isinstance(m, nn.Linear)`` checks all keep working.

    Args:
        linear: Layer to wrap.
        bits: Weight bits, 2..8.
        symmetric: Symmetric instead of asymmetric weight codes (ignored when ``scheme`` is given).
        per_channel: One scale per output row (linear and ``log`` schemes).
        act_bits: Input activation bits (2..8), or None to keep inputs float. The input range is an
            exponential moving average (momentum 0.9) of batch min/max while training, frozen in eval.
        scheme: ``asymmetric``, ``symmetric``, ``log`` or ``kmeans``; None: from ``symmetric``. ``log``
            re-quantizes every forward; ``kmeans`` fits its codebook once, here, and keeps it frozen (a
            Lloyd fit per step would cost more than the step), so training moves weights between fixed
            centroids. Every scheme passes gradients straight through.
    """

    def __init__(
        self,
        linear: nn.Linear,
        bits: int,
        *,
        symmetric: bool = False,
        per_channel: bool = True,
        act_bits: int | None = None,
        scheme: str | None = None,
    ) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight, self.bias = linear.weight, linear.bias
        self.scheme = check_scheme(scheme) if scheme is not None else ("symmetric" if symmetric else "asymmetric")
        self.bits, self.symmetric, self.per_channel = check_bits(bits, allow_float=False), self.scheme == "symmetric", per_channel
        self.register_buffer("codebook", scheme_of(self.scheme).qat_codebook(linear.weight, self.bits))
        self.act_bits = None if act_bits is None else check_bits(act_bits, "act_bits", allow_float=False)
        self.register_buffer("act_range", torch.zeros(2, device=linear.weight.device))
        self.register_buffer("act_seen", torch.zeros((), dtype=torch.bool, device=linear.weight.device))
        self.train(linear.training)

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the forward pass sees it (gradients flow to ``weight`` through the STE)."""
        with torch.no_grad():
            restored = scheme_of(self.scheme).qat_restore(self.weight, self.bits, 0 if self.per_channel else None, self.codebook)
        return _StraightThrough.apply(self.weight, restored.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits is not None:
            if self.training:
                with torch.no_grad():
                    batch_range = torch.stack([x.min().clamp(max=0), x.max().clamp(min=0)]).float()
                    mixed = 0.9 * self.act_range + 0.1 * batch_range if self.act_seen else batch_range
                    self.act_range.copy_(mixed)
                    self.act_seen.fill_(True)
            lo, hi = self.act_range.tolist()
            # STE for activations too: forward quantized, backward identity.
            x = x + (fake_quantize_activation(x, lo, hi, self.act_bits) - x).detach()
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, scheme={self.scheme}, act_bits={self.act_bits}"


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def prepare_qat_(
    model: nn.Module,
    bits: BitsSpec,
    *,
    symmetric: bool = False,
    per_channel: bool = True,
    act_bits: int | None = None,
    include: Include | None = None,
    scheme: str | None = None,
) -> list[str]:
    """Swap selected ``nn.Linear`` layers for :class:`QATLinear` in place, for quantization-aware training.

    Args:
        model: Model to prepare in place.
        bits: Weight bits for all, or a per-layer ``{pattern: bits, "default": bits}`` mapping; 16/32 or
            no match leave a layer as it is.
        symmetric: Symmetric weight codes (when ``scheme`` is None).
        per_channel: Per-output-row scales.
        act_bits: Input activation bits, or None for float activations.
        include: ``(module_name, module) -> bool``; defaults to every ``nn.Linear``.
        scheme: Weight scheme (see :class:`QATLinear`); None: asymmetric, or symmetric with ``symmetric``.

    Returns:
        Names of the wrapped layers.
    """
    include = include or _linear_only
    targets = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not isinstance(module, QATLinear) and include(name, module)
    }
    check_bits_spec(bits, targets)
    wrapped = []
    for name, linear in targets.items():
        width = resolve_bits(name, bits)
        if width is not None and width in INT_BITS:
            qat = QATLinear(linear, width, symmetric=symmetric, per_channel=per_channel, act_bits=act_bits, scheme=scheme)
            _set_submodule(model, name, qat)
            wrapped.append(name)
    return wrapped


@torch.no_grad()
def convert_qat_(model: nn.Module) -> list[str]:
    """Replace every :class:`QATLinear` by a plain ``nn.Linear`` holding its fake-quantized weight.

    Activation fake quantization is dropped: attach it again with :func:`fake_quantize_activations_`
    if the deployed model quantizes activations.

    Returns:
        Names of the converted layers.
    """
    converted = []
    for name, module in list(model.named_modules()):
        if isinstance(module, QATLinear):
            weight = module.weight
            linear = nn.Linear(
                module.in_features, module.out_features, module.bias is not None, weight.device, weight.dtype
            )
            linear.weight.copy_(module.quantized_weight())
            if module.bias is not None:
                linear.bias.copy_(module.bias)
            linear.train(module.training)
            _set_submodule(model, name, linear)
            converted.append(name)
    return converted


# ----------------------------------------------------------------------------------------------------------
# Baselines from other toolkits


def torch_dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with PyTorch's dynamic int8 ``nn.Linear`` (weights int8, activations per batch).

    A reference point for the accuracy and latency of our own schemes; runs on CPU only.
    """
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency; the eager
        # API still works in the pinned torch and is only a baseline.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def onnxruntime_dynamic_int8(onnx_in: str | Path, onnx_out: str | Path, *, per_channel: bool = False) -> Path:
    """Quantize an ONNX model with ONNX Runtime's dynamic int8 quantization; returns ``onnx_out``.

    Raises:
        MissingDependencyError: onnxruntime is not installed.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise MissingDependencyError(
            "onnxruntime_dynamic_int8 needs onnxruntime; install it with: pip install onnxruntime==1.32.0"
        ) from err
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs "consider pre-processing" at WARNING on the root logger, every call
    try:
        quantize_dynamic(Path(onnx_in), Path(onnx_out), per_channel=per_channel, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return Path(onnx_out)
