"""Changes to the VM inventory on Advanced Alchemy's repository service; reads are in :mod:`.reads`.

Each write reports its change to its transaction (app/db/transactions.py); what follows from it (the read
cache, the events) is subscribed to that seam by the composition root.
"""

from __future__ import annotations

from typing import Any

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar.exceptions import ClientException, NotFoundException
from litestar.status_codes import HTTP_412_PRECONDITION_FAILED
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from app.db.transactions import Change, WriteGate
from app.domain.users.models import User
from app.domain.vms.models import VM_ENTITY, VirtualMachine
from app.domain.vms.reads import etag_of, to_read
from app.domain.vms.schemas import VMCreate, VMUpdate
from app.http.conditional import if_match_allows


class PreconditionFailedException(ClientException):
    status_code = HTTP_412_PRECONDITION_FAILED


def _check_precondition(if_match: str | None, vm: VirtualMachine) -> None:
    if not if_match_allows(if_match, etag_of(vm)):
        raise PreconditionFailedException(f"VM {vm.id} has changed: its ETag is {etag_of(vm)}")


class VMRepository(SQLAlchemyAsyncRepository[VirtualMachine]):
    model_type = VirtualMachine


class VMService(SQLAlchemyAsyncRepositoryService[VirtualMachine, VMRepository]):
    repository_type = VMRepository

    def __init__(self, session: AsyncSession, write_gate: WriteGate, **kwargs: Any) -> None:
        super().__init__(session=session, **kwargs)
        self.write_gate = write_gate

    async def create_vm(self, data: VMCreate, actor: User) -> VirtualMachine:
        async with self.write_gate.transaction(self.repository.session) as transaction:
            # Every column is known after the INSERT (ids come back with it): no refresh round trip.
            vm = await self.repository.add(VirtualMachine(**msgspec.structs.asdict(data)), auto_refresh=False)
            transaction.record(Change(VM_ENTITY, "created", vm.id, after=to_read(vm), actor_id=actor.id))
        return vm

    async def update_vm(
        self, vm_id: int, data: VMUpdate, actor: User, if_match: str | None
    ) -> VirtualMachine:
        async with self.write_gate.transaction(self.repository.session) as transaction:
            vm = await self._get(vm_id)
            _check_precondition(if_match, vm)
            before = to_read(vm)
            for field, value in data.changes().items():
                setattr(vm, field, value)
            try:
                await self.repository.session.flush()
            except StaleDataError as exc:
                # Another transaction updated the row between our read and our write (PostgreSQL).
                raise PreconditionFailedException(f"VM {vm_id} was changed concurrently; retry") from exc
            after = to_read(vm)
            if after != before:  # nothing changed, nothing to record (the ETag and updated_at stay)
                transaction.record(
                    Change(VM_ENTITY, "updated", vm_id, before=before, after=after, actor_id=actor.id)
                )
        return vm

    async def delete_vm(self, vm_id: int, actor: User, if_match: str | None = None) -> None:
        async with self.write_gate.transaction(self.repository.session) as transaction:
            vm = await self._get(vm_id)
            _check_precondition(if_match, vm)
            before = to_read(vm)
            await self.repository.session.delete(vm)
            await self.repository.session.flush()
            transaction.record(Change(VM_ENTITY, "deleted", vm_id, before=before, actor_id=actor.id))

    async def _get(self, vm_id: int) -> VirtualMachine:
        # No FOR UPDATE: the version column makes a concurrent change fail the UPDATE (StaleDataError).
        vm = await self.repository.get_one_or_none(id=vm_id)
        if vm is None:
            raise NotFoundException(f"VM {vm_id} not found")
        return vm
