"""The student: an encoder of registered blocks built from a :class:`~nas.candidate.Candidate`.

Module names mirror Hugging Face's ``BertForSequenceClassification`` (``bert.embeddings``,
``bert.encoder.layer.{i}.attention.self.query`` …) so weights inherit from the teacher by name and
structured pruning finds heads and neurons the same way in both. Each layer is whatever block its
:class:`~nas.candidate.BlockSpec` names (:mod:`nas.models.blocks`), so layers may differ.

The model is a ``transformers.PreTrainedModel`` with its own config class (``lightnas-student``) that holds
the whole architecture, so a selected student is saved with ``save_pretrained`` and loaded back with
``from_pretrained`` (or ``AutoModelForSequenceClassification`` after :func:`register_with_auto_classes`).

``forward`` returns the logits tensor only: that keeps ``torch.export`` (and so TVM and ONNX) simple.
``forward_features`` also returns hidden states and attention maps for feature distillation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from nas.candidate import Architecture, BlockSpec
from nas.models.blocks import NoNorm, block_class, create_block
from nas.models.embeddings import Embeddings
from nas.models.stored import use_stored_weights

if TYPE_CHECKING:
    from nas.candidate import Candidate

__all__ = [
    "StudentConfig", "StudentForSequenceClassification", "build_student", "student_config",
    "trim_vocabulary_", "count_flops", "count_params",  # inherit_from_teacher, teacher_layer_for: see __getattr__
]


def __getattr__(name: str) -> Any:
    """``inherit_from_teacher``/``teacher_layer_for`` stay importable from here, loaded on first use.

    The import is lazy so this file, copied into an exported Hugging Face folder without its lightnas-only
    functions (:mod:`nas.artefacts.hf_folder`), imports nothing of lightnas.
    """
    if name in ("inherit_from_teacher", "teacher_layer_for"):
        from nas.models import inherit

        return getattr(inherit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class StudentConfig(PretrainedConfig):
    """Hugging Face config of a lightnas student (``model_type = "lightnas-student"``).

    ``architecture`` is :meth:`Architecture.to_dict` of the student; when it is None (configs written
    before heterogeneous layers) a uniform transformer stack is built from ``num_hidden_layers``,
    ``num_attention_heads`` and ``intermediate_size``. ``vocab_size`` is the number of token-table rows;
    ``full_vocab_size`` is the tokenizer's vocabulary when the table is trimmed, else None.
    """

    model_type = "lightnas-student"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 128,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 2,
        intermediate_size: int = 512,
        architecture: dict[str, Any] | None = None,
        full_vocab_size: int | None = None,
        max_position_embeddings: int = 512,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
        num_labels: int | None = None,
        pad_token_id: int = 0,
        **kwargs,
    ) -> None:
        if architecture is None:
            block = BlockSpec("transformer", heads=num_attention_heads, ffn_size=intermediate_size)
            architecture = Architecture(hidden_size, (block,) * num_hidden_layers).to_dict()
        arch = Architecture.from_dict(architecture)
        self.architecture = arch.to_dict()
        self.vocab_size = vocab_size
        self.full_vocab_size = full_vocab_size
        self.hidden_size = arch.hidden_size
        self.num_hidden_layers = len(arch.layers)
        # HF-style summary fields (the first attention layer's); the truth is ``architecture``.
        first = next((b for b in arch.layers if b.heads), None)
        self.num_attention_heads = first.heads if first else num_attention_heads
        self.intermediate_size = arch.layers[0].ffn_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        if num_labels is not None:  # None: a saved config's id2label says (transformers 5 reads it, else 2)
            kwargs["num_labels"] = num_labels
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def arch(self) -> Architecture:
        return Architecture.from_dict(self.architecture)


class Encoder(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        kw = dict(dropout=cfg.hidden_dropout_prob, attention_dropout=cfg.attention_probs_dropout_prob, eps=cfg.layer_norm_eps)
        self.layer = nn.ModuleList(create_block(spec, cfg.hidden_size, **kw) for spec in cfg.arch.layers)


class Pooler(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # the [CLS] position


class StudentBackbone(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(
            cfg.vocab_size, cfg.hidden_size, cfg.max_position_embeddings,
            embedding_size=cfg.arch.embedding_size, full_vocab_size=cfg.full_vocab_size,
            pad_token_id=cfg.pad_token_id, dropout=cfg.hidden_dropout_prob, eps=cfg.layer_norm_eps,
        )
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
        _shrink_ffns(self, getattr(config, "pruned_ffn_sizes", None) or {})
        # weights saved as low-bit codes (an exported folder of a quantized student): see nas.models.stored
        use_stored_weights(self, getattr(config, "stored_weights", None) or {})
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation; inherited weights overwrite it where shapes allow.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, (nn.LayerNorm, NoNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Conv1d):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Hidden states (embeddings output, then each layer's, ``(B, L, H)``) and each layer's attention
        map ``(B, nh, L, L)`` (None for layers without attention)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        token_mask = attention_mask[:, :, None].to(torch.float32)  # (B, L, 1)
        # -1e4 rather than -inf: exp underflows to exactly 0 without NaNs on fully padded rows.
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -1e4  # (B, 1, 1, L)
        x = self.bert.embeddings(input_ids)
        hidden_states, attentions = [x], []
        for layer in self.bert.encoder.layer:
            x, probs = layer(x, additive_mask, token_mask)
            hidden_states.append(x)
            attentions.append(probs)
        return hidden_states, attentions

    def forward_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
        """Logits ``(B, C)``, hidden states and attention maps (see :meth:`encode`)."""
        hidden_states, attentions = self.encode(input_ids, attention_mask)
        logits = self.classifier(self.dropout(self.bert.pooler(hidden_states[-1])))
        return logits, hidden_states, attentions

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_labels)`` for token ids and attention mask, both int64 ``(B, L)``."""
        return self.forward_features(input_ids, attention_mask)[0]


