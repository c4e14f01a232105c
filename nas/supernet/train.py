"""Training the supernet once: the sandwich rule with in-place distillation.

Every step draws one batch and runs, with gradients accumulated into one optimiser step (BigNAS,
https://arxiv.org/abs/2003.11142; Once-for-All; DynaBERT's width/depth-adaptive distillation):

- the **largest** subnet, distilled from the cached teacher logits:
  ``L = α·CE + (1−α)·T²·KL(teacher ‖ largest)`` (the student's own loss, :func:`nas.compress.distill.distillation_loss`);
- the **smallest** subnet and ``random_subnets`` **random** ones, each distilled half from the teacher and
  half from the largest subnet's logits on the same batch (in-place distillation: the widest net is the
  closest teacher a small one can follow, and it costs no extra forward pass).

Training the extremes every step bounds the whole space (the sandwich rule); random subnets cover the
middle. No Optuna, Ray or MLflow here; a caller that wants progress passes ``on_step``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from nas.compress.distill import distillation_loss
from nas.device import modules_on
from nas.train import epoch_batches, get_lr, trim_batch

if TYPE_CHECKING:
    from nas.data.tokenize import TokenizedSplit
    from nas.supernet.supernet import Supernet


@dataclass(frozen=True)
class SupernetSettings:
    """Budget and optimiser of supernet training (part of the cache key).

    Args:
        steps: Optimiser steps; each runs ``2 + random_subnets`` subnets on one batch. ≥ 1.
        batch_size: Sentences per step; ≥ 1.
        lr: Peak AdamW rate (linear warmup over 10 % of the steps, then linear decay to 0).
        random_subnets: Random subnets per step besides the largest and smallest; ≥ 0.
        alpha: Weight of the hard-label term of every subnet's loss, in [0, 1].
        temperature: Softmax temperature of the soft terms; > 0.
        inplace_weight: Share of a smaller subnet's soft loss taken from the largest subnet instead of the
            teacher, in [0, 1].
        seed: Seeds batch order, subnet draws and dropout.
    """

    steps: int = 1200
    batch_size: int = 32
    lr: float = 3e-4
    random_subnets: int = 2
    alpha: float = 0.5
    temperature: float = 2.0
    inplace_weight: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.random_subnets < 0:
            raise ValueError(f"steps and batch_size must be >= 1 and random_subnets >= 0, got {self}")
        if not (0 <= self.alpha <= 1 and 0 <= self.inplace_weight <= 1 and self.temperature > 0):
            raise ValueError(f"alpha and inplace_weight must be in [0, 1] and temperature > 0, got {self}")


def train_supernet(
    net: Supernet,
    train: TokenizedSplit,
    teacher_logits: torch.Tensor,
    settings: SupernetSettings,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    device: str | torch.device | None = None,
) -> list[dict[str, float]]:
    """Train ``net`` in place with the sandwich rule and in-place distillation.

    Args:
        net: The supernet (initialised from the teacher, usually).
        train: Tokenised training split; row ``i`` matches ``teacher_logits[i]``.
        teacher_logits: ``(N, C)`` teacher logits on ``train``.
        settings: Budget and optimiser.
        on_step: Called with ``(step, losses)`` after each step.
        device: Where to train (``auto``, ``cpu``, ``cuda``, :mod:`nas.device`); ``net`` moves there for the
            loop and back afterwards. None: where ``net`` is.

    Returns:
        Per step: the loss of the ``largest`` and ``smallest`` subnets and the ``total``.
    """
    if len(teacher_logits) != len(train):
        raise ValueError(f"teacher_logits has {len(teacher_logits)} rows but the split has {len(train)}")
    with modules_on(device, net) as dev:
        history = _train_on(net, train, teacher_logits, settings, on_step, dev)
    net.eval()
    return history


def _train_on(net: Supernet, train: TokenizedSplit, teacher_logits: torch.Tensor, s: SupernetSettings,
              on_step: Callable[[int, dict[str, float]], None] | None, dev: torch.device) -> list[dict[str, float]]:
    """The sandwich-rule loop of :func:`train_supernet`, with ``net`` already on ``dev`` (batches follow it)."""
    params = dict(net.named_parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params.values() if p.dim() >= 2], "weight_decay": 0.01},
         {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0}],  # biases, norms
        lr=s.lr,
    )
    schedule = _Schedule(s.steps, s.lr)
    rng = random.Random(s.seed)  # subnet draws
    batches = epoch_batches(len(train), s.batch_size, s.seed)  # one shuffled pass per epoch (CPU generator: same on every device)
    torch.manual_seed(s.seed)  # dropout
    history: list[dict[str, float]] = []
    net.train()
    for step, idx in zip(range(s.steps), batches):
        for group in optimizer.param_groups:
            group["lr"] = schedule(step)
        input_ids, attention_mask = (t.to(dev) for t in trim_batch(train.input_ids[idx], train.attention_mask[idx]))  # (B, T)
        optimizer.zero_grad(set_to_none=True)
        losses = _sandwich_losses(net, rng, s, input_ids, attention_mask, train.labels[idx].to(dev), teacher_logits[idx].to(dev))
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        losses["total"] = sum(losses.values())
        if not math.isfinite(losses["total"]):
            raise FloatingPointError(f"supernet loss became {losses['total']} at step {step}; lower the learning rate")
        history.append(losses)
        if on_step is not None:
            on_step(step, losses)
    return history


def _sandwich_losses(net: Supernet, rng: random.Random, s: SupernetSettings, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Back-propagate one batch through the largest, smallest and random subnets; their losses by name.

    Gradients accumulate (the caller zeroes them before and steps after). The largest subnet learns from
    the teacher first; its logits then teach the smaller subnets in place.
    """
    spec = net.spec
    largest_logits = net(input_ids, attention_mask, spec.largest(rng))
    largest_loss = distillation_loss(largest_logits, targets, labels, s.alpha, s.temperature)
    largest_loss.backward()
    soft = largest_logits.detach()
    losses = {"largest": largest_loss.item()}
    for name in ["smallest"] + [f"random{k}" for k in range(s.random_subnets)]:
        arch = spec.smallest(rng) if name == "smallest" else spec.sample(rng)
        logits = net(input_ids, attention_mask, arch)
        loss = (1 - s.inplace_weight) * distillation_loss(logits, targets, labels, s.alpha, s.temperature) \
            + s.inplace_weight * distillation_loss(logits, soft, None, 0.0, s.temperature)
        loss.backward()
        losses[name] = loss.item()
    return losses


