"""`BlockSpec`: one encoder layer of a :class:`~nas.candidate.Architecture`, as a plain value.

What a block type takes (its settings, their kinds and defaults), its code string and its checks belong to
the block type's registered class (:mod:`nas.models.blocks`); this module holds only the value and the
field kinds, imports nothing heavy itself, and reaches the registry on first use, so a block type is
one file and nothing here lists block types. Copied into exported Hugging Face folders
(:mod:`nas.artefacts.hf_folder`), it must import nothing of lightnas.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("gelu", "relu")
REQUIRED = "<required>"  # BlockField default of a setting that must be given


@dataclass(frozen=True)
class BlockField:
    """One setting of a block type, declared by its block class (``fields`` in :mod:`nas.models.blocks`).

    Args:
        kind: ``int`` (integer ≥ 1), ``odd`` (odd integer ≥ 1, so a kernel keeps the sequence length),
            ``bool`` or ``activation`` (one of :data:`ACTIVATIONS`).
        default: Filled in when the setting is not given; :data:`REQUIRED`: it must be given; None: optional.
    """

    kind: str = "int"
    default: Any = REQUIRED

    def check(self, name: str, value: Any) -> None:
        if self.kind in ("int", "odd") and (isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.kind == "odd" and value % 2 == 0:
            raise ValueError(f"{name} must be odd so the output keeps the sequence length, got {value}")
        if self.kind == "activation" and value not in ACTIVATIONS:
            raise ValueError(f"{name} must be one of {ACTIVATIONS}, got {value!r}")
        if self.kind == "bool" and not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")


def block_class(block_type: str) -> Any:
    """The registered block class of ``block_type``: it owns the type's fields, code and formulas.

    The registry (:mod:`nas.models.blocks`, which imports torch) is imported on first use, so importing
    this module stays light; a block type is one file there and is never listed here.
    """
    package = "nas.models" if __package__ == "nas" else __package__  # the exported HF folder is flat
    return importlib.import_module(f"{package}.blocks").block_class(block_type)


@dataclass(frozen=True, init=False)
class BlockSpec:
    """One encoder layer: its block type and that type's own settings.

    The settings a type takes, their defaults and their checks are the ``fields`` of its registered block
    class; any other setting is an error, so a conditional parameter (heads of a conv block, say) can never
    silently ride along. Defaults are filled in, so two specs that build the same block compare equal.
    Settings read as attributes (``spec.ffn_size``); a setting of another block type reads None.

    Example:
        >>> BlockSpec("conv", kernel_size=7, ffn_size=256).code
        'c7f256'
    """

    type: str
    settings: tuple[tuple[str, Any], ...]

    def __init__(self, type: str, **settings: Any) -> None:  # noqa: A002 - the block type, as in the YAML
        cls = block_class(type)
        stray = sorted(k for k, v in settings.items() if k not in cls.fields and v is not None)
        if stray:
            raise ValueError(f"a {type} block takes {list(cls.fields)}, not {stray}")
        values = {}
        for name, spec in cls.fields.items():
            value = settings.get(name)
            value = spec.default if value is None else value
            if value is REQUIRED:
                raise ValueError(f"a {type} block needs {[n for n, f in cls.fields.items() if f.default is REQUIRED and settings.get(n) is None]}")
            if value is not None:
                spec.check(name, value)
                values[name] = value
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "settings", tuple(values.items()))
        cls.check(self)

    def __repr__(self) -> str:
        return f"BlockSpec({self.type!r}{''.join(f', {k}={v!r}' for k, v in self.settings)})"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("type", "settings"):
            raise AttributeError(name)
        return dict(self.settings).get(name)

    def head_size_for(self, hidden_size: int) -> int:
        """Width of each attention head in a residual stream of ``hidden_size``."""
        return block_class(self.type).head_size(self, hidden_size)

    @property
    def code(self) -> str:
        """Compact id, the block type's own (``t4f512``, ``c7f256``, ``b128h4f256x2n`` …)."""
        return block_class(self.type).code(self)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dict(self.settings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockSpec:
        if "type" not in data:
            raise ValueError(f"a BlockSpec dict needs a 'type', got {sorted(data)}")
        return cls(**data)
