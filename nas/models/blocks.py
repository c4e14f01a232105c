"""Encoder blocks of a student: the block registry, the base class every block type extends, shared parts.

Every block has the same interface, so a student can stack different types (heterogeneous layers):

    forward(x (B, L, H), additive_mask (B, 1, 1, L), token_mask (B, L, 1)) -> (x (B, L, H), attention (B, nh, L, L) | None)

A block type is one file ``nas/models/block_<name>.py`` holding one ``@register_block(name)`` class; the
registry imports every such file on first use, so nothing else lists block types. The class owns all that
is particular to its type (see :class:`Block`): its settings, code string, formulas, teacher inheritance,
pruned-shape update, whether the supernet has a branch for it, and an example spec that the
registry-driven tests build. The formulas are checked in the tests against a counted forward pass
(``torch.utils.flop_counter.FlopCounterMode``) and against ``numel``:

- ``count_params(spec, hidden_size)``: parameters of the block;
- ``count_flops(spec, hidden_size, seq_len)``: FLOPs of one sequence, counting every multiply-add of a
  matrix product or convolution as 2 FLOPs (``FlopCounterMode``'s convention); element-wise work
  (softmax, normalisation, activations, residual adds) is left out, as it is O(L·H) and not O(L·H²).

Modules keep Hugging Face BERT names (``attention.self.query``, ``intermediate.dense``, ``output.dense``…)
so teacher weights inherit by name and structured pruning (``nas.compress.structured``) finds heads and FFN
neurons in every block type. This file is copied into exported Hugging Face folders
(:mod:`nas.artefacts.hf_folder`), so it and the block files import nothing of lightnas but each other and
:mod:`nas.blockspec`.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from nas.blockspec import BlockField, BlockSpec

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu, "relu": F.relu}
BLOCKS: dict[str, type[Block]] = {}  # filled by @register_block; read it through block_class/list_blocks
_OWN = ("code", "count_params", "count_flops", "inherit")  # what every block type must define itself
_discovered = False


def register_block(name: str) -> Callable[[type[Block]], type[Block]]:
    """Class decorator: make ``cls`` the block built for ``BlockSpec(type=name)``.

    Raises:
        TypeError: The class leaves out what a block type must declare (a half-defined block would
            otherwise fail later, or silently inherit or prune nothing).
    """

    def decorate(cls: type[Block]) -> type[Block]:
        if name in BLOCKS and BLOCKS[name] is not cls:
            raise RuntimeError(f"block type {name!r} is registered twice ({BLOCKS[name].__name__} and {cls.__name__})")
        missing = [m for m in _OWN if getattr(cls, m) is getattr(Block, m)]
        missing += [a for a in ("fields", "example", "supernet_keys") if a not in cls.__dict__]
        if missing:
            raise TypeError(f"block type {name!r} ({cls.__name__}) must define {', '.join(missing)} (see nas.models.blocks.Block)")
        BLOCKS[name] = cls
        cls.block_type = name
        return cls

    return decorate


def _discover() -> None:
    """Import every ``block_*`` module beside this one, so that their ``@register_block`` runs."""
    global _discovered
    if _discovered:
        return
    _discovered = True  # first: a block module importing this one must not recurse
    package = __name__.rpartition(".")[0]
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if module.name.startswith("block_"):
            importlib.import_module(f"{package}.{module.name}")


def list_blocks() -> list[str]:
    """Registered block type names, sorted."""
    _discover()
    return sorted(BLOCKS)


def block_class(block_type: str) -> type[Block]:
    """The registered class of ``block_type``; ValueError naming the registered types otherwise."""
    _discover()
    if block_type not in BLOCKS:
        raise ValueError(f"block type {block_type!r} is not registered; choose one of {', '.join(list_blocks())}")
    return BLOCKS[block_type]


def example_spec(block_type: str) -> BlockSpec:
    """The block type's own small example (``example``), valid in a residual stream 32 wide."""
    from nas.blockspec import BlockSpec

    return BlockSpec(block_type, **block_class(block_type).example)


