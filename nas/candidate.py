"""`Candidate`: one point of the joint search space, as a plain value.

A Candidate is what Optuna samples, what Ray ships to a worker, what MLflow logs and what ``nas select``
rebuilds. It is frozen (hashable, comparable) and ``from_dict(to_dict(c)) == c`` holds exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Weight bit-width 32 means "not quantized" (fp32); 16 is stored as float16; 2..8 are integer codes.
VALID_WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)


@dataclass(frozen=True)
class Candidate:
    """Architecture, compression and distillation settings of one student.

    Args:
        n_layers: Encoder layers; ≥ 1.
        hidden_size: Width of the residual stream; divisible by ``n_heads``.
        n_heads: Attention heads per layer; ≥ 1.
        ffn_size: Inner width of the feed-forward network; ≥ 1.
        prune_rate: Share of encoder weights removed by magnitude pruning, in [0, 1).
        weight_bits: Bit-width of weights after quantization; 32 means not quantized.
        distill_alpha: Weight of the hard-label loss α in ``α·L_hard + (1−α)·T²·KL``, in [0, 1].
        distill_temperature: Softmax temperature T of the soft loss; > 0.

    Example:
        >>> c = Candidate(n_layers=2, hidden_size=128, n_heads=2, ffn_size=512)
        >>> Candidate.from_dict(c.to_dict()) == c
        True
    """

    n_layers: int
    hidden_size: int
    n_heads: int
    ffn_size: int
    prune_rate: float = 0.0
    weight_bits: int = 32
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers=}")
        if self.n_heads < 1 or self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size must be divisible by n_heads, got {self.hidden_size=}, {self.n_heads=}")
        if self.ffn_size < 1:
            raise ValueError(f"ffn_size must be >= 1, got {self.ffn_size=}")
        if not 0.0 <= self.prune_rate < 1.0:
            raise ValueError(f"prune_rate must be in [0, 1), got {self.prune_rate=}")
        if self.weight_bits not in VALID_WEIGHT_BITS:
            raise ValueError(f"weight_bits must be one of {VALID_WEIGHT_BITS}, got {self.weight_bits=}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1], got {self.distill_alpha=}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature=}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.n_heads

    @property
    def key(self) -> str:
        """A compact, human-readable id, e.g. ``L2-H128-A2-F512-p0.3-w8-a0.5-T2``."""
        return (
            f"L{self.n_layers}-H{self.hidden_size}-A{self.n_heads}-F{self.ffn_size}"
            f"-p{self.prune_rate:g}-w{self.weight_bits}-a{self.distill_alpha:g}-T{self.distill_temperature:g}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        """Rebuild a Candidate; unknown keys are an error, missing optional keys take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown Candidate field(s) {unknown}; valid fields are {sorted(names)}")
        return cls(**data)
