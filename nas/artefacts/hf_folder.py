"""The exported Hugging Face folder: loads with stock ``transformers`` and ``trust_remote_code=True``, no lightnas.

``save_pretrained`` writes the config and weights; the student's modeling code then goes into the folder as
flat files (``student.py``, ``blocks.py``, ``embeddings.py``, ``candidate.py``, ``recipe.py``) and
``config.json`` gets an ``auto_map`` pointing the Auto classes at them. ``transformers`` (5.x) imports such
files as one package, so sibling imports must be relative, and it refuses a file that imports a package
that is not installed — even a lazy import inside a function (``dynamic_module_utils.check_imports`` reads
every import statement). :func:`standalone_source` therefore rewrites each copied file:

- ``from nas.models.blocks import X`` (a module that is copied too) becomes ``from .blocks import X``;
- a top-level function that imports any other lightnas module (``build_student`` needs
  ``nas.models.inherit``) is left out: it builds or edits students and is never called to load one;
- any other lightnas import (module level, or inside a class) is a broken invariant and raises.

The copies are made from the running lightnas at export time, so the folder's code is exactly the code
that trained the student.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# lightnas module → file name in the folder; together they are the import closure of nas.models.student
# minus the lightnas-only functions standalone_source drops.
MODELING_FILES = {
    "nas.models.student": "student.py",
    "nas.models.blocks": "blocks.py",
    "nas.models.embeddings": "embeddings.py",
    "nas.candidate": "candidate.py",
    "nas.compress.recipe": "recipe.py",
}
AUTO_MAP = {
    "AutoConfig": "student.StudentConfig",
    "AutoModelForSequenceClassification": "student.StudentForSequenceClassification",
}


def write_hf_folder(model: torch.nn.Module, folder: str | Path, *, tokenizer: Any | None = None) -> Path:
    """Write ``model`` as a folder that ``AutoModelForSequenceClassification.from_pretrained(folder,
    trust_remote_code=True)`` loads without lightnas installed.

    Args:
        model: A ``StudentForSequenceClassification`` (plain ``nn.Linear`` layers: fake-quantized weights
            are stored as the float32 values the student computes with).
        folder: Output folder; created if missing, files in it overwritten.
        tokenizer: Saved next to the model when given (``save_pretrained``).

    Returns:
        ``folder`` as a Path.
    """
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    for module_name, file_name in MODELING_FILES.items():
        origin = importlib.util.find_spec(module_name).origin
        source = Path(origin).read_text(encoding="utf-8")
        (folder / file_name).write_text(standalone_source(source, module_name), encoding="utf-8")
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["auto_map"] = AUTO_MAP
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def _lightnas_module(node: ast.AST) -> str | None:
    """The lightnas module an import statement names (``nas`` or ``nas.…``), else None."""
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
    elif isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        return None
    return next((n for n in names if n == "nas" or n.startswith("nas.")), None)


def standalone_source(source: str, module_name: str) -> str:
    """``source`` of lightnas module ``module_name`` rewritten to import nothing of lightnas (see module doc).

    Raises:
        RuntimeError: A lightnas import that is neither of a copied module nor inside a droppable top-level
            function (the folder could not load without lightnas).
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, list[str]]] = []  # (first line, last line, replacement), 1-based inclusive
    dropped = []
    for top in tree.body:
        imports = [(n, m) for n in ast.walk(top) if (m := _lightnas_module(n))]
        foreign = [m for n, m in imports if isinstance(n, ast.Import) or m not in MODELING_FILES]
        if foreign and isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([top.lineno] + [d.lineno for d in top.decorator_list])
            edits.append((first, top.end_lineno, []))
            dropped.append(top.name)
        elif foreign:
            raise RuntimeError(f"{module_name} line {top.lineno}: import of {foreign[0]} outside a top-level "
                               "function; the exported Hugging Face folder could not load without lightnas")
        else:
            for node, module in imports:
                line = lines[node.lineno - 1]
                relative = line.replace(f"from {module} import", f"from .{Path(MODELING_FILES[module]).stem} import", 1)
                if relative == line:
                    raise RuntimeError(f"{module_name} line {node.lineno}: cannot rewrite {line.strip()!r}")
                edits.append((node.lineno, node.lineno, [relative]))
    for first, last, replacement in sorted(edits, reverse=True):
        lines[first - 1:last] = replacement
    note = f" (left out, lightnas-only: {', '.join(dropped)})" if dropped else ""
    header = f"# Copied from lightnas {module_name} by nas.artefacts.hf_folder{note}.\n"
    rewritten = header + "".join(lines)
    left = [m for n in ast.walk(ast.parse(rewritten)) if (m := _lightnas_module(n))]
    if left:
        raise RuntimeError(f"{module_name}: still imports {left[0]} after the rewrite")
    return rewritten
