"""The student: a small BERT-style encoder built from a :class:`~nas.candidate.Candidate`.

Module names mirror Hugging Face's ``BertForSequenceClassification`` (``bert.encoder.layer.{i}.attention.
self.query`` …) so that weights inherit from the teacher by name and structured pruning can find heads and
neurons the same way in both. The model is a ``transformers.PreTrainedModel`` with its own config class, so
a selected student is saved with ``save_pretrained`` and loaded back with ``from_pretrained``.

``forward`` returns the logits tensor only: that keeps ``torch.export`` (and so TVM and ONNX) simple.
``forward_features`` also returns hidden states and attention maps for feature distillation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

if TYPE_CHECKING:
    from nas.candidate import Candidate


class StudentConfig(PretrainedConfig):
    """Hugging Face config of a lightnas student (``model_type = "lightnas-student"``)."""

    model_type = "lightnas-student"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 128,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 2,
        intermediate_size: int = 512,
        max_position_embeddings: int = 512,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
        num_labels: int = 2,
        pad_token_id: int = 0,
        **kwargs,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        super().__init__(num_labels=num_labels, pad_token_id=pad_token_id, **kwargs)


class Embeddings(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        # Single-segment tasks only: the teacher's token-type-0 vector is folded into the positions on
        # inheritance, which saves a table and an add.
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # (B, L, H)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.num_attention_heads = cfg.num_attention_heads
        self.attention_head_size = cfg.hidden_size // cfg.num_attention_heads
        all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = nn.Linear(cfg.hidden_size, all_head_size)
        self.key = nn.Linear(cfg.hidden_size, all_head_size)
        self.value = nn.Linear(cfg.hidden_size, all_head_size)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

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
    """Projection, dropout, residual add and post-LayerNorm (BERT's ``*Output`` modules)."""

    def __init__(self, d_in: int, d_out: int, cfg: StudentConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = DenseResidual(cfg.hidden_size, cfg.hidden_size, cfg)


class Intermediate(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class TransformerLayer(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = DenseResidual(cfg.intermediate_size, cfg.hidden_size, cfg)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context, probs = self.attention.self(x, additive_mask)
        x = self.attention.output(context, x)
        return self.output(self.intermediate(x), x), probs


class Encoder(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_hidden_layers))


class Pooler(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # the [CLS] position


class StudentBackbone(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.pooler = Pooler(cfg)


class StudentForSequenceClassification(PreTrainedModel):
    """A lightnas student with a classification head.

    Example:
        >>> from nas.candidate import Candidate
        >>> model = build_student(Candidate(n_layers=1, hidden_size=32, n_heads=2, ffn_size=64), num_labels=2)
        >>> model(torch.ones(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long)).shape
        torch.Size([1, 2])
    """

    config_class = StudentConfig
    base_model_prefix = "bert"

    def __init__(self, config: StudentConfig) -> None:
        super().__init__(config)
        self.bert = StudentBackbone(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation; inherited weights overwrite it where shapes allow.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Logits ``(B, C)``, hidden states (embeddings then each layer, ``(B, L, H)``) and attention maps."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # -1e4 rather than -inf: exp underflows to exactly 0 without NaNs on fully padded rows.
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -1e4  # (B, 1, 1, L)
        x = self.bert.embeddings(input_ids)
        hidden_states, attentions = [x], []
        for layer in self.bert.encoder.layer:
            x, probs = layer(x, additive_mask)
            hidden_states.append(x)
            attentions.append(probs)
        logits = self.classifier(self.dropout(self.bert.pooler(x)))
        return logits, hidden_states, attentions

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_labels)`` for token ids and attention mask, both int64 ``(B, L)``."""
        return self.forward_features(input_ids, attention_mask)[0]


def student_config(candidate: Candidate, num_labels: int, vocab_size: int = 30522, max_positions: int = 512) -> StudentConfig:
    """The Hugging Face config of the student a Candidate describes."""
    return StudentConfig(
        vocab_size=vocab_size,
        hidden_size=candidate.hidden_size,
        num_hidden_layers=candidate.n_layers,
        num_attention_heads=candidate.n_heads,
        intermediate_size=candidate.ffn_size,
        max_position_embeddings=max_positions,
        num_labels=num_labels,
    )


def build_student(
    candidate: Candidate,
    num_labels: int,
    *,
    teacher_state: dict[str, torch.Tensor] | None = None,
    teacher_layers: int | None = None,
    vocab_size: int = 30522,
    max_positions: int = 512,
) -> StudentForSequenceClassification:
    """The one place a student is built.

    Args:
        candidate: Architecture to build.
        num_labels: Classes of the task; ≥ 2.
        teacher_state: A BERT teacher's ``state_dict``; when given, weights are inherited by name (layers
            chosen uniformly, tensors sliced to the student's width). See :func:`inherit_from_teacher`.
        teacher_layers: Number of teacher encoder layers; required with ``teacher_state``.
        vocab_size: Token embedding rows; must match the teacher's tokenizer to inherit embeddings.
        max_positions: Position embedding rows (longest sequence the student accepts).

    Returns:
        A model in eval mode.
    """
    model = StudentForSequenceClassification(student_config(candidate, num_labels, vocab_size, max_positions))
    if teacher_state is not None:
        if teacher_layers is None:
            raise ValueError("teacher_layers is required with teacher_state")
        inherit_from_teacher(model, teacher_state, teacher_layers)
    return model.eval()


def teacher_layer_for(student_layer: int, n_student: int, n_teacher: int) -> int:
    """Uniform layer selection, last-aligned: 2 of 6 teacher layers → teacher layers 2 and 5 (0-based)."""
    return round((student_layer + 1) * n_teacher / n_student) - 1


@torch.no_grad()
def inherit_from_teacher(
    model: StudentForSequenceClassification, teacher_state: dict[str, torch.Tensor], n_teacher: int
) -> int:
    """Copy teacher weights into ``model`` by name, slicing every tensor to the student's shape.

    Width slicing keeps the leading rows/columns (whole heads when the head sizes agree, as in DynaBERT's
    width-adaptive initialisation); importance-ordered slicing is a refinement left to the space issue.

    Returns:
        The number of parameter tensors inherited.
    """
    n_student = model.config.num_hidden_layers
    own_state = model.state_dict()
    inherited = 0
    for name, tensor in own_state.items():
        source_name = name
        if name.startswith("bert.encoder.layer."):
            parts = name.split(".")
            parts[3] = str(teacher_layer_for(int(parts[3]), n_student, n_teacher))
            source_name = ".".join(parts)
        source = teacher_state.get(source_name)
        if source is None or source.dim() != tensor.dim():
            continue
        if any(s < t for s, t in zip(source.shape, tensor.shape)):
            continue  # the student is wider than the teacher here: keep the random init
        sliced = source[tuple(slice(0, t) for t in tensor.shape)].clone()
        if name == "bert.embeddings.position_embeddings.weight" and "bert.embeddings.token_type_embeddings.weight" in teacher_state:
            sliced += teacher_state["bert.embeddings.token_type_embeddings.weight"][0, : tensor.shape[1]]
        tensor.copy_(sliced)
        inherited += 1
    return inherited
