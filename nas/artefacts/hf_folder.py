"""The exported Hugging Face folder: loads with stock ``transformers`` and ``trust_remote_code=True``, no lightnas.

``save_pretrained`` writes the config and weights; the student's modeling code then goes into the folder as
flat files (``student.py``, ``blocks.py`` and each block type's ``block_<name>.py``, ``embeddings.py``,
``stored.py``, ``candidate.py``, ``blockspec.py``, ``recipe.py``) and ``config.json`` gets an ``auto_map`` pointing the Auto classes at them. With the recipe
of a quantized student, its quantized weights are saved as their codes (:func:`stored_copy`,
:mod:`nas.models.stored`) and rebuilt in float32 when the folder's model runs. ``transformers`` (5.x) imports such
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
import copy
import importlib.util
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from nas.compress.recipe import CompressionRecipe

# lightnas module → file name in the folder; together they are the import closure of nas.models.student
# minus the lightnas-only functions standalone_source drops.
MODELING_FILES = {
    "nas.models.student": "student.py",
    "nas.models.blocks": "blocks.py",
    "nas.models.embeddings": "embeddings.py",
    "nas.candidate": "candidate.py",
    "nas.blockspec": "blockspec.py",
    "nas.compress.recipe": "recipe.py",
    "nas.models.stored": "stored.py",
}


def modeling_files() -> dict[str, str]:
    """:data:`MODELING_FILES` plus every registered block type's own file (``block_<name>.py``)."""
    from nas.models.blocks import block_class, list_blocks

    blocks = {block_class(name).__module__ for name in list_blocks()}
    return {**MODELING_FILES, **{m: f"{m.rpartition('.')[2]}.py" for m in sorted(blocks)}}


def _block_imports() -> str:
    """Lines that make the folder's ``blocks.py`` import each block file (transformers copies only the
    files a relative import names; lightnas finds them by their ``block_`` prefix instead)."""
    from nas.models.blocks import block_class, list_blocks

    classes = [block_class(name) for name in list_blocks()]
    return "".join(f"from .{c.__module__.rpartition('.')[2]} import {c.__name__}  # noqa: E402,F401 - registers it\n" for c in classes)


AUTO_MAP = {
    "AutoConfig": "student.StudentConfig",
    "AutoModelForSequenceClassification": "student.StudentForSequenceClassification",
}


@dataclass(frozen=True)
class HfFolder:
    """A written Hugging Face folder and how its weights are stored.

    Args:
        path: The folder.
        weights_bytes: Size of ``model.safetensors`` on disk.
        stored: Module name → stored spec (see :mod:`nas.models.stored`) for weights saved as codes.
        kept_fp32: Module name → why a weight the recipe quantized is saved as float32 anyway.
    """

    path: Path
    weights_bytes: int
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    kept_fp32: dict[str, str] = field(default_factory=dict)


def write_hf_folder(model: torch.nn.Module, folder: str | Path, *, recipe: CompressionRecipe | None = None,
                    tokenizer: Any | None = None) -> HfFolder:
    """Write ``model`` as a folder that ``AutoModelForSequenceClassification.from_pretrained(folder,
    trust_remote_code=True)`` loads without lightnas installed.

    Args:
        model: A ``StudentForSequenceClassification`` (plain ``nn.Linear``/``nn.Embedding`` layers).
        folder: Output folder; created if missing, files in it overwritten.
        recipe: The recipe that compressed ``model``; when it quantizes, the quantized weights are saved as
            their codes (:func:`stored_copy`) rather than as fp32. None: every weight is saved as fp32.
        tokenizer: Saved next to the model when given (``save_pretrained``).

    Returns:
        An :class:`HfFolder`.
    """
    folder = Path(folder)
    stored, kept = {}, {}
    if recipe is not None and (recipe.weight_bits < 32 or (recipe.embedding_bits or 32) < 32):
        model, stored, kept = stored_copy(model, recipe)
    if kept:
        warnings.warn(f"{len(kept)} quantized weight(s) are saved as float32 in {folder}: "
                      + "; ".join(f"{name}: {why}" for name, why in sorted(kept.items())), UserWarning, stacklevel=2)
    model.save_pretrained(folder, safe_serialization=True)
    copied = modeling_files()
    for module_name, file_name in copied.items():
        origin = importlib.util.find_spec(module_name).origin
        source = Path(origin).read_text(encoding="utf-8")
        text = standalone_source(source, module_name, copied)
        (folder / file_name).write_text(text + (_block_imports() if module_name == "nas.models.blocks" else ""), encoding="utf-8")
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["auto_map"] = AUTO_MAP
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return HfFolder(folder, (folder / "model.safetensors").stat().st_size, stored, kept)


