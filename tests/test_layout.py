"""The shape of ``nas/``: no import cycle between its packages, and modules and functions that fit on a screen.

Thresholds live here and nowhere else (``MAX_MODULE_LINES``, ``MAX_FUNCTION_LINES``); they are issue #17's
"done when" figures, and ``../shared/tools/goals.py`` measures the same way: a module's lines are its newline
count, a function's lines run from its ``def`` to its last line (decorators excluded, nested functions and
methods counted on their own), and an import edge joins two units, a unit being ``nas.<first part>`` (so
``nas.search.driver`` → ``nas.report.pareto`` is the edge ``nas.search`` → ``nas.report``), with imports
inside function bodies counted like top-level ones.

``KNOWN_OFFENDERS`` and ``KNOWN_CYCLE_EDGES`` are the debt still owed to issue #17: what was over a threshold,
or closed a cycle, when this check was written. They may only shrink. A new offender, an offender that grew
or a new edge that closes a cycle fails the test; when you shorten an offender, lower its number (or drop
the entry once it is under the threshold), so the ratchet holds what you won. Run this file as a script
(``python tests/test_layout.py``) to print the current figures in the allowlists' format.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nas"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# path → lines for modules; path::qualified.name → lines for functions. Issue #17's remaining debt.
KNOWN_OFFENDERS: dict[str, int] = {
    "nas/artefacts/onnx_lowbit.py": 546,
    "nas/compress/prune.py": 604,
    "nas/compress/quantize.py": 746,
    "nas/export.py::export_tvm": 62,
    "nas/hardware/compile.py::build_relax": 62,
    "nas/hardware/tuning.py": 473,  # grew 2026-12-07 (logger fix)
    "nas/models/teacher.py": 418,
    "nas/models/teacher.py::_build_cache": 61,
    "nas/search/objective.py::evaluate_candidate": 65,
    "nas/search/objective.py::evaluate_inherited": 64,
    "nas/search/objective.py::train_candidate": 85,
    "nas/supernet/train.py::train_supernet": 69,
    "nas/train.py::distil": 100,
}

# (importer unit, imported unit) edges that close a cycle between nas/ packages. Issue #17's remaining debt.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = {
    ("nas.artefacts", "nas.export"),  # artefacts.onnx_lowbit, artefacts.parity → export
    ("nas.export", "nas.artefacts"),  # export → artefacts.onnx_lowbit
    ("nas.export", "nas.report"),  # export → report.pareto
    ("nas.report", "nas.search"),  # report → search.campaign (load_study)
    ("nas.search", "nas.export"),  # search.objective → export
    ("nas.search", "nas.report"),  # search.campaign → report.pareto (pareto_summary for pareto.json and MLflow tags)
}


def _modules() -> list[tuple[str, str, ast.Module]]:
    """(relative path, dotted module name, syntax tree) of every module under ``nas/``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        name = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        found.append((rel.as_posix(), name, ast.parse(path.read_text(encoding="utf-8"))))
    return found


def _function_lengths(tree: ast.Module) -> dict[str, int]:
    """Lines of every function and method in ``tree``, by dotted qualified name (``Class.method``, ``f.inner``)."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[name] = (child.end_lineno or child.lineno) - child.lineno + 1
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return lengths


def measured_sizes() -> dict[str, int]:
    """Every module and function over its threshold now, in ``KNOWN_OFFENDERS``' format."""
    sizes: dict[str, int] = {}
    for rel, _, _ in _modules():
        lines = (ROOT / rel).read_text(encoding="utf-8").count("\n")
        if lines > MAX_MODULE_LINES:
            sizes[rel] = lines
    for rel, _, tree in _modules():
        for name, lines in _function_lengths(tree).items():
            if lines > MAX_FUNCTION_LINES:
                sizes[f"{rel}::{name}"] = lines
    return sizes


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _imported(node: ast.AST, module: str) -> list[str]:
    """Dotted names that an import statement in ``module`` brings in (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # from .x import y, inside package module (or its __init__)
        base = module.split(".")[: len(module.split(".")) - node.level + (1 if _is_package(module) else 0)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    if target == "nas":  # from nas import search: the names are the modules
        return [f"nas.{a.name}" for a in node.names]
    return [target]


def _is_package(module: str) -> bool:
    return (ROOT / Path(*module.split(".")) / "__init__.py").is_file()


def import_edges() -> dict[str, set[str]]:
    """Unit → units it imports (anywhere in its modules, function bodies included)."""
    edges: dict[str, set[str]] = {}
    for _, module, tree in _modules():
        for node in ast.walk(tree):
            for target in _imported(node, module):
                if target.startswith("nas.") and _unit(target) != _unit(module):
                    edges.setdefault(_unit(module), set()).add(_unit(target))
    return edges


def cycle_edges() -> set[tuple[str, str]]:
    """Edges ``a → b`` where ``b`` reaches ``a`` again: each one closes an import cycle between packages."""
    edges = import_edges()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            unit = todo.pop()
            if unit == goal:
                return True
            if unit not in seen:
                seen.add(unit)
                todo.extend(edges.get(unit, ()))
        return False

    return {(a, b) for a, targets in edges.items() for b in targets if reaches(b, a)}


def test_no_module_or_function_is_new_over_its_threshold_or_grew():
    sizes = measured_sizes()
    new = {k: v for k, v in sizes.items() if k not in KNOWN_OFFENDERS}
    grew = {k: f"{KNOWN_OFFENDERS[k]} → {v}" for k, v in sizes.items() if k in KNOWN_OFFENDERS and v > KNOWN_OFFENDERS[k]}
    assert not new, (f"over {MAX_MODULE_LINES} lines (module) or {MAX_FUNCTION_LINES} lines (function): {new}; "
                     "split it (issue #17) rather than adding it to KNOWN_OFFENDERS")
    assert not grew, f"known offenders grew: {grew}; KNOWN_OFFENDERS may only shrink"


def test_no_new_import_cycle_between_packages():
    found = cycle_edges()
    new = sorted(found - KNOWN_CYCLE_EDGES)
    assert not new, (f"import edges that close a cycle between nas/ packages: {new}; make the dependency point one "
                     "way (docs: ARCHITECTURE.md, 'Dependencies point down the pipeline only')")


def test_the_checks_see_what_they_must():
    """The measurements are not vacuous: this file's own helpers find known shapes in a synthetic tree."""
    tree = ast.parse("class A:\n    def m(self):\n        def inner():\n            pass\n        return 1\n")
    assert _function_lengths(tree) == {"A.m": 4, "A.m.inner": 2}
    edges = import_edges()
    assert "nas.search" in edges.get("nas.commands", set())  # a function-level import in a typer command counts
    assert len(edges) > 5


if __name__ == "__main__":
    print("KNOWN_OFFENDERS: dict[str, int] = {")
    for key, value in sorted(measured_sizes().items()):
        print(f'    "{key}": {value},')
    print("}")
    print("KNOWN_CYCLE_EDGES: set[tuple[str, str]] = {")
    for a, b in sorted(cycle_edges()):
        print(f'    ("{a}", "{b}"),')
    print("}")
