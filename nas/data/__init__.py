"""Tasks: texts and integer labels per split, loaded from files, ``datasets`` or the bundled generator.

A :class:`Task` is a plain value that crosses every boundary of a campaign. Its splits are named
``train`` (trains the teacher and the students, and is distilled from), ``validation`` (scores candidates
during search) and, optionally, ``test`` (held out for final reports).

Importing this package is cheap: torch and ``datasets`` load only in :mod:`nas.data.tokenize` and
:mod:`nas.data.loaders` where they are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPLIT_NAMES = ("train", "validation", "test")
REQUIRED_SPLITS = ("train", "validation")


@dataclass(frozen=True, eq=True)
class Split:
    """The texts and integer labels of one split, row-aligned.

    Args:
        texts: One string per example.
        labels: One class index per example, in ``[0, num_labels)`` of the owning :class:`Task`.

    Example:
        >>> Split(texts=["good", "bad"], labels=[1, 0]).__len__()
        2
    """

    texts: list[str]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"Split has {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True, eq=True)
class Task:
    """A text-classification task: named splits, the number of classes and their names.

    Treat it as immutable: the dataclass is frozen and nothing in lightnas mutates the lists inside.
    Loaders validate user data and raise :class:`~nas.errors.NasUserError`; the checks here guard
    invariants of tasks built in code and raise ``ValueError``.

    Args:
        name: Short name used in logs and reports.
        splits: ``train`` and ``validation`` are required, ``test`` is optional.
        num_labels: Number of classes, ≥ 2; every label is in ``[0, num_labels)``.
        label_names: One readable name per class index.

    Example:
        >>> task = Task("toy", {"train": Split(["good", "bad"], [1, 0]),
        ...                     "validation": Split(["fine"], [1])}, 2, ["negative", "positive"])
        >>> task.splits["train"].labels
        [1, 0]
    """

    name: str
    splits: dict[str, Split] = field(repr=False)
    num_labels: int
    label_names: list[str]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.splits) - set(SPLIT_NAMES))
        missing = [s for s in REQUIRED_SPLITS if s not in self.splits]
        if unknown or missing:
            raise ValueError(f"Task splits must be {SPLIT_NAMES} (test optional); unknown {unknown}, missing {missing}")
        if self.num_labels < 2:
            raise ValueError(f"Task needs num_labels >= 2, got {self.num_labels}")
        if len(self.label_names) != self.num_labels:
            raise ValueError(f"Task has {self.num_labels} labels but {len(self.label_names)} label_names")
        for split_name, split in self.splits.items():
            bad = [y for y in split.labels if not (isinstance(y, int) and 0 <= y < self.num_labels)]
            if bad:
                raise ValueError(f"split {split_name} has labels outside 0..{self.num_labels - 1}: {bad[:3]}")


__all__ = ["REQUIRED_SPLITS", "SPLIT_NAMES", "Split", "Task"]
