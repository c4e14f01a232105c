"""Load a YAML file into a pydantic model, turning every failure into one readable sentence.

Campaign files, search spaces and hardware profiles all come through here, so a user who mistypes a key
sees the same kind of message wherever they made the mistake.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import yaml

from nas.errors import NasUserError

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound="BaseModel")


def read_yaml(path: Path) -> dict:
    """The mapping at the top of a YAML file; a missing file, bad syntax or non-mapping is a user error."""
    path = Path(path)
    if path.is_dir():
        raise NasUserError(f"{path} is a folder, not a file; give the path of the .yaml file.")
    if not path.is_file():
        raise NasUserError(f"{path}: file not found; check the path.")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError as exc:
        raise NasUserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.") from None
    except DuplicateKeyError as exc:
        raise NasUserError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise NasUserError(f"{path}: YAML syntax error{where}: {problem}.") from None
    if data is None:  # an empty file is a wrong or unsaved file, not "all defaults"
        raise NasUserError(f"{path}: the file is empty (no keys, or comments only); write its settings into it.")
    if not isinstance(data, dict):
        raise NasUserError(f"{path}: expected a mapping of keys to values at the top, got {type(data).__name__}.")
    return data


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one mapping (plain YAML keeps the last silently)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key (``n_trials: 5`` ... ``n_trials: 5000``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in first_line:
                raise DuplicateKeyError(f"key '{key}' appears twice (lines {first_line[key]} and {line}); "
                                        "keep one of them.")
            if isinstance(key, (str, int, float, bool)):
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def _short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error names the value, it does not print the whole file."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_validation_error(source: str, exc: ValidationError, model: type[BaseModel]) -> str:
    """One sentence for the first error pydantic found, naming file, field and value, with a fix."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        parent = _model_at(model, err["loc"][:-1])
        known = sorted(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys are {', '.join(known)}."
        return f"{source}: unknown key '{field}'; {hint}"
    if err["type"] == "missing":
        return f"{source}: missing required key '{field}'; add it."
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"] or isinstance(value, dict):  # a check across fields: the value would be a whole mapping
        where = "" if not err["loc"] else f"{field}: "
        return f"{source}: {where}{msg}."
    return f"{source}: {field} = {_short_repr(value)} is invalid: {msg}."


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The nested pydantic model class at ``loc`` (for typo suggestions), or None if it is not a model."""
    from pydantic import BaseModel

    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int) or part not in current.model_fields:
            continue  # a list index or dict key: the item keeps the container's model type
        annotation = current.model_fields[part].annotation
        # Look through list[...], dict[..., ...] and unions for the first pydantic model.
        stack, found = [annotation], None
        while stack and found is None:
            a = stack.pop()
            if isinstance(a, type) and issubclass(a, BaseModel):
                found = a
            stack.extend(getattr(a, "__args__", ()))
        current = found
    return current


def load_model(model: type[ModelT], data: dict, source: str) -> ModelT:
    """Validate ``data`` as ``model``; errors become a :class:`NasUserError` naming ``source``."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise NasUserError(describe_validation_error(source, exc, model)) from None


def load_yaml_model(model: type[ModelT], path: Path) -> ModelT:
    """Read ``path`` and validate it as ``model``."""
    return load_model(model, read_yaml(path), str(path))
