"""Tensor quantization: integer codes of one tensor under a scheme, and back to float32.

:class:`QuantizedTensor` holds codes and what it takes to dequantize them; :func:`linear_quantize`,
:func:`log_quantize` and :func:`kmeans_quantize` are the quantizers the schemes of
:mod:`nas.compress.schemes` call, and :func:`quantize_tensor` / :func:`dequantize` pick one by name. Whole
models are quantized by :mod:`nas.compress.quantize` (post-training) and :mod:`nas.compress.qat` (training).

Bit widths are 2..8 for integer codes, 16 for a float16 cast and 32 for "leave in float32" (useful in a
per-layer mapping such as ``{"classifier": 32, "attention": 4, "default": 8}``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nas.compress.schemes import SCHEMES, scheme_of
from nas.errors import NasUserError

INT_BITS = range(2, 9)
FLOAT_BITS = (16, 32)
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
