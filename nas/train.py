"""The budgeted train/distil/evaluate loop for one student.

Reads top to bottom like nanoGPT's ``train.py``: sample a batch, distil against cached teacher logits,
step, keep pruned weights at zero, repeat for a fixed step budget. No Optuna, Ray or MLflow in here:
a caller that wants to report progress passes ``on_step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nas.compress.distill import distillation_loss

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
    """

    steps: int = 200
    batch_size: int = 32
    lr: float = 3e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0


def get_lr(step: int, settings: TrainSettings) -> float:
    """Linear warmup then linear decay to zero (BERT's schedule)."""
    warmup = max(1, int(settings.warmup_ratio * settings.steps))
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    return settings.lr * max(0.0, (settings.steps - step) / max(1, settings.steps - warmup))


def distil(
    model: torch.nn.Module,
    train: TokenizedSplit,
    teacher_logits: torch.Tensor | None,
    settings: TrainSettings,
    *,
    alpha: float = 0.5,
    temperature: float = 2.0,
    masks: dict[str, torch.Tensor] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` in place with ``L = α·L_hard + (1−α)·T²·KL(teacher ‖ student)``.

    Args:
        model: A student whose ``forward(input_ids, attention_mask)`` returns logits.
        train: Tokenised training split; row ``i`` matches ``teacher_logits[i]``.
        teacher_logits: ``(N, C)`` teacher logits on ``train``, or None to train on hard labels only.
        settings: Step budget and optimiser.
        alpha: Weight of the hard-label term, in [0, 1].
        temperature: Softmax temperature of the soft term; > 0.
        masks: Pruning masks by parameter name; pruned weights are held at zero after every step.
        on_step: Called with ``(step, loss)`` after each step.

    Returns:
        The loss of every step.
    """
    if teacher_logits is not None and len(teacher_logits) != len(train):
        raise ValueError(f"teacher_logits has {len(teacher_logits)} rows but the split has {len(train)}")
    params = dict(model.named_parameters())
    decay = [p for n, p in params.items() if p.dim() >= 2]
    no_decay = [p for n, p in params.items() if p.dim() < 2]  # biases and LayerNorm, as in BERT
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
    )
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)  # dropout
    order = torch.randperm(len(train), generator=generator)
    cursor = 0
    losses: list[float] = []
    model.train()
    for step in range(settings.steps):
        # Walk a shuffled permutation so every example is seen once per epoch; reshuffle at the end.
        if cursor + settings.batch_size > len(order):
            order, cursor = torch.randperm(len(train), generator=generator), 0
        idx = order[cursor : cursor + settings.batch_size]
        cursor += settings.batch_size

        for group in optimizer.param_groups:
            group["lr"] = get_lr(step, settings)
        logits = model(train.input_ids[idx], train.attention_mask[idx])
        if teacher_logits is None:
            loss = torch.nn.functional.cross_entropy(logits, train.labels[idx])
        else:
            loss = distillation_loss(logits, teacher_logits[idx], train.labels[idx], alpha, temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        if masks:
            with torch.no_grad():
                for name, mask in masks.items():
                    params[name].mul_(mask)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step}; lower the learning rate")
        losses.append(loss_value)
        if on_step is not None:
            on_step(step, loss_value)
    model.eval()
    return losses


@torch.inference_mode()
def predict(model: torch.nn.Module, split: TokenizedSplit, batch_size: int = 128) -> torch.Tensor:
    """Logits ``(N, C)`` of ``model`` on every row of ``split``, in eval mode."""
    model.eval()
    chunks = [
        model(split.input_ids[i : i + batch_size], split.attention_mask[i : i + batch_size])
        for i in range(0, len(split), batch_size)
    ]
    return torch.cat(chunks)


def accuracy(model: torch.nn.Module, split: TokenizedSplit, batch_size: int = 128) -> float:
    """Share of rows of ``split`` whose arg-max prediction equals the label, in [0, 1]."""
    return (predict(model, split, batch_size).argmax(-1) == split.labels).float().mean().item()
