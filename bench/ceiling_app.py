"""The ceiling: a bare Litestar app answering ``GET /vms/{id}`` with the same JSON from memory.

Served by the same server with the same options as VMS, it shows what the framework and server alone
cost on this machine, so each VMS scenario can be read as a fraction of it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from litestar import Litestar, get

from app.domain.vms.schemas import VMRead

NOW = datetime.now(UTC)
VMS = {
    vm_id: VMRead(
        id=vm_id,
        name=f"vm-{vm_id}",
        cores=4,
        ram=8192,
        disk=100,
        os="Debian 12",
        status="running",
        created_at=NOW,
        updated_at=NOW,
    )
    for vm_id in range(1, 10_001)
}


@get("/vms/{vm_id:int}", sync_to_thread=False)
def get_vm(vm_id: int) -> VMRead:
    return VMS[vm_id]


def create_app() -> Litestar:
    return Litestar([get_vm], openapi_config=None)
