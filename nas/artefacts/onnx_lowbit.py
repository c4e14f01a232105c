"""The low-bit ONNX artefact: the compressed student's weights stored at the bit-widths its recipe chose.

A compressed student holds *fake-quantized* weights (fp32 values lying exactly on a quantization grid), so
:func:`nas.export.export_onnx` writes an fp32 file at full size. :func:`export_lowbit_onnx` starts from that
file and rewrites it with the ``onnx`` package (:class:`nas.artefacts.onnx_rewrite.Rewriter`): every weight
initializer of a quantized ``nn.Linear`` or ``nn.Embedding`` is replaced by the campaign's own codes,
re-derived with the project's quantizer (:mod:`nas.artefacts.lowbit_codes`) and checked to reproduce the torch
weight to 1e-6 (a weight that does not is kept fp32 and counted). Routes, by consumer, scheme and bits:

- ``int8_matmul`` (linear schemes, 5–8 bits, MatMul weights): ``DynamicQuantizeLinear → MatMulInteger →
  Cast → Mul(scales)``, the pattern ``onnxruntime.quantization.quantize_dynamic`` emits and ONNX Runtime
  fuses into ``DynamicQuantizeMatMul``. 8-bit codes are uint8 with per-channel integer zero points
  (U8U8): int8 weights using the full [−128, 127] range overflow the int16 pair sums of the AVX2 U8S8 kernel
  (``vpmaddubsw``; measured here: 14 % error), which is why ``quantize_dynamic`` reduces weights to 7 bits.
  5–7-bit codes fit that kernel and are stored as int8 (U8S8). The campaign's asymmetric grid has a float
  offset, not an integer zero point, so the remainder ``r`` (≤ half a step per channel) is added exactly in
  fp32 as ``r · Σx`` (one ReduceSum per distinct input, shared by Q/K/V).
- ``nbits_matmul`` (linear, 2–4 bits, MatMul weights): ORT's ``MatMulNBits`` (2-bit packed as 2 bits, 3- and
  4-bit as 4 bits), one block per channel-stretch of K, integer zero points, the same fp32 remainder;
  ``accuracy_level`` 0, so it dequantizes blocks and computes in fp32.
- ``codebook`` (log and k-means): uint4 (≤ 16 entries) or uint8 indices into an fp32 table (log: signed powers
  of two times a per-channel unit), ``Cast → Gather`` on constants.
- ``fp16``: a float16 initializer and a Cast.
- ``dequant_at_load`` (linear codes feeding anything but a MatMul: embedding tables, the pooler/classifier
  Gemms): uint4/uint8 codes and per-row scale/offset, ``Cast → Mul → Add`` on constants.

Constant subgraphs (``codebook``, ``fp16``, ``dequant_at_load``) are folded by ONNX Runtime's constant
folding when the session loads (any optimization level above ``ORT_DISABLE_ALL``): the file is small, the
session computes in fp32 with fp32 tensors in memory.

Asymmetric weights with unstructured pruning: pruned zeros are stored at the code nearest 0 (see
:mod:`nas.artefacts.lowbit_codes`); ``moved_zeros`` counts them. The file is dense either way: unstructured
sparsity does not shrink it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from nas.artefacts.onnx_rewrite import Rewriter
    from nas.compress.recipe import CompressionRecipe


@dataclass(frozen=True)
class OnnxArtefact:
    """A written low-bit ONNX file and what it stores and computes in (for the model card).

    Args:
        path: The ``.onnx`` file.
        file_bytes: Its size on disk (``os.path.getsize``).
        routes: Quantized weight tensors per route (see the module docstring); ``fp32_kept`` counts quantized
            weights whose codes did not reproduce the torch weight and so stay fp32.
        storage: One sentence on how the weights are stored.
        compute: One sentence on what ONNX Runtime computes in.
        kept_fp32: Module name → why its quantized weight stayed fp32.
        moved_zeros: Pruned zeros of asymmetric weights stored at the code nearest 0 (see the module docstring).
    """

    path: Path
    file_bytes: int
    routes: dict[str, int]
    storage: str
    compute: str
    kept_fp32: dict[str, str] = field(default_factory=dict)
    moved_zeros: int = 0


def export_lowbit_onnx(model: torch.nn.Module, recipe: CompressionRecipe, seq_len: int, path: str | Path) -> OnnxArtefact:
    """Export ``model`` (compressed by ``recipe``) as ONNX with its weights stored at their bit-widths.

    Args:
        model: The compressed student (fake-quantized weights).
        recipe: The recipe that compressed it: ``weight_bits``, ``embedding_bits`` and ``quant_scheme`` say
            which weights have codes.
        seq_len: Tokens per sequence (static); the batch is dynamic, as in :func:`nas.export.export_onnx`.
        path: The ``.onnx`` file to write.

    Returns:
        An :class:`OnnxArtefact`.
    """
    import onnx

    from nas.artefacts.lowbit_codes import quantized_modules
    from nas.artefacts.onnx_rewrite import Rewriter
    from nas.artefacts.onnx_fp32 import export_onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, fp32_path = tempfile.mkstemp(suffix=".fp32.onnx", dir=path.parent)
    os.close(fd)
    try:
        export_onnx(model, seq_len, Path(fp32_path))
        proto = onnx.load(fp32_path)
    finally:
        os.unlink(fp32_path)
    rewriter = Rewriter(proto, quantized_modules(model, recipe), recipe.quant_scheme)
    rewriter.run()
    onnx.save(proto, str(path))
    return OnnxArtefact(path=path, file_bytes=os.path.getsize(path), routes=dict(rewriter.routes),
                        storage=_storage(rewriter), compute=_compute(rewriter.routes),
                        kept_fp32=dict(rewriter.kept_fp32), moved_zeros=rewriter.moved_zeros)


def lowbit_onnx_bytes(model: torch.nn.Module, recipe: CompressionRecipe, seq_len: int) -> int:
    """Byte size of the file :func:`export_lowbit_onnx` writes for ``model`` (written to a temp folder)."""
    with tempfile.TemporaryDirectory(prefix="lightnas-onnx-") as folder:
        return export_lowbit_onnx(model, recipe, seq_len, Path(folder) / "model.onnx").file_bytes


# ----------------------------------------------------------------------------------------------------------
# What the card says about the file


def _bits(rewriter: Rewriter, route: str) -> str:
    return "/".join(str(b) for b in sorted(rewriter.bits_by_route[route]))


def _storage(rewriter: Rewriter) -> str:
    """One sentence on how the rewritten file stores its weights, route by route."""
    r, parts = rewriter.routes, []
    if r["int8_matmul"]:
        bits = _bits(rewriter, "int8_matmul")
        note = "" if bits == "8" else f" ({bits}-bit codes stored in 8 bits)"
        parts.append(f"{r['int8_matmul']} matmul weights as 8-bit codes{note} with per-channel scales and zero points")
    if r["nbits_matmul"]:
        bits = _bits(rewriter, "nbits_matmul")
        note = "" if bits in ("2", "4", "2/4") else " (3-bit codes in 4 bits)"
        parts.append(f"{r['nbits_matmul']} matmul weights as packed {bits}-bit codes{note} with per-channel scales and zero points (MatMulNBits)")
    if r["dequant_at_load"]:
        parts.append(f"{r['dequant_at_load']} tables/Gemm weights as {_bits(rewriter, 'dequant_at_load')}-bit codes (uint4 up to 4 bits, else uint8) with per-row scales and offsets")
    if r["codebook"]:
        parts.append(f"{r['codebook']} weights as {_bits(rewriter, 'codebook')}-bit {rewriter.scheme} codebook indices (uint4 up to 16 entries, else uint8) and an fp32 codebook")
    if r["fp16"]:
        parts.append(f"{r['fp16']} weights as float16")
    if r["fp32_kept"]:
        parts.append(f"{r['fp32_kept']} quantized weights kept fp32 (their codes did not reproduce them)")
    text = "weights stored as " + ("; ".join(parts) if parts else "fp32 (nothing quantized)")
    if rewriter.moved_zeros:
        text += f"; {rewriter.moved_zeros} pruned zeros stored at the code nearest 0 (≤ half a step)"
    return text + "; biases, norms and unquantized weights fp32; dense storage (unstructured sparsity does not shrink the file)"


def _compute(routes: dict[str, int]) -> str:
    """One sentence on what ONNX Runtime computes in, given the routes' counts."""
    r, parts = routes, []
    if r["int8_matmul"]:
        parts.append("MatMulInteger (int8 compute, activations quantized dynamically per tensor by ONNX Runtime, "
                     "fused to DynamicQuantizeMatMul; asymmetric remainders added in fp32)")
    if r["nbits_matmul"]:
        parts.append("MatMulNBits (blockwise dequantized, fp32 compute, accuracy_level 0)")
    if r["dequant_at_load"] or r["codebook"] or r["fp16"]:
        parts.append("codebook/fp16/table weights dequantized once when the session loads (constant folding), fp32 compute")
    return "; ".join(parts) + "; everything else fp32" if parts else "fp32 throughout"
