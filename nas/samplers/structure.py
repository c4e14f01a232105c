"""Which parameter a conditional parameter hangs on, learned from finished trials, so a child can be made whole.

Optuna's define-by-run spaces record only the parameters a trial asked for: ``layer2.type`` exists only when
``n_layers`` ≥ 3, ``layer0.conv.kernel_size`` only when ``layer0.type`` is ``conv``. A child bred from two parents
may carry parameters its own values switch off; left in, it looks new while the trial it becomes repeats an old
one. :class:`Structure` finds, for each parameter that some trials lack, a parameter whose values tell its presence
apart exactly in the trials seen, and :meth:`Structure.prune` drops from a child what its values switch off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Structure:
    """``rules[name] = (controller, values)``: ``name`` is asked exactly when ``controller`` takes one of ``values``."""

    rules: dict[str, tuple[str, frozenset]]

    @classmethod
    def learn(cls, params: list[dict[str, Any]]) -> Structure:
        names = sorted({n for p in params for n in p})
        rules = {}
        for name in names:
            with_it = [p for p in params if name in p]
            if len(with_it) == len(params):
                continue  # always asked
            rule = _controller(name, names, with_it, [p for p in params if name not in p])
            if rule is not None:
                rules[name] = rule
        return cls(rules)

    def prune(self, child: dict[str, Any]) -> dict[str, Any]:
        """``child`` without the parameters its own values switch off (repeated until nothing changes)."""
        out = dict(child)
        changed = True
        while changed:
            changed = False
            for name, (controller, values) in self.rules.items():
                if name in out and (controller not in out or _hashable(out[controller]) not in values):
                    del out[name]
                    changed = True
        return out


def _controller(name: str, names: list[str], with_it: list[dict[str, Any]],
                without: list[dict[str, Any]]) -> tuple[str, frozenset] | None:
    """A parameter present in every trial that has ``name`` whose values there never occur in the trials without it."""
    for other in names:
        if other == name or not all(other in p for p in with_it):
            continue
        on = frozenset(_hashable(p[other]) for p in with_it)
        if not any(other in p and _hashable(p[other]) in on for p in without):
            return other, on
    return None


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)