class _Schedule:
    """BERT's schedule (:func:`nas.train.get_lr`): 10 % linear warmup, then linear decay to zero."""

    def __init__(self, steps: int, lr: float) -> None:
        from nas.train import TrainSettings

        self.settings = TrainSettings(steps=steps, lr=lr)

    def __call__(self, step: int) -> float:
        return get_lr(step, self.settings)


@torch.inference_mode()
def subnet_loss(net: Supernet, split: TokenizedSplit, teacher_logits: torch.Tensor, arch, *, alpha: float = 0.5,
                temperature: float = 2.0, batch_size: int = 128) -> float:
    """Mean distillation loss of subnet ``arch`` over ``split`` in eval mode (to compare before/after training)."""
    net.eval()
    total, n = 0.0, 0
    for i in range(0, len(split), batch_size):
        ids, mask = trim_batch(split.input_ids[i : i + batch_size], split.attention_mask[i : i + batch_size])
        logits = net(ids, mask, arch)
        total += distillation_loss(logits, teacher_logits[i : i + batch_size], split.labels[i : i + batch_size],
                                   alpha, temperature).item() * len(ids)
        n += len(ids)
    return total / n


@torch.inference_mode()
def subnet_accuracy(net: Supernet, split: TokenizedSplit, arch, batch_size: int = 128) -> float:
    """Share of ``split`` subnet ``arch`` classifies right, in eval mode."""
    net.eval()
    right = 0
    for i in range(0, len(split), batch_size):
        ids, mask = trim_batch(split.input_ids[i : i + batch_size], split.attention_mask[i : i + batch_size])
        right += (net(ids, mask, arch).argmax(-1) == split.labels[i : i + batch_size]).sum().item()
    return right / len(split)
