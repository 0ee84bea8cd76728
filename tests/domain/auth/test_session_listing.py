"""GET /users/me/sessions: the caller's open sessions, a bounded page at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import Settings
from tests.helpers import Account, assert_error, bearer, expect, session_of


async def sign_in(client: Any, account: Account) -> str:
    response = await client.post("/login", json={"email": account.email, "password": account.password})
    return str(expect(response, 200)["access_token"])


async def test_the_list_is_paged_with_a_total(client: Any, cliente: Account, admin: Account) -> None:
    """Failed before: the list had no bounds, so a user with many sessions got them all at once."""
    tokens = [cliente.token] + [await sign_in(client, cliente) for _ in range(4)]
    ids = [session_of(token) for token in tokens]
    everything = await client.get("/users/me/sessions", headers=cliente.headers)
    assert [session["id"] for session in expect(everything, 200)] == ids
    assert everything.headers["X-Total-Count"] == "5"
    page = await client.get("/users/me/sessions/", params={"limit": 2, "offset": 1}, headers=cliente.headers)
    assert [session["id"] for session in expect(page, 200)] == ids[1:3]
    assert page.headers["X-Total-Count"] == "5"
    past_the_end = await client.get("/users/me/sessions", params={"offset": 10}, headers=cliente.headers)
    assert (expect(past_the_end, 200), past_the_end.headers["X-Total-Count"]) == ([], "5")
    # The administrador's sessions are not counted among them.
    assert (await client.get("/users/me/sessions", headers=admin.headers)).headers["X-Total-Count"] == "1"


@pytest.mark.parametrize(
    "query",
    [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}, {"offset": 2**31}, {"limit": ["1", "2"]}],
)
async def test_the_page_is_bounded(client: Any, cliente: Account, query: dict[str, Any]) -> None:
    body = assert_error(await client.get("/users/me/sessions", params=query, headers=cliente.headers), 400)
    assert "limit" in body["detail"] or "offset" in body["detail"], body
    expect(await client.get("/users/me/sessions", params={"limit": 1000}, headers=cliente.headers), 200)


async def test_a_session_whose_refresh_token_expired_is_not_listed(
    client: Any, cliente: Account, settings: Settings
) -> None:
    """Failed before: it was listed as open, though it had ended (it can no longer be refreshed)."""
    expired = await sign_in(client, cliente)
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE auth_session SET refresh_expires_at = :at WHERE id = :id"),
                {"at": datetime.now(UTC), "id": session_of(expired)},
            )
    finally:
        await engine.dispose()
    listed = expect(await client.get("/users/me/sessions", headers=bearer(cliente.token)), 200)
    assert [session["id"] for session in listed] == [session_of(cliente.token)]
    # To the caller whose token it is, it is still open (its access token works until it expires).
    mine = expect(await client.get("/users/me/sessions", headers=bearer(expired)), 200)
    assert [(session["id"], session["current"]) for session in mine] == [
        (session_of(cliente.token), False),
        (session_of(expired), True),
    ]
