"""`Candidate`: one point of the joint search space, as a plain nested value.

A Candidate is what Optuna samples, what Ray ships to a worker, what MLflow logs and what ``nas select``
rebuilds. It joins the three families the search covers at once:

- :class:`Architecture`: the residual width, one :class:`BlockSpec` per layer (heterogeneous layers, as in
  HAT, https://arxiv.org/abs/2005.14187), the factorised embedding width and the trimmed vocabulary;
- :class:`~nas.compress.recipe.CompressionRecipe`: pruning and quantization;
- :class:`DistillSettings` and :class:`PretrainSettings`: how the student learns.

Every part is a frozen dataclass (hashable, comparable), and ``Candidate.from_dict(c.to_dict()) == c``
holds exactly, including through JSON (tuples become lists and come back as tuples).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nas.blockspec import ACTIVATIONS, BlockField, BlockSpec, block_class
from nas.compress.recipe import CompressionRecipe

__all__ = ["ACTIVATIONS", "Architecture", "BlockField", "BlockSpec", "Candidate", "DistillSettings", "PretrainSettings", "block_class"]

PRETRAIN_OBJECTIVES = ("none", "mlm", "contrastive")
CONTRASTIVE_TARGETS = ("dropout", "teacher")


def _from_fields(cls: type, data: dict[str, Any], what: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown}; valid fields are {sorted(names)}")
    return cls(**data)


@dataclass(frozen=True)
class Architecture:
    """The student's shape.

    Args:
        hidden_size: Width of the residual stream shared by every layer; ≥ 8.
        layers: One :class:`BlockSpec` per encoder layer, bottom first; at least one.
        embedding_size: Width of the token table when factorised (ALBERT: ``vocab × e`` then ``e × hidden``);
            None = ``hidden_size``, no factorisation.
        vocab_size: Rows kept after trimming the vocabulary to the task's most frequent tokens; None = the
            tokenizer's full vocabulary.
    """

    hidden_size: int
    layers: tuple[BlockSpec, ...]
    embedding_size: int | None = None
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("an architecture needs at least one layer (n_layers >= 1)")
        if self.hidden_size < 8:
            raise ValueError(f"hidden_size must be >= 8, got {self.hidden_size=}")
        for i, block in enumerate(self.layers):
            block_class(block.type).check_width(block, self.hidden_size, f"layer {i}")
        if self.embedding_size is not None and self.embedding_size < 1:
            raise ValueError(f"embedding_size must be >= 1, got {self.embedding_size=}")
        if self.vocab_size is not None and self.vocab_size < 8:
            raise ValueError(f"vocab_size must be >= 8 (special tokens need rows), got {self.vocab_size=}")

    @property
    def code(self) -> str:
        """``H128-2*t2f512.c7f256`` plus ``-E64`` (factorised) and ``-V5000`` (trimmed) when set."""
        runs: list[list[Any]] = []
        for block in self.layers:
            if runs and runs[-1][0] == block.code:
                runs[-1][1] += 1
            else:
                runs.append([block.code, 1])
        layers = ".".join(code if n == 1 else f"{n}*{code}" for code, n in runs)
        emb = "" if self.embedding_size is None else f"-E{self.embedding_size}"
        vocab = "" if self.vocab_size is None else f"-V{self.vocab_size}"
        return f"H{self.hidden_size}-{layers}{emb}{vocab}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "layers": [b.to_dict() for b in self.layers],
            "embedding_size": self.embedding_size,
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        data = dict(data)
        data["layers"] = tuple(BlockSpec.from_dict(b) for b in data.get("layers", ()))
        return _from_fields(cls, data, "Architecture")


@dataclass(frozen=True)
class DistillSettings:
    """How the student learns from the teacher on the task.

    ``L = α·CE + (1−α)·T²·KL(logits) + hidden_weight·MSE(W·h_s, h_t) + attention_weight·KL(A_t ‖ A_s)``,
    the feature terms averaged over student layers mapped to teacher layers by
    :func:`nas.compress.distill.layer_mapping` (TinyBERT, https://arxiv.org/abs/1909.10351).

    Args:
        alpha: Weight α of the hard-label loss, in [0, 1].
        temperature: Softmax temperature T of the soft loss; > 0.
        hidden_weight: Weight of the hidden-state MSE through a learned projection; ≥ 0 (0 = off).
        attention_weight: Weight of the attention-map KL (attention-bearing layers only); ≥ 0 (0 = off).
        inherit: Start from the teacher's weights (layer selection, importance-ordered width slicing).
    """

    alpha: float = 0.5
    temperature: float = 2.0
    hidden_weight: float = 0.0
    attention_weight: float = 0.0
    inherit: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1], got {self.alpha=}")
        if self.temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.temperature=}")
        if self.hidden_weight < 0 or self.attention_weight < 0:
            raise ValueError(f"feature weights must be >= 0, got {self.hidden_weight=}, {self.attention_weight=}")

    @property
    def code(self) -> str:
        feats = (f"h{self.hidden_weight:g}" if self.hidden_weight else "") + (f"A{self.attention_weight:g}" if self.attention_weight else "")
        return f"a{self.alpha:g}T{self.temperature:.3g}{feats}{'' if self.inherit else '-scratch'}"


@dataclass(frozen=True)
class PretrainSettings:
    """A task-agnostic stage before distillation (see :mod:`nas.pretrain`).

    Args:
        objective: ``none``, ``mlm`` (masked language modelling, 15 % masked, 80/10/10) or ``contrastive``
            (in-batch InfoNCE on sentence embeddings).
        steps: Optimiser steps of the stage; ≥ 0 (0 with an objective = off).
        contrastive_target: ``dropout`` (two dropout views of each sentence, SimCSE) or ``teacher``
            (align to the teacher's sentence embeddings).
    """

    objective: str = "none"
    steps: int = 0
    contrastive_target: str = "dropout"

    def __post_init__(self) -> None:
        if self.objective not in PRETRAIN_OBJECTIVES:
            raise ValueError(f"pretrain objective must be one of {PRETRAIN_OBJECTIVES}, got {self.objective!r}")
        if self.contrastive_target not in CONTRASTIVE_TARGETS:
            raise ValueError(f"contrastive_target must be one of {CONTRASTIVE_TARGETS}, got {self.contrastive_target!r}")
        if self.steps < 0:
            raise ValueError(f"pretrain steps must be >= 0, got {self.steps=}")
        # Settings that change nothing are normalised, so equal stages compare (and cache) equal.
        if self.objective == "none":
            object.__setattr__(self, "steps", 0)
        if self.objective != "contrastive":
            object.__setattr__(self, "contrastive_target", "dropout")

    @property
    def is_active(self) -> bool:
        return self.objective != "none" and self.steps > 0

    @property
    def code(self) -> str:
        if not self.is_active:
            return ""
        target = "-tch" if self.objective == "contrastive" and self.contrastive_target == "teacher" else ""
        return f"{self.objective[:3]}{self.steps}{target}"


_LEGACY = ("n_layers", "hidden_size", "n_heads", "ffn_size", "prune_rate", "weight_bits", "distill_alpha", "distill_temperature")


@dataclass(frozen=True, init=False)
class Candidate:
    """Architecture, compression, distillation and pretraining of one student.

    ``Candidate(n_layers=2, hidden_size=128, n_heads=2, ffn_size=512, prune_rate=…, weight_bits=…,
    distill_alpha=…, distill_temperature=…)`` is shorthand for a uniform stack of transformer blocks.

    Args:
        architecture: The student's shape.
        compression: How it is pruned and quantized after distillation.
        distill: Distillation settings.
        pretrain: The optional task-agnostic pretraining stage.

    Example:
        >>> c = Candidate(n_layers=2, hidden_size=128, n_heads=2, ffn_size=512)
        >>> c.key
        'H128-2*t2f512-a0.5T2'
        >>> Candidate.from_dict(c.to_dict()) == c
        True
    """

    architecture: Architecture
    compression: CompressionRecipe = field(default_factory=CompressionRecipe)
    distill: DistillSettings = field(default_factory=DistillSettings)
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)

    def __init__(
        self,
        architecture: Architecture | None = None,
        compression: CompressionRecipe | None = None,
        distill: DistillSettings | None = None,
        pretrain: PretrainSettings | None = None,
        **flat: Any,
    ) -> None:
        unknown = sorted(set(flat) - set(_LEGACY))
        if unknown:
            raise ValueError(f"unknown Candidate field(s) {unknown}; valid fields are {sorted(_FIELDS)} or the shorthand {list(_LEGACY)}")
        if flat:
            if architecture is not None:
                raise ValueError("give either architecture= or the flat shorthand (n_layers, hidden_size, …), not both")
            architecture, compression, distill = _from_flat(flat, compression, distill)
        if architecture is None:
            raise ValueError("a Candidate needs an architecture (or n_layers, hidden_size, n_heads, ffn_size)")
        object.__setattr__(self, "architecture", architecture)
        object.__setattr__(self, "compression", compression or CompressionRecipe())
        object.__setattr__(self, "distill", distill or DistillSettings())
        object.__setattr__(self, "pretrain", pretrain or PretrainSettings())

    # Flat views other modules read.
    @property
    def n_layers(self) -> int:
        return len(self.architecture.layers)

    @property
    def hidden_size(self) -> int:
        return self.architecture.hidden_size

    @property
    def prune_rate(self) -> float:
        return self.compression.prune_rate

    @property
    def weight_bits(self) -> int:
        return self.compression.weight_bits

    @property
    def distill_alpha(self) -> float:
        return self.distill.alpha

    @property
    def distill_temperature(self) -> float:
        return self.distill.temperature

    @property
    def block_types(self) -> tuple[str, ...]:
        return tuple(sorted({b.type for b in self.architecture.layers}))

    @property
    def key(self) -> str:
        """A compact, human-readable id: architecture, compression, distillation[, pretraining]."""
        compression = "" if self.compression.is_identity else self.compression.key
        parts = [self.architecture.code, compression, self.distill.code, self.pretrain.code]
        return "-".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict of JSON types (lists, not tuples)."""
        return {
            "architecture": self.architecture.to_dict(),
            "compression": self.compression.to_dict(),
            "distill": dataclasses.asdict(self.distill),
            "pretrain": dataclasses.asdict(self.pretrain),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        """Rebuild a Candidate; unknown keys are an error, missing optional sections take their defaults.

        A flat dict of the shorthand fields (``n_layers``, ``hidden_size``, …) is accepted too.
        """
        if set(data) & set(_LEGACY):
            return cls(**data)
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown Candidate field(s) {unknown}; valid fields are {sorted(_FIELDS)}")
        if "architecture" not in data:
            raise ValueError("a Candidate dict needs an 'architecture' section")
        return cls(
            architecture=Architecture.from_dict(data["architecture"]),
            compression=CompressionRecipe.from_dict(data.get("compression", {})),
            distill=_from_fields(DistillSettings, data.get("distill", {}), "DistillSettings"),
            pretrain=_from_fields(PretrainSettings, data.get("pretrain", {}), "PretrainSettings"),
        )


_FIELDS = ("architecture", "compression", "distill", "pretrain")


def _from_flat(flat: dict[str, Any], compression: CompressionRecipe | None, distill: DistillSettings | None) -> tuple:
    missing = [n for n in ("n_layers", "hidden_size", "n_heads", "ffn_size") if n not in flat]
    if missing:
        raise ValueError(f"the flat Candidate shorthand needs {missing}")
    if flat["n_layers"] < 1:
        raise ValueError(f"n_layers must be >= 1, got n_layers={flat['n_layers']}")
    if flat["n_heads"] < 1 or flat["hidden_size"] % flat["n_heads"]:
        raise ValueError(f"hidden_size must be divisible by n_heads, got hidden_size={flat['hidden_size']}, n_heads={flat['n_heads']}")
    block = BlockSpec("transformer", heads=flat["n_heads"], ffn_size=flat["ffn_size"])
    architecture = Architecture(hidden_size=flat["hidden_size"], layers=(block,) * flat["n_layers"])
    recipe = dict((compression or CompressionRecipe()).to_dict())
    for name in ("prune_rate", "weight_bits"):
        if name in flat:
            recipe[name] = flat[name]
    try:
        compression = CompressionRecipe(**recipe)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    settings = dataclasses.asdict(distill or DistillSettings())
    settings.update({k.removeprefix("distill_"): v for k, v in flat.items() if k.startswith("distill_")})
    return architecture, compression, DistillSettings(**settings)
