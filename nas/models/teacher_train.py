"""Fine-tuning the teacher and reading its logits: the training loop behind :func:`nas.models.teacher.prepare_teacher`.

Cross-entropy with AdamW and BERT's linear warmup then linear decay over at most ``epochs`` passes of
``train``. With ``eval_every`` set, the validation split is scored every ``eval_every`` steps; the run stops
after ``patience`` evaluations without a gain and keeps the best evaluation's weights (early stopping).
With a :class:`~nas.models.teacher_checkpoint.FineTuneCheckpoint`, the state is saved every
``checkpoint_every`` steps and a new call resumes from it. Epoch ``e``'s batches are a function of
``(seed, e)`` alone, so a resumed run takes the same batches as one that never stopped.

Batches are trimmed to their longest row (dynamic padding, :func:`nas.data.batching.trim_padding`) and, with
``bucket_by_length``, drawn from length buckets; logits are computed in batches sorted by length. Caching,
fingerprints and loading are :mod:`nas.models.teacher`'s.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from nas.data.batching import trim_padding

if TYPE_CHECKING:
    import torch

    from nas.data.tokenize import TokenizedSplit
    from nas.models.teacher import TeacherSettings
    from nas.models.teacher_checkpoint import FineTuneCheckpoint

__all__ = ["epoch_plan", "fine_tune", "lr_factor", "predict_logits", "train_step", "trim_padding"]


def fine_tune(model: torch.nn.Module, train: TokenizedSplit, settings: TeacherSettings, progress: bool, *,
              validation: TokenizedSplit | None = None, checkpoint: FineTuneCheckpoint | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` in place; returns the run's record (steps, evaluations, best step, early stop).

    Args:
        model: A ``BertForSequenceClassification``-like model (``input_ids``, ``attention_mask``, ``labels``).
        train: The rows to learn from.
        settings: Budget, optimiser, evaluation and checkpoint cadence.
        progress: Show a progress bar on stderr.
        validation: Scored every ``settings.eval_every`` steps for early stopping; required when that is set.
        checkpoint: Where to save and resume the state; None: nothing survives the process.
    """

    if settings.eval_every and validation is None:
        raise ValueError("teacher.eval_every needs a validation split to score")
    steps = settings.steps_for(len(train))
    optimizer = _optimizer(model, settings)
    record = _resume(model, optimizer, checkpoint) or {"step": 0, "best_step": 0, "best_accuracy": None,
                                                       "evaluations": [], "train_s": 0.0, "stopped_early": False}
    batches = _batches_from(train, settings, record["step"])
    model.train()
    window = {"clock0": time.perf_counter(), "base_s": record["train_s"], "rows": 0, "busy_s": 0.0, "losses": []}
    with _progress_bar(progress, steps, record["step"]) as advance:
        while record["step"] < steps and not record["stopped_early"]:
            idx = next(batches)
            t0 = time.perf_counter()
            loss = train_step(model, optimizer, train, idx, settings, lr_factor(record["step"], steps, settings))
            window["busy_s"] += time.perf_counter() - t0
            record["step"] += 1
            window["rows"] += len(idx)
            window["losses"].append(loss)
            advance(loss)
            if settings.eval_every and record["step"] % settings.eval_every == 0:
                _evaluate(model, validation, settings, record, window, checkpoint)
            if checkpoint is not None and settings.checkpoint_every and record["step"] % settings.checkpoint_every == 0:
                _save(checkpoint, model, optimizer, record, window)
    _wall(record, window)
    if checkpoint is not None and settings.checkpoint_every and record["step"] >= settings.checkpoint_every:
        _save(checkpoint, model, optimizer, record, window)  # a crash while caching must not cost the fine-tune
    _restore_best(model, record, checkpoint)
    model.eval()
    return record


def lr_factor(step: int, steps: int, settings: TeacherSettings) -> float:
    """Share of the peak rate at ``step``: linear warmup over ``warmup_ratio·steps``, then linear decay to 0."""
    warmup = max(1, int(settings.warmup_ratio * steps))
    return (step + 1) / warmup if step < warmup else max(0.0, (steps - step) / max(1, steps - warmup))


def _optimizer(model: torch.nn.Module, settings: TeacherSettings) -> torch.optim.AdamW:
    """AdamW, no weight decay on biases and LayerNorm weights."""
    import torch

    params = list(model.parameters())
    return torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": settings.weight_decay},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=settings.lr,
    )


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, train: TokenizedSplit, idx: torch.Tensor,
                settings: TeacherSettings, factor: float) -> float:
    """One clipped AdamW step on the rows ``idx``, trimmed to their longest row; returns the loss."""
    import torch

    for group in optimizer.param_groups:
        group["lr"] = settings.lr * factor
    device = next(model.parameters()).device  # train where the caller put the model (nas.device)
    input_ids, attention_mask = trim_padding(train.input_ids[idx], train.attention_mask[idx])  # (B, T), T ≤ L
    input_ids, attention_mask, labels = (x.to(device) for x in (input_ids, attention_mask, train.labels[idx]))
    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
    optimizer.step()
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"teacher loss became {value}; lower teacher.lr (now {settings.lr})")
    return value