def create_block(spec: BlockSpec, hidden_size: int, *, dropout: float = 0.1, attention_dropout: float = 0.1, eps: float = 1e-12) -> Block:
    """The block ``spec`` describes, in a residual stream of width ``hidden_size``."""
    return block_class(spec.type)(spec, hidden_size, dropout=dropout, attention_dropout=attention_dropout, eps=eps)


class NoNorm(nn.Module):
    """MobileBERT's replacement for LayerNorm: an element-wise ``x·γ + β`` with no statistics."""

    def __init__(self, width: int, eps: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


class Block(nn.Module):
    """Base of every encoder block: the shared interface and what each block type declares.

    A subclass declares (``register_block`` refuses one that leaves any out):

    - ``fields``: its settings, name → :class:`~nas.blockspec.BlockField` (kind and default);
    - ``example``: the settings of a small spec, valid at hidden size 32, that the registry-driven tests
      build, train, prune, export and inherit;
    - ``supernet_keys``: the settings the weight-sharing supernet shares weights over, or None for a type
      the supernet has no branch for (a space searching it is refused in one sentence); a type with keys
      also sets ``supernet_branch``, its branch class (interface in :mod:`nas.supernet.supernet`);
    - ``code``, ``count_params``, ``count_flops`` and ``inherit``; and may override ``check``,
      ``check_width``, ``head_size`` and ``pruned_settings``.
    """

    block_type: str = ""
    has_attention: bool = False
    fields: ClassVar[dict[str, BlockField]] = {}
    example: ClassVar[dict[str, Any]] = {}
    supernet_keys: ClassVar[frozenset[str] | None] = None
    supernet_branch: ClassVar[type | None] = None

    def forward(
        self, x: torch.Tensor, additive_mask: torch.Tensor, token_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    @staticmethod
    def code(spec: BlockSpec) -> str:
        """Compact id of ``spec`` in candidate keys (``t4f512``); distinct block types must not collide."""
        raise NotImplementedError

    @staticmethod
    def check(spec: BlockSpec) -> None:
        """Raise ValueError when settings that each pass their own check do not fit together."""

    @staticmethod
    def check_width(spec: BlockSpec, hidden_size: int, where: str) -> None:
        """Raise ValueError when ``spec`` cannot sit in a residual stream ``hidden_size`` wide."""

    @staticmethod
    def head_size(spec: BlockSpec, hidden_size: int) -> int:
        raise ValueError(f"a {spec.type} block has no attention heads")

    @staticmethod
    def count_params(spec: BlockSpec, hidden_size: int) -> int:
        raise NotImplementedError

    @staticmethod
    def count_flops(spec: BlockSpec, hidden_size: int, seq_len: int) -> int:
        raise NotImplementedError

    def inherit(self, teacher: Any) -> None:
        """Copy what this block takes from its teacher layer (a :class:`nas.models.inherit.TeacherLayer`)."""
        raise NotImplementedError

    @classmethod
    def pruned_settings(cls, settings: dict[str, Any], shape: dict[str, int]) -> dict[str, Any]:
        """This layer's settings once structured pruning left it ``shape`` (``heads``, ``head_size``,
        ``ffn_size`` as measured on its modules): by default, every measured value that is a setting."""
        return {**settings, **{k: v for k, v in shape.items() if k in cls.fields}}


# ---------------------------------------------------------------------------------------------- parts


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over ``width`` with ``heads × head_size`` inside."""

    def __init__(self, width: int, heads: int, head_size: int, attention_dropout: float) -> None:
        super().__init__()
        self.attention_head_size = head_size  # read by nas.compress.structured to find whole heads
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


def attention_flops(width: int, inner: int, seq_len: int) -> int:
    # q, k, v and output projections (4·L·W·A multiply-adds), plus QKᵀ and P·V (2·L²·A).
    return 2 * (4 * seq_len * width * inner + 2 * seq_len * seq_len * inner)


def attention_params(width: int, inner: int) -> int:
    return 3 * (width * inner + inner) + inner * width + width + 2 * width  # q, k, v, output dense, norm


def ffn_params(width: int, ffn_size: int) -> int:
    return width * ffn_size + ffn_size + ffn_size * width + width + 2 * width
