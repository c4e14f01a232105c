"""Quantization schemes by name: what each one stores, how it quantizes, dequantizes and fake-quantizes for QAT.

Everything that differs between ``asymmetric``, ``symmetric``, ``log`` and ``kmeans`` lives in one
:class:`QuantScheme` subclass here, registered in :data:`SCHEMES`; :mod:`nas.compress.quantize`,
:mod:`nas.compress.size` and :class:`~nas.compress.recipe.CompressionRecipe` look a scheme up instead of
branching on its name. To add a scheme, subclass :class:`QuantScheme` below and decorate it with
``@_register``, and add its name to :data:`nas.compress.recipe.QUANT_SCHEMES` (a test checks they agree; recipe
keys abbreviate a scheme to its first 4 letters, which must stay distinct). ``float16`` is not a scheme but a cast (``bits=16`` under any scheme), so it
has no entry.

This module imports no torch at import time (a recipe validates its scheme without it); the tensor methods
call the quantizers of :mod:`nas.compress.quantize`, imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas.registry import Registry

if TYPE_CHECKING:
    import torch

    from nas.compress.quantize import QuantizedTensor

FP32_BYTES = 4


class QuantScheme:
    """One weight quantization scheme.

    Attributes:
        name: The registered name (``CompressionRecipe.quant_scheme``).
        nonlinear: True when the levels are not an affine grid ``scale · q (+ offset)`` (log, codebook), so
            integer GEMM kernels cannot consume the codes.
        group_params: fp32 numbers stored per scale group (a scale, and an offset for asymmetric codes).
    """

    name: str = ""
    nonlinear: bool = False
    group_params: int = 1

    def param_bytes(self, bits: int, n_groups: int) -> int:
        """Bytes stored beside the packed codes of one tensor: scales and offsets, or a codebook."""
        return n_groups * self.group_params * FP32_BYTES

    def quantize(self, x: torch.Tensor, bits: int, *, axis: int | None, iters: int = 20) -> QuantizedTensor:
        """Codes of ``x`` at ``bits`` (2..8), per tensor or per channel along ``axis``; ``iters`` for fitted schemes."""
        raise NotImplementedError

    def dequantize(self, qt: QuantizedTensor) -> torch.Tensor:
        """The float32 values the codes stand for."""
        raise NotImplementedError

    def codes(self, qt: QuantizedTensor) -> torch.Tensor:
        """Codes shifted into ``[0, 2^b)`` as uint8, for bit packing."""
        return qt.q.to(_torch().uint8)

    def qat_codebook(self, weight: torch.Tensor, bits: int) -> torch.Tensor | None:
        """State fitted once when a layer is wrapped for QAT (a codebook), or None when nothing is fitted."""
        return None

    def qat_restore(self, weight: torch.Tensor, bits: int, axis: int | None, codebook: torch.Tensor | None) -> torch.Tensor:
        """The weight as a QAT forward pass sees it (no gradient; the straight-through estimator is the caller's)."""
        return self.dequantize(self.quantize(weight, bits, axis=axis))


SCHEMES: Registry[QuantScheme] = Registry("quantization scheme")


def scheme_of(name: str, *, where: str = "scheme =") -> QuantScheme:
    """The registered scheme called ``name``; :class:`~nas.errors.NasUserError` listing the valid ones otherwise."""
    return SCHEMES.get(name, where=where)


def _torch():
    import torch

    return torch


def _quantize():
    from nas.compress import quantize

    return quantize


def _register(cls: type[QuantScheme]) -> type[QuantScheme]:
    SCHEMES.register(cls.name)(cls())
    return cls


@_register
class Asymmetric(QuantScheme):
    """The seed's ``round((x − xmin) / (xmax − xmin) · (2^b − 1))``: a scale and an offset per group."""

    name, group_params = "asymmetric", 2

    def quantize(self, x, bits, *, axis, iters=20):
        return _quantize().linear_quantize(x, bits, symmetric=False, axis=axis)

    def dequantize(self, qt):
        return qt.q.float() * qt.scale + qt.xmin  # = Q / (2^b − 1) · (xmax − xmin) + xmin


@_register
class Symmetric(QuantScheme):
    """``round(x / s)`` in the restricted signed range, ``s = max|x| / (2^(b−1) − 1)``: zero is exact, no offset."""

    name = "symmetric"

    def quantize(self, x, bits, *, axis, iters=20):
        return _quantize().linear_quantize(x, bits, symmetric=True, axis=axis)

    def dequantize(self, qt):
        return qt.q.float() * qt.scale

    def codes(self, qt):
        torch = _torch()
        return (qt.q.to(torch.int16) + (2 ** (qt.bits - 1) - 1)).to(torch.uint8)


@_register
class Log(QuantScheme):
    """Power-of-two levels with a sign bit (multiplying is a shift); one unit per group."""

    name, nonlinear = "log", True

    def quantize(self, x, bits, *, axis, iters=20):
        return _quantize().log_quantize(x, bits, axis=axis)

    def dequantize(self, qt):
        torch = _torch()
        code = qt.q.float()
        return torch.where(code == 0, torch.zeros_like(code), torch.sign(code) * qt.scale * torch.exp2(code.abs()))

    def codes(self, qt):  # sign bit on top of the exponent code
        torch = _torch()
        magnitude = qt.q.abs().to(torch.int16)
        return (magnitude + (qt.q < 0).to(torch.int16) * 2 ** (qt.bits - 1)).to(torch.uint8)


@_register
class KMeans(QuantScheme):
    """A per-tensor codebook of ``2^b`` fp32 centroids (per-channel settings do not apply)."""

    name, nonlinear = "kmeans", True

    def param_bytes(self, bits, n_groups):
        return 2**bits * FP32_BYTES

    def quantize(self, x, bits, *, axis, iters=20):
        return _quantize().kmeans_quantize(x, bits, iters=iters)

    def dequantize(self, qt):
        return qt.codebook[qt.q.long()]

    def qat_codebook(self, weight, bits):
        # fitted once and frozen: a Lloyd fit per training step would cost more than the step
        return self.quantize(weight, bits, axis=None).codebook.to(weight.device)

    def qat_restore(self, weight, bits, axis, codebook):
        return codebook[_quantize().nearest_centroid(weight.detach().float().flatten(), codebook)].view_as(weight)
