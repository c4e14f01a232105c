"""The compiled graph as plain numbers: per-operator FLOPs and bytes, weights, and activation liveness.

A model is exported with torch.export, imported into TVM Relax and legalized and fused exactly as the
tuned build does (:func:`nas.hardware.tuning.prepare_for_tuning`), so one "operator" here is one fused
TIR function: one kernel launch in the compiled model. From that graph this module derives what the
latency predictor and the MCU memory checks need, without building or running anything.

FLOPs come from TVM's own ``estimate_tir_flops`` (multiply and add counted separately, so a MAC is 2
FLOPs). Bytes are the sizes of each kernel's inputs and output; weights are the Relax constants
(``keep_params_as_input=False`` binds them), split into matrices (≥ 2-D: linear and embedding weights,
the tensors weight quantization applies to) and vectors (biases, LayerNorm).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    import tvm

OP_CATEGORIES = ("matmul", "attention_matmul", "softmax", "layer_norm", "gather", "elementwise")


@dataclass(frozen=True)
class OpFeature:
    """One fused kernel of the compiled graph.

    Attributes:
        name: The fused TIR function's name, e.g. ``fused_matmul_add2``.
        category: One of :data:`OP_CATEGORIES` (``matmul`` multiplies by a weight matrix,
            ``attention_matmul`` two activations).
        flops: Floating-point operations (a MAC counts 2).
        macs_weight: MACs against a weight matrix (the part int8 kernels speed up); 0 otherwise.
        act_bytes: Bytes of activation inputs and the output, at the graph's dtypes.
        weight_matrix_elems: Elements of ≥ 2-D constant inputs (quantizable weights).
        weight_vector_bytes: Bytes of 1-D/scalar constant inputs (biases, norms; stay fp32).
    """

    name: str
    category: str
    flops: float
    macs_weight: float
    act_bytes: int
    weight_matrix_elems: int
    weight_vector_bytes: int

    def weight_bytes(self, weight_bits: int = 32) -> float:
        """Bytes of this kernel's weights with matrices stored at ``weight_bits`` bits."""
        return self.weight_matrix_elems * weight_bits / 8 + self.weight_vector_bytes


@dataclass(frozen=True)
class GraphSummary:
    """The fused graph of one model at fixed input shapes.

    Attributes:
        ops: Kernels in execution order.
        input_bytes: Bytes of the model inputs.
        peak_activation_bytes: Largest sum of simultaneously live activations (inputs included,
            weights excluded) when each kernel's inputs and output must coexist; batch as exported.
        weight_matrix_elems: Distinct ≥ 2-D constants, in elements (each weight counted once).
        weight_vector_bytes: Distinct 1-D constants, in bytes.
        import_s: Seconds to export, import and fuse.
    """

    ops: tuple[OpFeature, ...]
    input_bytes: int
    peak_activation_bytes: int
    weight_matrix_elems: int
    weight_vector_bytes: int
    import_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def flops(self) -> float:
        return sum(op.flops for op in self.ops)

    @property
    def macs(self) -> float:
        """All multiply-accumulates (FLOPs / 2)."""
        return self.flops / 2

    def weight_bytes(self, weight_bits: int = 32) -> float:
        """Stored bytes of all weights with matrices at ``weight_bits`` bits and vectors in fp32."""
        return self.weight_matrix_elems * weight_bits / 8 + self.weight_vector_bytes


