"""Depthwise-separable convolution over tokens, then an FFN: attention-free token mixing; and its supernet
branch (:class:`ConvBranch`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.blockspec import BlockField, BlockSpec
from nas.models.blocks import Block, FeedForward, ffn_params, register_block


class SeparableConv(nn.Module):
    """Depthwise 1-D convolution over tokens (kernel k, one filter per channel), then a pointwise Linear.

    Padded positions are zeroed before the convolution, so a padded sentence gives the same outputs at
    its real tokens as the unpadded one (the "same" zero padding at the ends then agrees too).
    """

    def __init__(self, width: int, kernel_size: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2, groups=width)
        self.pointwise = nn.Linear(width, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        h = self.depthwise((x * token_mask).transpose(1, 2)).transpose(1, 2)  # (B, L, H)
        return self.LayerNorm(self.dropout(self.pointwise(h)) + x)


class ConvBranch:
    """The supernet's conv branch (see :mod:`nas.supernet.supernet` for the interface).

    One full-width :class:`ConvBlock` with the largest kernel and FFN. A subnet layer of width ``h`` uses the
    first ``h`` channels, the centre ``kernel_size`` taps of the depthwise kernel (Once-for-All's elastic
    kernel, https://arxiv.org/abs/1908.09791, without its transform matrices) and the first ``ffn_size``
    FFN neurons.
    """

    position = 1  # built after the transformer branch: the order decides the initial weights' random draws
    choices = {"kernel_size": ("kernel_sizes", 3), "ffn_size": ("conv_ffn", 128)}  # setting → (SupernetSpec field, default)
    centred = ("conv.depthwise.weight",)  # sliced at the centre of its last (tap) dimension

    @staticmethod
    def build(spec, width, **kw):
        return ConvBlock(BlockSpec("conv", kernel_size=spec.max_kernel, ffn_size=spec.max_ffn, activation=spec.activation), width, **kw)

    @staticmethod
    def misfit(spec, layer, hidden):
        return spec.oversized(layer)

    @staticmethod
    def forward(net, block, x, additive_mask, token_mask, h, layer):
        conv, k = block.conv, layer.kernel_size
        start = (conv.depthwise.kernel_size[0] - k) // 2  # the centre k taps
        weight = conv.depthwise.weight[:h, :, start : start + k]  # (h, 1, k)
        y = F.conv1d((x * token_mask).transpose(1, 2), weight, conv.depthwise.bias[:h], padding=k // 2, groups=h).transpose(1, 2)
        y = F.linear(y, conv.pointwise.weight[:h, :h], conv.pointwise.bias[:h])  # (B, L, h)
        return net.ffn(block, net.norm(conv.LayerNorm, net.dropout(y) + x, h), h, layer.ffn_size)


@register_block("conv")
class ConvBlock(Block, FeedForward):
    """Depthwise-separable convolution over tokens, then an FFN: attention-free token mixing, O(L·k·H)
    instead of O(L²·H), as in lightweight-convolution encoders (Wu et al. 2019,
    https://arxiv.org/abs/1901.10430) and SqueezeBERT (https://arxiv.org/abs/2006.11316)."""

    fields = {"kernel_size": BlockField("odd"), "ffn_size": BlockField(), "activation": BlockField("activation", "gelu")}
    example = {"kernel_size": 3, "ffn_size": 64}
    supernet_keys = frozenset({"kernel_size", "ffn_size", "activation"})
    supernet_branch = ConvBranch

    def __init__(self, spec, hidden_size, *, dropout, attention_dropout, eps) -> None:
        FeedForward.__init__(self, hidden_size, spec.ffn_size, spec.activation, dropout, eps)
        self.conv = SeparableConv(hidden_size, spec.kernel_size, dropout, eps)

    def forward(self, x, additive_mask, token_mask):
        return FeedForward.forward(self, self.conv(x, token_mask)), None

    @staticmethod
    def code(spec):
        return f"c{spec.kernel_size}f{spec.ffn_size}{'' if spec.activation == 'gelu' else 'r'}"

    @staticmethod
    def count_params(spec, hidden_size):
        h = hidden_size
        conv = h * spec.kernel_size + h + h * h + h + 2 * h  # depthwise, pointwise, LayerNorm
        return conv + ffn_params(h, spec.ffn_size)

    @staticmethod
    def count_flops(spec, hidden_size, seq_len):
        h = hidden_size
        return 2 * seq_len * (h * spec.kernel_size + h * h + 2 * h * spec.ffn_size)

    def inherit(self, teacher):
        # The convolution has no teacher counterpart (it keeps its initialisation); its LayerNorm takes the
        # one that normalises the teacher's attention output, the FFN the teacher's FFN.
        teacher.norm(self.conv.LayerNorm, "attention.output.LayerNorm", teacher.hid)
        teacher.ffn(self, teacher.hid)

