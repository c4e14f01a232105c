"""BERT's layer: multi-head self-attention then an FFN, each with a residual and post-LayerNorm; and its
supernet branch (:class:`TransformerBranch`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nas.blockspec import BlockField, BlockSpec
from nas.models.blocks import Attention, Block, FeedForward, attention_flops, attention_params, ffn_params, register_block


class TransformerBranch:
    """The supernet's transformer branch (see :mod:`nas.supernet.supernet` for the interface).

    One full-width :class:`TransformerBlock` (one head of the whole width, the largest FFN). A subnet layer
    of width ``h`` with ``heads`` heads uses the first ``h`` Q/K/V rows regrouped into ``heads`` heads of
    ``h // heads`` (the inner width is ``h`` for every head count, as the student builds it) and the first
    ``ffn_size`` FFN neurons.
    """

    position = 0  # built first in a supernet layer: the order decides the initial weights' random draws
    choices = {"heads": ("heads", 2), "ffn_size": ("transformer_ffn", 128)}  # setting → (SupernetSpec field, default)
    centred = ()  # no tensor is sliced at its centre

    @staticmethod
    def build(spec, width, **kw):
        return TransformerBlock(BlockSpec("transformer", heads=1, ffn_size=spec.max_ffn, activation=spec.activation), width, **kw)

    @staticmethod
    def misfit(spec, layer, hidden):
        if layer.head_size is not None or hidden % layer.heads:
            return f"heads {layer.heads}/head_size {layer.head_size}"
        return spec.oversized(layer)

    @staticmethod
    def forward(net, block, x, additive_mask, token_mask, h, layer):
        B, L, _ = x.shape
        attn, heads = block.attention.self, layer.heads
        hs = h // heads

        def proj(lin: torch.nn.Linear) -> torch.Tensor:
            return F.linear(x, lin.weight[:h, :h], lin.bias[:h]).view(B, L, heads, hs).transpose(1, 2)  # (B, nh, L, hs)

        q, k, v = proj(attn.query), proj(attn.key), proj(attn.value)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hs) + additive_mask  # (B, nh, L, L)
        context = net.dropout(torch.softmax(scores, dim=-1)) @ v  # (B, nh, L, hs)
        x = net.residual(block.attention.output, context.transpose(1, 2).reshape(B, L, h), x, h)
        return net.ffn(block, x, h, layer.ffn_size)


@register_block("transformer")
class TransformerBlock(Block, FeedForward):
    """Self-attention (``heads`` × ``head_size``; None = ``hidden_size // heads``) then an FFN ``ffn_size`` wide."""

    has_attention = True
    fields = {"heads": BlockField(), "head_size": BlockField(default=None), "ffn_size": BlockField(),
              "activation": BlockField("activation", "gelu")}
    example = {"heads": 2, "ffn_size": 64}
    supernet_keys = frozenset({"heads", "ffn_size", "activation"})
    supernet_branch = TransformerBranch

    def __init__(self, spec, hidden_size, *, dropout, attention_dropout, eps) -> None:
        FeedForward.__init__(self, hidden_size, spec.ffn_size, spec.activation, dropout, eps)
        self.attention = Attention(hidden_size, spec.heads, spec.head_size_for(hidden_size), dropout, attention_dropout, eps)

    def forward(self, x, additive_mask, token_mask):
        x, probs = self.attention(x, additive_mask)
        return FeedForward.forward(self, x), probs

    @staticmethod
    def code(spec):
        act = "" if spec.activation == "gelu" else "r"
        return f"t{spec.heads}{'' if spec.head_size is None else 'd' + str(spec.head_size)}f{spec.ffn_size}{act}"

    @staticmethod
    def check_width(spec, hidden_size, where):
        if spec.head_size is None and hidden_size % spec.heads:
            raise ValueError(f"hidden_size must be divisible by n_heads ({where}), got hidden_size={hidden_size}, heads={spec.heads}")

    @staticmethod
    def head_size(spec, hidden_size):
        return spec.head_size or hidden_size // spec.heads

    @staticmethod
    def count_params(spec, hidden_size):
        inner = spec.heads * spec.head_size_for(hidden_size)
        return attention_params(hidden_size, inner) + ffn_params(hidden_size, spec.ffn_size)

    @staticmethod
    def count_flops(spec, hidden_size, seq_len):
        inner = spec.heads * spec.head_size_for(hidden_size)
        return attention_flops(hidden_size, inner, seq_len) + 2 * 2 * seq_len * hidden_size * spec.ffn_size

    def inherit(self, teacher):
        teacher.attention(self.attention, teacher.head_rows(self.attention.self.query.out_features), teacher.hid)
        teacher.ffn(self, teacher.hid)

