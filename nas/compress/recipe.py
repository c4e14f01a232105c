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
# The names of nas.compress.schemes.SCHEMES, which owns each scheme's behaviour. Listed here, not imported, because
# this module is copied into exported Hugging Face folders, which must load without lightnas (nas.artefacts.hf_folder);
# tests/test_compress_steps.py fails when the two disagree.
QUANT_SCHEMES = ("asymmetric", "symmetric", "log", "kmeans")
VALID_BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)  # 2..8 integer codes, 16 = float16, 32 = not quantized
INT_BITS = tuple(b for b in VALID_BITS if b <= 8)


@dataclass(frozen=True)
class StepConfig:
    """One step of a recipe: the name of a step registered in :data:`nas.compress.steps.STEPS`, and its arguments."""

    name: str
    params: dict[str, Any]


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
        """Compact id, e.g. ``p0.3muo-w8e8a32-asym`` (rate, method/structure/schedule initials, bits, scheme).

        Distinct recipes get distinct keys (``embedding_bits=None`` is the same recipe as ``embedding_bits ==
        weight_bits`` and shares its key). Keys are ids for display, deduplication and file names; nothing
        parses them back, so older studies' keys stay valid labels.
        """
        emb = self.weight_bits if self.embedding_bits is None else self.embedding_bits
        return (
            f"p{_rate_text(self.prune_rate)}{self.prune_method[0]}{_STRUCTURE_CODES[self.prune_structure]}"
            f"{self.prune_schedule[0]}-w{self.weight_bits}e{emb}a{self.act_bits}-{self.quant_scheme[:4]}"
            f"{'-qat' + str(self.qat_steps) if self.qat_steps else ''}"
        )

    def weight_bits_spec(self) -> int | dict[str, int]:
        """``weight_bits`` everywhere, or a per-layer mapping when the embedding tables get their own width."""
        if self.embedding_bits is None or self.embedding_bits == self.weight_bits:
            return self.weight_bits
        return {"embeddings": self.embedding_bits, "default": self.weight_bits}

    def steps(self) -> list[StepConfig]:
        """The recipe as the ordered steps :func:`~nas.compress.pipeline.compress_model` runs.

        A deployment's order: prune (so quantization codes the pruned zeros), quantize the weights
        (quantization-aware when ``qat_steps`` > 0 and the weights get integer codes, else post-training),
        then calibrate activations on the final weights. The identity recipe has no steps.
        """
        steps = []
        if self.prune_rate > 0:
            prune = {"rate": self.prune_rate, "method": self.prune_method, "gradual": self.prune_schedule == "gradual"}
            if self.prune_structure == "unstructured":
                steps.append(StepConfig("prune-unstructured", prune))
            else:
                structure = {"heads": self.prune_structure in ("heads", "heads+neurons"),
                             "neurons": self.prune_structure in ("neurons", "heads+neurons")}
                steps.append(StepConfig("prune-structured", {**prune, **structure}))
        emb = self.weight_bits if self.embedding_bits is None else self.embedding_bits
        if self.qat_steps > 0 and self.weight_bits in INT_BITS:
            act_bits = self.act_bits if self.act_bits in INT_BITS else None
            steps.append(StepConfig("quantize-qat", {"bits": self.weight_bits, "embedding_bits": emb, "scheme": self.quant_scheme,
                                                     "act_bits": act_bits, "steps": self.qat_steps}))
        elif self.weight_bits < 32 or emb < 32:
            steps.append(StepConfig("quantize-ptq", {"bits": self.weight_bits_spec(), "scheme": self.quant_scheme}))
        if self.act_bits < 32:
            steps.append(StepConfig("quantize-activations", {"bits": self.act_bits}))
        return steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressionRecipe:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown CompressionRecipe field(s) {unknown}; valid fields are {sorted(names)}")
        return cls(**data)


def _rate_text(rate: float) -> str:
    """``rate`` as ``:g`` writes it (``0.3``), or in full where ``:g`` would round it onto another rate."""
    short = f"{rate:g}"
    return short if float(short) == rate else repr(float(rate))


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
