"""The supernet's elastic dimensions as plain values (:class:`SupernetSpec`) and the branch registry.

Which block types the supernet holds a branch for, and what each branch draws per layer, are the block
types' own declarations (``supernet_keys``, ``supernet_branch`` in ``nas/models/block_<name>.py``; the
branch interface is in :mod:`nas.supernet.supernet`); this module only iterates them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas.candidate import Architecture, BlockSpec
from nas.errors import NasUserError
from nas.models.blocks import block_class, list_blocks
from nas.models.inherit import teacher_layer_for

if TYPE_CHECKING:
    import random


def elastic_blocks() -> dict[str, frozenset[str]]:
    """Block types the supernet holds a branch for → the settings it shares weights over.

    Each block type states this itself (``Block.supernet_keys``; None: no branch), so a new type is refused
    by :meth:`SupernetSpec.from_space` until it declares keys and a branch (``supernet_branch``, in its own file).
    """
    return {name: block_class(name).supernet_keys for name in list_blocks() if block_class(name).supernet_keys is not None}


def branch_of(block_type: str) -> Any:
    """The supernet branch class of ``block_type`` (its block class's ``supernet_branch``; None: it has none).

    Raises:
        TypeError: The type declares ``supernet_keys`` but no branch (a half-declared type must not be sliced).
    """
    cls = block_class(block_type)
    if cls.supernet_keys is not None and cls.supernet_branch is None:
        raise TypeError(f"block type {block_type!r} declares supernet_keys but no supernet_branch (see nas.supernet.supernet)")
    return cls.supernet_branch


def branches() -> dict[str, Any]:
    """Block type → supernet branch class, for every type that has one, in build order (``position``)."""
    found = {name: branch_of(name) for name in elastic_blocks()}
    return dict(sorted(found.items(), key=lambda item: (item[1].position, item[0])))


@dataclass(frozen=True)
class SupernetSpec:
    """The choices of every elastic dimension (plain values, taken from a search space).

    Args:
        depths: Encoder depths; the largest is the supernet's layer count.
        hidden_sizes: Residual widths; the largest is the supernet's.
        block_types: Block types a layer may take (each one with a branch, :func:`branches`).
        heads: Attention head counts (transformer); each must divide every hidden size.
        transformer_ffn: FFN sizes of transformer layers.
        kernel_sizes: Depthwise kernels of conv layers (odd).
        conv_ffn: FFN sizes of conv layers.
        per_layer: Each layer picks its own block (else all layers share the first layer's block).
        activation: FFN activation of every block (fixed, not searched).
        vocab_size: Token-table rows (the tokenizer's vocabulary; trimming is not elastic).
        max_positions: Position-embedding rows.
        num_labels: Classes of the task.
        extra_choices: ``(field, choices)`` of branch settings that have no field here (block types added
            after these fields; left out of :meth:`to_dict` when empty, so the cache keys of earlier
            supernets stay what they were).
    """

    depths: tuple[int, ...]
    hidden_sizes: tuple[int, ...]
    block_types: tuple[str, ...]
    heads: tuple[int, ...] = (2,)
    transformer_ffn: tuple[int, ...] = (128,)
    kernel_sizes: tuple[int, ...] = (3,)
    conv_ffn: tuple[int, ...] = (128,)
    per_layer: bool = True
    activation: str = "gelu"
    vocab_size: int = 30522
    max_positions: int = 512
    num_labels: int = 2
    extra_choices: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def max_layers(self) -> int:
        return max(self.depths)

    @property
    def max_hidden(self) -> int:
        return max(self.hidden_sizes)

    @property
    def max_ffn(self) -> int:
        """The FFN width every branch is built with (the largest over all branches, as the cache layout has it)."""
        return self.widest("ffn_size")

    @property
    def max_kernel(self) -> int:
        return self.widest("kernel_size")

    def field(self, name: str) -> tuple[int, ...]:
        """Choices of a branch setting by its field name (a dataclass field or an ``extra_choices`` entry)."""
        if name in self.__dataclass_fields__:
            return getattr(self, name)
        return dict(self.extra_choices).get(name, ())

    def widest(self, setting: str) -> int:
        """The largest choice of ``setting`` over every branch that draws it (0: none does)."""
        return max((v for b in branches().values() if setting in b.choices for v in self.field(b.choices[setting][0])), default=0)

    def oversized(self, layer: BlockSpec) -> str | None:
        """The layer's code when its FFN or kernel exceeds the supernet's or its activation differs, else None."""
        if (layer.ffn_size or 0) > self.max_ffn or (layer.kernel_size or 0) > self.max_kernel or layer.activation != self.activation:
            return layer.code
        return None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not self.extra_choices:
            del data["extra_choices"]  # as before the field existed: the cache fingerprint hashes this dict
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupernetSpec:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        values["extra_choices"] = tuple((name, tuple(v)) for name, v in values.get("extra_choices", ()))
        return cls(**values)

    @classmethod
    def from_space(cls, space: Any, *, num_labels: int, max_positions: int, vocab_size: int = 30522,
                   where: str = "the search space") -> SupernetSpec:
        """The spec of a :class:`~nas.search.space.SearchSpace`'s architecture section.

        Raises:
            NasUserError: If the space searches something the supernet cannot share weights for (a
                bottleneck block, factorised or trimmed embeddings, head_size, a searched activation).
        """
        arch = space.architecture

        def choices(entry: Any) -> tuple[Any, ...]:
            return tuple(entry.values()) if hasattr(entry, "values") and not isinstance(entry, dict) else (entry,)

        elastic = elastic_blocks()

        def refuse(field: str, value: Any, why: str) -> NasUserError:
            return NasUserError(f"{where}: architecture.{field} {value!r} {why}; the supernet scorer shares weights over "
                                f"depth, hidden size, heads, FFN size and {'/'.join(elastic)} blocks only, so use "
                                "fidelity.scorer: standalone for this space.")

        for field in ("embedding_size", "vocab_size"):
            if any(v is not None for v in choices(getattr(arch, field))):
                raise refuse(field, getattr(arch, field), "is not elastic in the supernet")
        types = choices(arch.blocks["type"])
        for t in types:
            if t not in elastic:
                raise refuse("blocks.type", t, "has no supernet branch")
        sections = {t: dict(arch.blocks.get(t) or {}) for t in types}
        activations = set()
        for t, section in sections.items():
            for key, entry in section.items():
                if key not in elastic[t]:
                    raise refuse(f"blocks.{t}.{key}", entry, "is not elastic in the supernet")
            values = choices(section.get("activation", "gelu"))
            if len(values) != 1:
                raise refuse(f"blocks.{t}.activation", section["activation"], "is searched")
            activations.add(values[0])
        if len(activations) > 1:
            raise refuse("blocks.*.activation", sorted(activations), "differs between block types")

        def ints(t: str, key: str, default: int) -> tuple[int, ...]:
            return tuple(sorted(int(v) for v in choices(sections[t].get(key, default)))) if t in sections else (default,)

        fields, extra = {}, []
        for t, branch in branches().items():
            for key, (name, default) in branch.choices.items():
                if name in cls.__dataclass_fields__:
                    fields[name] = ints(t, key, default)
                elif t in sections:  # only the space's own types: adding a type leaves other spaces' keys alone
                    extra.append((name, ints(t, key, default)))
        return cls(
            depths=tuple(sorted(int(v) for v in choices(arch.n_layers))),
            hidden_sizes=tuple(sorted(int(v) for v in choices(arch.hidden_size))),
            block_types=tuple(types), per_layer=bool(arch.per_layer), activation=activations.pop() if activations else "gelu",
            vocab_size=vocab_size, max_positions=max_positions, num_labels=num_labels, extra_choices=tuple(extra), **fields,
        )

    # ------------------------------------------------------------------------------------------ subnets

    def _block(self, block_type: str, pick: Any) -> BlockSpec:
        # drawn in the branch's declared order, so a seed draws the same subnets as it always has
        drawn = {key: pick(self.field(name)) for key, (name, _) in branch_of(block_type).choices.items()}
        return BlockSpec(block_type, **drawn, activation=self.activation)

    def _arch(self, n_layers: int, hidden: int, pick: Any, rng: random.Random) -> Architecture:
        layers: list[BlockSpec] = []
        for _ in range(n_layers):
            if layers and not self.per_layer:
                layers.append(layers[0])
            else:
                layers.append(self._block(rng.choice(self.block_types), pick))
        return Architecture(hidden, tuple(layers))

    def largest(self, rng: random.Random) -> Architecture:
        """Deepest, widest subnet; each layer's block type drawn from ``rng`` (both branches get trained)."""
        return self._arch(self.max_layers, self.max_hidden, max, rng)

    def smallest(self, rng: random.Random) -> Architecture:
        """Shallowest, narrowest subnet; each layer's block type drawn from ``rng``."""
        return self._arch(min(self.depths), min(self.hidden_sizes), min, rng)

    def sample(self, rng: random.Random) -> Architecture:
        """A uniformly random subnet."""
        return self._arch(rng.choice(self.depths), rng.choice(self.hidden_sizes), rng.choice, rng)

    def check(self, arch: Architecture) -> None:
        """Raise ValueError unless ``arch`` is a subnet of this supernet."""
        problems = []
        if len(arch.layers) > self.max_layers:
            problems.append(f"{len(arch.layers)} layers > {self.max_layers}")
        if arch.hidden_size > self.max_hidden:
            problems.append(f"hidden {arch.hidden_size} > {self.max_hidden}")
        if arch.embedding_size is not None or arch.vocab_size is not None:
            problems.append("factorised or trimmed embeddings")
        for i, b in enumerate(arch.layers):
            if b.type not in self.block_types:
                problems.append(f"layer {i} is {b.type}")
            elif why := branch_of(b.type).misfit(self, b, arch.hidden_size):
                problems.append(f"layer {i} {why}")
        if problems:
            raise ValueError(f"architecture {arch.code} is not a subnet of this supernet: {'; '.join(problems)}")


def layer_map(n_layers: int, max_layers: int) -> list[int]:
    """Supernet layer of each of a subnet's ``n_layers`` layers (uniform, last-aligned; distinct for n ≤ max)."""
    return [teacher_layer_for(i, n_layers, max_layers) for i in range(n_layers)]
