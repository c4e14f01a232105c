"""The ONNX graph rewrite behind :func:`nas.artefacts.onnx_lowbit.export_lowbit_onnx`, one method per route.

:class:`Rewriter` takes the fp32 file :func:`nas.export.export_onnx` wrote, finds which quantized module
each 2-D weight initializer holds (the exporter's name scopes first, then by value), re-derives that weight's
codes (:func:`nas.artefacts.lowbit_codes.derive_codes`) and replaces the initializer by one route
(:data:`ROUTES`; the routes themselves are described in :mod:`nas.artefacts.onnx_lowbit`): an integer or
MatMulNBits product for a linear-coded MatMul weight, else a constant subgraph that ONNX Runtime folds when
the session loads. It then splices the new nodes in topological order and raises the opsets they need.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.artefacts.lowbit_codes import TOLERANCE, Codes, derive_codes, pack_rows

if TYPE_CHECKING:
    import onnx

ROUTES = ("int8_matmul", "nbits_matmul", "codebook", "fp16", "dequant_at_load", "fp32_kept")


def _uint4(name: str, codes: np.ndarray) -> onnx.TensorProto:
    """A UINT4 initializer (two codes per byte, the first in the low nibble, as the ONNX spec packs them)."""
    from onnx import TensorProto

    flat = codes.reshape(-1).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    tensor = TensorProto(name=name, data_type=TensorProto.UINT4, dims=list(codes.shape))
    tensor.raw_data = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()
    return tensor


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


class Rewriter:
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
    def _constant(self, name: str, codes: Codes, transpose: bool) -> None:
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

    def _matmul(self, node: Any, name: str, codes: Codes) -> None:
        """Replace ``MatMul(x, W)`` by an integer (5–8 bits) or MatMulNBits (2–4 bits) product plus the remainder."""
        s = codes.s.astype(np.float64)
        m = codes.m.astype(np.float64)
        if codes.bits >= 5:
            nodes, zp = self._int8_product(node, name, codes)
        else:
            nodes, zp = self._nbits_product(node, name, codes)
        remainder = (m + zp * s).astype(np.float32)  # W = s·(c − zp) + remainder, per output channel
        out = node.output[0]
        if np.any(np.abs(remainder) > TOLERANCE * max(1e-30, float(np.abs(s).max()))):
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

    def _int8_product(self, node: Any, name: str, codes: Codes) -> tuple[list[Any], np.ndarray]:
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

    def _nbits_product(self, node: Any, name: str, codes: Codes) -> tuple[list[Any], np.ndarray]:
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
                numpy_helper.from_array(pack_rows(padded, bits).reshape(n, k_blocks, block * bits // 8), key),
                numpy_helper.from_array(np.repeat(codes.s.astype(np.float32), k_blocks), f"{name}__scales"),
                numpy_helper.from_array(pack_rows(zp_blocks, bits), f"{name}__zero_points"),
            ]
        self.uses_ms = True
        mm = helper.make_node("MatMulNBits", [node.input[0], key, f"{name}__scales", f"{name}__zero_points"], [node.output[0]],
                              domain="com.microsoft", K=k, N=n, bits=bits, block_size=block, accuracy_level=0)
        return [mm], zp
