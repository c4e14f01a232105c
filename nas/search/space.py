"""Search spaces: YAML → validated :class:`SearchSpace` → Optuna distributions → :class:`Candidate`.

A space has one section per part of a :class:`~nas.candidate.Candidate`: ``architecture`` (with its
``blocks``), ``compression``, ``distill`` and ``pretrain``. Each entry is either a distribution (a mapping
with ``type: categorical|int|float``, mapped onto one Optuna ``suggest_*`` call) or a plain value that pins
the field. Omitted fields take the Candidate's defaults.

Block parameters are **conditional**: ``blocks.transformer.heads`` is asked only when the block type is
``transformer``, ``blocks.conv.kernel_size`` only for ``conv``. With ``architecture.per_layer: true`` every
layer asks for its own type and settings (heterogeneous layers, HAT: https://arxiv.org/abs/2005.14187),
under names ``layer0.type``, ``layer0.conv.kernel_size``…; otherwise all layers share ``block.*``.
Optuna's define-by-run trials record only the parameters they asked for, so any sampler drives it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from nas.candidate import Architecture, BlockSpec, Candidate, DistillSettings, PretrainSettings
from nas.compress.recipe import CompressionRecipe
from nas.errors import NasUserError
from nas.models.blocks import block_class, list_blocks
from nas.resources import data_dir
from nas.yamlio import describe_validation_error, read_yaml

if TYPE_CHECKING:
    import optuna

Scalar = Union[int, float, str, bool, None]


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CategoricalParam(_Param):
    """One of a list of values (``trial.suggest_categorical``); ``null`` is a valid choice."""

    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices)

    def values(self) -> list[Any] | None:
        return list(self.choices)

    def describe(self) -> str:
        return "one of " + ", ".join("null" if c is None else str(c) for c in self.choices)


class IntParam(_Param):
    """An integer in ``[low, high]`` with ``step``, optionally log-uniform (``trial.suggest_int``)."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high}); swap them")
        if self.log and (self.step != 1 or self.low < 1):
            raise ValueError("log=true needs step 1 and low >= 1")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> list[Any] | None:
        return list(range(self.low, self.high + 1, self.step))

    def describe(self) -> str:
        return f"int {self.low}..{self.high}" + (f" step {self.step}" if self.step != 1 else "") + (" (log)" if self.log else "")


class FloatParam(_Param):
    """A float in ``[low, high]``: uniform, log-uniform, or on a grid of ``step`` (``trial.suggest_float``)."""

    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high}); swap them")
        if self.log and (self.step is not None or self.low <= 0):
            raise ValueError("log=true needs low > 0 and no step")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> list[Any] | None:
        if self.step is None:
            return None  # continuous
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 10) for i in range(n)]

    def describe(self) -> str:
        grid = f" step {self.step:g}" if self.step is not None else " (continuous)"
        return f"float {self.low:g}..{self.high:g}{grid}" + (" (log)" if self.log else "")


PARAM_TYPES: dict[str, type[_Param]] = {"categorical": CategoricalParam, "int": IntParam, "float": FloatParam}
Param = Union[CategoricalParam, IntParam, FloatParam]


def _to_value(raw: Any) -> Any:
    """A mapping becomes a distribution; anything else is a pinned value."""
    if isinstance(raw, _Param) or not isinstance(raw, dict):
        if isinstance(raw, (list, tuple)):
            raise ValueError("a list is not a value; write {type: categorical, choices: [...]} to search over it")
        return raw
    kind = raw.get("type")
    if kind not in PARAM_TYPES:
        raise ValueError(f"type {kind!r} is not a distribution; use one of {', '.join(PARAM_TYPES)}")
    try:
        return PARAM_TYPES[kind].model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}") from None


Value = Annotated[Any, BeforeValidator(_to_value)]


def _values(value: Any) -> list[Any] | None:
    """Discrete values of an entry (a pinned value is one), or None when continuous."""
    return value.values() if isinstance(value, _Param) else [value]


def _probe(value: Any) -> list[Any]:
    """Values worth checking: every discrete value, or the ends of a continuous range."""
    values = _values(value)
    return values if values is not None else [value.low, value.high]


_SECTIONS: dict[str, type] = {"compression": CompressionRecipe, "distill": DistillSettings, "pretrain": PretrainSettings}
_ARCH_FIELDS = ("n_layers", "hidden_size", "embedding_size", "vocab_size")


