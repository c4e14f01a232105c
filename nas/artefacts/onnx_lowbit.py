"""The low-bit ONNX artefact: the compressed student's weights stored at the bit-widths its recipe chose.

A compressed student holds *fake-quantized* weights (fp32 values lying exactly on a quantization grid), so
:func:`nas.export.export_onnx` writes an fp32 file at full size. :func:`export_lowbit_onnx` starts from that
file and rewrites it with the ``onnx`` package: every weight initializer of a quantized ``nn.Linear`` or
``nn.Embedding`` is replaced by the campaign's own codes, re-derived with the project's quantizer
(:func:`nas.compress.quantize.quantize_tensor`, per output channel) and checked to reproduce the torch weight
to 1e-6 (a weight that does not is kept fp32 and counted). Routes, by consumer, scheme and bits:

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

Asymmetric weights with unstructured pruning: pruned zeros are not on the asymmetric grid; the grid is
re-derived from the kept weights and each pruned zero is stored at the code nearest 0 (moved by at most half
a step, as the dense packed accounting of :mod:`nas.compress.size` assumes); ``moved_zeros`` counts them.
The file is dense either way: unstructured sparsity does not shrink it.
"""

from __future__ import annotations

import ast
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx
    import torch

    from nas.compress.recipe import CompressionRecipe

ROUTES = ("int8_matmul", "nbits_matmul", "codebook", "fp16", "dequant_at_load", "fp32_kept")
_TOLERANCE = 1e-6  # max |dequantize(codes) − weight|, relative to the tensor's max |w| (floor 1)


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


@dataclass
class _Codes:
    """One weight's codes in row (output-channel) orientation: ``value = c·s + m`` or ``table[c]·unit``."""

    kind: str  # linear, log, kmeans, float16
    bits: int
    c: np.ndarray  # uint8 codes (R, C); float16 values for kind float16
    s: np.ndarray | None = None  # (R,) step (linear) or unit (log)
    m: np.ndarray | None = None  # (R,) offset (linear)
    table: np.ndarray | None = None  # codebook (kmeans) or signed powers of two (log)
    moved_zeros: int = 0


# ----------------------------------------------------------------------------------------------------------
# Public API


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
    rewriter = _Rewriter(proto, _quantized_modules(model, recipe), recipe.quant_scheme)
    rewriter.run()
    onnx.save(proto, str(path))
    return rewriter.artefact(path)


def lowbit_onnx_bytes(model: torch.nn.Module, recipe: CompressionRecipe, seq_len: int) -> int:
    """Byte size of the file :func:`export_lowbit_onnx` writes for ``model`` (written to a temp folder)."""
    with tempfile.TemporaryDirectory(prefix="lightnas-onnx-") as folder:
        return export_lowbit_onnx(model, recipe, seq_len, Path(folder) / "model.onnx").file_bytes


# ----------------------------------------------------------------------------------------------------------
# Which weights have codes, and the codes


def _quantized_modules(model: torch.nn.Module, recipe: CompressionRecipe) -> dict[str, tuple[np.ndarray, int, bool]]:
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


def derive_codes(rows: np.ndarray, bits: int, scheme: str) -> _Codes | str:
    """The codes of a fake-quantized weight in row orientation, or why they could not be re-derived exactly."""
    import torch

    w = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    tol = _TOLERANCE * max(1.0, float(w.abs().max()) if w.numel() else 1.0)
    if bits == 16:
        half = w.half()
        if float((half.float() - w).abs().max()) > tol:
            return "its weight is not float16-exact"
        return _Codes("float16", 16, half.numpy())
    if scheme == "kmeans":
        return _kmeans_codes(w, bits, tol)
    if scheme == "log":
        return _log_codes(w, bits, tol)
    return _linear_codes(w, bits, scheme, tol)


def _linear_codes(w: torch.Tensor, bits: int, scheme: str, tol: float) -> _Codes | str:
    import torch

    from nas.compress.quantize import quantize_tensor

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
    return _Codes("linear", bits, c.to(torch.uint8).numpy(), s.numpy(), m.numpy(), moved_zeros=moved)


def _log_codes(w: torch.Tensor, bits: int, tol: float) -> _Codes | str:
    import torch

    from nas.compress.quantize import dequantize, quantize_tensor

    qt = quantize_tensor(w, bits, scheme="log", per_channel=True)
    error = float((dequantize(qt) - w).abs().max())
    if error > tol:
        return f"its {bits}-bit log codes reproduce it only to {error:.2e}"
    half = 2 ** (bits - 1)
    code = torch.arange(2**bits)
    magnitude = code % half
    table = torch.where(magnitude == 0, 0.0, torch.where(code >= half, -1.0, 1.0) * torch.exp2(magnitude.float()))
    unit = qt.scale.reshape(-1).expand(w.shape[0]).clone()
    return _Codes("log", bits, qt.codes().numpy(), s=unit.double().numpy(), table=table.numpy().astype(np.float32))


