"""Batches of row indices and per-batch padding: what the teacher fine-tune, distillation and scoring feed a model.

Every split is tokenised to one fixed length ``L`` (:mod:`nas.data.tokenize`), so a row's tensor never
changes and row ``i`` of the teacher-logits cache stays row ``i``. Compute is saved per batch instead:
:func:`trim_padding` drops the padding columns no row of the batch uses (dynamic padding), which masked
positions never change, and :func:`bucketed_batches` groups rows of similar length so that less padding is
left. Measured on SST-2 at ``L = 64`` (mean 13 tokens): see docs/teacher.md (benchmarks/padding_speed.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop padding columns no row of the batch uses (dynamic padding): ``(B, L)`` → ``(B, T)``, ``T`` the
    longest row. Right-padded rows only; a BERT or a student gives the same outputs, since masked positions
    are never attended to."""
    used = max(1, int(attention_mask.sum(-1).max()))
    return input_ids[:, :used], attention_mask[:, :used]


def epoch_batches(n_rows: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Row indices of each batch, forever: walk a shuffled permutation so every example is seen once per
    epoch, reshuffling at the end. Seeded by ``seed`` alone (its own generator: the global RNG, which
    dropout draws from, is untouched)."""
    generator = torch.Generator().manual_seed(seed)
    order, cursor = torch.randperm(n_rows, generator=generator), 0
    while True:
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(n_rows, generator=generator), 0
        yield order[cursor : cursor + batch_size]
        cursor += batch_size


def bucketed_batches(lengths: torch.Tensor, batch_size: int, seed: int, bucket_batches: int = 50) -> Iterator[torch.Tensor]:
    """Like :func:`epoch_batches`, but each batch holds rows of similar length (:func:`bucketed_epoch`), forever."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from bucketed_epoch(lengths, batch_size, generator, bucket_batches)


def bucketed_epoch(lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                   bucket_batches: int = 50) -> list[torch.Tensor]:
    """One epoch of batches of rows of similar length, so trimming each to its longest row leaves little padding.

    Shuffle, cut the permutation into windows of ``bucket_batches · batch_size`` rows, sort each window by
    length and cut it into batches; the rows left over from the windows are pooled, sorted and batched the
    same way, and the batches are shuffled. Every row but fewer than ``batch_size`` is seen once per epoch and
    batch order stays random; only batch *composition* follows length (the usual "sortish" sampler).

    Args:
        lengths: int ``(N,)`` real tokens per row.
        batch_size: Rows per batch; every batch is full.
        generator: Draws the permutation and the batch order.
        bucket_batches: Batches per window: larger packs lengths tighter but makes batches less random.
    """
    order = torch.randperm(len(lengths), generator=generator)
    window = max(1, bucket_batches) * batch_size
    batches: list[torch.Tensor] = []
    leftovers: list[torch.Tensor] = []
    for start in range(0, len(order), window):
        rows = order[start : start + window]
        rows = rows[torch.argsort(lengths[rows], stable=True)]
        full = len(rows) - len(rows) % batch_size
        batches += list(rows[:full].split(batch_size))
        leftovers.append(rows[full:])
    pooled = torch.cat(leftovers)
    pooled = pooled[torch.argsort(lengths[pooled], stable=True)]
    batches += list(pooled[: len(pooled) - len(pooled) % batch_size].split(batch_size))
    batches = [b for b in batches if len(b)]  # splitting an empty tensor yields one empty piece
    return [batches[b] for b in torch.randperm(len(batches), generator=generator).tolist()]


def row_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real tokens per row, int64 ``(N,)``."""
    return attention_mask.sum(-1)
