"""The read side of the VM inventory: list pages, one VM by id, ETags, and the read cache, in one place.

``GET /vms/{id}`` is served from memory: a dashboard reads the same VMs over and over, and a read through
a session and the ORM cost about four times what the framework and server spend on the request itself
(see docs/performance.md). The first read of a VM runs one Core query and encodes the response; later
reads return those bytes until a change to that VM commits: the composition root subscribes
:meth:`VMReads.invalidate` to the write path's changes (app/db/transactions.py). When the cache is off
(several workers share the database, see :mod:`app.cache`) every read runs the query.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from advanced_alchemy.filters import StatementFilter
from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.cache import InvalidatedCache
from app.db.pages import columns_of, read_page
from app.domain.changes.services import LAST_SEQ
from app.domain.vms.models import VirtualMachine
from app.domain.vms.schemas import VMRead

# Built once: SQLAlchemy then finds its compiled form in the statement cache on every execution.
VM_BY_ID = select(*columns_of(VirtualMachine, VMRead), VirtualMachine.version).where(
    VirtualMachine.id == bindparam("vm_id")
)


def etag_for(vm_id: int, version: int) -> str:
    # Ids are never reused (AUTOINCREMENT since migration 0002), so the pair names one version of one VM
    # for the life of the database. The separator changed with that migration ("-" before): a tag written
    # for a VM deleted before the upgrade, whose id a new VM could then have taken, can never match.
    return f'"{vm_id}.{version}"'


class CachedVM(msgspec.Struct, frozen=True):
    body: bytes  # the JSON of VMRead, as sent
    etag: str


class VMReads(InvalidatedCache[int, CachedVM]):
    """Answers every read of VMs; caches each VM's encoded response (entries invalidated on change)."""

    def __init__(self, engine: AsyncEngine, *, enabled: bool, max_entries: int) -> None:
        super().__init__("vms", enabled=enabled, max_entries=max_entries)
        self.engine = engine

    async def one(self, vm_id: int) -> CachedVM | None:
        if (cached := self.get(vm_id)) is not None:
            return cached
        generation = self.generation
        async with self.engine.connect() as connection:
            row = (await connection.execute(VM_BY_ID, {"vm_id": vm_id})).first()
        if row is None:
            return None
        values = row._asdict()
        etag = etag_for(vm_id, values.pop("version"))
        cached = CachedVM(body=msgspec.json.encode(VMRead(**values)), etag=etag)
        self.put(vm_id, cached, generation)
        return cached

    @staticmethod
    async def page(
        session: AsyncSession, filters: Sequence[StatementFilter]
    ) -> tuple[list[VMRead], int, int]:
        """One page of VMs, the number matching ignoring pagination (see app/db/pages.py), and the seq of
        the last change the page reflects."""
        return await read_page(session, VirtualMachine, VMRead, filters, also=LAST_SEQ)
