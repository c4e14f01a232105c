"""Stored size of a compressed model, and the bit packing that size assumes.

The size is what a compact serialisation of the compressed weights would take, not what PyTorch holds
in memory (fake-quantized weights are still float32 there). Per parameter tensor:

* a quantized weight (2..8 bits): ``ceil(n · b / 8)`` bytes of bit-packed codes (:func:`pack_bits`), plus
  per group (one per tensor, or one per output channel) a float32 scale, and a float32 offset for
  ``asymmetric`` (``symmetric`` and ``log`` have none); ``kmeans`` stores one codebook of ``2^b``
  float32 centroids per tensor instead of scales;
* float16: 2 bytes per value; anything else (biases, LayerNorm, weights left at 32 bits): 4 bytes;
* with ``store_sparse`` and a mask, only the kept values are stored, plus a bitmap of 1 bit per element
  (``ceil(numel / 8)`` bytes). A bitmap beats CSR-style int16/int32 indices whenever more than
  1/16 of the entries survive, which covers the sparsities searched here (< 94 %).

Persistent buffers (e.g. position-id ranges) and container metadata are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from nas.compress.quantize import check_bits_spec, check_scheme, quantizable_modules, resolve_bits
from nas.compress.schemes import scheme_of
from nas.errors import NasUserError

if TYPE_CHECKING:
    from nas.compress.quantize import BitsSpec

    Include = Callable[[str, nn.Module], bool]

FP32_BYTES = 4


def _check_pack_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise NasUserError(f"bits={bits!r} cannot be packed; choose 1..8 bits per code.")


def pack_bits(q: torch.Tensor, bits: int) -> bytes:
    """Pack unsigned codes ``< 2^bits`` into ``ceil(numel · bits / 8)`` bytes, LSB first.

    Code ``i`` occupies bits ``i·b … i·b + b − 1`` of the little-endian bit stream; the last byte is
    zero-padded.

    Args:
        q: Integer tensor with values in ``[0, 2^bits)`` (see ``QuantizedTensor.codes()``).
        bits: Bits per code, 1..8.

    Returns:
        The packed bytes.

    Example:
        >>> pack_bits(torch.tensor([1, 2, 3]), 2)
        b'9'
    """
    _check_pack_bits(bits)
    codes = q.detach().flatten().to(torch.int64).cpu().numpy()
    if codes.size and (codes.min() < 0 or codes.max() >= 2**bits):
        raise ValueError(f"codes must lie in [0, {2**bits}) to pack into {bits} bits")
    stream = np.unpackbits(codes.astype(np.uint8)[:, None], axis=1, bitorder="little")[:, :bits]  # (n, b)
    return np.packbits(stream.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` codes as a uint8 tensor of shape ``(numel,)``."""
    _check_pack_bits(bits)
    if len(data) < math.ceil(numel * bits / 8):
        raise ValueError(f"{len(data)} bytes cannot hold {numel} codes of {bits} bits")
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: numel * bits]
    codes = np.packbits(stream.reshape(numel, bits), axis=1, bitorder="little")[:, 0] if numel else np.zeros(0, np.uint8)
    return torch.from_numpy(codes.copy())


def quantized_tensor_bytes(numel: int, n_stored: int, bits: int, *, scheme: str, n_groups: int) -> int:
    """Bytes of one weight stored at ``bits`` (see the module docstring), without sparse-index overhead.

    Args:
        numel: Elements of the tensor (unused by dense formats, kept for clarity at call sites).
        n_stored: Values actually stored (``numel`` when dense, the mask's kept count when sparse).
        bits: 2..8, 16 or 32.
        scheme: ``asymmetric``, ``symmetric``, ``log`` or ``kmeans``.
        n_groups: Scale groups: 1 per tensor, or the number of output channels.
    """
    if bits == 32:
        return n_stored * FP32_BYTES
    if bits == 16:
        return n_stored * 2
    return math.ceil(n_stored * bits / 8) + scheme_of(scheme).param_bytes(bits, n_groups)


