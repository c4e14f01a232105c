"""MobileBERT's bottleneck layer (Sun et al. 2020, https://arxiv.org/abs/2004.02984)."""

from __future__ import annotations

from torch import nn

from nas.blockspec import BlockField
from nas.models.blocks import (
    Attention, Block, FeedForward, NoNorm, attention_flops, attention_params, ffn_params, register_block,
)


class BottleneckProjection(nn.Module):
    def __init__(self, hidden_size: int, intra_size: int, eps: float, norm: type[nn.Module]) -> None:
        super().__init__()
        self.input_dense = nn.Linear(hidden_size, intra_size)
        self.output_dense = nn.Linear(intra_size, hidden_size)
        self.LayerNorm = norm(hidden_size, eps=eps)


@register_block("bottleneck")
class BottleneckBlock(Block):
    """MobileBERT's bottleneck layer.

    The residual stream between blocks stays ``hidden_size`` wide; inside, the block projects to
    ``intra_size``, runs self-attention (``heads`` dividing ``intra_size``) and ``n_ffn`` stacked FFNs there
    (more FFNs rebalance the attention/FFN parameter ratio a narrow block otherwise skews), and projects
    back. With ``use_layernorm=False`` every normalisation is MobileBERT's NoNorm (``x·γ + β``, cheaper
    on integer hardware).
    """

    has_attention = True
    fields = {"intra_size": BlockField(), "heads": BlockField(), "ffn_size": BlockField(), "n_ffn": BlockField(default=1),
              "activation": BlockField("activation", "gelu"), "use_layernorm": BlockField("bool", True)}
    example = {"intra_size": 16, "heads": 2, "ffn_size": 32, "n_ffn": 2, "use_layernorm": False}
    supernet_keys = None  # no supernet branch: the intra width and stacked FFNs are not elastic there

    def __init__(self, spec, hidden_size, *, dropout, attention_dropout, eps) -> None:
        super().__init__()
        norm = nn.LayerNorm if spec.use_layernorm else NoNorm
        intra = spec.intra_size
        self.bottleneck = BottleneckProjection(hidden_size, intra, eps, norm)
        self.attention = Attention(intra, spec.heads, intra // spec.heads, dropout, attention_dropout, eps, norm)
        self.ffn = nn.ModuleList(FeedForward(intra, spec.ffn_size, spec.activation, dropout, eps, norm) for _ in range(spec.n_ffn))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, additive_mask, token_mask):
        h = self.bottleneck.input_dense(x)  # (B, L, I)
        h, probs = self.attention(h, additive_mask)
        for ffn in self.ffn:
            h = ffn(h)
        return self.bottleneck.LayerNorm(self.dropout(self.bottleneck.output_dense(h)) + x), probs  # (B, L, H)

    @staticmethod
    def code(spec):
        act = "" if spec.activation == "gelu" else "r"
        return f"b{spec.intra_size}h{spec.heads}f{spec.ffn_size}x{spec.n_ffn}{act}{'' if spec.use_layernorm else 'n'}"

    @staticmethod
    def check(spec):
        if spec.intra_size % spec.heads:
            raise ValueError(f"intra_size must be divisible by heads, got intra_size={spec.intra_size}, heads={spec.heads}")

    @staticmethod
    def head_size(spec, hidden_size):
        return spec.intra_size // spec.heads

    @staticmethod
    def count_params(spec, hidden_size):
        h, i = hidden_size, spec.intra_size
        projections = (h * i + i) + (i * h + h) + 2 * h
        return projections + attention_params(i, i) + spec.n_ffn * ffn_params(i, spec.ffn_size)

    @staticmethod
    def count_flops(spec, hidden_size, seq_len):
        h, i = hidden_size, spec.intra_size
        return 2 * 2 * seq_len * h * i + attention_flops(i, i, seq_len) + spec.n_ffn * 2 * 2 * seq_len * i * spec.ffn_size

    def inherit(self, teacher):
        # Inside the bottleneck its own width plays the hidden role: the teacher's most important dimensions
        # of that width. The in/out projections and the FFNs after the first keep their initialisation.
        intra = teacher.hidden(self.bottleneck.input_dense.out_features)
        teacher.attention(self.attention, teacher.head_rows(self.attention.self.query.out_features), intra)
        teacher.ffn(self.ffn[0], intra)
        teacher.norm(self.bottleneck.LayerNorm, "output.LayerNorm", teacher.hid)

    @classmethod
    def pruned_settings(cls, settings, shape):
        # Only the FFN width: the head count of a bottleneck is tied to intra_size (head size intra // heads).
        return {**settings, **({"ffn_size": shape["ffn_size"]} if "ffn_size" in shape else {})}
