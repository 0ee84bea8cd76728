from __future__ import annotations

from typing import Any

from tests.helpers import Account, create_vm


async def test_admin_can_create_and_read_a_vm(client: Any, admin: Account) -> None:
    vm = await create_vm(client, admin)
    response = await client.get(f"/vms/{vm['id']}", headers=admin.headers)
    assert response.status_code == 200
    assert response.json() == vm