@dataclass(frozen=True)
class SizeReport:
    """Stored size of a model, in bytes, in total and per parameter tensor.

    Args:
        total_bytes: Sum of ``by_tensor``.
        by_tensor: Bytes per parameter name.
        fp32_bytes: The same parameters stored densely in float32, for the compression ratio.
        bits_by_tensor: Bit width used per parameter name (32 where left in float32).

    Example:
        >>> report = stored_size_bytes(nn.Linear(4, 2), weight_bits=8, per_channel=False)
        >>> report.total_bytes, report.fp32_bytes  # 8 codes + scale + offset, 2 fp32 biases
        (24, 40)
    """

    total_bytes: int
    by_tensor: dict[str, int] = field(default_factory=dict)
    fp32_bytes: int = 0
    bits_by_tensor: dict[str, int] = field(default_factory=dict)

    @property
    def compression_ratio(self) -> float:
        """float32 bytes over stored bytes (≥ 1 when anything was compressed)."""
        return self.fp32_bytes / self.total_bytes if self.total_bytes else 1.0


def stored_size_bytes(
    model: nn.Module,
    *,
    weight_bits: BitsSpec = 32,
    masks: Mapping[str, torch.Tensor] | None = None,
    scheme: str = "asymmetric",
    per_channel: bool = True,
    store_sparse: bool = False,
    include: Include | None = None,
) -> SizeReport:
    """Bytes the compressed model takes when stored (see the module docstring for the format).

    Use the same ``weight_bits``, ``scheme``, ``per_channel`` and ``include`` as the
    :func:`~nas.compress.quantize.fake_quantize_weights_` call so the size matches what was evaluated.

    Args:
        model: The model (its parameter shapes after any structured pruning are what count).
        weight_bits: Bits of the quantizable weights: an int or ``{pattern: bits, "default": bits}``;
            2..8, 16 or 32. Unmatched modules and all other parameters are float32.
        masks: Keep-masks by parameter name from unstructured pruning; used only with ``store_sparse``.
        scheme: ``asymmetric``, ``symmetric``, ``log`` or ``kmeans`` (per-tensor codebook).
        per_channel: One scale (and offset) per output channel instead of one per tensor.
        store_sparse: Store only kept values plus a 1-bit-per-element bitmap for masked tensors.
        include: ``(module_name, module) -> bool`` selecting quantized weights; defaults to
            :func:`~nas.compress.quantize.default_quantizable`.

    Returns:
        A :class:`SizeReport`.
    """
    scheme = check_scheme(scheme)
    quantized = quantizable_modules(model, include)
    check_bits_spec(weight_bits, quantized)
    masks = masks or {}
    param_names = set(dict(model.named_parameters()))
    unknown = sorted(set(masks) - param_names)
    if unknown:
        raise NasUserError(
            f"masks name parameters the model lacks ({', '.join(unknown[:3])}); recompute them for this model."
        )
    weight_bits_of = {f"{name}.weight" if name else "weight": resolve_bits(name, weight_bits) for name in quantized}
    by_tensor, bits_by_tensor, fp32_total = {}, {}, 0
    for name, param in model.named_parameters():  # shared (tied) parameters are listed once
        numel = param.numel()
        bits = weight_bits_of.get(name) or 32
        mask = masks.get(name) if store_sparse else None
        n_stored = numel if mask is None else int(mask.bool().sum())
        n_groups = param.shape[0] if per_channel and param.dim() > 1 else 1
        size_bytes = quantized_tensor_bytes(numel, n_stored, bits, scheme=scheme, n_groups=n_groups)
        if mask is not None:
            size_bytes += math.ceil(numel / 8)  # the bitmap of kept positions
        by_tensor[name], bits_by_tensor[name] = size_bytes, bits
        fp32_total += numel * FP32_BYTES
    return SizeReport(sum(by_tensor.values()), by_tensor, fp32_total, bits_by_tensor)
