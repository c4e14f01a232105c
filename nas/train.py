"""The budgeted train/distil/evaluate loop for one student.

Reads top to bottom like nanoGPT's ``train.py``: sample a batch, distil against cached teacher logits
(and, when their weights are > 0, against the teacher's hidden states and attention maps), step, keep
pruned weights at zero, repeat for a fixed step budget. No Optuna, Ray or MLflow in here: a caller that
wants to report progress passes ``on_step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nas.compress.distill import attention_loss, distillation_loss, hidden_projection, hidden_state_loss, layer_mapping
from nas.device import modules_on
from nas.data.batching import bucketed_batches, epoch_batches
from nas.data.batching import trim_padding as trim_batch  # the name pretrain and the supernet import

__all__ = ["DistilLoss", "TrainSettings", "accuracy", "distil", "epoch_batches", "get_lr", "predict", "train_batches", "trim_batch",
           "use_eager_attention"]

if TYPE_CHECKING:
    from nas.data.tokenize import TokenizedSplit


@dataclass(frozen=True)
class TrainSettings:
    """Budget and optimiser of one distillation run.

    Args:
        steps: Optimiser steps (the fidelity of a trial); ≥ 0.
        batch_size: Sentences per step; ≥ 1.
        lr: Peak AdamW learning rate, reached after ``warmup_ratio·steps`` and decayed linearly to 0.
        warmup_ratio: Share of steps spent warming up, in [0, 1).
        weight_decay: AdamW decoupled weight decay.
        max_grad_norm: Gradient clipping norm.
        seed: Seeds batch order and dropout.
        bucket_by_length: Draw batches of rows of similar length (:func:`nas.data.batching.bucketed_batches`):
            measured 2.8x fewer CPU seconds per step than trimming random batches for a 4 x 256 student on
            SST-2 at length 64 (docs/teacher.md). Off by default: it changes which rows share a batch, so a
            campaign's trials are only comparable (and rebuilt exactly) with one setting.
    """

    steps: int = 200
    batch_size: int = 32
    lr: float = 3e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    bucket_by_length: bool = False


def get_lr(step: int, settings: TrainSettings) -> float:
    """Linear warmup then linear decay to zero (BERT's schedule)."""
    warmup = max(1, int(settings.warmup_ratio * settings.steps))
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    return settings.lr * max(0.0, (settings.steps - step) / max(1, settings.steps - warmup))


def use_eager_attention(teacher: torch.nn.Module) -> torch.nn.Module:
    """Switch a Hugging Face teacher to eager attention: SDPA kernels do not return attention maps."""
    if hasattr(teacher, "set_attn_implementation"):
        teacher.set_attn_implementation("eager")
    else:  # older transformers
        teacher.config._attn_implementation = "eager"
    return teacher


@dataclass(frozen=True)
class DistilLoss:
    """What the student learns to match: ``L = α·L_hard + (1−α)·T²·KL(teacher ‖ student)`` plus feature terms.

    The feature terms (TinyBERT) compare student layer ``i`` with teacher layer
    ``layer_mapping(n_s, n_t)[i]``: ``hidden_weight·MSE(W·h_s, h_t)`` through a learned projection ``W``
    (trained with the student, then dropped) and ``attention_weight·KL(A_t ‖ A_s)`` over the layers that
    have attention (conv blocks have none).

    Args:
        alpha: Weight of the hard-label term, in [0, 1].
        temperature: Softmax temperature of the soft term; > 0.
        hidden_weight: Weight of the hidden-state MSE; ≥ 0.
        attention_weight: Weight of the attention-map KL; ≥ 0.
    """

    alpha: float = 0.5
    temperature: float = 2.0
    hidden_weight: float = 0.0
    attention_weight: float = 0.0

    @property
    def uses_features(self) -> bool:
        """Whether a feature term is weighted, so the teacher model itself must run on every batch."""
        return self.hidden_weight > 0 or self.attention_weight > 0


def distil(
    model: torch.nn.Module,
    train: TokenizedSplit,
    teacher_logits: torch.Tensor | None,
    settings: TrainSettings,
    *,
    loss: DistilLoss = DistilLoss(),
    masks: dict[str, torch.Tensor] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    teacher: torch.nn.Module | None = None,
    device: str | torch.device | None = None,
) -> list[float]:
    """Train ``model`` in place with the :class:`DistilLoss` ``loss`` for ``settings.steps`` steps.

    Args:
        model: A student whose ``forward(input_ids, attention_mask)`` returns logits.
        train: Tokenised training split; row ``i`` matches ``teacher_logits[i]``.
        teacher_logits: ``(N, C)`` teacher logits on ``train``, or None to train on hard labels only.
        settings: Step budget and optimiser.
        loss: The loss terms and their weights.
        masks: Pruning masks by parameter name; pruned weights are held at zero after every step.
        on_step: Called with ``(step, loss)`` after each step.
        teacher: A Hugging Face BERT teacher (``output_hidden_states``/``output_attentions``); required
            when a feature weight is > 0, run in eval mode without gradients.
        device: Where to train (``auto``, ``cpu``, ``cuda`` or a ``torch.device``); the model (and teacher)
            move there for the loop and back afterwards. None: where the model is.

    Returns:
        The loss of every step.
    """
    if teacher_logits is not None and len(teacher_logits) != len(train):
        raise ValueError(f"teacher_logits has {len(teacher_logits)} rows but the split has {len(train)}")
    with modules_on(device, model, teacher if loss.uses_features else None) as dev:
        features = _FeatureTerms(model, teacher, loss, dev) if loss.uses_features else None
        optimizer = _optimizer(model, features.projection if features else None, settings)
        torch.manual_seed(settings.seed)  # dropout
        params = dict(model.named_parameters())
        masks = {name: mask.to(dev) for name, mask in masks.items()} if masks else masks
        losses: list[float] = []
        model.train()
        for step, idx in zip(range(settings.steps), train_batches(train, settings)):
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, settings)
            input_ids, attention_mask = (t.to(dev) for t in trim_batch(train.input_ids[idx], train.attention_mask[idx]))  # (B, T)
            labels = train.labels[idx].to(dev)
            if features is not None:
                logits, hidden, attentions = model.forward_features(input_ids, attention_mask)
            else:
                logits = model(input_ids, attention_mask)
            if teacher_logits is None:
                value = torch.nn.functional.cross_entropy(logits, labels)
            else:
                value = distillation_loss(logits, teacher_logits[idx].to(dev), labels, loss.alpha, loss.temperature)
            if features is not None:
                value = value + features.loss(input_ids, attention_mask, hidden, attentions)
            losses.append(_step(model, optimizer, value, settings, params, masks, step))
            if on_step is not None:
                on_step(step, losses[-1])
        model.eval()
    return losses