class ArchitectureSpace(BaseModel):
    """The ``architecture`` section: depth, widths, vocabulary and the block choices."""

    model_config = ConfigDict(extra="forbid")

    n_layers: Value
    hidden_size: Value
    embedding_size: Value = None  # null = no factorisation
    vocab_size: Value = None  # null = the tokenizer's full vocabulary
    per_layer: bool = False  # true: every layer samples its own block (heterogeneous layers)
    blocks: dict[str, Union[Value, dict[str, Value]]]


class SearchSpace(BaseModel):
    """A validated search space.

    Example:
        >>> space = load_space("default")
        >>> space.size() is None or space.size() > 1000
        True
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    architecture: ArchitectureSpace
    compression: dict[str, Value] = Field(default_factory=dict)
    distill: dict[str, Value] = Field(default_factory=dict)
    pretrain: dict[str, Value] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        self._check_blocks()
        for section, cls in _SECTIONS.items():
            fields = {f.name for f in dataclasses.fields(cls)}
            for key, value in getattr(self, section).items():
                if key not in fields:
                    raise ValueError(f"{section}.{key} is not a {cls.__name__} field; valid fields are {', '.join(sorted(fields))}")
                for v in _probe(value):
                    _try(f"{section}.{key}", v, lambda v=v, key=key: cls(**{key: v}))
        return self

    def _check_blocks(self) -> None:
        arch = self.architecture
        for key in ("n_layers", "hidden_size"):
            for v in _probe(getattr(arch, key)):
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"architecture.{key} = {v!r} is invalid: it must be an integer >= 1")
        if "type" not in arch.blocks:
            raise ValueError("architecture.blocks has no 'type'; add e.g. type: transformer")
        types = _probe(arch.blocks["type"])
        fields = {t: list(block_class(t).fields) for t in list_blocks()}
        for t in types:
            if t not in fields:
                raise ValueError(f"architecture.blocks.type {t!r} is not a registered block type; choose one of {', '.join(fields)}")
        for key, section in arch.blocks.items():
            if key == "type":
                continue
            if key not in types:
                raise ValueError(f"architecture.blocks.{key} is given but {key!r} is not a blocks.type choice; add it to the choices or remove the section")
            if not isinstance(section, dict):
                raise ValueError(f"architecture.blocks.{key} must be a mapping of {', '.join(fields[key])}")
        for t in types:
            section = arch.blocks.get(t) or {}
            for key in section:
                if key not in fields[t]:
                    raise ValueError(f"architecture.blocks.{t}.{key} is not a {t} block setting; valid settings are {', '.join(fields[t])}")
            self._check_block_combinations(t, section)

    def _check_block_combinations(self, block_type: str, section: dict[str, Any]) -> None:
        """Build one layer of every combination of this block's values with every hidden size."""
        arch = self.architecture
        names = list(section)
        grids = [_probe(section[n]) for n in names]
        hidden = _probe(arch.hidden_size)
        embedding = _probe(arch.embedding_size)
        if math.prod(len(g) for g in grids) * len(hidden) > 20_000:
            grids = [[g[0], g[-1]] if len(g) > 1 else g for g in grids]  # keep the check fast on huge grids
        for combo in itertools.product(hidden, *grids):
            settings = dict(zip(names, combo[1:]))
            where = f"architecture.blocks.{block_type}"
            _try(where, settings, lambda: Architecture(combo[0], (BlockSpec(block_type, **settings),)), hidden=combo[0])
        layer = BlockSpec(block_type, **{n: g[0] for n, g in zip(names, grids)})  # any valid layer: only the embeddings vary
        for e in embedding:
            _try("architecture.embedding_size", e, lambda: Architecture(hidden[0], (layer,), embedding_size=e))
        for v in _probe(arch.vocab_size):
            _try("architecture.vocab_size", v, lambda: Architecture(hidden[0], (layer,), vocab_size=v))

    # ------------------------------------------------------------------------------------------ sampling

    def _build(self, get: Callable[[str, Any], Any]) -> Candidate:
        """The Candidate whose every searched value comes from ``get(optuna_name, entry)``."""

        def value(name: str, entry: Any) -> Any:
            return get(name, entry) if isinstance(entry, _Param) else entry

        arch = self.architecture
        n_layers = value("n_layers", arch.n_layers)
        hidden = value("hidden_size", arch.hidden_size)
        layers = []
        for i in range(n_layers):
            if not arch.per_layer and layers:
                layers.append(layers[0])
                continue
            prefix = f"layer{i}" if arch.per_layer else "block"
            block_type = value(f"{prefix}.type", arch.blocks["type"])
            section = arch.blocks.get(block_type) or {}
            settings = {k: value(f"{prefix}.{block_type}.{k}", v) for k, v in section.items()}
            layers.append(BlockSpec(block_type, **settings))
        architecture = Architecture(
            hidden_size=hidden,
            layers=tuple(layers),
            embedding_size=value("embedding_size", arch.embedding_size),
            vocab_size=value("vocab_size", arch.vocab_size),
        )
        parts = {
            section: cls(**{k: value(f"{section}.{k}", v) for k, v in getattr(self, section).items()})
            for section, cls in _SECTIONS.items()
        }
        return Candidate(architecture, **parts)

    def sample(self, trial: optuna.Trial) -> Candidate:
        """Ask ``trial`` for every searched parameter this candidate uses and return the Candidate."""
        return self._build(lambda name, param: param.suggest(trial, name))

    def candidate_from_params(self, params: dict[str, Any]) -> Candidate:
        """Rebuild the Candidate of a finished trial from its ``trial.params``."""
        return self._build(lambda name, param: params[name])

    # ------------------------------------------------------------------------------------------ size

    def size(self) -> int | None:
        """Number of distinct configurations, or None when a searched parameter is continuous.

        Block settings count only under their own type, and with ``per_layer`` each depth ``n`` contributes
        ``(blocks per layer)ⁿ`` configurations.
        """
        arch = self.architecture
        per_block = []
        for t in _values(arch.blocks["type"]):
            counts = [_values(v) for v in (arch.blocks.get(t) or {}).values()]
            if any(c is None for c in counts):
                return None
            per_block.append(math.prod(len(c) for c in counts))
        depths = _values(arch.n_layers)
        others = [_values(getattr(arch, k)) for k in _ARCH_FIELDS[1:]]
        others += [_values(v) for section in _SECTIONS for v in getattr(self, section).values()]
        if any(c is None for c in others):
            return None
        blocks = sum(per_block)
        stacks = sum(blocks**n for n in depths) if arch.per_layer else len(depths) * blocks
        return stacks * math.prod(len(c) for c in others)

    def describe(self) -> list[tuple[str, str]]:
        """``(name, distribution or pinned value)`` rows in sampling order, for ``nas space show``."""
        arch = self.architecture

        def text(v: Any) -> str:
            return v.describe() if isinstance(v, _Param) else f"= {'null' if v is None else v}"

        rows = [(f"architecture.{k}", text(getattr(arch, k))) for k in _ARCH_FIELDS]
        rows.append(("architecture.per_layer", f"= {str(arch.per_layer).lower()}"))
        rows.append(("architecture.blocks.type", text(arch.blocks["type"])))
        for t in _values(arch.blocks["type"]) or []:
            rows += [(f"architecture.blocks.{t}.{k}", text(v)) for k, v in (arch.blocks.get(t) or {}).items()]
        for section in _SECTIONS:
            rows += [(f"{section}.{k}", text(v)) for k, v in getattr(self, section).items()]
        return rows


