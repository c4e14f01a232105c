"""Vocabulary trimming: keep the task's most frequent tokens, remap tokenizer ids inside the model.

A 30,522 × 128 int8 token table alone is 3.9 MB, more than most MCUs have. A task uses far fewer tokens
(SST-2's 67k training sentences use 11,572 distinct WordPiece ids; the 2,000 / 4,000 / 8,000 most frequent
cover 85 % / 92 % / 98 % of their tokens), so a student keeps only those rows. The model still accepts ordinary tokenizer ids: a
``token_map`` buffer sends every tokenizer id to its kept row, and ids outside the kept set to the row of
``[UNK]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# bert-base-uncased / MiniLM WordPiece: [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103.
BERT_SPECIAL_IDS = (0, 100, 101, 102, 103)
BERT_UNK_ID = 100


def most_frequent_tokens(
    input_ids: torch.Tensor, size: int, *, special_ids: Sequence[int] = BERT_SPECIAL_IDS, vocab_size: int = 30522
) -> list[int]:
    """The ``size`` token ids to keep: the special tokens, then the most frequent ids of ``input_ids``.

    Args:
        input_ids: int64 token ids of the task's training split, any shape.
        size: Ids to keep, special ones included; ≥ ``len(special_ids)``.
        special_ids: Ids always kept (padding, unknown, CLS, SEP, MASK).
        vocab_size: The tokenizer's vocabulary size.

    Returns:
        ``size`` distinct ids (fewer only when the tokenizer has fewer), ascending, so row order follows
        the tokenizer's; ties in frequency break toward the smaller id, so the result is deterministic.
    """
    if size < len(special_ids):
        raise ValueError(f"vocab size {size} cannot hold the {len(special_ids)} special tokens")
    counts = torch.bincount(input_ids.reshape(-1), minlength=vocab_size).to(torch.float64)
    counts[list(special_ids)] = float("inf")
    # Stable sort on -count keeps ascending ids among equal counts.
    order = torch.sort(-counts, stable=True).indices
    return sorted(order[: min(size, vocab_size)].tolist())


def token_map_for(kept_ids: Sequence[int], vocab_size: int, unk_id: int = BERT_UNK_ID) -> torch.Tensor:
    """int64 ``(vocab_size,)``: the trimmed row of every tokenizer id; ids not kept map to ``unk_id``'s row."""
    kept = torch.as_tensor(list(kept_ids), dtype=torch.long)
    if len(set(kept.tolist())) != len(kept):
        raise ValueError("kept token ids must be distinct")
    if unk_id not in set(kept.tolist()):
        raise ValueError(f"the unknown token {unk_id} must be kept so out-of-vocabulary ids have a row")
    mapping = torch.full((vocab_size,), int((kept == unk_id).nonzero()[0, 0]), dtype=torch.long)
    mapping[kept] = torch.arange(len(kept))
    return mapping


def coverage(input_ids: torch.Tensor, kept_ids: Sequence[int], attention_mask: torch.Tensor | None = None) -> float:
    """Share of (real, unpadded) tokens of ``input_ids`` whose id is kept, in [0, 1]."""
    kept = torch.zeros(int(max(int(input_ids.max()), max(kept_ids))) + 1, dtype=torch.bool)
    kept[list(kept_ids)] = True
    hits = kept[input_ids]
    if attention_mask is not None:
        return hits[attention_mask.bool()].float().mean().item()
    return hits.float().mean().item()