def _optimizer(model: torch.nn.Module, projection: torch.nn.Module | None, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW over the student (and the feature projection), with no weight decay on biases and norms."""
    params = list(model.parameters()) + (list(projection.parameters()) if projection is not None else [])
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]  # biases, norms
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
    )


def train_batches(train: TokenizedSplit, settings: TrainSettings) -> Iterator[torch.Tensor]:
    """Row indices of each distillation batch, forever: every row once per epoch (:mod:`nas.data.batching`)."""
    if settings.bucket_by_length:
        return bucketed_batches(train.attention_mask.sum(-1), settings.batch_size, settings.seed)
    return epoch_batches(len(train), settings.batch_size, settings.seed)


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, settings: TrainSettings,
          params: dict[str, torch.nn.Parameter], masks: dict[str, torch.Tensor] | None, step: int) -> float:
    """One optimiser step on ``loss`` (clipped), pruned weights put back to zero; returns the loss value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
    optimizer.step()
    if masks:
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask)
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"loss became {value} at step {step}; lower the learning rate")
    return value


class _FeatureTerms:
    """The TinyBERT terms of a :class:`DistilLoss`: the teacher, the student → teacher layer map and projection."""

    def __init__(self, model: torch.nn.Module, teacher: torch.nn.Module | None, loss: DistilLoss, device: torch.device) -> None:
        if teacher is None:
            raise ValueError("hidden_weight or attention_weight > 0 needs the teacher model (teacher=...)")
        self.teacher, self.weights = use_eager_attention(teacher).eval(), loss
        self.mapping = layer_mapping(len(model.bert.encoder.layer), teacher.config.num_hidden_layers)
        self.projection = (hidden_projection(model.config.hidden_size, teacher.config.hidden_size).to(device)
                           if loss.hidden_weight > 0 else None)

    def loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, hidden: list[torch.Tensor],
             attentions: list[torch.Tensor | None]) -> torch.Tensor:
        """``hidden_weight·mean MSE + attention_weight·mean KL`` over mapped layer pairs."""
        with torch.no_grad():
            out = self.teacher(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                               output_attentions=True)
        total, mapping = hidden[-1].new_zeros(()), self.mapping
        if self.weights.hidden_weight > 0:
            # hidden[0] is the embeddings output, so layer i is hidden[i + 1] in both lists.
            terms = [hidden_state_loss(self.projection(hidden[i + 1]), out.hidden_states[t + 1], attention_mask=attention_mask)
                     for i, t in enumerate(mapping)]
            total = total + self.weights.hidden_weight * torch.stack(terms).mean()
        pairs = [(a, out.attentions[t]) for a, t in zip(attentions, mapping) if a is not None]
        if self.weights.attention_weight > 0 and pairs:
            total = total + self.weights.attention_weight * torch.stack([attention_loss(a_s, a_t) for a_s, a_t in pairs]).mean()
        return total


@torch.inference_mode()
def predict(model: torch.nn.Module, split: TokenizedSplit, batch_size: int = 128) -> torch.Tensor:
    """Logits ``(N, C)`` of ``model`` on every row of ``split`` (row order), in eval mode, on CPU.

    Rows are batched by length and each batch trimmed to its longest row, so a 5,000-row validation split
    of SST-2 (13 tokens on average, 64 at most) computes little padding; masked positions never change a
    row's logits, so only floating-point noise separates this from one padded batch. The forward runs where
    the model is (nas.device); the logits come back on CPU.
    """
    model.eval()
    dev = next(model.parameters()).device
    by_length = torch.argsort(split.attention_mask.sum(-1), stable=True)
    chunks = []
    for start in range(0, len(split), batch_size):
        idx = by_length[start : start + batch_size]
        chunks.append(model(*(t.to(dev) for t in trim_batch(split.input_ids[idx], split.attention_mask[idx]))).cpu())
    logits = torch.cat(chunks)
    out = torch.empty_like(logits)
    out[by_length] = logits  # back to row order
    return out


def accuracy(model: torch.nn.Module, split: TokenizedSplit, batch_size: int = 128) -> float:
    """Share of rows of ``split`` whose arg-max prediction equals the label, in [0, 1]."""
    return (predict(model, split, batch_size).argmax(-1) == split.labels).float().mean().item()