def register_with_auto_classes() -> None:
    """Let ``AutoConfig``/``AutoModelForSequenceClassification.from_pretrained`` load student folders."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        AutoConfig.register(StudentConfig.model_type, StudentConfig)
        AutoModelForSequenceClassification.register(StudentConfig, StudentForSequenceClassification)
    except ValueError:
        pass  # already registered in this process


def student_config(
    candidate: Candidate, num_labels: int, vocab_size: int = 30522, max_positions: int = 512
) -> StudentConfig:
    """The Hugging Face config of the student a Candidate describes (before any vocabulary trimming)."""
    return StudentConfig(
        vocab_size=vocab_size,
        architecture=candidate.architecture.to_dict(),
        max_position_embeddings=max_positions,
        num_labels=num_labels,
    )


def build_student(
    candidate: Candidate,
    num_labels: int,
    *,
    teacher_state: dict[str, torch.Tensor] | None = None,
    teacher_layers: int | None = None,
    teacher_heads: int | None = None,
    kept_token_ids: Sequence[int] | None = None,
    vocab_size: int = 30522,
    max_positions: int = 512,
) -> StudentForSequenceClassification:
    """The one place a student is built.

    Args:
        candidate: Architecture to build (its ``architecture`` part).
        num_labels: Classes of the task; ≥ 2.
        teacher_state: A BERT teacher's ``state_dict``; when given, weights are inherited (layers chosen
            uniformly, widths sliced by importance). See :func:`nas.models.inherit.inherit_from_teacher`.
        teacher_layers: Number of teacher encoder layers; required with ``teacher_state``.
        teacher_heads: Teacher attention heads per layer, to inherit whole heads by importance; None keeps
            the leading rows.
        kept_token_ids: Tokenizer ids the trimmed vocabulary keeps (e.g. from
            :func:`nas.models.vocab.most_frequent_tokens`); required when ``architecture.vocab_size`` is set.
        vocab_size: The tokenizer's vocabulary size; must match the teacher's to inherit embeddings.
        max_positions: Position embedding rows (longest sequence the student accepts).

    Returns:
        A model in eval mode.
    """
    from nas.models.inherit import inherit_from_teacher

    arch = candidate.architecture
    if arch.vocab_size is not None and kept_token_ids is None:
        raise ValueError(f"the candidate trims the vocabulary to {arch.vocab_size} tokens; pass kept_token_ids")
    if kept_token_ids is not None and arch.vocab_size is not None and len(kept_token_ids) != arch.vocab_size:
        raise ValueError(f"kept_token_ids has {len(kept_token_ids)} ids but the candidate keeps {arch.vocab_size}")
    model = StudentForSequenceClassification(student_config(candidate, num_labels, vocab_size, max_positions))
    if teacher_state is not None:
        if teacher_layers is None:
            raise ValueError("teacher_layers is required with teacher_state")
        inherit_from_teacher(model, teacher_state, teacher_layers, teacher_heads)
    if arch.vocab_size is not None:
        trim_vocabulary_(model, kept_token_ids)
    return model.eval()


@torch.no_grad()
def trim_vocabulary_(model: StudentForSequenceClassification, kept_token_ids: Sequence[int]) -> StudentForSequenceClassification:
    """Keep only the rows of ``kept_token_ids`` in the token table and remap tokenizer ids, in place.

    On a sentence whose ids are all kept, the trimmed model computes exactly what it did before. Ids not
    kept read the ``[UNK]`` row (``[UNK]`` must be kept).

    Returns:
        ``model``, for chaining.
    """
    from nas.models.vocab import token_map_for

    embeddings = model.bert.embeddings
    full_vocab = model.config.full_vocab_size or model.config.vocab_size
    old_map = embeddings.token_map
    rows = torch.as_tensor(list(kept_token_ids), dtype=torch.long)
    old_rows = rows if old_map is None else old_map[rows]  # trimming twice composes
    table = embeddings.word_embeddings.weight[old_rows].clone()  # (V', e)
    embeddings.word_embeddings = nn.Embedding.from_pretrained(table, freeze=False)
    embeddings.register_buffer("token_map", token_map_for(kept_token_ids, full_vocab))
    model.config.full_vocab_size = full_vocab
    model.config.vocab_size = len(kept_token_ids)
    return model


def count_params(arch: Architecture, num_labels: int, max_positions: int = 512, vocab_size: int = 30522) -> int:
    """Parameters of the student ``arch`` describes: embeddings, blocks, pooler and classifier."""
    h = arch.hidden_size
    rows = arch.vocab_size or vocab_size
    blocks = sum(block_class(b.type).count_params(b, h) for b in arch.layers)
    return Embeddings.count_params(rows, h, max_positions, arch.embedding_size) + blocks + (h * h + h) + (h * num_labels + num_labels)


def count_flops(arch: Architecture, seq_len: int, num_labels: int = 2) -> int:
    """FLOPs of one sequence of ``seq_len`` tokens (2 per multiply-add of matrix products and convolutions)."""
    h = arch.hidden_size
    blocks = sum(block_class(b.type).count_flops(b, h, seq_len) for b in arch.layers)
    return Embeddings.count_flops(h, seq_len, arch.embedding_size) + blocks + 2 * (h * h + h * num_labels)


def _shrink_ffns(model: nn.Module, sizes: dict[str, int]) -> None:
    """Give each FFN named in ``sizes`` (module name → inner width) that width, as neuron pruning left it.

    The architecture records one ``ffn_size`` per layer; a bottleneck's stacked FFNs can be pruned to
    different widths, so a pruned student's config also carries every FFN's own width.
    """
    modules = dict(model.named_modules())
    for name, size in sizes.items():
        ffn = modules.get(name)
        if ffn is None or ffn.intermediate.dense.out_features == size:
            continue
        dense, out = ffn.intermediate.dense, ffn.output.dense
        ffn.intermediate.dense = nn.Linear(dense.in_features, size, bias=dense.bias is not None)
        ffn.output.dense = nn.Linear(size, out.out_features, bias=out.bias is not None)
        if hasattr(ffn, "keep_ffn_units_"):  # other per-neuron tensors (a depthwise conv between the two)
            ffn.keep_ffn_units_(torch.arange(size))

