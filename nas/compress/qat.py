"""Quantization-aware training: ``nn.Linear`` layers that fake-quantize in every forward, and back.

:func:`prepare_qat_` swaps selected layers for :class:`QATLinear` (gradients pass the quantizer straight
through), and :func:`convert_qat_` bakes the fake-quantized weights into plain ``nn.Linear`` layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.compress.activations import fake_quantize_activation
from nas.compress.qtensor import INT_BITS, check_bits, check_scheme, dequantize, linear_quantize
from nas.compress.quantize import check_bits_spec, linear_only, resolve_bits
from nas.compress.schemes import scheme_of

if TYPE_CHECKING:
    from nas.compress.quantize import BitsSpec, Include


class FakeQuantSTE(torch.autograd.Function):
    """Linear fake quantization whose backward is the straight-through estimator.

    ``round`` has zero gradient almost everywhere; the STE (Bengio et al. 2013,
    https://arxiv.org/abs/1308.3432) passes the incoming gradient through unchanged, so the float
    weights behind the quantizer keep learning. Ranges come from the tensor itself, so nothing clips
    and no gradient needs masking.

    ``FakeQuantSTE.apply(x, bits, symmetric, axis)`` returns ``dequantize(linear_quantize(x, …))``.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bits: int, symmetric: bool, axis: int | None) -> torch.Tensor:
        return dequantize(linear_quantize(x, bits, symmetric=symmetric, axis=axis)).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return grad_output, None, None, None


class _StraightThrough(torch.autograd.Function):
    """Forward returns ``restored`` exactly; backward hands the gradient to ``x`` unchanged (the STE)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
        return restored

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output, None


class QATLinear(nn.Linear):
    """An ``nn.Linear`` that fake-quantizes its weight (and optionally its input) in every forward.

    It shares the wrapped layer's ``weight`` and ``bias`` Parameters, so parameter names, an existing
    optimizer and ``isinstance(m, nn.Linear)`` checks all keep working.

    Args:
        linear: Layer to wrap.
        bits: Weight bits, 2..8.
        symmetric: Symmetric instead of asymmetric weight codes (ignored when ``scheme`` is given).
        per_channel: One scale per output row (linear and ``log`` schemes).
        act_bits: Input activation bits (2..8), or None to keep inputs float. The input range is an
            exponential moving average (momentum 0.9) of batch min/max while training, frozen in eval.
        scheme: ``asymmetric``, ``symmetric``, ``log`` or ``kmeans``; None: from ``symmetric``. ``log``
            re-quantizes every forward; ``kmeans`` fits its codebook once, here, and keeps it frozen (a
            Lloyd fit per step would cost more than the step), so training moves weights between fixed
            centroids. Every scheme passes gradients straight through.
    """

    def __init__(
        self,
        linear: nn.Linear,
        bits: int,
        *,
        symmetric: bool = False,
        per_channel: bool = True,
        act_bits: int | None = None,
        scheme: str | None = None,
    ) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight, self.bias = linear.weight, linear.bias
        self.scheme = check_scheme(scheme) if scheme is not None else ("symmetric" if symmetric else "asymmetric")
        self.bits, self.symmetric, self.per_channel = check_bits(bits, allow_float=False), self.scheme == "symmetric", per_channel
        self.register_buffer("codebook", scheme_of(self.scheme).qat_codebook(linear.weight, self.bits))
        self.act_bits = None if act_bits is None else check_bits(act_bits, "act_bits", allow_float=False)
        self.register_buffer("act_range", torch.zeros(2, device=linear.weight.device))
        self.register_buffer("act_seen", torch.zeros((), dtype=torch.bool, device=linear.weight.device))
        self.train(linear.training)

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the forward pass sees it (gradients flow to ``weight`` through the STE)."""
        with torch.no_grad():
            restored = scheme_of(self.scheme).qat_restore(self.weight, self.bits, 0 if self.per_channel else None, self.codebook)
        return _StraightThrough.apply(self.weight, restored.to(self.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits is not None:
            if self.training:
                with torch.no_grad():
                    batch_range = torch.stack([x.min().clamp(max=0), x.max().clamp(min=0)]).float()
                    mixed = 0.9 * self.act_range + 0.1 * batch_range if self.act_seen else batch_range
                    self.act_range.copy_(mixed)
                    self.act_seen.fill_(True)
            lo, hi = self.act_range.tolist()
            # STE for activations too: forward quantized, backward identity.
            x = x + (fake_quantize_activation(x, lo, hi, self.act_bits) - x).detach()
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, scheme={self.scheme}, act_bits={self.act_bits}"


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def prepare_qat_(
    model: nn.Module,
    bits: BitsSpec,
    *,
    symmetric: bool = False,
    per_channel: bool = True,
    act_bits: int | None = None,
    include: Include | None = None,
    scheme: str | None = None,
) -> list[str]:
    """Swap selected ``nn.Linear`` layers for :class:`QATLinear` in place, for quantization-aware training.

    Args:
        model: Model to prepare in place.
        bits: Weight bits for all, or a per-layer ``{pattern: bits, "default": bits}`` mapping; 16/32 or
            no match leave a layer as it is.
        symmetric: Symmetric weight codes (when ``scheme`` is None).
        per_channel: Per-output-row scales.
        act_bits: Input activation bits, or None for float activations.
        include: ``(module_name, module) -> bool``; defaults to every ``nn.Linear``.
        scheme: Weight scheme (see :class:`QATLinear`); None: asymmetric, or symmetric with ``symmetric``.

    Returns:
        Names of the wrapped layers.
    """
    include = include or linear_only
    targets = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not isinstance(module, QATLinear) and include(name, module)
    }
    check_bits_spec(bits, targets)
    wrapped = []
    for name, linear in targets.items():
        width = resolve_bits(name, bits)
        if width is not None and width in INT_BITS:
            qat = QATLinear(linear, width, symmetric=symmetric, per_channel=per_channel, act_bits=act_bits, scheme=scheme)
            _set_submodule(model, name, qat)
            wrapped.append(name)
    return wrapped


@torch.no_grad()
def convert_qat_(model: nn.Module) -> list[str]:
    """Replace every :class:`QATLinear` by a plain ``nn.Linear`` holding its fake-quantized weight.

    Activation fake quantization is dropped: attach it again with :func:`fake_quantize_activations_`
    if the deployed model quantizes activations.

    Returns:
        Names of the converted layers.
    """
    converted = []
    for name, module in list(model.named_modules()):
        if isinstance(module, QATLinear):
            weight = module.weight
            linear = nn.Linear(
                module.in_features, module.out_features, module.bias is not None, weight.device, weight.dtype
            )
            linear.weight.copy_(module.quantized_weight())
            if module.bias is not None:
                linear.bias.copy_(module.bias)
            linear.train(module.training)
            _set_submodule(model, name, linear)
            converted.append(name)
    return converted
