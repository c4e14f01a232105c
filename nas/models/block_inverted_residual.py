"""MobileNetV2's inverted residual over tokens: expand 1×1 → depthwise conv → project 1×1, with a residual.

Sandler et al. 2018 (https://arxiv.org/abs/1801.04381) widen the stream to ``t·C`` channels, filter each
channel on its own with a depthwise convolution there, and project back linearly ("linear bottleneck").
Over a sentence the channels are the residual width ``H`` and the convolution runs over tokens: the block
mixes neighbouring tokens (``kernel_size`` of them) in the wide space, so token mixing and the FFN are one
block instead of the conv block's two. The only nonlinearity follows the depthwise conv (MobileNetV2 has
one after each of the first two), so with a centre-tap kernel the block is exactly a BERT FFN: it inherits
the teacher's FFN and starts from that kernel. Post-LayerNorm after the residual add, as every lightnas block.
"""

from __future__ import annotations

import torch
from torch import nn

from nas.blockspec import BlockField
from nas.models.blocks import ACTIVATIONS, Block, DenseResidual, register_block


class Expand(nn.Module):
    """The 1×1 expansion, ``H → ffn_size``; named ``intermediate.dense`` like an FFN, so the teacher's FFN
    inherits into it and neuron pruning finds it."""

    def __init__(self, width: int, ffn_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, ffn_size)


@register_block("inverted_residual")
class InvertedResidualBlock(Block):
    """``LayerNorm(x + W_p·act(dwconv_k(W_e·x)))``; ``ffn_size`` is the expanded width (MobileNetV2's ``t·H``)."""

    fields = {"ffn_size": BlockField(), "kernel_size": BlockField("odd"), "activation": BlockField("activation", "gelu")}
    example = {"ffn_size": 64, "kernel_size": 3}
    supernet_keys = None  # no supernet branch: a space searching this block uses fidelity.scorer: standalone

    def __init__(self, spec, hidden_size, *, dropout, attention_dropout, eps) -> None:
        super().__init__()
        self.intermediate = Expand(hidden_size, spec.ffn_size)
        self.depthwise = nn.Conv1d(spec.ffn_size, spec.ffn_size, spec.kernel_size, padding=spec.kernel_size // 2, groups=spec.ffn_size)
        self.output = DenseResidual(spec.ffn_size, hidden_size, dropout, eps)
        self.activation = spec.activation

    def forward(self, x, additive_mask, token_mask):
        wide = self.intermediate.dense(x) * token_mask  # (B, L, F); padded positions zeroed before the conv
        mixed = self.depthwise(wide.transpose(1, 2)).transpose(1, 2)  # (B, L, F)
        return self.output(ACTIVATIONS[self.activation](mixed), x), None

    @staticmethod
    def code(spec):
        return f"i{spec.kernel_size}f{spec.ffn_size}{'' if spec.activation == 'gelu' else 'r'}"

    @staticmethod
    def count_params(spec, hidden_size):
        h, f = hidden_size, spec.ffn_size
        return (h * f + f) + (f * spec.kernel_size + f) + (f * h + h) + 2 * h  # expand, depthwise, project, LayerNorm

    @staticmethod
    def count_flops(spec, hidden_size, seq_len):
        return 2 * seq_len * spec.ffn_size * (2 * hidden_size + spec.kernel_size)

    @torch.no_grad()
    def inherit(self, teacher):
        teacher.ffn(self, teacher.hid)  # expand ← intermediate.dense, project ← output.dense, output.LayerNorm
        self.depthwise.weight.zero_()  # the centre tap alone: the block starts as the teacher's FFN
        self.depthwise.weight[:, 0, self.depthwise.kernel_size[0] // 2] = 1.0
        self.depthwise.bias.zero_()

    @torch.no_grad()
    def keep_ffn_units_(self, keep: torch.Tensor) -> None:
        """Keep the depthwise filters of the ``keep`` expanded channels (neuron pruning, or a pruned config)."""
        old = self.depthwise
        new = nn.Conv1d(len(keep), len(keep), old.kernel_size[0], padding=old.padding[0], groups=len(keep),
                        device=old.weight.device, dtype=old.weight.dtype)
        new.weight.copy_(old.weight.index_select(0, keep.to(old.weight.device)))
        new.bias.copy_(old.bias.index_select(0, keep.to(old.weight.device)))
        new.weight.requires_grad_(old.weight.requires_grad)
        new.bias.requires_grad_(old.bias.requires_grad)
        self.depthwise = new.train(old.training)
