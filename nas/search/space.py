"""Search spaces: YAML → validated :class:`SearchSpace` → Optuna distributions → :class:`Candidate`.

A space names each searched :class:`~nas.candidate.Candidate` field with its distribution, and may pin
others under ``fixed``. Each distribution maps onto one Optuna ``suggest_*`` call, so any Optuna sampler
(NSGA-II, TPE, random, GP) can drive it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nas.candidate import Candidate
from nas.errors import NasUserError
from nas.resources import data_dir
from nas.yamlio import load_yaml_model

if TYPE_CHECKING:
    import optuna


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CategoricalParam(_Param):
    """One of a list of values (``trial.suggest_categorical``)."""

    type: Literal["categorical"]
    choices: list[Union[int, float, str, bool]] = Field(min_length=1)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices)

    def values(self) -> list[Any] | None:
        return list(self.choices)


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


Param = Annotated[Union[CategoricalParam, IntParam, FloatParam], Field(discriminator="type")]
CANDIDATE_FIELDS = {f.name: f for f in dataclasses.fields(Candidate)}
REQUIRED_FIELDS = sorted(n for n, f in CANDIDATE_FIELDS.items() if f.default is dataclasses.MISSING)


class SearchSpace(BaseModel):
    """A validated search space.

    Example:
        >>> space = load_space("default")
        >>> space.size() > 1000
        True
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    params: dict[str, Param] = Field(default_factory=dict)
    fixed: dict[str, Union[int, float, str, bool]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        for key in [*self.params, *self.fixed]:
            if key not in CANDIDATE_FIELDS:
                raise ValueError(f"'{key}' is not a candidate field; valid fields are {', '.join(CANDIDATE_FIELDS)}")
        both = sorted(set(self.params) & set(self.fixed))
        if both:
            raise ValueError(f"{both} are both searched and fixed; keep each in one place")
        if not self.params:
            raise ValueError("the space searches nothing; add at least one entry under 'params'")
        missing = [n for n in REQUIRED_FIELDS if n not in self.params and n not in self.fixed]
        if missing:
            raise ValueError(f"{missing} must be searched under 'params' or pinned under 'fixed'")
        self._check_heads_divide_hidden()
        return self

    def _check_heads_divide_hidden(self) -> None:
        hidden, heads = self._values_of("hidden_size"), self._values_of("n_heads")
        if hidden is None or heads is None:
            return
        bad = [(h, a) for h, a in itertools.product(hidden, heads) if a < 1 or h % a]
        if bad:
            raise ValueError(f"hidden_size must be divisible by n_heads, but {bad[:3]} are not; change the choices")

    def _values_of(self, name: str) -> list[Any] | None:
        if name in self.fixed:
            return [self.fixed[name]]
        return self.params[name].values() if name in self.params else None

    def size(self) -> int | None:
        """Number of distinct configurations, or None when a parameter is continuous."""
        counts = [p.values() for p in self.params.values()]
        if any(c is None for c in counts):
            return None
        return math.prod(len(c) for c in counts)

    def sample(self, trial: optuna.Trial) -> Candidate:
        """Ask ``trial`` for every searched parameter and return the Candidate they make."""
        values = dict(self.fixed)
        for name, param in self.params.items():
            values[name] = param.suggest(trial, name)
        return Candidate.from_dict(values)

    def candidate_from_params(self, params: dict[str, Any]) -> Candidate:
        """Rebuild the Candidate of a finished trial from its ``trial.params``."""
        return Candidate.from_dict({**self.fixed, **{k: params[k] for k in self.params}})


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
    """Load and validate a search space by bundled name or path."""
    return load_yaml_model(SearchSpace, space_path(name_or_path))