def _kmeans_codes(w: torch.Tensor, bits: int, tol: float) -> _Codes | str:
    import torch

    from nas.compress.quantize import dequantize, kmeans_quantize

    qt = kmeans_quantize(w, bits)
    if float((dequantize(qt) - w).abs().max()) <= tol:
        return _Codes("kmeans", bits, qt.q.numpy(), table=qt.codebook.numpy().astype(np.float32))
    # The refit moved a centroid (e.g. pruned zeros joined the values): the weight's own distinct values are
    # its codebook, exact by construction, when there are few enough of them.
    values = torch.unique(w)
    if values.numel() > 256:
        return f"it has {values.numel()} distinct values, more than a uint8 codebook index can address"
    index = torch.searchsorted(values, w.contiguous())
    return _Codes("kmeans", bits, index.to(torch.uint8).numpy(), table=values.numpy().astype(np.float32))


# ----------------------------------------------------------------------------------------------------------
# Tensors


def _uint4(name: str, codes: np.ndarray) -> onnx.TensorProto:
    """A UINT4 initializer (two codes per byte, the first in the low nibble, as the ONNX spec packs them)."""
    from onnx import TensorProto

    flat = codes.reshape(-1).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    tensor = TensorProto(name=name, data_type=TensorProto.UINT4, dims=list(codes.shape))
    tensor.raw_data = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()
    return tensor


