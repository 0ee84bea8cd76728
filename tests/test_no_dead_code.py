"""Every class and function in ``app/`` is used somewhere in ``app/``: nothing is documented but dead.

v1 documented a per-email login limit whose class was never called. This walks the source (no import
side effects): a top-level class or function, or a method of a class, whose name is never referenced
(as a name, an attribute or an import) anywhere in ``app/`` outside its own definition fails the test.
Methods that frameworks call by name are recognised by importing the class: a method that overrides one
of a base class (Litestar's middleware, SQLAlchemy's cursor, a plugin protocol) is called through it.
"""

from __future__ import annotations

import ast
import importlib
from collections import Counter
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
# Entry points reached from outside app/: the ASGI factory named by litestar.toml, uvicorn and the README.
ENTRY_POINTS = {"create_app"}


def _modules() -> list[Path]:
    return [
        path for path in APP.rglob("*.py") if "migrations" not in path.parts and "static" not in path.parts
    ]


def _definitions(tree: ast.Module) -> list[tuple[str, str | None, int]]:
    """(name, enclosing class or None, line) of every top-level class and function and every method."""
    found: list[tuple[str, str | None, int]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.append((node.name, None, node.lineno))
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    found.append((item.name, node.name, item.lineno))
    return found


def _overrides(path: Path, class_name: str, method: str) -> bool:
    """Whether ``method`` of ``class_name`` (in the module at ``path``) overrides a base class's."""
    module = importlib.import_module(".".join(path.relative_to(APP.parent).with_suffix("").parts))
    cls = getattr(module, class_name)
    return any(hasattr(base, method) for base in cls.__mro__[1:])


def _references(tree: ast.Module) -> Counter[str]:
    """How often each name is used: ``name`` (a bare name or an import) and ``.name`` (an attribute).

    A method is only reached as an attribute, so a bare variable of the same name does not count for it.
    """
    names: Counter[str] = Counter()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names[node.id] += 1
        elif isinstance(node, ast.Attribute):
            names[node.attr] += 1
            names["." + node.attr] += 1
        elif isinstance(node, ast.alias):
            names[node.name.rsplit(".", 1)[-1]] += 1
    return names


def _is_route_handler(tree: ast.Module, name: str) -> bool:
    """Litestar calls decorated handlers (``@get``, ``@websocket``...) and controller methods by route."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                label = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
                if label in {
                    "get",
                    "post",
                    "put",
                    "patch",
                    "delete",
                    "route",
                    "list_route",
                    "websocket",
                    "property",
                    "staticmethod",
                    "classmethod",
                    "command",
                    "group",
                    "option",
                    "asynccontextmanager",
                    "contextmanager",
                    "lru_cache",
                    "declared_attr",
                    "dataclass",
                }:
                    return True
    return False


def test_every_class_and_function_in_app_is_used() -> None:
    trees = {path: ast.parse(path.read_text(), filename=str(path)) for path in _modules()}
    references: Counter[str] = Counter()
    for tree in trees.values():
        references.update(_references(tree))
    dead = []
    for path, tree in trees.items():
        for name, owner, line in _definitions(tree):
            if name in ENTRY_POINTS or (name.startswith("__") and name.endswith("__")):
                continue
            if references[name if owner is None else "." + name] or _is_route_handler(tree, name):
                continue
            if owner is not None and _overrides(path, owner, name):
                continue
            dead.append(f"{path.relative_to(APP.parent)}:{line} {name}")
    assert not dead, "defined but never used in app/:\n" + "\n".join(dead)


def test_the_check_finds_dead_code(tmp_path: Path) -> None:
    """The walk above must see a function nobody calls (a check that cannot fail proves nothing)."""
    tree = ast.parse("def used() -> None: ...\n\n\ndef unused() -> None:\n    used()\n")
    references = _references(tree)
    unreferenced = [name for name, _, _ in _definitions(tree) if references[name] == 0]
    assert unreferenced == ["unused"]
