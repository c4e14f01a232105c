"""BERT's layer: multi-head self-attention then an FFN, each with a residual and post-LayerNorm."""

from __future__ import annotations

from nas.blockspec import BlockField
from nas.models.blocks import Attention, Block, FeedForward, attention_flops, attention_params, ffn_params, register_block


@register_block("transformer")
class TransformerBlock(Block, FeedForward):
    """Self-attention (``heads`` × ``head_size``; None = ``hidden_size // heads``) then an FFN ``ffn_size`` wide."""

    has_attention = True
    fields = {"heads": BlockField(), "head_size": BlockField(default=None), "ffn_size": BlockField(),
              "activation": BlockField("activation", "gelu")}
    example = {"heads": 2, "ffn_size": 64}
    supernet_keys = frozenset({"heads", "ffn_size", "activation"})

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