def _pack_rows(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack each row's codes ``bits`` at a time into bytes, lowest bits first (MatMulNBits' layout)."""
    per = 8 // bits
    rows, cols = codes.shape
    padded = np.zeros((rows, -(-cols // per) * per), np.uint8)
    padded[:, :cols] = codes
    packed = np.zeros((rows, padded.shape[1] // per), np.uint8)
    for j in range(per):
        packed |= (padded[:, j::per] << (bits * j)).astype(np.uint8)
    return packed


def _index_tensor(name: str, codes: np.ndarray, n_entries: int) -> onnx.TensorProto:
    from onnx import numpy_helper

    return _uint4(name, codes) if n_entries <= 16 else numpy_helper.from_array(codes.astype(np.uint8), name)


def _topological(nodes: list[Any], available: set[str]) -> list[Any]:
    """``nodes`` in an order where every input is produced before use (a shared DynamicQuantizeLinear or
    ReduceSum is emitted with the first MatMul rewritten, which need not be the first in the graph)."""
    ready, ordered, pending = set(available) | {""}, [], list(nodes)
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:
            raise RuntimeError(f"the rewritten graph has a cycle or a missing input near {rest[0].op_type}")
        for node in done:
            ordered.append(node)
            ready.update(node.output)
        pending = rest
    return ordered


# ----------------------------------------------------------------------------------------------------------
# The graph rewrite


class _Rewriter:
    """Replaces quantized weight initializers of one exported model in place, counting routes."""

    def __init__(self, proto: onnx.ModelProto, quantized: dict[str, tuple[np.ndarray, int, bool]], scheme: str) -> None:
        from onnx import numpy_helper

        self.proto, self.graph, self.quantized, self.scheme = proto, proto.graph, quantized, scheme
        self.inits = {t.name: t for t in self.graph.initializer}
        self.arrays = {n: numpy_helper.to_array(t) for n, t in self.inits.items() if t.data_type == 1 and len(t.dims) == 2}
        self.routes = dict.fromkeys(ROUTES, 0)
        self.bits_by_route: dict[str, set[int]] = {r: set() for r in ROUTES}
        self.kept_fp32: dict[str, str] = {}
        self.moved_zeros = 0
        self.new_nodes: dict[str, list[Any]] = {}  # output name of a replaced node → replacement nodes
        self.prefix_nodes: list[Any] = []  # constant subgraphs (placed first)
        self.new_inits: list[Any] = []
        self.dropped: set[str] = set()
        self.shared: dict[tuple[str, str], str] = {}  # (op, input) → output, for DynamicQuantizeLinear / ReduceSum
        self.uses_ms = False

    # -- owners ------------------------------------------------------------------------------------
    def _consumers(self) -> dict[str, list[tuple[Any, int]]]:
        uses: dict[str, list[tuple[Any, int]]] = {}
        for node in self.graph.node:
            for i, name in enumerate(node.input):
                if name in self.arrays:
                    uses.setdefault(name, []).append((node, i))
        return uses

    def _owner(self, name: str, uses: list[tuple[Any, int]]) -> tuple[str, np.ndarray, bool] | None:
        """The quantized module an initializer holds and the initializer in row (output-channel) orientation."""
        array = self.arrays[name]
        scoped = []
        for node, _ in uses:
            props = {p.key: p.value for p in node.metadata_props}
            try:
                scoped += [s for s in ast.literal_eval(props.get("pkg.torch.onnx.name_scopes", "[]")) if s in self.quantized]
            except (ValueError, SyntaxError):
                pass
        for module in scoped + [m for m in self.quantized if m not in scoped]:  # the exporter's scope first, then by value
            weight, _, is_embedding = self.quantized[module]
            if weight.shape == array.shape and np.array_equal(weight, array):
                return module, array, False
            if weight.shape == array.shape[::-1] and np.array_equal(weight, array.T):
                return module, array.T, True
            if is_embedding and array.shape[1] == weight.shape[1] and array.shape[0] <= weight.shape[0] \
                    and np.array_equal(weight[: array.shape[0]], array):  # position rows sliced to seq_len
                return module, array, False
        return None

    # -- main --------------------------------------------------------------------------------------
    def run(self) -> None:
        for name, uses in self._consumers().items():
            owner = self._owner(name, uses)
            if owner is None:
                continue
            module, rows, transposed = owner
            _, bits, _ = self.quantized[module]
            codes = derive_codes(rows, bits, self.scheme)
            if isinstance(codes, str):
                self.kept_fp32[module] = codes
                self.routes["fp32_kept"] += 1
                continue
            self.moved_zeros += codes.moved_zeros
            as_matmul_b = transposed and all(n.op_type == "MatMul" and i == 1 for n, i in uses)
            if as_matmul_b and codes.kind == "linear":
                for node, _ in uses:
                    self._matmul(node, name, codes)
                self._count("int8_matmul" if codes.bits >= 5 else "nbits_matmul", codes.bits)
            else:
                self._constant(name, codes, transpose=transposed)
                route = {"linear": "dequant_at_load", "float16": "fp16"}.get(codes.kind, "codebook")
                self._count(route, codes.bits)
            self.dropped.add(name)
        self._splice()

    def _count(self, route: str, bits: int) -> None:
        self.routes[route] += 1
        self.bits_by_route[route].add(bits)

    def _splice(self) -> None:
        from onnx import helper

        nodes = list(self.prefix_nodes)
        for node in self.graph.node:
            nodes += self.new_nodes.get(node.output[0], [node])
        nodes = _topological(nodes, {i.name for i in self.graph.input} | {t.name for t in self.graph.initializer}
                             | {t.name for t in self.new_inits})
        for node in nodes:  # the exporter's per-node stack traces: ~5 % of a small file, no use to a runtime
            del node.metadata_props[:]
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        keep = [t for t in self.graph.initializer if t.name not in self.dropped]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep + self.new_inits)
        for opset in self.proto.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, 21)  # uint4 tensors and Cast from uint4
        if self.uses_ms and not any(o.domain == "com.microsoft" for o in self.proto.opset_import):
            self.proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        self.proto.ir_version = max(self.proto.ir_version, 10)

    # -- routes ------------------------------------------------------------------------------------
    def _constant(self, name: str, codes: _Codes, transpose: bool) -> None:
        """Recompute the fp32 initializer ``name`` from its codes with a constant subgraph (folded at load)."""
        from onnx import TensorProto, helper, numpy_helper

        tmp = f"{name}__rows" if transpose else name
        nodes, inits = [], []
        if codes.kind == "float16":
            inits.append(numpy_helper.from_array(codes.c, f"{name}__fp16"))
            nodes.append(helper.make_node("Cast", [f"{name}__fp16"], [tmp], to=TensorProto.FLOAT))
        elif codes.kind == "linear":
            inits += [_index_tensor(f"{name}__codes", codes.c, 2**codes.bits),
                      numpy_helper.from_array(codes.s.reshape(-1, 1).astype(np.float32), f"{name}__scale"),
                      numpy_helper.from_array(codes.m.reshape(-1, 1).astype(np.float32), f"{name}__offset")]
            nodes += [helper.make_node("Cast", [f"{name}__codes"], [f"{name}__codesf"], to=TensorProto.FLOAT),
                      helper.make_node("Mul", [f"{name}__codesf", f"{name}__scale"], [f"{name}__scaled"]),
                      helper.make_node("Add", [f"{name}__scaled", f"{name}__offset"], [tmp])]
        else:  # log, kmeans: a table gathered by index
            inits += [_index_tensor(f"{name}__index", codes.c, len(codes.table)),
                      numpy_helper.from_array(codes.table, f"{name}__table")]
            nodes += [helper.make_node("Cast", [f"{name}__index"], [f"{name}__index32"], to=TensorProto.INT32),
                      helper.make_node("Gather", [f"{name}__table", f"{name}__index32"],
                                       [f"{name}__levels" if codes.kind == "log" else tmp], axis=0)]
            if codes.kind == "log":
                inits.append(numpy_helper.from_array(codes.s.reshape(-1, 1).astype(np.float32), f"{name}__unit"))
                nodes.append(helper.make_node("Mul", [f"{name}__levels", f"{name}__unit"], [tmp]))
        if transpose:
            nodes.append(helper.make_node("Transpose", [tmp], [name], perm=[1, 0]))
        self.prefix_nodes += nodes
        self.new_inits += inits

    def _matmul(self, node: Any, name: str, codes: _Codes) -> None:
        """Replace ``MatMul(x, W)`` by an integer (5–8 bits) or MatMulNBits (2–4 bits) product plus the remainder."""
        s = codes.s.astype(np.float64)
        m = codes.m.astype(np.float64)
        if codes.bits >= 5:
            nodes, zp = self._int8_product(node, name, codes)
        else:
            nodes, zp = self._nbits_product(node, name, codes)
        remainder = (m + zp * s).astype(np.float32)  # W = s·(c − zp) + remainder, per output channel
        out = node.output[0]
        if np.any(np.abs(remainder) > _TOLERANCE * max(1e-30, float(np.abs(s).max()))):
            from onnx import helper, numpy_helper

            nodes[-1].output[0] = f"{out}__product"
            total = self._shared("ReduceSum", node.input[0], nodes)
            self.new_inits.append(numpy_helper.from_array(remainder, f"{out}__remainder"))
            nodes += [helper.make_node("Mul", [total, f"{out}__remainder"], [f"{out}__correction"]),
                      helper.make_node("Add", [f"{out}__product", f"{out}__correction"], [out])]
        self.new_nodes[out] = nodes

    def _shared(self, op: str, x: str, nodes: list[Any]) -> str:
        """The output of one DynamicQuantizeLinear or ReduceSum per activation, emitted at its first use."""
        from onnx import helper, numpy_helper

        key = (op, x)
        if key not in self.shared:
            base = f"{x}__{op}"
            if op == "DynamicQuantizeLinear":
                nodes.append(helper.make_node(op, [x], [f"{base}_q", f"{base}_scale", f"{base}_zp"]))
            else:
                if "__axes_last" not in {t.name for t in self.new_inits}:
                    self.new_inits.append(numpy_helper.from_array(np.array([-1], np.int64), "__axes_last"))
                nodes.append(helper.make_node("ReduceSum", [x, "__axes_last"], [base], keepdims=1))
            self.shared[key] = base
        return self.shared[key]

    def _int8_product(self, node: Any, name: str, codes: _Codes) -> tuple[list[Any], np.ndarray]:
        from onnx import TensorProto, helper, numpy_helper

        s, m = codes.s.astype(np.float64), codes.m.astype(np.float64)
        signed = codes.bits < 8  # 5–7 bits: int8 codes fit the U8S8 kernel's int16 pair sums; 8 bits: U8U8
        shift = 2 ** (codes.bits - 1) if signed else 0
        low, high = (-128, 127) if signed else (0, 255)
        zp = np.clip(np.round(-m / np.where(s > 0, s, 1.0)) - shift, low, high)
        b = (codes.c.astype(np.int16) - shift).T  # (K, N)
        dtype = np.int8 if signed else np.uint8
        key = f"{name}__q{codes.bits}"
        if key not in {t.name for t in self.new_inits}:
            self.new_inits += [numpy_helper.from_array(b.astype(dtype), key),
                               numpy_helper.from_array(zp.astype(dtype), f"{name}__zp"),
                               numpy_helper.from_array(codes.s.astype(np.float32), f"{name}__scale")]
        nodes: list[Any] = []
        q = self._shared("DynamicQuantizeLinear", node.input[0], nodes)
        out = node.output[0]
        nodes += [helper.make_node("MatMulInteger", [f"{q}_q", key, f"{q}_zp", f"{name}__zp"], [f"{out}__int32"]),
                  helper.make_node("Cast", [f"{out}__int32"], [f"{out}__acc"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"{q}_scale", f"{name}__scale"], [f"{out}__scales"]),
                  helper.make_node("Mul", [f"{out}__acc", f"{out}__scales"], [out])]
        return nodes, zp + shift

    def _nbits_product(self, node: Any, name: str, codes: _Codes) -> tuple[list[Any], np.ndarray]:
        from onnx import helper, numpy_helper

        s, m = codes.s.astype(np.float64), codes.m.astype(np.float64)
        bits = 2 if codes.bits == 2 else 4
        n, k = codes.c.shape
        block = max(16, min(128, 1 << (k - 1).bit_length()))
        k_blocks = -(-k // block)
        padded = np.zeros((n, k_blocks * block), np.uint8)
        padded[:, :k] = codes.c
        zp = np.clip(np.round(-m / np.where(s > 0, s, 1.0)), 0, 2**bits - 1)
        key = f"{name}__nbits"
        if key not in {t.name for t in self.new_inits}:
            zp_blocks = np.repeat(zp.astype(np.uint8)[:, None], k_blocks, axis=1)
            self.new_inits += [
                numpy_helper.from_array(_pack_rows(padded, bits).reshape(n, k_blocks, block * bits // 8), key),
                numpy_helper.from_array(np.repeat(codes.s.astype(np.float32), k_blocks), f"{name}__scales"),
                numpy_helper.from_array(_pack_rows(zp_blocks, bits), f"{name}__zero_points"),
            ]
        self.uses_ms = True
        mm = helper.make_node("MatMulNBits", [node.input[0], key, f"{name}__scales", f"{name}__zero_points"], [node.output[0]],
                              domain="com.microsoft", K=k, N=n, bits=bits, block_size=block, accuracy_level=0)
        return [mm], zp

    # -- summary -----------------------------------------------------------------------------------
    def artefact(self, path: Path) -> OnnxArtefact:
        return OnnxArtefact(path=path, file_bytes=os.path.getsize(path), routes=dict(self.routes),
                            storage=self._storage(), compute=self._compute(), kept_fp32=dict(self.kept_fp32),
                            moved_zeros=self.moved_zeros)

    def _bits(self, route: str) -> str:
        return "/".join(str(b) for b in sorted(self.bits_by_route[route]))

    def _storage(self) -> str:
        r, parts = self.routes, []
        if r["int8_matmul"]:
            bits = self._bits("int8_matmul")
            note = "" if bits == "8" else f" ({bits}-bit codes stored in 8 bits)"
            parts.append(f"{r['int8_matmul']} matmul weights as 8-bit codes{note} with per-channel scales and zero points")
        if r["nbits_matmul"]:
            bits = self._bits("nbits_matmul")
            note = "" if bits in ("2", "4", "2/4") else " (3-bit codes in 4 bits)"
            parts.append(f"{r['nbits_matmul']} matmul weights as packed {bits}-bit codes{note} with per-channel scales and zero points (MatMulNBits)")
        if r["dequant_at_load"]:
            parts.append(f"{r['dequant_at_load']} tables/Gemm weights as {self._bits('dequant_at_load')}-bit codes (uint4 up to 4 bits, else uint8) with per-row scales and offsets")
        if r["codebook"]:
            parts.append(f"{r['codebook']} weights as {self._bits('codebook')}-bit {self.scheme} codebook indices (uint4 up to 16 entries, else uint8) and an fp32 codebook")
        if r["fp16"]:
            parts.append(f"{r['fp16']} weights as float16")
        if r["fp32_kept"]:
            parts.append(f"{r['fp32_kept']} quantized weights kept fp32 (their codes did not reproduce them)")
        text = "weights stored as " + ("; ".join(parts) if parts else "fp32 (nothing quantized)")
        if self.moved_zeros:
            text += f"; {self.moved_zeros} pruned zeros stored at the code nearest 0 (≤ half a step)"
        return text + "; biases, norms and unquantized weights fp32; dense storage (unstructured sparsity does not shrink the file)"

    def _compute(self) -> str:
        r, parts = self.routes, []
        if r["int8_matmul"]:
            parts.append("MatMulInteger (int8 compute, activations quantized dynamically per tensor by ONNX Runtime, "
                         "fused to DynamicQuantizeMatMul; asymmetric remainders added in fp32)")
        if r["nbits_matmul"]:
            parts.append("MatMulNBits (blockwise dequantized, fp32 compute, accuracy_level 0)")
        if r["dequant_at_load"] or r["codebook"] or r["fp16"]:
            parts.append("codebook/fp16/table weights dequantized once when the session loads (constant folding), fp32 compute")
        return "; ".join(parts) + "; everything else fp32" if parts else "fp32 throughout"

