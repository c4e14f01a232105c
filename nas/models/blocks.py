"""Encoder blocks of a student, one registered class per :class:`~nas.candidate.BlockSpec` type.

Every block has the same interface, so a student can stack different types (heterogeneous layers):

    forward(x (B, L, H), additive_mask (B, 1, 1, L), token_mask (B, L, 1)) -> (x (B, L, H), attention (B, nh, L, L) | None)

and two static formulas, checked in the tests against a counted forward pass
(``torch.utils.flop_counter.FlopCounterMode``) and against ``numel``:

- ``count_params(spec, hidden_size)``: parameters of the block;
- ``count_flops(spec, hidden_size, seq_len)``: FLOPs of one sequence, counting every multiply-add of a
  matrix product or convolution as 2 FLOPs (``FlopCounterMode``'s convention); element-wise work
  (softmax, normalisation, activations, residual adds) is left out, as it is O(L·H) and not O(L·H²).

Modules keep Hugging Face BERT names (``attention.self.query``, ``intermediate.dense``, ``output.dense``…)
so teacher weights inherit by name and structured pruning (``nas.compress.prune``) finds heads and FFN
neurons in every block type. Adding a block type is one class and one ``@register_block``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from nas.candidate import BlockSpec

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "relu": F.relu}
BLOCKS: dict[str, type[Block]] = {}


def register_block(name: str) -> Callable[[type[Block]], type[Block]]:
    """Class decorator: make ``cls`` the block built for ``BlockSpec(type=name)``."""

    def decorate(cls: type[Block]) -> type[Block]:
        if name in BLOCKS:
            raise RuntimeError(f"block type {name!r} is registered twice ({BLOCKS[name].__name__} and {cls.__name__})")
        BLOCKS[name] = cls
        cls.block_type = name
        return cls

    return decorate


def list_blocks() -> list[str]:
    """Registered block type names."""
    return sorted(BLOCKS)


def create_block(spec: BlockSpec, hidden_size: int, *, dropout: float = 0.1, attention_dropout: float = 0.1, eps: float = 1e-12) -> Block:
    """The block ``spec`` describes, in a residual stream of width ``hidden_size``."""
    if spec.type not in BLOCKS:
        raise ValueError(f"block type {spec.type!r} is not registered; choose one of {', '.join(list_blocks())}")
    return BLOCKS[spec.type](spec, hidden_size, dropout=dropout, attention_dropout=attention_dropout, eps=eps)


class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: an element-wise ``x·γ + β`` with no statistics."""

    def __init__(self, width: int, eps: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


class Block(nn.Module):
    """Base of every encoder block: the shared interface and the two formulas."""

    block_type: str = ""
    has_attention: bool = False

    def forward(
        self, x: torch.Tensor, additive_mask: torch.Tensor, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    @staticmethod
    def count_params(spec: BlockSpec, hidden_size: int) -> int:
        raise NotImplementedError

    @staticmethod
    def count_flops(spec: BlockSpec, hidden_size: int, seq_len: int) -> int:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------- parts


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over ``width`` with ``heads × head_size`` inside."""

    def __init__(self, width: int, heads: int, head_size: int, attention_dropout: float) -> None:
        super().__init__()
        self.attention_head_size = head_size  # read by nas.compress.prune to find whole heads
        self.query = nn.Linear(width, heads * head_size)
        self.key = nn.Linear(width, heads * head_size)
        self.value = nn.Linear(width, heads * head_size)
        self.dropout = nn.Dropout(attention_dropout)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, L, _ = x.shape
        # Head count is read from the weights, so structured head pruning only has to shrink the Linears.
        n_heads = self.query.out_features // self.attention_head_size

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, L, n_heads, self.attention_head_size).transpose(1, 2)  # (B, nh, L, hs)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.attention_head_size) + additive_mask  # (B, nh, L, L)
        probs = torch.softmax(scores, dim=-1)
        context = self.dropout(probs) @ v  # (B, nh, L, hs)
        return context.transpose(1, 2).reshape(B, L, n_heads * self.attention_head_size), probs


class DenseResidual(nn.Module):
    """Projection, dropout, residual add and post-normalisation (BERT's ``*Output`` modules)."""

    def __init__(self, d_in: int, d_out: int, dropout: float, eps: float, norm: type[nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = norm(d_out, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, head_size: int, dropout: float, attention_dropout: float, eps: float,
                 norm: type[nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.self = SelfAttention(width, heads, head_size, attention_dropout)
        self.output = DenseResidual(heads * head_size, width, dropout, eps, norm)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context, probs = self.self(x, additive_mask)
        return self.output(context, x), probs


class Intermediate(nn.Module):
    def __init__(self, width: int, ffn_size: int, activation: str) -> None:
        super().__init__()
        self.dense = nn.Linear(width, ffn_size)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation](self.dense(x))


class FeedForward(nn.Module):
    """``norm(x + W₂·act(W₁·x))`` with BERT names (``intermediate.dense``, ``output.dense``)."""

    def __init__(self, width: int, ffn_size: int, activation: str, dropout: float, eps: float,
                 norm: type[nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.intermediate = Intermediate(width, ffn_size, activation)
        self.output = DenseResidual(ffn_size, width, dropout, eps, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(x), x)


def _attention_flops(width: int, inner: int, seq_len: int) -> int:
    # q, k, v and output projections (4·L·W·A multiply-adds), plus QKᵀ and P·V (2·L²·A).
    return 2 * (4 * seq_len * width * inner + 2 * seq_len * seq_len * inner)


def _attention_params(width: int, inner: int) -> int:
    return 3 * (width * inner + inner) + inner * width + width + 2 * width  # q, k, v, output dense, norm


def _ffn_params(width: int, ffn_size: int) -> int:
    return width * ffn_size + ffn_size + ffn_size * width + width + 2 * width


# ---------------------------------------------------------------------------------------------- blocks


@register_block("transformer")
class TransformerBlock(Block, FeedForward):
    """BERT's layer: multi-head self-attention then an FFN, each with a residual and post-LayerNorm."""

    has_attention = True

    def __init__(self, spec: BlockSpec, hidden_size: int, *, dropout: float, attention_dropout: float, eps: float) -> None:
        FeedForward.__init__(self, hidden_size, spec.ffn_size, spec.activation, dropout, eps)
        self.attention = Attention(hidden_size, spec.heads, spec.head_size_for(hidden_size), dropout, attention_dropout, eps)

    def forward(self, x, additive_mask, token_mask):
        x, probs = self.attention(x, additive_mask)
        return FeedForward.forward(self, x), probs

    @staticmethod
    def count_params(spec, hidden_size):
        inner = spec.heads * spec.head_size_for(hidden_size)
        return _attention_params(hidden_size, inner) + _ffn_params(hidden_size, spec.ffn_size)

    @staticmethod
    def count_flops(spec, hidden_size, seq_len):
        inner = spec.heads * spec.head_size_for(hidden_size)
        return _attention_flops(hidden_size, inner, seq_len) + 2 * 2 * seq_len * hidden_size * spec.ffn_size


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


@register_block("conv")
class ConvBlock(Block, FeedForward):
    """Depthwise-separable convolution over tokens, then an FFN: attention-free token mixing, O(L·k·H)
    instead of O(L²·H), as in lightweight-convolution encoders (Wu et al. 2019,
    https://arxiv.org/abs/1901.10430) and SqueezeBERT (https://arxiv.org/abs/2006.11316)."""

    def __init__(self, spec: BlockSpec, hidden_size: int, *, dropout: float, attention_dropout: float, eps: float) -> None:
        FeedForward.__init__(self, hidden_size, spec.ffn_size, spec.activation, dropout, eps)
        self.conv = SeparableConv(hidden_size, spec.kernel_size, dropout, eps)

    def forward(self, x, additive_mask, token_mask):
        return FeedForward.forward(self, self.conv(x, token_mask)), None

    @staticmethod
    def count_params(spec, hidden_size):
        h = hidden_size
        conv = h * spec.kernel_size + h + h * h + h + 2 * h  # depthwise, pointwise, LayerNorm
        return conv + _ffn_params(h, spec.ffn_size)

    @staticmethod
    def count_flops(spec, hidden_size, seq_len):
        h = hidden_size
        return 2 * seq_len * (h * spec.kernel_size + h * h + 2 * h * spec.ffn_size)


class BottleneckProjection(nn.Module):
    def __init__(self, hidden_size: int, intra_size: int, eps: float, norm: type[nn.Module]) -> None:
        super().__init__()
        self.input_dense = nn.Linear(hidden_size, intra_size)
        self.output_dense = nn.Linear(intra_size, hidden_size)
        self.LayerNorm = norm(hidden_size, eps=eps)


@register_block("bottleneck")
class BottleneckBlock(Block):
    """MobileBERT's bottleneck layer (Sun et al. 2020, https://arxiv.org/abs/2004.02984).

    The residual stream between blocks stays ``hidden_size`` wide; inside, the block projects to
    ``intra_size``, runs self-attention and ``n_ffn`` stacked FFNs there (more FFNs rebalance the
    attention/FFN parameter ratio a narrow block otherwise skews), and projects back. With
    ``use_layernorm=False`` every normalisation is MobileBERT's NoNorm.
    """

    has_attention = True

    def __init__(self, spec: BlockSpec, hidden_size: int, *, dropout: float, attention_dropout: float, eps: float) -> None:
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
    def count_params(spec, hidden_size):
        h, i = hidden_size, spec.intra_size
        projections = (h * i + i) + (i * h + h) + 2 * h
        return projections + _attention_params(i, i) + spec.n_ffn * _ffn_params(i, spec.ffn_size)

    @staticmethod
    def count_flops(spec, hidden_size, seq_len):
        h, i = hidden_size, spec.intra_size
        return 2 * 2 * seq_len * h * i + _attention_flops(i, i, seq_len) + spec.n_ffn * 2 * 2 * seq_len * i * spec.ffn_size
