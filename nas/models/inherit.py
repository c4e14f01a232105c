"""Weight inheritance: start a student from a BERT teacher's weights instead of random ones.

Three choices make a narrower, shallower student out of the teacher (DynaBERT,
https://arxiv.org/abs/2004.04037, and the width-slicing of HAT/AutoTinyBERT supernets):

- **layers**: student layer ``i`` starts from teacher layer ``round((i+1)·n_t/n_s) − 1`` (uniform,
  last-aligned; the same map :func:`nas.compress.distill.layer_mapping` uses for feature distillation);
- **hidden units**: the student's ``H_s`` residual dimensions are the teacher's ``H_s`` most important ones,
  scored by the LayerNorm gains that scale them (``Σ |γ_d|`` over every LayerNorm that writes the stream);
  the same index set is used in every tensor that touches the stream, so the residual path stays aligned;
- **heads and FFN neurons**: each layer keeps the teacher's most important heads and neurons, scored by
  weight magnitude (head ``j``: ``‖W_V[j]‖·‖W_O[:, j]‖``; neuron ``n``: ``‖W_in[n, :]‖·‖W_out[:, n]‖``).

A factorised token table (``vocab × e``) starts from the rank-``e`` truncated SVD of the teacher's sliced
table (``E ≈ (U·S)·Vᵀ``: the table is ``U·S``, the projection ``Vᵀ``), the best rank-``e`` approximation.

What is not inherited keeps its random initialisation: a conv block's depthwise and pointwise weights,
a bottleneck block's in/out projections and its FFNs after the first, and any width beyond the teacher's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch import nn

    from nas.models.student import StudentForSequenceClassification


def teacher_layer_for(student_layer: int, n_student: int, n_teacher: int) -> int:
    """Uniform layer selection, last-aligned: 2 of 6 teacher layers → teacher layers 2 and 5 (0-based)."""
    return round((student_layer + 1) * n_teacher / n_student) - 1


def _ranked(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``min(n, len)`` highest scores, in ascending index order (keeps the teacher's order)."""
    top = torch.argsort(scores, descending=True, stable=True)[: min(n, len(scores))]
    return torch.sort(top).values


class Copier:
    """Copies indexed teacher tensors into student parameters and counts what it copied."""

    def __init__(self, teacher_state: dict[str, torch.Tensor]) -> None:
        self.state = teacher_state
        self.copied = 0

    def __call__(self, param: torch.Tensor, name: str, *index: torch.Tensor | None) -> None:
        """``param[:a, :b] = teacher[name][index0][:, index1]``; the leading block when sizes differ."""
        source = self.state.get(name)
        if source is None:
            return
        for dim, idx in enumerate(index):
            if idx is not None:
                source = source.index_select(dim, idx)
        block = tuple(slice(0, min(s, t)) for s, t in zip(source.shape, param.shape))
        param[block] = source[block].to(param.dtype)
        self.copied += 1

    def linear(self, linear: nn.Linear, name: str, rows: torch.Tensor | None, cols: torch.Tensor | None) -> None:
        self(linear.weight, f"{name}.weight", rows, cols)
        if linear.bias is not None:
            self(linear.bias, f"{name}.bias", rows)

    def norm(self, norm: nn.Module, name: str, idx: torch.Tensor) -> None:
        self(norm.weight, f"{name}.weight", idx)
        self(norm.bias, f"{name}.bias", idx)


def hidden_importance(teacher_state: dict[str, torch.Tensor], n_teacher: int) -> torch.Tensor:
    """Importance of each teacher residual dimension: summed ``|γ|`` of the LayerNorms that write it."""
    score = teacher_state["bert.embeddings.LayerNorm.weight"].abs().clone()
    for t in range(n_teacher):
        for part in ("attention.output", "output"):
            score += teacher_state[f"bert.encoder.layer.{t}.{part}.LayerNorm.weight"].abs()
    return score


