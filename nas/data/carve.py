"""Carving a validation split out of train: stratified by label, seeded, keeping every class in train."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from nas.errors import NasUserError

if TYPE_CHECKING:
    from nas.data.loaders import TaskConfig


def carve_rows(spec: TaskConfig, texts: list[str], labels: list[int],
                origin: str) -> tuple[tuple[list[str], list[int], str], tuple[list[str], list[int]]]:
    """``validation_size`` rows carved, stratified, from the whole train file: (validation, the rest of train)."""
    if spec.validation_size >= len(texts):
        raise NasUserError(
            f"{origin}: validation_size {spec.validation_size} is not below the {len(texts)} train rows; "
            "lower it, or give a validation file with 'validation'."
        )
    train_idx, val_idx = stratified_carve(labels, spec.validation_size / len(texts), spec.seed)
    validation = ([texts[i] for i in val_idx], [labels[i] for i in val_idx], f"{origin} (carved validation)")
    return validation, ([texts[i] for i in train_idx], [labels[i] for i in train_idx])


def stratified_carve(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of (train, validation): ``fraction`` of every class, at least one row of a class with ≥ 2."""
    rng = random.Random(seed)
    val_idx: list[int] = []
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    for y in sorted(by_class):
        rows = by_class[y]
        n_val = min(len(rows) - 1, max(1, round(fraction * len(rows))))  # keep ≥ 1 row of each class in train
        val_idx.extend(rng.sample(rows, n_val))
    val_set = set(val_idx)
    return [i for i in range(len(labels)) if i not in val_set], sorted(val_set)
