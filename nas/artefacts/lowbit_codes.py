"""The codes of a compressed student's weights, re-derived from its fake-quantized torch weights.

A compressed student holds *fake-quantized* weights (fp32 values lying exactly on a quantization grid). The
low-bit artefacts (:mod:`nas.artefacts.onnx_lowbit`, :func:`nas.artefacts.hf_folder.stored_copy`) and the
shipped-size estimate (:mod:`nas.artefacts.onnx_size`) store the campaign's own codes instead: this module
re-derives them with the project's quantizer (:func:`nas.compress.quantize.quantize_tensor`, per output
channel) and checks that they reproduce the torch weight to :data:`TOLERANCE`; a weight that does not gets a
sentence saying why, and its caller keeps it fp32.

Asymmetric weights with unstructured pruning: pruned zeros are not on the asymmetric grid; the grid is
re-derived from the kept weights and each pruned zero is stored at the code nearest 0 (moved by at most half
a step, as the dense packed accounting of :mod:`nas.compress.size` assumes); ``moved_zeros`` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from nas.compress.recipe import CompressionRecipe

TOLERANCE = 1e-6  # max |dequantize(codes) − weight|, relative to the tensor's max |w| (floor 1)


@dataclass
class Codes:
    """One weight's codes in row (output-channel) orientation: ``value = c·s + m`` or ``table[c]·unit``."""

    kind: str  # linear, log, kmeans, float16
    bits: int
    c: np.ndarray  # uint8 codes (R, C); float16 values for kind float16
    s: np.ndarray | None = None  # (R,) step (linear) or unit (log)
    m: np.ndarray | None = None  # (R,) offset (linear)
    table: np.ndarray | None = None  # codebook (kmeans) or signed powers of two (log)
    moved_zeros: int = 0


def quantized_modules(model: torch.nn.Module, recipe: CompressionRecipe) -> dict[str, tuple[np.ndarray, int, bool]]:
    """Module name → (fp32 weight (out, in) or table, bits, is_embedding) for every weight the recipe quantized."""
    from torch import nn

    from nas.compress.quantize import quantizable_modules, resolve_bits

    spec: int | dict[str, int] = recipe.weight_bits
    if recipe.embedding_bits is not None and recipe.embedding_bits != recipe.weight_bits:
        spec = {"embeddings": recipe.embedding_bits, "default": recipe.weight_bits}  # as compress_model does
    out = {}
    for name, module in quantizable_modules(model).items():
        bits = resolve_bits(name, spec)
        if bits is not None and bits < 32:
            weight = module.weight.detach().float().cpu().numpy()
            out[name] = (weight, bits, isinstance(module, nn.Embedding))
    return out


def derive_codes(rows: np.ndarray, bits: int, scheme: str) -> Codes | str:
    """The codes of a fake-quantized weight in row orientation, or why they could not be re-derived exactly."""
    import torch

    from nas.compress.schemes import scheme_of

    w = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    tol = TOLERANCE * max(1.0, float(w.abs().max()) if w.numel() else 1.0)
    if bits == 16:
        half = w.half()
        if float((half.float() - w).abs().max()) > tol:
            return "its weight is not float16-exact"
        return Codes("float16", 16, half.numpy())
    if not scheme_of(scheme).nonlinear:
        return _linear_codes(w, bits, scheme, tol)
    table_codes = _TABLE_CODES.get(scheme)
    if table_codes is None:  # a new nonlinear scheme: its weights stay fp32 until it has a table here
        return f"its {scheme} levels have no codebook derivation in nas.artefacts.lowbit_codes"
    return table_codes(w, bits, tol)


def _linear_codes(w: torch.Tensor, bits: int, scheme: str, tol: float) -> Codes | str:
    import torch

    from nas.compress.qtensor import quantize_tensor

    zero = w == 0
    # Pruned zeros may lie off the asymmetric grid: derive the grid from the kept values of each row.
    row_fill = torch.where(zero, -torch.inf, w).amax(dim=1, keepdim=True)
    filled = torch.where(zero, torch.where(torch.isfinite(row_fill), row_fill, 0.0), w)
    qt = quantize_tensor(filled, bits, scheme=scheme, per_channel=True)
    s = qt.scale.reshape(-1).double().expand(w.shape[0]).clone()  # float64: the remainders below stay exact
    m = qt.xmin.reshape(-1).double().expand(w.shape[0]).clone() if qt.xmin is not None else -(2 ** (bits - 1) - 1) * s
    zero_code = torch.round(-m / torch.where(s > 0, s, 1.0)).clamp(0, 2**bits - 1)
    c = torch.where(zero, zero_code[:, None], qt.codes().double())
    error = (c * s[:, None] + m[:, None] - w.double()).abs()
    worst = float(error[~zero].max()) if bool((~zero).any()) else 0.0
    if worst > tol:
        return f"its {bits}-bit {scheme} codes reproduce it only to {worst:.2e}"
    moved = int((error[zero] > tol).sum())
    return Codes("linear", bits, c.to(torch.uint8).numpy(), s.numpy(), m.numpy(), moved_zeros=moved)


def _log_codes(w: torch.Tensor, bits: int, tol: float) -> Codes | str:
    import torch

    from nas.compress.qtensor import dequantize, quantize_tensor

    qt = quantize_tensor(w, bits, scheme="log", per_channel=True)
    error = float((dequantize(qt) - w).abs().max())
    if error > tol:
        return f"its {bits}-bit log codes reproduce it only to {error:.2e}"
    half = 2 ** (bits - 1)
    code = torch.arange(2**bits)
    magnitude = code % half
    table = torch.where(magnitude == 0, 0.0, torch.where(code >= half, -1.0, 1.0) * torch.exp2(magnitude.float()))
    unit = qt.scale.reshape(-1).expand(w.shape[0]).clone()
    return Codes("log", bits, qt.codes().numpy(), s=unit.double().numpy(), table=table.numpy().astype(np.float32))


def _kmeans_codes(w: torch.Tensor, bits: int, tol: float) -> Codes | str:
    import torch

    from nas.compress.qtensor import dequantize, kmeans_quantize

    qt = kmeans_quantize(w, bits)
    if float((dequantize(qt) - w).abs().max()) <= tol:
        return Codes("kmeans", bits, qt.q.numpy(), table=qt.codebook.numpy().astype(np.float32))
    # The refit moved a centroid (e.g. pruned zeros joined the values): the weight's own distinct values are
    # its codebook, exact by construction, when there are few enough of them.
    values = torch.unique(w)
    if values.numel() > 256:
        return f"it has {values.numel()} distinct values, more than a uint8 codebook index can address"
    index = torch.searchsorted(values, w.contiguous())
    return Codes("kmeans", bits, index.to(torch.uint8).numpy(), table=values.numpy().astype(np.float32))


# Nonlinear schemes (``QuantScheme.nonlinear``): each derives its own table of levels and indices into it.
_TABLE_CODES = {"log": _log_codes, "kmeans": _kmeans_codes}


def pack_rows(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack each row's codes ``bits`` at a time into bytes, lowest bits first (MatMulNBits' layout)."""
    per = 8 // bits
    rows, cols = codes.shape
    padded = np.zeros((rows, -(-cols // per) * per), np.uint8)
    padded[:, :cols] = codes
    packed = np.zeros((rows, padded.shape[1] // per), np.uint8)
    for j in range(per):
        packed |= (padded[:, j::per] << (bits * j)).astype(np.uint8)
    return packed
