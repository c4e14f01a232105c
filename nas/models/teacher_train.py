"""Fine-tuning the teacher and reading its logits: the training loop behind :func:`nas.models.teacher.prepare_teacher`.

Cross-entropy with AdamW and BERT's linear warmup then linear decay, over a shuffled permutation of
``train`` (every row once per epoch); logits are computed in batches formed by length. Both trim the padding
columns no row of a batch uses, which masked positions never change. Caching, fingerprints and loading
are :mod:`nas.models.teacher`'s.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from nas.data.tokenize import TokenizedSplit
    from nas.models.teacher import TeacherSettings


def fine_tune(model: torch.nn.Module, train: TokenizedSplit, settings: TeacherSettings, progress: bool) -> None:
    """Cross-entropy fine-tuning with AdamW and BERT's linear warmup then linear decay, in place."""
    import torch

    steps = settings.steps_for(len(train))
    warmup = max(1, int(settings.warmup_ratio * steps))
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params.values() if p.dim() >= 2], "weight_decay": settings.weight_decay},
            {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0},  # biases, LayerNorm
        ],
        lr=settings.lr,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / warmup if step < warmup else max(0.0, (steps - step) / max(1, steps - warmup))
    )
    device = next(model.parameters()).device  # train where the caller put the model (nas.device)
    generator = torch.Generator().manual_seed(settings.seed)  # on CPU: the same batch order on every device
    order, cursor = torch.randperm(len(train), generator=generator), 0
    model.train()
    with _progress_bar(progress, steps) as advance:
        for _ in range(steps):
            # Walk a shuffled permutation so every row is seen once per epoch; reshuffle at its end.
            if cursor + settings.batch_size > len(order):
                order, cursor = torch.randperm(len(train), generator=generator), 0
            idx = order[cursor : cursor + settings.batch_size]
            cursor += settings.batch_size
            input_ids, attention_mask = trim_padding(train.input_ids[idx], train.attention_mask[idx])  # (B, T), T ≤ L
            input_ids, attention_mask, labels = (t.to(device) for t in (input_ids, attention_mask, train.labels[idx]))
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            schedule.step()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"teacher loss became {loss_value}; lower teacher.lr (now {settings.lr})")
            advance(loss_value)
    model.eval()


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


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop padding columns no row of the batch uses: sample sentences fill ~11 of 64 tokens, so this is
    ~5x less compute, and masked positions never change a BERT's output."""
    used = int(attention_mask.sum(-1).max())
    return input_ids[:, :used], attention_mask[:, :used]


@contextlib.contextmanager
def _progress_bar(enabled: bool, total_steps: int) -> Iterator[Any]:
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
        task_id = bar.add_task("teacher", total=total_steps, loss="-")
        yield lambda loss: bar.update(task_id, advance=1, loss=f"{loss:.3f}")
