"""Token and position embeddings of a student, with optional factorisation and vocabulary trimming.

Factorisation (ALBERT, https://arxiv.org/abs/1909.11942): the token table is ``vocab × e`` and a Linear
maps ``e → hidden``, so the table costs ``V·e + e·H`` instead of ``V·H`` parameters. Position embeddings
stay at the hidden width (they are ``max_positions × H``, small next to the token table).

Trimming (:mod:`nas.models.vocab`): the table keeps only some rows and a ``token_map`` buffer sends
tokenizer ids to rows, so callers still pass ordinary tokenizer ids.
"""

from __future__ import annotations

import torch
from torch import nn


class Embeddings(nn.Module):
    """``LayerNorm(proj(E[map[ids]]) + P[positions])`` with dropout; ``proj`` and ``map`` optional.

    Args:
        vocab_rows: Rows of the token table (the trimmed vocabulary size, or the tokenizer's).
        hidden_size: Output width.
        max_positions: Longest sequence accepted.
        embedding_size: Table width ``e``; None or equal to ``hidden_size`` means no projection.
        full_vocab_size: Tokenizer vocabulary when trimmed (``token_map`` has this many entries); None:
            not trimmed, ids index the table directly.
        pad_token_id: Row whose gradient is zero (padding).
    """

    def __init__(
        self,
        vocab_rows: int,
        hidden_size: int,
        max_positions: int,
        *,
        embedding_size: int | None = None,
        full_vocab_size: int | None = None,
        pad_token_id: int = 0,
        dropout: float = 0.1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        width = embedding_size or hidden_size
        padding_idx = pad_token_id if full_vocab_size is None else None  # after trimming [PAD] is row 0 anyway
        self.word_embeddings = nn.Embedding(vocab_rows, width, padding_idx=padding_idx)
        self.projection = nn.Linear(width, hidden_size) if width != hidden_size else None
        # Single-segment tasks only: the teacher's token-type-0 vector is folded into the positions on
        # inheritance, which saves a table and an add.
        self.position_embeddings = nn.Embedding(max_positions, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)
        # None (not trimmed) is a registered buffer too, so trimming later can fill it in place.
        token_map = None if full_vocab_size is None else torch.zeros(full_vocab_size, dtype=torch.long)
        self.register_buffer("token_map", token_map)

    def rows(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Table rows of tokenizer ids (the identity when the vocabulary is not trimmed)."""
        return input_ids if self.token_map is None else self.token_map[input_ids]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(self.rows(input_ids))  # (B, L, e)
        if self.projection is not None:
            x = self.projection(x)  # (B, L, H)
        return self.dropout(self.LayerNorm(x + self.position_embeddings(positions)))

    @staticmethod
    def count_params(vocab_rows: int, hidden_size: int, max_positions: int, embedding_size: int | None = None) -> int:
        width = embedding_size or hidden_size
        projection = width * hidden_size + hidden_size if width != hidden_size else 0
        return vocab_rows * width + projection + max_positions * hidden_size + 2 * hidden_size

    @staticmethod
    def count_flops(hidden_size: int, seq_len: int, embedding_size: int | None = None) -> int:
        """Lookups are free; only the factorisation's projection multiplies (2 FLOPs per multiply-add)."""
        width = embedding_size or hidden_size
        return 2 * seq_len * width * hidden_size if width != hidden_size else 0
