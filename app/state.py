"""The long-lived collaborators the composition root hands to request handlers, kept in the app's state.

One object per type: ``create_app`` stores them with :func:`collaborators`, and a handler or provider
takes the one it needs with ``collaborator(state, WriteGate)``. Handlers read ``state`` rather than
declaring each collaborator as a dependency: Litestar resolves sibling dependencies concurrently in an
anyio task group, which cost more than the whole database read.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from litestar.datastructures import State

T = TypeVar("T")


_keys: dict[type[Any], str] = {}


def _key(kind: type[Any]) -> str:
    key = _keys.get(kind)
    if key is None:
        key = _keys[kind] = f"vms:{kind.__module__}.{kind.__qualname__}"
    return key


def collaborators(*objects: object) -> dict[str, object]:
    """The state entries for these objects, each under its own type."""
    entries = {_key(type(item)): item for item in objects}
    if len(entries) != len(objects):
        raise ValueError("two collaborators of the same type: the state keeps one per type")
    return entries


def collaborator(state: State, kind: type[T]) -> T:
    """The object of type ``kind`` the composition root put in the state."""
    return cast("T", state[_key(kind)])
