"""What every display of trial facts shares: dotted names for nested facts, and an accuracy with its standard error.

It sits at the bottom of the package (no lightnas imports) because :mod:`nas.export` (the card),
:mod:`nas.report` (tables, hover text) and ``nas status`` need it, and :mod:`nas.search` imports :mod:`nas.export`.

Example:
    >>> flatten({"recipe": {"bits": 8}, "layers": [{"type": "conv"}]})
    {'recipe.bits': 8, 'layers[0].type': 'conv'}
    >>> format_accuracy(0.85, 5000)
    '0.850±0.005'
"""

from __future__ import annotations

import math
from typing import Any


def accuracy_stderr(accuracy: float | None, n: int | None) -> float | None:
    """One binomial standard error of an accuracy measured on ``n`` sentences: ``sqrt(p·(1−p)/n)``, in [0, 0.5].

    It says how far the score would move on another sample of the same size: 0.85 on 400 sentences is
    ±0.018, on 5,000 ±0.005, so two trials closer than about twice that are not told apart. None when the
    accuracy or ``n`` is unknown (records written before the validation size was stored) or ``n`` < 1.
    """
    if accuracy is None or not n or n < 1 or not math.isfinite(accuracy):
        return None
    p = min(1.0, max(0.0, float(accuracy)))
    return math.sqrt(p * (1.0 - p) / n)


def format_accuracy(accuracy: float | None, n: int | None, digits: int = 3, sep: str = "±") -> str:
    """``0.853±0.005``: an accuracy with one standard error (:func:`accuracy_stderr`), or without one when ``n`` is unknown.

    Args:
        accuracy: A share in [0, 1], or None (shown as ``—``).
        n: Sentences it was measured on, or None.
        digits: Decimals of both numbers (3 keeps the CLI's tables within 80 columns).
        sep: Between them; ``" ± "`` for prose.
    """
    if accuracy is None:
        return "—"
    stderr = accuracy_stderr(accuracy, n)
    return f"{accuracy:.{digits}f}" if stderr is None else f"{accuracy:.{digits}f}{sep}{stderr:.{digits}f}"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and lists) as one level of dotted keys: ``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(data, (list, tuple)):
        flat = {}
        for i, value in enumerate(data):
            flat.update(flatten(value, f"{prefix}[{i}]"))
        return flat
    return {prefix: data}
