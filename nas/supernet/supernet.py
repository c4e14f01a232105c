"""The weight-sharing supernet: one model holding every student of a search space's elastic dimensions.

Each of its ``max_layers`` layers holds one branch per block type of the space, at full size, so the block
choice per layer is a branch choice (HAT, https://arxiv.org/abs/2005.14187). A subnet (an
:class:`~nas.candidate.Architecture`) uses:

- **hidden width** ``h``: the first ``h`` residual dimensions of every tensor that touches the stream;
- **its layer's settings** (heads, FFN size, kernel …): the slices its block type's branch takes;
- **depth** ``n``: supernet layers ``round((i+1)·max_layers/n) − 1`` for ``i < n``, the uniform last-aligned
  map :func:`nas.models.inherit.teacher_layer_for` uses, so the map composes with the teacher's: with the
  supernet initialised from the teacher, every subnet starts from exactly the teacher layers
  :func:`~nas.models.student.build_student` would inherit for that depth.

**Branches** belong to their block types: a block class with ``supernet_keys`` names its branch class in
``supernet_branch`` (in its own ``nas/models/block_<name>.py``), and this module only iterates them. A
branch class declares

- ``choices``: ``{setting: (SupernetSpec field, default)}``, the settings it draws per layer, in draw
  order (a field :class:`SupernetSpec` does not have is kept in its ``extra_choices``);
- ``position``: its place in a supernet layer (build order decides the initial weights' random draws);
- ``centred``: student parameter names (relative to the layer) sliced at the centre of their last dim;
- ``build(spec, width, **kw)``: the full-size block (its module names are the student's);
- ``misfit(spec, layer, hidden)``: why a layer spec is not a subnet of ``spec`` (None when it is);
- ``forward(net, block, x, additive_mask, token_mask, h, layer)``: the layer sliced to ``h`` and ``layer``,
  using the shared sliced parts :meth:`Supernet.ffn`, :meth:`Supernet.residual`, :meth:`Supernet.norm`
  and :meth:`Supernet.dropout`.

The teacher initialises a branch through the block type's own ``inherit`` (as a student inherits), with
every ranking most-important-first (:class:`RankedTeacherLayer`).

"First ``k``" is meaningful because :func:`init_from_teacher` orders every dimension by the teacher's
importance (the scores of :mod:`nas.models.inherit`), most important first, so every subnet starts as the
importance-sliced student (up to a permutation of units, which changes nothing a network computes).

:meth:`Supernet.forward` runs a subnet with sliced weights; :func:`nas.supernet.extract.extract_student`
copies the same slices into a stand-alone student, which computes exactly the same outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from nas.models.blocks import ACTIVATIONS
from nas.models.embeddings import Embeddings
from nas.models.inherit import Copier, TeacherLayer, hidden_importance, neuron_importance, teacher_layer_for
from nas.supernet.spec import SupernetSpec, branch_of, branches, elastic_blocks, layer_map

if TYPE_CHECKING:
    from nas.candidate import Architecture

__all__ = ["RankedTeacherLayer", "Supernet", "SupernetSpec", "branch_of", "branches", "elastic_blocks", "init_from_teacher", "layer_map"]


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
            layer = nn.Module()  # one branch per block type, at full size, named after the type
            for block_type, branch in branches().items():
                if block_type in spec.block_types:
                    layer.add_module(block_type, branch.build(spec, h, **kw))
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

    # The sliced parts every branch shares (BERT's DenseResidual and FeedForward); a branch's own slicing
    # is its ``forward`` (nas/models/block_<name>.py).

    def dropout(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout_p, self.training)

    def norm(self, norm: nn.LayerNorm, x: torch.Tensor, h: int) -> torch.Tensor:
        """``norm`` over the first ``h`` dims."""
        return F.layer_norm(x, (h,), norm.weight[:h], norm.bias[:h], self.eps)

    def residual(self, out: nn.Module, x: torch.Tensor, residual: torch.Tensor, h: int) -> torch.Tensor:
        """``DenseResidual``: ``norm(dropout(W·x) + residual)`` with ``W`` sliced to ``(h, in)``."""
        y = F.linear(x, out.dense.weight[:h, : x.shape[-1]], out.dense.bias[:h])
        return self.norm(out.LayerNorm, self.dropout(y) + residual, h)

    def ffn(self, block: nn.Module, x: torch.Tensor, h: int, f: int) -> torch.Tensor:
        """``FeedForward`` with its first ``f`` neurons, in and out of a stream ``h`` wide."""
        inner = ACTIVATIONS[self.spec.activation](F.linear(x, block.intermediate.dense.weight[:f, :h], block.intermediate.dense.bias[:f]))
        return self.residual(block.output, inner, x, h)  # (B, L, h)

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
        x = self.dropout(self.norm(emb.LayerNorm, x, h))  # (B, L, h)
        for spec, j in zip(arch.layers, layer_map(len(arch.layers), self.spec.max_layers)):
            block = getattr(self.bert.encoder.layer[j], spec.type)
            x = branch_of(spec.type).forward(self, block, x, additive_mask, token_mask, h, spec)
        pooled = torch.tanh(F.linear(x[:, 0], self.bert.pooler.dense.weight[:h, :h], self.bert.pooler.dense.bias[:h]))
        return F.linear(self.dropout(pooled), self.classifier.weight[:, :h], self.classifier.bias)


# ---------------------------------------------------------------------------------------------- init


class RankedTeacherLayer(TeacherLayer):
    """The teacher layer a supernet branch starts from: a student's :class:`~nas.models.inherit.TeacherLayer`
    whose rankings keep importance order (most important first) instead of index order, so a subnet's
    "first ``k``" units are the teacher's ``k`` most important ones. Each branch runs its block type's own
    ``inherit`` with it, as a student block does."""

    def hidden(self, width: int) -> torch.Tensor:
        return torch.argsort(hidden_importance(self.state, self.n_teacher), descending=True, stable=True)[:width]

    def ffn(self, ffn: nn.Module, cols: torch.Tensor) -> None:
        width = ffn.intermediate.dense.out_features
        neurons = torch.argsort(neuron_importance(self.state, self.layer), descending=True, stable=True)[:width]
        self.copy.linear(ffn.intermediate.dense, f"{self.prefix}.intermediate.dense", neurons, cols)
        self.copy.linear(ffn.output.dense, f"{self.prefix}.output.dense", cols, neurons)
        self.copy.norm(ffn.output.LayerNorm, f"{self.prefix}.output.LayerNorm", cols)


@torch.no_grad()
def init_from_teacher(net: Supernet, teacher_state: dict[str, torch.Tensor], n_teacher: int, teacher_heads: int | None) -> None:
    """Copy a BERT teacher's weights into ``net``, every dimension ordered most important first.

    Same scores and layer choice as :func:`nas.models.inherit.inherit_from_teacher`, and each branch takes
    what its block type's ``inherit`` takes; what the teacher does not have (conv branches' depthwise and
    pointwise weights, widths beyond the teacher's) keeps its initialisation.
    """
    spec = net.spec
    hid = torch.argsort(hidden_importance(teacher_state, n_teacher), descending=True, stable=True)[: spec.max_hidden]
    copy = Copier(teacher_state)  # the inheritance copier: indexed teacher rows/cols into the leading block

    emb = net.bert.embeddings
    copy(emb.word_embeddings.weight, "bert.embeddings.word_embeddings.weight", None, hid)
    positions = teacher_state["bert.embeddings.position_embeddings.weight"].index_select(1, hid)  # (P, H)
    if "bert.embeddings.token_type_embeddings.weight" in teacher_state:  # folded in, as the student does
        positions = positions + teacher_state["bert.embeddings.token_type_embeddings.weight"][0, hid]
    n = min(positions.shape[0], emb.position_embeddings.weight.shape[0])
    emb.position_embeddings.weight[:n, : len(hid)] = positions[:n]
    copy.norm(emb.LayerNorm, "bert.embeddings.LayerNorm", hid)

    for j, layer in enumerate(net.bert.encoder.layer):
        teacher = RankedTeacherLayer(teacher_state, teacher_layer_for(j, spec.max_layers, n_teacher), n_teacher, teacher_heads, hid, copy)
        for block in layer.children():  # one per branch
            block.inherit(teacher)
    copy.linear(net.bert.pooler.dense, "bert.pooler.dense", hid, hid)
    copy.linear(net.classifier, "classifier", None, hid)
