"""Assertions shared by the tests: response shapes, error bodies, and "no secret, no internal ever leaks"."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

BAD_INPUT = (400, 422)
USER_FIELDS = {"id", "name", "email", "rol", "created_at", "updated_at"}
VM_FIELDS = {"id", "name", "cores", "ram", "disk", "os", "status", "created_at", "updated_at"}
SECRET_KEYS = {"password", "password_hash", "current_password", "token_version"}
BCRYPT_HASH = re.compile(r"\$2[abxy]?\$\d{2}\$")
INTERNALS = re.compile(
    r"Traceback|File \"|sqlalchemy|aiosqlite|sqlite3|asyncpg|psycopg|IntegrityError|OperationalError|"
    r"DataError|UNIQUE constraint|violates .*constraint|\.py\"?, line \d+",
    re.IGNORECASE,
)
SQL = re.compile(r"\b(SELECT .* FROM|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")

_UNPARSED: Any = object()


def json_keys(value: Any) -> set[str]:
    """Every key at any depth of a decoded JSON value."""
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in json_keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in json_keys(item)}
    return set()


def names_a_password(key: str) -> bool:
    return "password" in key.lower() or "hash" in key.lower()


def assert_no_secrets(
    text: str,
    *secrets: str,
    body: Any = _UNPARSED,
    secret_key: Callable[[str], bool] = names_a_password,
) -> None:
    """No bcrypt hash, none of ``secrets`` (submitted passwords) and no secret key in ``text``.

    The keys are those of ``body`` when given, else of ``text`` parsed as JSON (none when it is not JSON);
    a key is secret when ``secret_key`` says so (by default: it mentions a password or a hash).
    """
    assert not BCRYPT_HASH.search(text), f"a bcrypt hash leaked: {text[:500]}"
    for secret in secrets:
        assert secret not in text, f"a submitted password leaked: {text[:500]}"
    if body is _UNPARSED:
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
    leaked = {key for key in json_keys(body) if secret_key(key)}
    assert not leaked, f"secret keys in a response: {sorted(leaked)}: {text[:500]}"


def assert_no_secrets_in(response: httpx.Response) -> None:
    """No password or hash in any answer: not as a key of a 2xx body, not as a bcrypt string in the text."""
    assert "password_hash" not in response.text, response.text
    success = 200 <= response.status_code < 300 and bool(response.content)
    assert_no_secrets(
        response.text, body=response.json() if success else None, secret_key=SECRET_KEYS.__contains__
    )


def assert_no_internals(text: str) -> None:
    """An error body says what was wrong, never how the server is built."""
    assert not INTERNALS.search(text), f"server internals in a response: {text[:500]}"
    assert not SQL.search(text), f"SQL in a response: {text[:500]}"


def expect(response: httpx.Response, status: int) -> Any:
    """Assert the status and that nothing secret leaked; return the JSON body (None when empty)."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert_no_secrets_in(response)
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
    assert_no_secrets_in(response)
    return body


def assert_utc(timestamp: str) -> datetime:
    assert timestamp.endswith(("Z", "+00:00")), timestamp
    parsed = datetime.fromisoformat(timestamp)
    assert parsed.utcoffset() == timedelta(0), timestamp
    return parsed


def _assert_record(body: Any, fields: set[str]) -> dict[str, Any]:
    """A stored record's representation: exactly ``fields``, an integer id, UTC timestamps."""
    assert isinstance(body, dict), body
    assert set(body) == fields, body
    assert isinstance(body["id"], int), body
    assert_utc(body["created_at"])
    assert_utc(body["updated_at"])
    return body


def assert_user(body: Any) -> dict[str, Any]:
    user = _assert_record(body, USER_FIELDS)
    assert user["rol"] in {"administrador", "cliente"}, user
    return user


def assert_vm(body: Any) -> dict[str, Any]:
    return _assert_record(body, VM_FIELDS)


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
