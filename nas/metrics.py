"""Flat, dotted names for nested trial facts: the one flattening used by the report's tables and the model card.

It sits at the bottom of the package (no lightnas imports) because both :mod:`nas.export` (the card) and
:mod:`nas.report` (tables, hover text) need it, and :mod:`nas.search` imports :mod:`nas.export`.

Example:
    >>> flatten({"recipe": {"bits": 8}, "layers": [{"type": "conv"}]})
    {'recipe.bits': 8, 'layers[0].type': 'conv'}
"""

from __future__ import annotations

from typing import Any


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
