"""The weight-sharing supernet: one model holding every student of a search space's elastic dimensions.

Each of its ``max_layers`` layers holds two branches at full size, a transformer block and a conv block
(the student's own block classes, :mod:`nas.models.blocks`, used as parameter containers), so the block
choice per layer is a branch choice (HAT, https://arxiv.org/abs/2005.14187). A subnet (an
:class:`~nas.candidate.Architecture`) uses:

- **hidden width** ``h``: the first ``h`` residual dimensions of every tensor that touches the stream;
- **heads**: the attention inner width is ``h`` for every head count (``head_size = h // heads``, as the
  student builds it), so heads only regroup the first ``h`` Q/K/V rows;
- **FFN size** ``f``: the first ``f`` neurons of that layer's branch;
- **kernel** ``k``: the centre ``k`` taps of the largest depthwise kernel (Once-for-All's elastic kernel,
  https://arxiv.org/abs/1908.09791, without its transform matrices);
- **depth** ``n``: supernet layers ``round((i+1)·max_layers/n) − 1`` for ``i < n``, the uniform last-aligned
  map :func:`nas.models.inherit.teacher_layer_for` uses, so the map composes with the teacher's: with the
  supernet initialised from the teacher, every subnet starts from exactly the teacher layers
  :func:`~nas.models.student.build_student` would inherit for that depth.

"First ``k``" is meaningful because :func:`init_from_teacher` orders every dimension by the teacher's
importance (the scores of :mod:`nas.models.inherit`), most important first, so every subnet starts as the
importance-sliced student (up to a permutation of units, which changes nothing a network computes).

:meth:`Supernet.forward` runs a subnet with sliced weights; :func:`nas.supernet.extract.extract_student`
copies the same slices into a stand-alone student, which computes exactly the same outputs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.candidate import Architecture, BlockSpec
from nas.errors import NasUserError
from nas.models.block_conv import ConvBlock
from nas.models.block_transformer import TransformerBlock
from nas.models.blocks import ACTIVATIONS, block_class, list_blocks
from nas.models.embeddings import Embeddings
from nas.models.inherit import Copier, head_rows, hidden_importance, neuron_importance, teacher_layer_for

if TYPE_CHECKING:
    import random



def elastic_blocks() -> dict[str, frozenset[str]]:
    """Block types the supernet holds a branch for → the settings it shares weights over.

    Each block type states this itself (``Block.supernet_keys``; None: no branch), so a new type is refused
    by :meth:`SupernetSpec.from_space` until it declares, and this module implements, a branch.
    """
    return {name: block_class(name).supernet_keys for name in list_blocks() if block_class(name).supernet_keys is not None}


@dataclass(frozen=True)
class SupernetSpec:
    """The choices of every elastic dimension (plain values, taken from a search space).

    Args:
        depths: Encoder depths; the largest is the supernet's layer count.
        hidden_sizes: Residual widths; the largest is the supernet's.
        block_types: Block types a layer may take (a subset of ``transformer``, ``conv``).
        heads: Attention head counts (transformer); each must divide every hidden size.
        transformer_ffn: FFN sizes of transformer layers.
        kernel_sizes: Depthwise kernels of conv layers (odd).
        conv_ffn: FFN sizes of conv layers.
        per_layer: Each layer picks its own block (else all layers share the first layer's block).
        activation: FFN activation of every block (fixed, not searched).
        vocab_size: Token-table rows (the tokenizer's vocabulary; trimming is not elastic).
        max_positions: Position-embedding rows.
        num_labels: Classes of the task.
    """

    depths: tuple[int, ...]
    hidden_sizes: tuple[int, ...]
    block_types: tuple[str, ...]
    heads: tuple[int, ...] = (2,)
    transformer_ffn: tuple[int, ...] = (128,)
    kernel_sizes: tuple[int, ...] = (3,)
    conv_ffn: tuple[int, ...] = (128,)
    per_layer: bool = True
    activation: str = "gelu"
    vocab_size: int = 30522
    max_positions: int = 512
    num_labels: int = 2

    @property
    def max_layers(self) -> int:
        return max(self.depths)

    @property
    def max_hidden(self) -> int:
        return max(self.hidden_sizes)

    @property
    def max_ffn(self) -> int:
        return max(self.transformer_ffn + self.conv_ffn)

    @property
    def max_kernel(self) -> int:
        return max(self.kernel_sizes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupernetSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @classmethod
    def from_space(cls, space: Any, *, num_labels: int, max_positions: int, vocab_size: int = 30522,
                   where: str = "the search space") -> SupernetSpec:
        """The spec of a :class:`~nas.search.space.SearchSpace`'s architecture section.

        Raises:
            NasUserError: If the space searches something the supernet cannot share weights for (a
                bottleneck block, factorised or trimmed embeddings, head_size, a searched activation).
        """
        arch = space.architecture

        def choices(entry: Any) -> tuple[Any, ...]:
            return tuple(entry.values()) if hasattr(entry, "values") and not isinstance(entry, dict) else (entry,)

        elastic = elastic_blocks()

        def refuse(field: str, value: Any, why: str) -> NasUserError:
            return NasUserError(f"{where}: architecture.{field} {value!r} {why}; the supernet scorer shares weights over "
                                f"depth, hidden size, heads, FFN size and {'/'.join(elastic)} blocks only, so use "
                                "fidelity.scorer: standalone for this space.")

        for field in ("embedding_size", "vocab_size"):
            if any(v is not None for v in choices(getattr(arch, field))):
                raise refuse(field, getattr(arch, field), "is not elastic in the supernet")
        types = choices(arch.blocks["type"])
        for t in types:
            if t not in elastic:
                raise refuse("blocks.type", t, "has no supernet branch")
        sections = {t: dict(arch.blocks.get(t) or {}) for t in types}
        activations = set()
        for t, section in sections.items():
            for key, entry in section.items():
                if key not in elastic[t]:
                    raise refuse(f"blocks.{t}.{key}", entry, "is not elastic in the supernet")
            values = choices(section.get("activation", "gelu"))
            if len(values) != 1:
                raise refuse(f"blocks.{t}.activation", section["activation"], "is searched")
            activations.add(values[0])
        if len(activations) > 1:
            raise refuse("blocks.*.activation", sorted(activations), "differs between block types")

        def ints(t: str, key: str, default: int) -> tuple[int, ...]:
            return tuple(sorted(int(v) for v in choices(sections[t].get(key, default)))) if t in sections else (default,)

        return cls(
            depths=tuple(sorted(int(v) for v in choices(arch.n_layers))),
            hidden_sizes=tuple(sorted(int(v) for v in choices(arch.hidden_size))),
            block_types=tuple(types), heads=ints("transformer", "heads", 2),
            transformer_ffn=ints("transformer", "ffn_size", 128), kernel_sizes=ints("conv", "kernel_size", 3),
            conv_ffn=ints("conv", "ffn_size", 128), per_layer=bool(arch.per_layer),
            activation=activations.pop() if activations else "gelu",
            vocab_size=vocab_size, max_positions=max_positions, num_labels=num_labels,
        )

    # ------------------------------------------------------------------------------------------ subnets

    def _block(self, block_type: str, pick: Any) -> BlockSpec:
        if block_type == "transformer":
            return BlockSpec("transformer", heads=pick(self.heads), ffn_size=pick(self.transformer_ffn), activation=self.activation)
        return BlockSpec("conv", kernel_size=pick(self.kernel_sizes), ffn_size=pick(self.conv_ffn), activation=self.activation)

    def _arch(self, n_layers: int, hidden: int, pick: Any, rng: random.Random) -> Architecture:
        layers: list[BlockSpec] = []
        for _ in range(n_layers):
            if layers and not self.per_layer:
                layers.append(layers[0])
            else:
                layers.append(self._block(rng.choice(self.block_types), pick))
        return Architecture(hidden, tuple(layers))

    def largest(self, rng: random.Random) -> Architecture:
        """Deepest, widest subnet; each layer's block type drawn from ``rng`` (both branches get trained)."""
        return self._arch(self.max_layers, self.max_hidden, max, rng)

    def smallest(self, rng: random.Random) -> Architecture:
        """Shallowest, narrowest subnet; each layer's block type drawn from ``rng``."""
        return self._arch(min(self.depths), min(self.hidden_sizes), min, rng)

    def sample(self, rng: random.Random) -> Architecture:
        """A uniformly random subnet."""
        return self._arch(rng.choice(self.depths), rng.choice(self.hidden_sizes), rng.choice, rng)

    def check(self, arch: Architecture) -> None:
        """Raise ValueError unless ``arch`` is a subnet of this supernet."""
        problems = []
        if len(arch.layers) > self.max_layers:
            problems.append(f"{len(arch.layers)} layers > {self.max_layers}")
        if arch.hidden_size > self.max_hidden:
            problems.append(f"hidden {arch.hidden_size} > {self.max_hidden}")
        if arch.embedding_size is not None or arch.vocab_size is not None:
            problems.append("factorised or trimmed embeddings")
        for i, b in enumerate(arch.layers):
            if b.type not in self.block_types:
                problems.append(f"layer {i} is {b.type}")
            elif b.type == "transformer" and (b.head_size is not None or arch.hidden_size % b.heads):
                problems.append(f"layer {i} heads {b.heads}/head_size {b.head_size}")
            elif (b.ffn_size or 0) > self.max_ffn or (b.kernel_size or 0) > self.max_kernel or b.activation != self.activation:
                problems.append(f"layer {i} {b.code}")
        if problems:
            raise ValueError(f"architecture {arch.code} is not a subnet of this supernet: {'; '.join(problems)}")


def layer_map(n_layers: int, max_layers: int) -> list[int]:
    """Supernet layer of each of a subnet's ``n_layers`` layers (uniform, last-aligned; distinct for n ≤ max)."""
    return [teacher_layer_for(i, n_layers, max_layers) for i in range(n_layers)]


class _Pooler(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)


class _Backbone(nn.Module):
    def __init__(self, spec: SupernetSpec, dropout: float, eps: float) -> None:
        super().__init__()
        h = spec.max_hidden
        self.embeddings = Embeddings(spec.vocab_size, h, spec.max_positions, dropout=dropout, eps=eps)
        kw = dict(dropout=dropout, attention_dropout=dropout, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList()
        for _ in range(spec.max_layers):
            layer = nn.Module()  # one branch per block type, at full size
            if "transformer" in spec.block_types:
                layer.transformer = TransformerBlock(
                    BlockSpec("transformer", heads=1, ffn_size=spec.max_ffn, activation=spec.activation), h, **kw)
            if "conv" in spec.block_types:
                layer.conv = ConvBlock(
                    BlockSpec("conv", kernel_size=spec.max_kernel, ffn_size=spec.max_ffn, activation=spec.activation), h, **kw)
            self.encoder.layer.append(layer)
        self.pooler = _Pooler(h)


class Supernet(nn.Module):
    """Every subnet of a :class:`SupernetSpec` in one set of weights.

    Parameter names follow the student's (``bert.embeddings…``, ``bert.encoder.layer.{j}.{branch}.attention…``,
    ``bert.pooler.dense``, ``classifier``), so extraction is a rename and a slice.

    Example:
        >>> import random
        >>> spec = SupernetSpec(depths=(1, 2), hidden_sizes=(32, 64), block_types=("transformer", "conv"),
        ...                     heads=(2,), transformer_ffn=(64,), kernel_sizes=(3,), conv_ffn=(64,), max_positions=16)
        >>> net = Supernet(spec).eval()
        >>> ids = torch.ones(1, 8, dtype=torch.long)
        >>> net(ids, torch.ones_like(ids), spec.smallest(random.Random(0))).shape
        torch.Size([1, 2])
    """

    def __init__(self, spec: SupernetSpec, *, dropout: float = 0.1, eps: float = 1e-12) -> None:
        super().__init__()
        self.spec = spec
        self.eps = eps
        self.bert = _Backbone(spec, dropout, eps)
        self.dropout_p = dropout
        self.classifier = nn.Linear(spec.max_hidden, spec.num_labels)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # The student's (BERT's) initialisation; init_from_teacher overwrites what the teacher has.
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, (nn.Linear, nn.Conv1d)) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------------------------------ forward

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout_p, self.training)

    def _norm(self, norm: nn.LayerNorm, x: torch.Tensor, h: int) -> torch.Tensor:
        return F.layer_norm(x, (h,), norm.weight[:h], norm.bias[:h], self.eps)

    def _residual(self, out: nn.Module, x: torch.Tensor, residual: torch.Tensor, h: int) -> torch.Tensor:
        """``DenseResidual``: ``norm(dropout(W·x) + residual)`` with ``W`` sliced to ``(h, in)``."""
        y = F.linear(x, out.dense.weight[:h, : x.shape[-1]], out.dense.bias[:h])
        return self._norm(out.LayerNorm, self._dropout(y) + residual, h)

    def _ffn(self, block: nn.Module, x: torch.Tensor, h: int, f: int) -> torch.Tensor:
        inner = ACTIVATIONS[self.spec.activation](F.linear(x, block.intermediate.dense.weight[:f, :h], block.intermediate.dense.bias[:f]))
        return self._residual(block.output, inner, x, h)  # (B, L, h)

    def _attention(self, block: TransformerBlock, x: torch.Tensor, additive_mask: torch.Tensor, h: int, heads: int) -> torch.Tensor:
        B, L, _ = x.shape
        attn, hs = block.attention.self, h // heads

        def proj(lin: nn.Linear) -> torch.Tensor:
            return F.linear(x, lin.weight[:h, :h], lin.bias[:h]).view(B, L, heads, hs).transpose(1, 2)  # (B, nh, L, hs)

        q, k, v = proj(attn.query), proj(attn.key), proj(attn.value)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hs) + additive_mask  # (B, nh, L, L)
        context = self._dropout_attention(torch.softmax(scores, dim=-1)) @ v  # (B, nh, L, hs)
        return self._residual(block.attention.output, context.transpose(1, 2).reshape(B, L, h), x, h)

    def _dropout_attention(self, probs: torch.Tensor) -> torch.Tensor:
        return F.dropout(probs, self.dropout_p, self.training)

    def _conv(self, block: ConvBlock, x: torch.Tensor, token_mask: torch.Tensor, h: int, k: int) -> torch.Tensor:
        conv = block.conv
        start = (conv.depthwise.kernel_size[0] - k) // 2  # the centre k taps
        weight = conv.depthwise.weight[:h, :, start : start + k]  # (h, 1, k)
        y = F.conv1d((x * token_mask).transpose(1, 2), weight, conv.depthwise.bias[:h], padding=k // 2, groups=h).transpose(1, 2)
        y = F.linear(y, conv.pointwise.weight[:h, :h], conv.pointwise.bias[:h])  # (B, L, h)
        return self._norm(conv.LayerNorm, self._dropout(y) + x, h)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, arch: Architecture) -> torch.Tensor:
        """Logits ``(B, num_labels)`` of subnet ``arch`` for int64 ``(B, L)`` ids and mask."""
        h = arch.hidden_size
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        token_mask = attention_mask[:, :, None].to(torch.float32)  # (B, L, 1)
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -1e4  # (B, 1, 1, L), as the student
        emb = self.bert.embeddings
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = emb.word_embeddings(input_ids)[..., :h] + emb.position_embeddings(positions)[..., :h]
        x = self._dropout(self._norm(emb.LayerNorm, x, h))  # (B, L, h)
        for spec, j in zip(arch.layers, layer_map(len(arch.layers), self.spec.max_layers)):
            layer = self.bert.encoder.layer[j]
            if spec.type == "transformer":
                x = self._ffn(layer.transformer, self._attention(layer.transformer, x, additive_mask, h, spec.heads), h, spec.ffn_size)
            else:
                x = self._ffn(layer.conv, self._conv(layer.conv, x, token_mask, h, spec.kernel_size), h, spec.ffn_size)
        pooled = torch.tanh(F.linear(x[:, 0], self.bert.pooler.dense.weight[:h, :h], self.bert.pooler.dense.bias[:h]))
        return F.linear(self._dropout(pooled), self.classifier.weight[:, :h], self.classifier.bias)


