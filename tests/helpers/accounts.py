"""Accounts and VMs over the API: sign in, create users and VMs, read ``/users/me``, count a collection."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tests.helpers.assertions import expect
from tests.helpers.environment import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.helpers.servers import LiveServer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Account:
    id: int
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


async def login(client: Any, email: str, password: str, *, base_url: str = "") -> str:
    """The access token POST /login returns (``base_url`` for a client that has none of its own)."""
    response = await client.post(f"{base_url}/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def get_me(client: Any, token: str) -> Any:
    """The response of GET /users/me with ``token``."""
    return await client.get("/users/me", headers=bearer(token))


async def sign_in_admin(client: Any) -> Account:
    """The administrador created at start from VMS_ADMIN_EMAIL / VMS_ADMIN_PASSWORD."""
    token = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    me = await get_me(client, token)
    assert me.status_code == 200, me.text
    return Account(id=me.json()["id"], email=ADMIN_EMAIL, password=ADMIN_PASSWORD, token=token)


async def admin_account(server: LiveServer) -> Account:
    return await sign_in_admin(server.http)


async def create_account(
    client: Any, admin: Account | None, *, rol: str = "cliente", name: str = ""
) -> Account:
    email = f"{rol}-{uuid.uuid4().hex[:8]}@example.com"
    password = f"pw-{uuid.uuid4().hex[:12]}"
    body = {"name": name or email.split("@")[0], "email": email, "password": password, "rol": rol}
    response = await client.post("/users", json=body, headers=admin.headers if admin else {})
    assert response.status_code == 201, response.text
    return Account(
        id=response.json()["id"], email=email, password=password, token=await login(client, email, password)
    )


async def can_login(client: Any, email: str, password: str) -> bool:
    response = await client.post("/login", json={"email": email, "password": password})
    assert response.status_code in {200, 401}, response.text
    return response.status_code == 200


VM_BODY = {"name": "web-01", "cores": 2, "ram": 2048, "disk": 40, "os": "Debian 12", "status": "running"}


async def create_vm(client: Any, admin: Account, **fields: Any) -> dict[str, Any]:
    response = await client.post("/vms", json={**VM_BODY, **fields}, headers=admin.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def total_count(client: Any, path: str, headers: dict[str, str]) -> int:
    """The collection's ``X-Total-Count``: proves whether a refused request stored anything."""
    response = await client.get(path, headers=headers, params={"limit": 1})
    expect(response, 200)
    return int(response.headers["X-Total-Count"])
