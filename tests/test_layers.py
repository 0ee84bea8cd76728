"""The import direction of ``app/``: the domains are reached only from the composition root, and no cycles.

This reads the source with ``ast`` (no import side effects) and counts every ``import app...`` and
``from app... import ...`` anywhere in a module: at the top, inside functions, under ``if TYPE_CHECKING:``.
``from app.x import y`` counts as importing the module ``app.x.y`` when there is one, else ``app.x``.

(a) Only ``app/domain/`` itself and the composition root (``app/__init__.py``, ``app/cli.py``,
    ``app/wiring.py``) may import ``app.domain``: the infrastructure (db, security, http, config, cache...)
    does not know the domains; the root wires them together.
(b) No import cycle between modules. A package's ``__init__`` importing its own submodules, and a submodule
    importing its parent package, do not count.
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from dataclasses import dataclass
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
SKIPPED = {"migrations", "static"}
COMPOSITION_ROOT = {"", "cli", "wiring"}  # app/__init__.py, app/cli.py, app/wiring.py
DOMAIN = "domain"


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted
    path: Path  # relative to the package's parent: app/runtime.py
    line: int
    statement: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.source} imports {self.target} (`{self.statement}`)"


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root`` by dotted name (a package by its own name), skipping
    ``migrations`` and ``static``."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        if SKIPPED & set(relative.parts[1:]):
            continue
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module ``name`` names, or the closest package above it that is one of ``known``."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(root: Path) -> list[Import]:
    """Every import of a module of the package at ``root`` by a module of it."""
    known = modules(root)
    package = root.name
    found: list[Import] = []
    for source, path in known.items():
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        shown = path.relative_to(root.parent)
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = source.split(".") if is_package else source.split(".")[:-1]
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join([*base_parts, *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                named = [f"{base}.{alias.name}" for alias in node.names]
                targets = [name if name in known else base for name in named]
            else:
                continue
            statement = " ".join((ast.get_source_segment(text, node) or ast.dump(node)).split())
            resolved = {_resolve(target, known) for target in targets if _within(target, package)} - {
                None,
                source,
            }
            for target in sorted(name for name in resolved if name is not None):
                found.append(Import(source, target, shown, node.lineno, statement))
    return found


def _relative(dotted: str, package: str) -> str:
    """``dotted`` within ``package`` ("" for the package itself)."""
    return dotted[len(package) + 1 :] if dotted.startswith(package + ".") else ""


def _within(name: str, ancestor: str) -> bool:
    return name == ancestor or name.startswith(ancestor + ".")


def domain_violations(root: Path) -> list[str]:
    """Imports of ``<package>.domain`` by a module outside the domains and outside the composition root."""
    package = root.name
    domain = f"{package}.{DOMAIN}"
    return [
        f"{found}: only {package}/{DOMAIN}/ and the composition root may import {domain}"
        for found in imports(root)
        if _within(found.target, domain)
        and not _within(found.source, domain)
        and _relative(found.source, package) not in COMPOSITION_ROOT
    ]


def cycles(root: Path) -> list[str]:
    """One cycle path for every group of modules that import each other, each step naming its import."""
    edges: dict[str, dict[str, Import]] = {}
    for found in imports(root):
        # a package's __init__ importing its submodules, or a submodule its parent package: not a cycle
        if _within(found.target, found.source) or _within(found.source, found.target):
            continue
        edges.setdefault(found.source, {}).setdefault(found.target, found)
    reported: list[str] = []
    for component in _strongly_connected(edges):
        if len(component) < 2:
            continue
        start = min(component)
        path = _path_back(edges, start, component)
        steps = [str(edges[a][b]) for a, b in itertools.pairwise(path)]
        reported.append("import cycle " + " -> ".join(path) + ":\n    " + "\n    ".join(steps))
    return sorted(reported)


def _strongly_connected(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's strongly connected components of the import graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, {})):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def _path_back(edges: dict[str, dict[str, Import]], start: str, component: set[str]) -> list[str]:
    """The shortest path from ``start`` back to itself inside ``component`` (breadth first)."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(edges.get(node, {})):
            if successor == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if successor in component and successor not in previous:
                previous[successor] = node
                queue.append(successor)
    raise AssertionError(f"no path back to {start} in {sorted(component)}")  # a component always has one


# ---------------------------------------------------------------- app/


def test_only_the_domains_and_the_composition_root_import_app_domain() -> None:
    violations = domain_violations(APP)
    assert not violations, "app.domain imported from outside the domains:\n" + "\n".join(violations)


def test_app_has_no_import_cycles() -> None:
    found = cycles(APP)
    assert not found, "\n".join(found)


# ---------------------------------------------------------------- the checker itself


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_reports_a_domain_import_and_a_cycle(tmp_path: Path) -> None:
    """A check that cannot fail proves nothing: a synthetic ``app`` with one of each, and allowed imports."""
    root = tmp_path / "app"
    _write(
        root,
        {
            "__init__.py": "from app.domain import vms\n",  # the composition root may
            "cli.py": "import app.domain.vms\n",  # so may the CLI
            "domain/__init__.py": "from . import vms\n",  # a package importing its own submodule
            "domain/vms.py": "import app.domain\nfrom app import config\n",  # its parent; downwards
            "config.py": "VALUE = 1\n",
            "runtime.py": (
                "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from app.domain.vms import VM\n"
            ),
            "a.py": "def f() -> None:\n    from app import b\n",  # inside a function still counts
            "b.py": "from .a import f\n",
            "migrations/env.py": "import app.domain\n",  # skipped
        },
    )
    assert domain_violations(root) == [
        "app/runtime.py:4 app.runtime imports app.domain.vms (`from app.domain.vms import VM`): "
        "only app/domain/ and the composition root may import app.domain"
    ]
    assert cycles(root) == [
        "import cycle app.a -> app.b -> app.a:\n"
        "    app/a.py:2 app.a imports app.b (`from app import b`)\n"
        "    app/b.py:1 app.b imports app.a (`from .a import f`)"
    ]
