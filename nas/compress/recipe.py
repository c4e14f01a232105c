"""`CompressionRecipe`: the compression half of a Candidate, as a plain frozen value.

The search space samples one recipe per candidate; :func:`nas.compress.pipeline.compress_model` (owned by
the compression package) applies it to a trained student. Defaults are "no compression", so a recipe
built with no arguments leaves a model untouched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

PRUNE_METHODS = ("magnitude", "taylor")
PRUNE_STRUCTURES = ("unstructured", "heads", "neurons", "heads+neurons")
_STRUCTURE_CODES = {"unstructured": "u", "heads": "h", "neurons": "n", "heads+neurons": "hn"}  # distinct in keys
PRUNE_SCHEDULES = ("oneshot", "gradual")
QUANT_SCHEMES = ("asymmetric", "symmetric", "log", "kmeans")
VALID_BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)  # 2..8 integer codes, 16 = float16, 32 = not quantized


@dataclass(frozen=True)
class CompressionRecipe:
    """How one student is pruned and quantized.

    Args:
        prune_method: Importance score: ``magnitude`` (|w|) or ``taylor`` (|w·∂L/∂w| on calibration batches).
        prune_structure: ``unstructured`` zeroes single weights (no dense speed-up); ``heads``, ``neurons``
            and ``heads+neurons`` remove attention heads / FFN neurons so matrices shrink.
        prune_rate: Share of the selected weights (or heads/neurons) removed, in [0, 1).
        prune_schedule: ``oneshot``, or ``gradual`` (cubic schedule with recovery fine-tuning steps).
        weight_bits: Bit-width of encoder weights; 32 = float32 (not quantized), 16 = float16.
        embedding_bits: Bit-width of the embedding tables; None = same as ``weight_bits``.
        act_bits: Bit-width of activations entering linear layers; 32 = not quantized.
        quant_scheme: ``asymmetric`` (the seed's ``round((x−xmin)/(xmax−xmin)·(2^b−1))``), ``symmetric``,
            ``log`` (power-of-two levels) or ``kmeans`` (codebook).
        qat_steps: Quantization-aware fine-tuning steps (straight-through estimator); 0 = post-training only.
    """

    prune_method: str = "magnitude"
    prune_structure: str = "unstructured"
    prune_rate: float = 0.0
    prune_schedule: str = "oneshot"
    weight_bits: int = 32
    embedding_bits: int | None = None
    act_bits: int = 32
    quant_scheme: str = "asymmetric"
    qat_steps: int = 0

    def __post_init__(self) -> None:
        _check_choice("prune_method", self.prune_method, PRUNE_METHODS)
        _check_choice("prune_structure", self.prune_structure, PRUNE_STRUCTURES)
        _check_choice("prune_schedule", self.prune_schedule, PRUNE_SCHEDULES)
        _check_choice("quant_scheme", self.quant_scheme, QUANT_SCHEMES)
        if not 0.0 <= self.prune_rate < 1.0:
            raise ValueError(f"prune_rate must be in [0, 1), got {self.prune_rate=}")
        for name in ("weight_bits", "act_bits"):
            _check_choice(name, getattr(self, name), VALID_BITS)
        if self.embedding_bits is not None:
            _check_choice("embedding_bits", self.embedding_bits, VALID_BITS)
        if self.qat_steps < 0:
            raise ValueError(f"qat_steps must be >= 0, got {self.qat_steps=}")

    @property
    def is_identity(self) -> bool:
        """True when applying the recipe changes nothing."""
        return self == CompressionRecipe()

    @property
    def key(self) -> str:
        """Compact id, e.g. ``p0.3mu-w8e8a32-asym`` (rate, method/structure initials, bits, scheme)."""
        emb = self.weight_bits if self.embedding_bits is None else self.embedding_bits
        return (
            f"p{self.prune_rate:g}{self.prune_method[0]}{_STRUCTURE_CODES[self.prune_structure]}{self.prune_schedule[0]}"
            f"-w{self.weight_bits}e{emb}a{self.act_bits}-{self.quant_scheme[:4]}{'-qat' + str(self.qat_steps) if self.qat_steps else ''}"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressionRecipe:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown CompressionRecipe field(s) {unknown}; valid fields are {sorted(names)}")
        return cls(**data)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