def head_importance(teacher_state: dict[str, torch.Tensor], layer: int, n_heads: int) -> torch.Tensor:
    """``(n_heads,)`` magnitude importance of each head of teacher ``layer``: ``‖W_V[j]‖·‖W_O[:, j]‖``."""
    prefix = f"bert.encoder.layer.{layer}.attention"
    value = teacher_state[f"{prefix}.self.value.weight"]  # (A, H)
    out = teacher_state[f"{prefix}.output.dense.weight"]  # (H, A)
    head_size = value.shape[0] // n_heads
    v = value.view(n_heads, head_size, -1).flatten(1).norm(dim=1)
    o = out.view(out.shape[0], n_heads, head_size).transpose(0, 1).flatten(1).norm(dim=1)
    return v * o


def neuron_importance(teacher_state: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """``(F,)`` magnitude importance of each FFN neuron of teacher ``layer``."""
    prefix = f"bert.encoder.layer.{layer}"
    w_in = teacher_state[f"{prefix}.intermediate.dense.weight"]  # (F, H)
    w_out = teacher_state[f"{prefix}.output.dense.weight"]  # (H, F)
    return w_in.norm(dim=1) * w_out.norm(dim=0)


def head_rows(teacher_state: dict[str, torch.Tensor], layer: int, n_heads: int | None, inner: int) -> torch.Tensor:
    """Teacher rows of Q/K/V for a student attention ``inner`` wide: whole heads, most important first."""
    total = teacher_state[f"bert.encoder.layer.{layer}.attention.self.query.weight"].shape[0]
    if not n_heads:
        return torch.arange(min(inner, total))
    head_size = total // n_heads
    order = torch.argsort(head_importance(teacher_state, layer, n_heads), descending=True, stable=True)
    rows = torch.cat([torch.arange(j * head_size, (j + 1) * head_size) for j in order.tolist()])
    return rows[:inner]


class TeacherLayer:
    """The teacher layer a student block starts from, as its :meth:`~nas.models.blocks.Block.inherit` sees it.

    ``hid`` are the teacher residual dimensions the student keeps; the methods rank this layer's units and
    copy teacher tensors (named as in Hugging Face BERT, relative to ``bert.encoder.layer.{layer}``) into
    the block's modules, so a block type never needs the teacher's names or the copier itself.
    """

    def __init__(self, state: dict[str, torch.Tensor], layer: int, n_teacher: int, teacher_heads: int | None,
                 hid: torch.Tensor, copy: Copier) -> None:
        self.state, self.layer, self.n_teacher, self.teacher_heads = state, layer, n_teacher, teacher_heads
        self.hid, self.copy = hid, copy
        self.prefix = f"bert.encoder.layer.{layer}"

    def hidden(self, width: int) -> torch.Tensor:
        """The ``width`` most important teacher residual dimensions (for a block's own inner width)."""
        return _ranked(hidden_importance(self.state, self.n_teacher), width)

    def head_rows(self, inner: int) -> torch.Tensor:
        """Q/K/V rows of whole heads, most important first, for an attention ``inner`` wide."""
        return head_rows(self.state, self.layer, self.teacher_heads, inner)

    def attention(self, attention: nn.Module, rows: torch.Tensor, cols: torch.Tensor) -> None:
        _inherit_attention(attention, self.prefix, rows, cols, self.copy)

    def ffn(self, ffn: nn.Module, cols: torch.Tensor) -> None:
        """The teacher FFN into ``ffn`` (``intermediate.dense``, ``output.dense``, ``output.LayerNorm``),
        its most important neurons first."""
        neurons = _ranked(neuron_importance(self.state, self.layer), ffn.intermediate.dense.out_features)
        _inherit_ffn(ffn, self.prefix, neurons, cols, self.copy)

    def norm(self, norm: nn.Module, part: str, idx: torch.Tensor) -> None:
        self.copy.norm(norm, f"{self.prefix}.{part}", idx)


@torch.no_grad()
def inherit_from_teacher(
    model: StudentForSequenceClassification,
    teacher_state: dict[str, torch.Tensor],
    n_teacher: int,
    teacher_heads: int | None = None,
) -> int:
    """Copy teacher weights into ``model``: layer selection, importance-ordered width slicing.

    What each layer takes is its block type's :meth:`~nas.models.blocks.Block.inherit`.

    Args:
        model: A freshly built student (not vocabulary-trimmed yet: trimming slices the inherited table).
        teacher_state: A Hugging Face ``BertForSequenceClassification`` state dict.
        n_teacher: Teacher encoder layers.
        teacher_heads: Teacher heads per layer (12 for all-MiniLM-L6-v2); None: heads are not ranked and the
            leading Q/K/V rows are kept.

    Returns:
        The number of parameter tensors inherited.
    """
    copy = Copier(teacher_state)
    n_student = model.config.num_hidden_layers
    hid = _ranked(hidden_importance(teacher_state, n_teacher), model.config.hidden_size)
    _inherit_embeddings(model.bert.embeddings, teacher_state, hid, copy)
    for i, block in enumerate(model.bert.encoder.layer):
        block.inherit(TeacherLayer(teacher_state, teacher_layer_for(i, n_student, n_teacher), n_teacher, teacher_heads, hid, copy))
    copy.linear(model.bert.pooler.dense, "bert.pooler.dense", hid, hid)
    copy.linear(model.classifier, "classifier", None, hid)
    return copy.copied


def _inherit_attention(attention: nn.Module, prefix: str, rows: torch.Tensor, cols: torch.Tensor, copy: Copier) -> None:
    for proj in ("query", "key", "value"):
        copy.linear(getattr(attention.self, proj), f"{prefix}.attention.self.{proj}", rows, cols)
    copy.linear(attention.output.dense, f"{prefix}.attention.output.dense", cols, rows)
    copy.norm(attention.output.LayerNorm, f"{prefix}.attention.output.LayerNorm", cols)


def _inherit_ffn(ffn: nn.Module, prefix: str, neurons: torch.Tensor, cols: torch.Tensor, copy: Copier) -> None:
    copy.linear(ffn.intermediate.dense, f"{prefix}.intermediate.dense", neurons, cols)
    copy.linear(ffn.output.dense, f"{prefix}.output.dense", cols, neurons)
    copy.norm(ffn.output.LayerNorm, f"{prefix}.output.LayerNorm", cols)


def _inherit_embeddings(emb: nn.Module, teacher_state: dict[str, torch.Tensor], hid: torch.Tensor, copy: Copier) -> None:
    positions = teacher_state["bert.embeddings.position_embeddings.weight"].index_select(1, hid)  # (P, H_s)
    if "bert.embeddings.token_type_embeddings.weight" in teacher_state:
        positions = positions + teacher_state["bert.embeddings.token_type_embeddings.weight"][0, hid]
    n = min(positions.shape[0], emb.position_embeddings.weight.shape[0])
    emb.position_embeddings.weight[:n, : len(hid)] = positions[:n]
    copy.copied += 1
    copy.norm(emb.LayerNorm, "bert.embeddings.LayerNorm", hid)

    table = teacher_state["bert.embeddings.word_embeddings.weight"].index_select(1, hid)  # (V, H_s)
    target = emb.word_embeddings.weight
    rows = min(table.shape[0], target.shape[0])
    if emb.projection is None:
        target[:rows, : len(hid)] = table[:rows]
    else:
        e = target.shape[1]
        U, S, Vh = torch.linalg.svd(table[:rows], full_matrices=False)  # table ≈ U·diag(S)·Vh
        k = min(e, len(S))
        target[:rows, :k] = U[:, :k] * S[:k]
        emb.projection.weight.zero_()
        emb.projection.weight[: len(hid), :k] = Vh[:k].T
        emb.projection.bias.zero_()
        copy.copied += 1
    copy.copied += 1
