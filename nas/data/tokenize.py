"""Tokenise a :class:`~nas.data.Task` into fixed-length tensors, and fingerprint a task's content."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nas.errors import NasUserError

if TYPE_CHECKING:
    from nas.data import Task

MIN_SEQ_LEN = 8  # [CLS] + [SEP] + a few word pieces; anything shorter cannot carry a sentence


@dataclass(frozen=True)
class TokenizedSplit:
    """One split as tensors, padded to a common length ``L`` (row ``i`` is example ``i`` of the split).

    Args:
        input_ids: int64 ``(N, L)`` token ids, padded with the tokenizer's pad id.
        attention_mask: int64 ``(N, L)``, 1 for real tokens and 0 for padding.
        labels: int64 ``(N,)`` class indices.

    Example:
        >>> import torch
        >>> split = TokenizedSplit(torch.ones(3, 8, dtype=torch.long), torch.ones(3, 8, dtype=torch.long),
        ...                        torch.zeros(3, dtype=torch.long))
        >>> len(split), split.seq_len
        (3, 8)
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if self.input_ids.dim() != 2 or self.input_ids.shape != self.attention_mask.shape or self.input_ids.shape[0] != n:
            raise ValueError(
                f"TokenizedSplit shapes disagree: input_ids {tuple(self.input_ids.shape)}, "
                f"attention_mask {tuple(self.attention_mask.shape)}, labels {tuple(self.labels.shape)}"
            )
        for name in ("input_ids", "attention_mask", "labels"):
            if getattr(self, name).dtype != torch.long:
                raise ValueError(f"TokenizedSplit.{name} must be int64, got {getattr(self, name).dtype}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def seq_len(self) -> int:
        """Padded length ``L`` in tokens."""
        return self.input_ids.shape[1]


def tokenize_task(task: Task, tokenizer: Any, max_seq_len: int) -> dict[str, TokenizedSplit]:
    """Tokenise every split of ``task``, padding and truncating each sentence to ``max_seq_len`` tokens.

    Args:
        task: The task to tokenise.
        tokenizer: A Hugging Face tokenizer (e.g. :func:`nas.models.teacher.load_tokenizer`).
        max_seq_len: Length ``L`` of every row in tokens, special tokens included; ≥ 8.

    Returns:
        One :class:`TokenizedSplit` per split of ``task``, same keys.

    Raises:
        NasUserError: If ``max_seq_len`` is below 8.
    """
    if not isinstance(max_seq_len, int) or max_seq_len < MIN_SEQ_LEN:
        raise NasUserError(f"max_seq_len = {max_seq_len!r} is too short; set max_seq_len to at least {MIN_SEQ_LEN} tokens.")
    tensors: dict[str, TokenizedSplit] = {}
    for split_name, split in task.splits.items():
        encoded = tokenizer(
            list(split.texts),
            padding="max_length",
            truncation=True,
            max_length=max_seq_len,
            return_tensors="pt",
            return_token_type_ids=False,  # single-segment tasks: every token type is 0
        )
        tensors[split_name] = TokenizedSplit(
            input_ids=encoded["input_ids"].long(),  # (N, L)
            attention_mask=encoded["attention_mask"].long(),  # (N, L)
            labels=torch.tensor(split.labels, dtype=torch.long),  # (N,)
        )
    return tensors


def task_fingerprint(task: Task) -> str:
    """A stable sha256 hex digest of a task's content: split names, texts, labels and class count.

    The name and label names are left out on purpose: renaming a task must not invalidate a teacher
    cached for the same data. Every field is length-prefixed, so no two different tasks can serialise
    to the same bytes.
    """
    digest = hashlib.sha256()
    digest.update(b"lightnas-task-v1")
    digest.update(struct.pack("<q", task.num_labels))
    for split_name in sorted(task.splits):
        split = task.splits[split_name]
        _update_str(digest, split_name)
        digest.update(struct.pack("<q", len(split)))
        for text in split.texts:
            _update_str(digest, text)
        digest.update(struct.pack(f"<{len(split.labels)}q", *split.labels))
    return digest.hexdigest()


def tensors_fingerprint(tensors: dict[str, TokenizedSplit]) -> str:
    """A sha256 hex digest of tokenised splits: covers the task, the tokenizer and the sequence length."""
    digest = hashlib.sha256()
    digest.update(b"lightnas-tensors-v1")
    for split_name in sorted(tensors):
        split = tensors[split_name]
        _update_str(digest, split_name)
        for tensor in (split.input_ids, split.attention_mask, split.labels):
            digest.update(struct.pack("<2q", *(tuple(tensor.shape) + (1,))[:2]))
            digest.update(tensor.contiguous().numpy().astype("<i8", copy=False).tobytes())
    return digest.hexdigest()


def _update_str(digest: hashlib._Hash, text: str) -> None:
    data = text.encode("utf-8")
    digest.update(struct.pack("<q", len(data)))
    digest.update(data)
