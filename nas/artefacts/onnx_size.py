"""Bytes of the ONNX file a student ships as, computed without writing it.

The front's size axis (``TrialMetrics.size_bytes``) is the size of the file the host and every non-MCU
profile ship, :func:`nas.export.export_shipped_onnx` (``export_lowbit_onnx``; fp32 recipes ``export_onnx``).
:func:`nas.export.shipped_onnx_bytes` writes that file to a temporary folder: 5–13 s per student on the
2-core machine, almost all of it the dynamo export. :func:`shipped_onnx_bytes` here adds it up instead, in
10–70 ms (measured in ``tests/test_shipped_size.py``), and agrees with the file to 0.1 %:

* **initializer bytes, exactly**, route by route as the rewriter stores them (uint8/int8 codes, MatMulNBits
  blocks, uint4 indices, per-channel scales, zero points and remainders, fp16, fp32 kept); codes are
  re-derived with the rewriter's own :func:`~nas.artefacts.onnx_lowbit.derive_codes`, so a weight whose codes
  would not reproduce it counts as fp32, as in the file; fp32 tensors with equal values count once (the
  exporter's optimiser merges identical initializers); position tables count the ``seq_len`` rows the
  exporter keeps; a trimmed vocabulary's ``token_map`` counts as int64;
* **graph bytes, measured**: node, name and framing bytes (and, in the fp32 file, the exporter's per-node
  stack-trace metadata) per block type and route, from real exports (:data:`GRAPH_BYTES`, refreshed by
  ``python -m nas.artefacts.onnx_size``). They do not depend on widths.

``tests/test_shipped_size.py`` checks the total against the written file to 1 % for fp32, 8-bit, 4-bit,
pruned and unpruned students.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from nas.compress.recipe import CompressionRecipe

# Graph bytes (file − the initializer bytes below) of real exports, by route family: "fixed" is the
# embeddings, pooler, classifier, inputs and opsets; the rest is per encoder layer of that block type.
# Measured 2026-12-07 (hidden 128, FFN 256, seq 64, vocabulary 1000; torch 2.9 dynamo exporter) by
# ``python -m nas.artefacts.onnx_size``: layers 1 and 2 of each type, per-layer = difference.
# Routes not measured (fp16, lowbit-fp32: only embeddings quantized) use ``int8-r``, the largest lowbit graph.
GRAPH_BYTES: dict[str, dict[str, int]] = {
    "fp32": {"transformer": 54838, "conv": 27159, "bottleneck": 80537, "fixed": 15605},  # incl. stack-trace metadata
    "int8-r": {"transformer": 13358, "conv": 8691, "bottleneck": 22754, "fixed": 6907},
    "int8": {"transformer": 12070, "conv": 7980, "bottleneck": 20494, "fixed": 6911},
    "nbits-r": {"transformer": 12073, "conv": 7919, "bottleneck": 20413, "fixed": 6978},
    "nbits": {"transformer": 10785, "conv": 7208, "bottleneck": 18153, "fixed": 6981},
    "codebook": {"transformer": 10809, "conv": 7220, "bottleneck": 18262, "fixed": 6412},
}


def matmul_route(recipe: CompressionRecipe) -> str:
    """The family of the file's encoder matmuls: ``fp32`` (export_onnx file), ``int8``/``nbits`` (linear
    codes, ``-r`` when asymmetric remainders are added), ``codebook``, ``fp16`` or ``lowbit-fp32``."""
    emb_bits = recipe.embedding_bits if recipe.embedding_bits is not None else recipe.weight_bits
    if recipe.weight_bits >= 32 and emb_bits >= 32:
        return "fp32"
    bits = recipe.weight_bits
    if bits >= 32:
        return "lowbit-fp32"
    if bits == 16:
        return "fp16"
    if recipe.quant_scheme in ("log", "kmeans"):
        return "codebook"
    route = "int8" if bits >= 5 else "nbits"
    return route + ("-r" if recipe.quant_scheme == "asymmetric" else "")


def _consumers(model: torch.nn.Module, seq_len: int) -> dict[str, int]:
    """Module name → input rank of every ``nn.Linear`` in one batch-1 forward (2: a Gemm, 3: a MatMul)."""
    import torch
    from torch import nn

    ranks: dict[str, int] = {}

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple) -> None:  # returns None: the inputs stay as they are
            ranks.setdefault(name, args[0].dim())
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    ids = torch.ones(1, seq_len, dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(ids, torch.ones_like(ids))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return ranks


def _codes_bytes(codes: Any, rows: np.ndarray, as_matmul: bool) -> int:
    """Initializer bytes of one weight stored as ``codes`` (see the rewriter's routes)."""
    n_rows = rows.shape[0]
    if codes.kind == "float16":
        return rows.size * 2
    if codes.kind in ("log", "kmeans"):
        index = -(-rows.size // 2) if len(codes.table) <= 16 else rows.size
        return index + 4 * len(codes.table) + (4 * n_rows if codes.kind == "log" else 0)
    remainder = 0
    if as_matmul:  # W = s·(c − zp) + r; r is stored when any channel has one (asymmetric grids)
        remainder = 4 * n_rows if _has_remainder(codes) else 0
        if codes.bits >= 5:
            return rows.size + n_rows + 4 * n_rows + remainder
        bits = 2 if codes.bits == 2 else 4
        k = rows.shape[1]
        block = max(16, min(128, 1 << (k - 1).bit_length()))
        k_blocks = -(-k // block)
        per = 8 // bits
        return n_rows * k_blocks * block * bits // 8 + 4 * n_rows * k_blocks + n_rows * -(-k_blocks // per) + remainder
    index = -(-rows.size // 2) if codes.bits <= 4 else rows.size  # dequant_at_load: uint4 or uint8 codes
    return index + 8 * n_rows


def _has_remainder(codes: Any) -> bool:
    from nas.artefacts.onnx_lowbit import _TOLERANCE

    s, m = codes.s.astype(np.float64), codes.m.astype(np.float64)
    if codes.bits >= 5:
        shift = 2 ** (codes.bits - 1) if codes.bits < 8 else 0
        low, high = (-128, 127) if codes.bits < 8 else (0, 255)
        zp = np.clip(np.round(-m / np.where(s > 0, s, 1.0)) - shift, low, high) + shift
    else:
        bits = 2 if codes.bits == 2 else 4
        zp = np.clip(np.round(-m / np.where(s > 0, s, 1.0)), 0, 2**bits - 1)
    remainder = (m + zp * s).astype(np.float32)
    return bool(np.any(np.abs(remainder) > _TOLERANCE * max(1e-30, float(np.abs(s).max()))))


def initializer_bytes(model: torch.nn.Module, recipe: CompressionRecipe, seq_len: int) -> int:
    """Bytes of the shipped file's initializers (weights, codes, scales, tables), exactly as the rewriter
    stores them; fp32 everywhere for an fp32 recipe."""
    from nas.artefacts.onnx_lowbit import _quantized_modules, derive_codes

    lowbit = matmul_route(recipe) != "fp32"
    quantized = _quantized_modules(model, recipe) if lowbit else {}
    ranks = _consumers(model, seq_len)
    seen: set[tuple] = set()
    total = 0
    owners = {f"{name}.weight": name for name in quantized}
    for name, param in model.named_parameters():
        array = param.detach().float().cpu().numpy()
        if name.endswith("position_embeddings.weight"):
            array = array[:seq_len]  # the exporter folds the slice to the rows a seq_len input uses
        module = owners.get(name)
        if module is not None:
            _, bits, is_embedding = quantized[module]
            codes = derive_codes(array, bits, recipe.quant_scheme)
            if not isinstance(codes, str):
                as_matmul = not is_embedding and ranks.get(module, 2) > 2 and codes.kind == "linear"
                total += _codes_bytes(codes, array, as_matmul)
                continue
        key = (array.shape, hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest())
        if key not in seen:  # identical fp32 initializers are merged into one by the exporter
            seen.add(key)
            total += array.size * 4
    for name, buf in model.named_buffers():
        if name.endswith("token_map") and buf is not None and buf.numel():
            total += buf.numel() * 8  # int64 id map, gathered by the graph
    return total


def graph_bytes(model: torch.nn.Module, recipe: CompressionRecipe) -> int:
    """The measured graph bytes (:data:`GRAPH_BYTES`) of this student's blocks under ``recipe``."""
    from nas.models.blocks import Block

    blocks = [m.block_type for m in model.modules() if isinstance(m, Block)]
    table = GRAPH_BYTES.get(matmul_route(recipe)) or GRAPH_BYTES["int8-r"]
    per_layer = [table.get(t, max(v for k, v in table.items() if k != "fixed")) for t in blocks]
    return table["fixed"] + sum(per_layer)


def shipped_onnx_bytes(model: torch.nn.Module, recipe: CompressionRecipe, seq_len: int) -> int:
    """Byte size of the ONNX file ``model`` ships as (``export_lowbit_onnx``; fp32 recipes ``export_onnx``),
    to within 1 % (see the module docstring); milliseconds instead of the export's seconds.

    Args:
        model: The compressed student (fake-quantized weights, pruned shapes).
        recipe: The recipe that compressed it.
        seq_len: Tokens per sequence of the exported graph (the campaign's ``max_seq_len``).
    """
    return initializer_bytes(model, recipe, seq_len) + graph_bytes(model, recipe)


# ----------------------------------------------------------------------------------------------------------
# Measuring GRAPH_BYTES (``python -m nas.artefacts.onnx_size``: ~5 min on 2 cores)

CALIBRATION_RECIPES = {"fp32": (32, "asymmetric"), "int8-r": (8, "asymmetric"), "int8": (8, "symmetric"),
                       "nbits-r": (4, "asymmetric"), "nbits": (4, "symmetric"), "codebook": (4, "kmeans")}


def _graph_bytes_of_export(block: Any, n_layers: int, recipe: CompressionRecipe, seq_len: int = 64) -> int:
    """File bytes − :func:`initializer_bytes` of one real export of a random student with ``n_layers`` blocks."""
    import os
    import tempfile
    from pathlib import Path

    import torch

    from nas.artefacts.onnx_lowbit import export_lowbit_onnx
    from nas.candidate import Architecture, Candidate
    from nas.compress.pipeline import compress_model
    from nas.export import export_onnx
    from nas.models.student import build_student

    torch.manual_seed(0)
    arch = Architecture(hidden_size=128, layers=(block,) * n_layers, vocab_size=1000)
    model = build_student(Candidate(architecture=arch, compression=recipe), num_labels=2, max_positions=seq_len,
                          kept_token_ids=torch.arange(1000)).eval()
    with torch.no_grad():  # distinct values everywhere, as after training (no merged initializers)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ids = torch.randint(0, 1000, (16, seq_len))
    compress_model(model, recipe, calibration_batches=[{"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                                        "labels": torch.randint(0, 2, (16,))}])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(model, seq_len, path) if matmul_route(recipe) == "fp32" else export_lowbit_onnx(model, recipe, seq_len, path)
        return os.path.getsize(path) - initializer_bytes(model, recipe, seq_len)


def measure_graph_bytes() -> dict[str, dict[str, int]]:
    """A fresh :data:`GRAPH_BYTES`: layers 1 and 2 of each block type under each calibration recipe."""
    from nas.compress.recipe import CompressionRecipe
    from nas.models.blocks import example_spec, list_blocks

    blocks = {name: example_spec(name) for name in list_blocks()}  # each type's own example (the table was measured on wider ones)
    table: dict[str, dict[str, int]] = {}
    for route, (bits, scheme) in CALIBRATION_RECIPES.items():
        recipe = CompressionRecipe(weight_bits=bits, quant_scheme=scheme)
        fixed = []
        table[route] = {}
        for name, block in blocks.items():
            one, two = (_graph_bytes_of_export(block, n, recipe) for n in (1, 2))
            table[route][name] = two - one
            fixed.append(one - (two - one))
            print(route, name, one, two, flush=True)
        table[route]["fixed"] = round(sum(fixed) / len(fixed))
    return table


if __name__ == "__main__":
    import json

    print(json.dumps(measure_graph_bytes(), indent=1))