def summarize_model(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> GraphSummary:
    """Export ``model`` and summarise its fused TVM graph (no build, no timing).

    Raises:
        CompileError: If torch.export or TVM's importer cannot take the model.
    """
    from nas.hardware.compile import import_model

    start = time.perf_counter()
    mod, _ = import_model(model, example_inputs)
    summary = summarize_imported(mod)
    return GraphSummary(**{**summary.__dict__, "import_s": time.perf_counter() - start})


def summarize_imported(mod: tvm.IRModule) -> GraphSummary:
    """Fuse an imported Relax module (as the tuned build does) and summarise it."""
    import tvm

    from nas.hardware.tuning import prepare_for_tuning

    # Fusion does not depend on the CPU; a generic llvm target keeps this usable for every profile.
    return summarize_relax(prepare_for_tuning(mod, tvm.target.Target({"kind": "llvm"})))


def summarize_relax(fused: tvm.IRModule) -> GraphSummary:
    """Summarise a legalized and fused Relax module (``main`` made of ``call_tir`` bindings)."""
    import tvm
    from tvm import relax
    from tvm.ir.expr import Constant
    from tvm.s_tir.analysis import estimate_tir_flops

    main = fused["main"]
    call_tir = tvm.ir.Op.get("relax.call_tir")
    bindings = [b for block in main.body.blocks for b in block.bindings]
    size_of: dict[Any, int] = {p: _tensor_bytes(p.ty) for p in main.params}
    first_use: dict[Any, int] = {p: -1 for p in main.params}
    last_use: dict[Any, int] = {}
    ops: list[OpFeature] = []
    weights_seen: dict[Any, tuple[int, int]] = {}
    for index, binding in enumerate(bindings):
        value = binding.value
        size_of[binding.var] = _tensor_bytes(binding.var.ty)
        first_use[binding.var] = index
        for var in relax.analysis.free_vars(value):
            last_use[var] = index
        if not (isinstance(value, relax.Call) and value.op.same_as(call_tir)):
            continue  # tuple plumbing; no kernel
        func = fused[value.args[0]]
        args = list(value.args[1].fields)
        consts = [a for a in args if isinstance(a, Constant)]
        matrix_elems = sum(_numel(c.ty) for c in consts if len(c.ty.shape) >= 2)
        vector_bytes = sum(_tensor_bytes(c.ty) for c in consts if len(c.ty.shape) < 2)
        for c in consts:
            weights_seen[c] = (_numel(c.ty) if len(c.ty.shape) >= 2 else 0, _tensor_bytes(c.ty) if len(c.ty.shape) < 2 else 0)
        act_bytes = sum(_tensor_bytes(a.ty) for a in args if not isinstance(a, Constant)) + size_of[binding.var]
        flops = float(estimate_tir_flops(tvm.IRModule({"main": func})))
        name = value.args[0].name_hint
        category = _category(name, has_weight_matrix=matrix_elems > 0)
        macs_weight = flops / 2 if category == "matmul" else 0.0
        ops.append(OpFeature(name, category, flops, macs_weight, act_bytes, matrix_elems, vector_bytes))
    output = main.body.body
    for var in relax.analysis.free_vars(output):
        last_use[var] = len(bindings)
    peak = _peak_live_bytes(size_of, first_use, last_use, len(bindings))
    return GraphSummary(
        ops=tuple(ops),
        input_bytes=sum(_tensor_bytes(p.ty) for p in main.params),
        peak_activation_bytes=peak,
        weight_matrix_elems=sum(m for m, _ in weights_seen.values()),
        weight_vector_bytes=sum(v for _, v in weights_seen.values()),
    )


def _peak_live_bytes(size_of: dict, first_use: dict, last_use: dict, n_steps: int) -> int:
    """Largest total size of tensors live at one step: defined at or before it, used at or after it.

    At step ``i`` the kernel's inputs (still live: used at ``i``) and its output (defined at ``i``)
    coexist, which is what a planner that never computes in place needs. TVM's StaticPlanBlockMemory
    reuses buffers the same way, so this is the arena an ideal static planner needs.
    """
    peak = 0
    for step in range(-1, n_steps + 1):
        live = sum(size for var, size in size_of.items() if first_use[var] <= step <= last_use.get(var, first_use[var]))
        peak = max(peak, live)
    return peak


def _category(name: str, *, has_weight_matrix: bool) -> str:
    if "matmul" in name or "dense" in name:
        return "matmul" if has_weight_matrix else "attention_matmul"
    if "softmax" in name:
        return "softmax"
    if "layer_norm" in name:
        return "layer_norm"
    if name.startswith("take") or "_take" in name:
        return "gather"
    return "elementwise"


def _numel(ty: Any) -> int:
    n = 1
    for dim in ty.shape:
        n *= int(dim)
    return n


def _tensor_bytes(ty: Any) -> int:
    """Bytes of a tensor type; 0 for non-tensors (shapes, tuples)."""
    shape = getattr(ty, "shape", None)
    dtype = getattr(ty, "dtype", None)
    if shape is None or dtype is None:
        return 0
    try:
        import tvm

        bits = tvm.DataType(str(dtype)).bits * tvm.DataType(str(dtype)).lanes
    except Exception:
        return 0
    return _numel(ty) * max(bits, 8) // 8