def _evaluate(model: torch.nn.Module, validation: TokenizedSplit, settings: TeacherSettings, record: dict[str, Any],
              window: dict[str, Any], checkpoint: FineTuneCheckpoint | None) -> None:
    """Score validation, keep the best weights, and stop after ``patience`` evaluations without a gain."""
    accuracy = (predict_logits(model, validation).argmax(-1) == validation.labels).float().mean().item()
    model.train()
    _wall(record, window)
    record["evaluations"].append({
        "step": record["step"], "validation_accuracy": round(accuracy, 5),
        "train_loss": round(sum(window["losses"]) / max(1, len(window["losses"])), 5),
        "sentences_per_s": round(window["rows"] / max(window["busy_s"], 1e-9), 2),  # training steps only
        "train_s": round(record["train_s"], 1),  # wall time so far, evaluations and resumed sessions included
    })
    window.update(losses=[], rows=0, busy_s=0.0)
    if record["best_accuracy"] is None or accuracy > record["best_accuracy"] + settings.min_delta:
        record["best_accuracy"], record["best_step"] = accuracy, record["step"]
        if checkpoint is not None:
            checkpoint.save_best(model)
        else:
            record["_best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    elif sum(1 for e in record["evaluations"] if e["step"] > record["best_step"]) >= settings.patience:
        record["stopped_early"] = True


def _wall(record: dict[str, Any], window: dict[str, Any]) -> None:
    """Fold this session's wall time into ``record["train_s"]`` (a resumed run adds to the earlier sessions')."""
    record["train_s"] = window["base_s"] + time.perf_counter() - window["clock0"]


def _save(checkpoint: FineTuneCheckpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          record: dict[str, Any], window: dict[str, Any]) -> None:
    """Checkpoint the state, the record with the wall time so far included."""
    _wall(record, window)
    checkpoint.save(model, optimizer, {k: v for k, v in record.items() if not k.startswith("_")})


def _resume(model: torch.nn.Module, optimizer: torch.optim.Optimizer, checkpoint: FineTuneCheckpoint | None) -> dict[str, Any] | None:
    """Load the checkpoint's weights, optimiser, dropout RNG and record into place; None when there is none."""
    import torch

    state = checkpoint.load() if checkpoint is not None else None
    if state is None:
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return dict(state["progress"])


def _restore_best(model: torch.nn.Module, record: dict[str, Any], checkpoint: FineTuneCheckpoint | None) -> None:
    """Put the best evaluation's weights back (early stopping keeps the best, not the last)."""
    best = record.pop("_best_state", None)
    if best is None and checkpoint is not None and record["best_accuracy"] is not None:
        best = checkpoint.load_best()
    if best is not None and record["best_step"] != record["step"]:
        model.load_state_dict(best)


def epoch_plan(train: TokenizedSplit, settings: TeacherSettings, epoch: int) -> list[torch.Tensor]:
    """Row indices of every batch of epoch ``epoch``: a function of ``(seed, epoch)`` alone, so resumable.

    Plain: a shuffled permutation cut into full batches. ``bucket_by_length``: rows of similar length share a
    batch (:func:`nas.data.batching.bucketed_epoch`), in random batch order.
    """
    import torch

    from nas.data.batching import bucketed_epoch

    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
    size = settings.batch_size
    if settings.bucket_by_length:
        return bucketed_epoch(train.attention_mask.sum(-1), size, generator)
    order = torch.randperm(len(train), generator=generator)
    return [order[i : i + size] for i in range(0, max(1, len(order) - size + 1), size)]


def _batches_from(train: TokenizedSplit, settings: TeacherSettings, start_step: int) -> Iterator[torch.Tensor]:
    """The batches from step ``start_step`` on, forever (epoch after epoch)."""
    epoch, skip = 0, start_step
    while True:
        plan = epoch_plan(train, settings, epoch)
        if skip >= len(plan):
            skip -= len(plan)
        else:
            yield from plan[skip:]
            skip = 0
        epoch += 1


def predict_logits(model: torch.nn.Module, split: TokenizedSplit, batch_size: int = 128) -> torch.Tensor:
    """float32 logits ``(N, C)`` in row order; batches are formed by length so little padding is computed."""
    import torch

    lengths = split.attention_mask.sum(-1)  # (N,)
    by_length = torch.argsort(lengths, stable=True)
    chunks = []
    device = next(model.parameters()).device  # computed where the model is; the logits come back on CPU
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(split), batch_size):
            idx = by_length[start : start + batch_size]
            input_ids, attention_mask = (t.to(device) for t in trim_padding(split.input_ids[idx], split.attention_mask[idx]))
            chunks.append(model(input_ids=input_ids, attention_mask=attention_mask).logits.float().cpu())
    logits = torch.empty(len(split), chunks[0].shape[-1])
    logits[by_length] = torch.cat(chunks)  # back to row order
    return logits


@contextlib.contextmanager
def _progress_bar(enabled: bool, total_steps: int, done: int = 0) -> Iterator[Any]:
    """A rich progress bar on stderr; yields ``advance(loss)``. Disabled: a no-op."""
    if not enabled:
        yield lambda loss: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("teacher fine-tune"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task_id = bar.add_task("teacher", total=total_steps, completed=done, loss="-")
        yield lambda loss: bar.update(task_id, advance=1, loss=f"{loss:.3f}")
