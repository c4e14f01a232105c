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


def complete(structure: Structure, child: dict[str, Any], fill: Any) -> dict[str, Any]:
    """``child`` pruned, with every parameter its values switch on but it lacks set by ``fill(name)`` (None: left
    to the sampler's random fallback); repeated, since a filled type can switch on its own settings."""
    out = structure.prune(child)
    for _ in range(len(structure.rules) + 1):
        missing = [name for name, (controller, values) in structure.rules.items()
                   if name not in out and controller in out and _hashable(out[controller]) in values]
        filled = {name: value for name in missing if (value := fill(name)) is not None}
        if not filled:
            break
        out = structure.prune({**out, **filled})
    return out


def _controller(name: str, names: list[str], with_it: list[dict[str, Any]],
                without: list[dict[str, Any]]) -> tuple[str, frozenset] | None:
    """The parameter whose values tell apart the trials that have ``name`` from those that do not.

    A candidate controller is present in every trial that has ``name``, and its values there (the "on" set) never
    occur in a trial without ``name``. Coincidences are common in a few dozen trials (a fine-grained float takes a
    different value in every trial, so any split of them looks exact); so each "on" value must be seen at least
    twice on average, and among the candidates the one with the smallest share of its observed values "on" wins:
    ``layer1.type = conv`` over ``n_layers`` for ``layer1.conv.kernel_size``.
    """
    best, best_share = None, 2.0
    for other in names:
        if other == name or not all(other in p for p in with_it):
            continue
        on = frozenset(_hashable(p[other]) for p in with_it)
        seen = on | {_hashable(p[other]) for p in without if other in p}
        if len(with_it) < 2 * len(on) or any(other in p and _hashable(p[other]) in on for p in without):
            continue
        share = len(on) / len(seen)
        if share < best_share:
            best, best_share = (other, on), share
    return best


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)