# ---------------------------------------------------------------------------------------------- init


@torch.no_grad()
def init_from_teacher(net: Supernet, teacher_state: dict[str, torch.Tensor], n_teacher: int, teacher_heads: int | None) -> None:
    """Copy a BERT teacher's weights into ``net``, every dimension ordered most important first.

    Same scores and layer choice as :func:`nas.models.inherit.inherit_from_teacher`; what the teacher does
    not have (conv branches' depthwise and pointwise weights, widths beyond the teacher's) keeps its
    initialisation.
    """
    spec = net.spec
    order = torch.argsort(hidden_importance(teacher_state, n_teacher), descending=True, stable=True)[: spec.max_hidden]
    hid = order  # residual dims, most important first

    copy = Copier(teacher_state)  # the inheritance copier: indexed teacher rows/cols into the leading block

    def norm(ln: nn.Module, name: str) -> None:
        copy.norm(ln, name, hid)

    emb = net.bert.embeddings
    copy(emb.word_embeddings.weight, "bert.embeddings.word_embeddings.weight", None, hid)
    positions = teacher_state["bert.embeddings.position_embeddings.weight"].index_select(1, hid)  # (P, H)
    if "bert.embeddings.token_type_embeddings.weight" in teacher_state:  # folded in, as the student does
        positions = positions + teacher_state["bert.embeddings.token_type_embeddings.weight"][0, hid]
    n = min(positions.shape[0], emb.position_embeddings.weight.shape[0])
    emb.position_embeddings.weight[:n, : len(hid)] = positions[:n]
    norm(emb.LayerNorm, "bert.embeddings.LayerNorm")

    for j, layer in enumerate(net.bert.encoder.layer):
        t = teacher_layer_for(j, spec.max_layers, n_teacher)
        prefix = f"bert.encoder.layer.{t}"
        neurons = torch.argsort(neuron_importance(teacher_state, t), descending=True, stable=True)[: spec.max_ffn]
        for branch in ("transformer", "conv"):
            block = getattr(layer, branch, None)
            if block is None:
                continue
            copy.linear(block.intermediate.dense, f"{prefix}.intermediate.dense", neurons, hid)
            copy.linear(block.output.dense, f"{prefix}.output.dense", hid, neurons)
            norm(block.output.LayerNorm, f"{prefix}.output.LayerNorm")
        if getattr(layer, "transformer", None) is not None:
            attention = layer.transformer.attention
            rows = head_rows(teacher_state, t, teacher_heads, spec.max_hidden)  # whole heads, most important first
            for proj in ("query", "key", "value"):
                copy.linear(getattr(attention.self, proj), f"{prefix}.attention.self.{proj}", rows, hid)
            copy.linear(attention.output.dense, f"{prefix}.attention.output.dense", hid, rows)
            norm(attention.output.LayerNorm, f"{prefix}.attention.output.LayerNorm")
        if getattr(layer, "conv", None) is not None:
            norm(layer.conv.conv.LayerNorm, f"{prefix}.attention.output.LayerNorm")
    copy.linear(net.bert.pooler.dense, "bert.pooler.dense", hid, hid)
    copy.linear(net.classifier, "classifier", None, hid)