def stored_copy(model: torch.nn.Module, recipe: CompressionRecipe
                ) -> tuple[torch.nn.Module, dict[str, dict[str, Any]], dict[str, str]]:
    """A copy of ``model`` whose quantized weights are :mod:`nas.models.stored` modules holding their codes.

    The codes are the ONNX exporter's (:func:`nas.artefacts.onnx_lowbit.derive_codes`, re-derived from the
    fake-quantized weight per output channel). A weight is stored only if the stored module's float32
    weight is within the exporter's tolerance (1e-6 of the tensor's max |w|) of the original; log and
    k-means codebooks, and asymmetric weights whose pruned zeros lie off the grid, stay float32.

    Returns:
        The copy (its config's ``stored_weights`` lists the stored modules), module → spec, and module →
        why it stayed float32.
    """
    import torch

    from nas.artefacts.onnx_lowbit import _TOLERANCE, _quantized_modules, derive_codes
    from nas.models.stored import KINDS, stored_like

    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    specs, kept = {}, {}
    for name, (weight, bits, _) in _quantized_modules(model, recipe).items():
        codes = derive_codes(weight, bits, recipe.quant_scheme)
        if isinstance(codes, str):
            kept[name] = codes
            continue
        if codes.kind not in KINDS:
            kept[name] = f"{codes.kind} codebooks are not stored as codes in the Hugging Face folder (the ONNX file does)"
            continue
        spec = {"kind": "float16"} if codes.kind == "float16" else {
            "kind": "linear", "bits": bits, "zero_point": 2 ** (bits - 1) - 1 if recipe.quant_scheme == "symmetric" else 0}
        stored = stored_like(modules[name], spec)
        _fill_codes(stored, codes, spec, getattr(modules[name], "bias", None))
        target = torch.from_numpy(weight)
        error = float((stored.weight - target).abs().max())
        if error > _TOLERANCE * max(1.0, float(target.abs().max())):
            kept[name] = f"its stored codes reproduce it only to {error:.2e} (pruned zeros off the asymmetric grid)"
            continue
        out.set_submodule(name, stored)
        specs[name] = spec
    out.config.stored_weights = specs
    return out, specs, kept


def _fill_codes(module: torch.nn.Module, codes: Any, spec: dict[str, Any], bias: torch.Tensor | None) -> None:
    """Copy an ``onnx_lowbit._Codes`` (row orientation) and the bias into an empty stored module."""
    import torch

    from nas.artefacts.onnx_lowbit import _pack_rows
    from nas.models.stored import pack_width

    stored = module.stored
    with torch.no_grad():
        if bias is not None:
            module.bias.copy_(bias)
        if spec["kind"] == "float16":
            stored.codes.copy_(torch.from_numpy(codes.c))
            return
        width = pack_width(spec["bits"])
        stored.codes.copy_(torch.from_numpy(codes.c if width == 8 else _pack_rows(codes.c, width)))
        stored.scale.copy_(torch.from_numpy(codes.s)[:, None])
        # derive_codes writes value = c·s + m; stored is (c − zero_point)·s + offset, so offset = m + zero_point·s
        # (summed in float64: exactly 0 for symmetric codes, whose m is −zero_point·s)
        stored.offset.copy_(torch.from_numpy(codes.m + spec["zero_point"] * codes.s)[:, None])


def _lightnas_module(node: ast.AST) -> str | None:
    """The lightnas module an import statement names (``nas`` or ``nas.…``), else None."""
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
    elif isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        return None
    return next((n for n in names if n == "nas" or n.startswith("nas.")), None)


def standalone_source(source: str, module_name: str, copied: dict[str, str] | None = None) -> str:
    """``source`` of lightnas module ``module_name`` rewritten to import nothing of lightnas (see module doc).

    ``copied``: the modules copied into the folder, module → file (default :data:`MODELING_FILES`).

    Raises:
        RuntimeError: A lightnas import that is neither of a copied module nor inside a droppable top-level
            function (the folder could not load without lightnas).
    """
    copied = MODELING_FILES if copied is None else copied
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, list[str]]] = []  # (first line, last line, replacement), 1-based inclusive
    dropped = []
    for top in tree.body:
        imports = [(n, m) for n in ast.walk(top) if (m := _lightnas_module(n))]
        foreign = [m for n, m in imports if isinstance(n, ast.Import) or m not in copied]
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
                relative = line.replace(f"from {module} import", f"from .{Path(copied[module]).stem} import", 1)
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
