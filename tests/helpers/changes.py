"""The change log over the API: read it, find the entries a write left, check what an entry says."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.helpers.accounts import Account
from tests.helpers.assertions import SECRET_KEYS, assert_no_secrets, assert_utc, expect, names_a_password

CHANGE_FIELDS = {
    "seq",
    "at",
    "entity",
    "entity_id",
    "action",
    "actor_id",
    "source",
    "request_id",
    "before",
    "after",
}
# What the app makes when the client sent no X-Request-ID, or one it does not keep (uuid4().hex).
GENERATED_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


async def read_log(
    client: Any, account: Account, path: str = "/changes", **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """The entries ``GET path`` answers with these query parameters, and its ``X-Total-Count``."""
    response = await client.get(path, params=params, headers=account.headers)
    entries = expect(response, 200)
    assert isinstance(entries, list), entries
    for entry in entries:
        assert set(entry) == CHANGE_FIELDS, entry
    return entries, int(response.headers["X-Total-Count"])


async def last_seq(client: Any, admin: Account) -> int:
    """The seq of the newest entry in the log (0 when it is empty)."""
    entries, _ = await read_log(client, admin, order="desc", limit=1)
    return int(entries[0]["seq"]) if entries else 0


async def entries_since(client: Any, admin: Account, seq: int) -> list[dict[str, Any]]:
    entries, _ = await read_log(client, admin, since=seq, limit=1000)
    return entries


async def the_entry_of(client: Any, admin: Account, since: int, response: httpx.Response) -> dict[str, Any]:
    """The one entry a write answered by ``response`` left after seq ``since``, made by that request."""
    entries = await entries_since(client, admin, since)
    assert len(entries) == 1, f"{response.request.method} {response.request.url} left {entries}"
    (entry,) = entries
    assert entry["request_id"] == response.headers["X-Request-ID"], (entry, response.headers)
    return entry


def assert_entry(
    entry: dict[str, Any],
    *,
    entity: str,
    entity_id: int,
    action: str,
    actor_id: int | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    source: str = "api",
) -> dict[str, Any]:
    """Every field of an entry but its request id (which callers compare with the response's header)."""
    assert set(entry) == CHANGE_FIELDS, entry
    assert isinstance(entry["seq"], int), entry
    assert entry["seq"] >= 1, entry
    at = assert_utc(entry["at"])
    now = datetime.now(UTC)
    assert now - timedelta(minutes=1) < at <= now + timedelta(seconds=1), entry
    found = {key: entry[key] for key in ("entity", "entity_id", "action", "actor_id", "source")}
    expected = {
        "entity": entity,
        "entity_id": entity_id,
        "action": action,
        "actor_id": actor_id,
        "source": source,
    }
    assert found == expected, entry
    assert entry["before"] == before, (entry["before"], before)
    assert entry["after"] == after, (entry["after"], after)
    return entry


def assert_no_secrets_in_log(entries: list[dict[str, Any]], *passwords: str) -> None:
    """No password, hash or token version anywhere in the entries, as a key or as a value."""
    assert_no_secrets(
        json.dumps(entries),
        *passwords,
        body=entries,
        secret_key=lambda key: key in SECRET_KEYS or names_a_password(key) or "token" in key.lower(),
    )


# ---------------------------------------------------------------- the log's tables, read directly


async def log_head(database_url: str) -> tuple[int, int]:
    """``(last_seq, pruned_through)`` of the change log's head row, read from the database itself."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text("SELECT last_seq, pruned_through FROM change_log_head WHERE id = 1")
                )
            ).one()
    finally:
        await engine.dispose()
    return int(row[0]), int(row[1])
