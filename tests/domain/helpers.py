"""Assertions shared by the API tests: response shapes, error bodies, and "no secret ever leaks"."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx

BAD_INPUT = (400, 422)
USER_FIELDS = {"id", "name", "email", "rol", "created_at", "updated_at"}
VM_FIELDS = {"id", "name", "cores", "ram", "disk", "os", "status", "created_at", "updated_at"}
SECRET_KEYS = {"password", "password_hash", "current_password", "token_version"}
BCRYPT_HASH = re.compile(r"\$2[abxy]?\$\d\d\$")


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def assert_no_secrets(response: httpx.Response) -> None:
    """No password or hash in any answer: not as a key, not as a bcrypt string anywhere in the text."""
    assert "password_hash" not in response.text, response.text
    assert not BCRYPT_HASH.search(response.text), response.text
    if 200 <= response.status_code < 300 and response.content:
        leaked = set(_keys(response.json())) & SECRET_KEYS
        assert not leaked, f"secret keys in the response: {leaked}"


def expect(response: httpx.Response, status: int) -> Any:
    """Assert the status and that nothing secret leaked; return the JSON body (None when empty)."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert_no_secrets(response)
    return response.json() if response.content else None


def assert_error(response: httpx.Response, *statuses: int, field: str | None = None) -> dict[str, Any]:
    """A JSON error with a non-empty ``detail`` (naming ``field`` when given), never a 5xx."""
    assert response.status_code in statuses, (
        f"expected {statuses}, got {response.status_code}: {response.text}"
    )
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("detail"), str), body
    assert body["detail"], body
    if field is not None:
        assert field in body["detail"], f"`{field}` not named in {body['detail']!r}"
    assert_no_secrets(response)
    return body


def assert_utc(timestamp: str) -> datetime:
    assert timestamp.endswith(("Z", "+00:00")), timestamp
    parsed = datetime.fromisoformat(timestamp)
    assert parsed.utcoffset() == timedelta(0), timestamp
    return parsed


def assert_user(body: Any) -> dict[str, Any]:
    assert isinstance(body, dict), body
    assert set(body) == USER_FIELDS, body
    assert isinstance(body["id"], int), body
    assert body["rol"] in {"administrador", "cliente"}, body
    assert_utc(body["created_at"])
    assert_utc(body["updated_at"])
    return body


def assert_vm(body: Any) -> dict[str, Any]:
    assert isinstance(body, dict), body
    assert set(body) == VM_FIELDS, body
    assert isinstance(body["id"], int), body
    assert_utc(body["created_at"])
    assert_utc(body["updated_at"])
    return body


async def total_count(client: Any, path: str, headers: dict[str, str]) -> int:
    """The collection's ``X-Total-Count``: proves whether a refused request stored anything."""
    response = await client.get(path, headers=headers, params={"limit": 1})
    expect(response, 200)
    return int(response.headers["X-Total-Count"])


async def can_login(client: Any, email: str, password: str) -> bool:
    response = await client.post("/login", json={"email": email, "password": password})
    assert response.status_code in {200, 401}, response.text
    return response.status_code == 200


def array_parameter(schema: dict[str, Any], path: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A query parameter of GET ``path`` that takes a list: (its array schema, its items' schema).

    A plain array schema, or Litestar's ``oneOf: [array, null]`` with ``maxItems`` beside the ``oneOf``.
    """
    (parameter,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == name]
    assert parameter.get("explode", True) is True  # the default form style: ?name=a&name=b
    assert parameter.get("style", "form") == "form"
    wrapper = parameter["schema"]
    (array,) = [s for s in wrapper.get("oneOf", [wrapper]) if s.get("type") == "array"]
    return {**array, "maxItems": array.get("maxItems", wrapper.get("maxItems"))}, array["items"]
