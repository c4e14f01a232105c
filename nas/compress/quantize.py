"""Post-training weight quantization of a model: which layers, at which bits, and baselines from other toolkits.

Post-training quantization (PTQ) here is *fake* quantization: weights are quantized and immediately
dequantized in float32, so the model computes exactly what an integer model with these codes would
(up to accumulation order) while every backend still runs it. Stored size is accounted separately by
:mod:`nas.compress.size`, from the same bit widths and schemes. The codes of one tensor come from
:mod:`nas.compress.qtensor`; activations are in :mod:`nas.compress.activations` and quantization-aware
training in :mod:`nas.compress.qat`.

A bit spec is one width for every layer or a per-layer mapping such as
``{"classifier": 32, "attention": 4, "default": 8}`` (see :func:`resolve_bits`).
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from nas.compress.qtensor import check_bits, check_scheme, dequantize, quantize_tensor
from nas.errors import MissingDependencyError, NasUserError

if TYPE_CHECKING:
    Include = Callable[[str, nn.Module], bool]
    BitsSpec = int | Mapping[str, int]


# ----------------------------------------------------------------------------------------------------------
# Which layers, at which bits


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


def linear_only(module_name: str, module: nn.Module) -> bool:
    """Every ``nn.Linear``: the default target of activation calibration and QAT (integer GEMM inputs)."""
    return isinstance(module, nn.Linear)


def quantizable_modules(model: nn.Module, include: Include | None = None) -> dict[str, nn.Module]:
    """Modules whose ``weight`` quantization touches, by name (default :func:`default_quantizable`)."""
    include = include or default_quantizable
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(getattr(module, "weight", None), nn.Parameter) and include(name, module)
    }


# ----------------------------------------------------------------------------------------------------------
# Models: post-training weight quantization


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