def _try(where: str, value: Any, build: Callable[[], Any], hidden: int | None = None) -> None:
    try:
        build()
    except ValueError as exc:
        context = f" with hidden_size {hidden}" if hidden is not None else ""
        raise ValueError(f"{where} = {value!r}{context} is invalid: {exc}; change the choices") from None


def list_spaces() -> list[str]:
    """Names of the bundled search spaces."""
    return sorted(p.stem for p in data_dir("search_spaces").glob("*.yaml"))


def space_path(name_or_path: str | Path) -> Path:
    """The YAML file of a bundled space name, or ``name_or_path`` itself when it is a ``.yaml`` path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")):
        return Path(text)
    path = data_dir("search_spaces") / f"{text}.yaml"
    if not path.is_file():
        raise NasUserError(f"unknown search space '{text}'; choose one of {', '.join(list_spaces())} or give a .yaml path.")
    return path


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load and validate a search space by bundled name or path.

    Raises:
        NasUserError: One sentence naming the file, the field, the value and the fix.
    """
    path = space_path(name_or_path)
    data = read_yaml(path)
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a cross-field check: its message already names the field and value
            raise NasUserError(f"{path}: {err['msg'].removeprefix('Value error, ')}.") from None
        raise NasUserError(describe_validation_error(str(path), exc, SearchSpace)) from None
