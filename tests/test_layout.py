"""The shape of ``nas/``: no import cycle between its packages, and modules and functions that fit on a screen.

Thresholds live here and nowhere else (``MAX_MODULE_LINES``, ``MAX_FUNCTION_LINES``); they are issue #17's
"done when" figures, and ``../shared/tools/goals.py`` measures the same way: a module's lines are its newline
count, a function's lines run from its ``def`` to its last line (decorators excluded, nested functions and
methods counted on their own), and an import edge joins two units, a unit being ``nas.<first part>`` (so
``nas.report.html`` → ``nas.search.pareto`` is the edge ``nas.report`` → ``nas.search``), with imports
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
OPTUNA_PRIVATE = "nas/search/optuna_private.py"  # the one module allowed to reach into Optuna's private API

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# path → lines for modules; path::qualified.name → lines for functions. Issue #17's remaining debt.
KNOWN_OFFENDERS: dict[str, int] = {
}

# (importer unit, imported unit) edges that close a cycle between nas/ packages. Issue #17's remaining debt.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()


# "path: module.name" of private names (``_x``) of nas imported by another module, a test or a benchmark. Each is
# defined in a module another helper was editing (issue #17, 2026-12-07); make it public there, then drop it here.
KNOWN_PRIVATE_IMPORTS: set[str] = set()


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


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(rel: str, tree: ast.Module) -> set[str]:
    """Private names of nas that ``tree`` (the file ``rel``) imports or reaches through an imported nas name.

    Covers ``from nas.x import _y``, ``x._y`` where ``x`` was imported from nas, and ``setattr(x, "_y", ...)``
    (monkeypatching a private name); a module's own names do not count.
    """
    own = ".".join(Path(rel).with_suffix("").parts).removesuffix(".__init__")
    bound: dict[str, str] = {}  # local name → dotted nas name
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "nas" and node.module != own:
            for alias in node.names:
                if _is_private(alias.name):
                    found.add(f"{node.module}.{alias.name}")
                else:
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            bound.update({(a.asname or a.name).split(".")[0]: a.asname and a.name or "nas"
                          for a in node.names if a.name.split(".")[0] == "nas"})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            chain, base = [node.attr], node.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.add(".".join([bound[base.id], *reversed(chain)]))
        is_setattr = isinstance(node, ast.Call) and "setattr" in (getattr(node.func, "attr", None), getattr(node.func, "id", None))
        if (is_setattr and len(node.args) >= 2
                and isinstance(node.args[0], ast.Name) and node.args[0].id in bound
                and isinstance(node.args[1], ast.Constant) and _is_private(str(node.args[1].value))):
            found.add(f"{bound[node.args[0].id]}.{node.args[1].value}")
    return {name for name in found if not name.startswith(own + ".")}


def measured_private_imports() -> set[str]:
    """Every private cross-module import of nas in nas/, tests/ and benchmarks/, in ``KNOWN_PRIVATE_IMPORTS``' format."""
    found = set()
    for folder in ("nas", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            found |= {f"{rel}: {name}" for name in private_imports(rel, ast.parse(path.read_text(encoding="utf-8")))}
    return found


def optuna_private_uses(tree: ast.Module) -> list[str]:
    """Reaches into Optuna's private API: ``optuna._x`` / ``optuna.study._x`` imports, ``_NAME`` imported from
    optuna, and a study's ``_storage`` or a trial's ``_trial_id`` (``self._storage`` of lightnas's own classes aside)."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "optuna":
            if any(_is_private(part) for part in node.module.split(".")) or any(_is_private(a.name) for a in node.names):
                uses.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            uses += [f"line {node.lineno}: import {a.name}" for a in node.names
                     if a.name.split(".")[0] == "optuna" and any(_is_private(p) for p in a.name.split("."))]
        elif (isinstance(node, ast.Attribute) and node.attr in ("_storage", "_trial_id")
              and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
            uses.append(f"line {node.lineno}: .{node.attr}")
    return uses


def test_private_optuna_api_is_reached_only_through_optuna_private():
    found = {rel: uses for rel, _, tree in _modules() if rel != OPTUNA_PRIVATE and (uses := optuna_private_uses(tree))}
    assert not found, f"private Optuna API outside {OPTUNA_PRIVATE}: {found}; add a wrapper there that says why"


def test_no_new_private_import_of_nas():
    found = measured_private_imports()
    new = sorted(found - KNOWN_PRIVATE_IMPORTS)
    assert not new, (f"private names imported across modules: {new}; make the name public (rename it at its "
                     "definition and every caller) or test through the public API")


def test_the_checks_see_what_they_must():
    """The measurements are not vacuous: this file's own helpers find known shapes in a synthetic tree."""
    tree = ast.parse("class A:\n    def m(self):\n        def inner():\n            pass\n        return 1\n")
    assert _function_lengths(tree) == {"A.m": 4, "A.m.inner": 2}
    edges = import_edges()
    assert "nas.search" in edges.get("nas.commands", set())  # a function-level import in a typer command counts
    assert len(edges) > 5
    probe = ast.parse("from nas.x import _a, b\nimport nas.y as y\nfrom nas import z\ny._c\nz._d.e\nsetattr(b, '_f', 1)\n"
                      "from optuna.study._multi_objective import f\nstudy._storage.get\nself._storage()\n")
    assert private_imports("tests/t.py", probe) == {"nas.x._a", "nas.y._c", "nas.z._d", "nas.x.b._f"}
    assert len(optuna_private_uses(probe)) == 2


if __name__ == "__main__":
    print("KNOWN_OFFENDERS: dict[str, int] = {")
    for key, value in sorted(measured_sizes().items()):
        print(f'    "{key}": {value},')
    print("}")
    print("KNOWN_PRIVATE_IMPORTS: set[str] = {")
    for name in sorted(measured_private_imports()):
        print(f'    "{name}",')
    print("}")
    print("KNOWN_CYCLE_EDGES: set[tuple[str, str]] = {")
    for a, b in sorted(cycle_edges()):
        print(f'    ("{a}", "{b}"),')
    print("}")
