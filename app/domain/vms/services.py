"""Changes to the VM inventory; reads are in :mod:`.reads`.

Each write reports its change to its transaction (app/db/transactions.py); what follows from it (the read
cache, the events) is subscribed to that seam by the composition root.

The writes are Core statements on a connection of their own, not Advanced Alchemy's repository service,
a session and the ORM unit of work: a VM has no relationships and every write touches one row whose
columns are all known in Python, so the flush machinery (identity map, state tracking, dependency
sorting, version-id bookkeeping) did nothing but cost CPU. It was 26% of the event loop's samples under
``POST /vms`` at 16 connections, building the repository service per request another 4%, and the
session itself (its creation, connection bookkeeping and commit) about 10% more; on one worker, writes
are bound by that CPU, not by SQLite (its thread held the GIL for 0.1% of the samples). See
docs/performance.md, "Write throughput". The optimistic-concurrency rule the ORM's version column gave
is kept by hand: an UPDATE or DELETE names the version it read, and one that matches no row was
overtaken by another writer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar.exceptions import NotFoundException
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.context import Source, request_id, write_source
from app.db.batching import Coalescer, each_alone_if_refused
from app.db.engine import core_connection
from app.db.multirow import insert_returning_keys
from app.db.transactions import Action, Change, Transaction, WriteGate
from app.domain.users.models import User
from app.domain.vms.models import VM_ENTITY
from app.domain.vms.reads import VM_BY_ID
from app.domain.vms.rows import (
    DELETE,
    DELETE_RETURNING,
    INSERT,
    UPDATED,
    VM_TABLE,
    VMS_BY_IDS,
    StoredVM,
    check_precondition,
    overtaken,
    stale,
    stored_vm,
    write_updates,
)
from app.domain.vms.schemas import VMCreate, VMRead, VMUpdate
from app.http.conditional import if_match_allows

# Writes per shared transaction at most: 16 concurrent writers rarely queue more than 15 behind a
# batch, and a bounded statement keeps SQLite's bound-parameter count and a batch's latency small.
MAX_BATCH = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class _Asked:
    """A write waiting for its batch, with what the change log records of the request that asked."""

    actor_id: int
    source: Source
    request_id: str | None

    @staticmethod
    def by(actor: User) -> dict[str, Any]:
        return {"actor_id": actor.id, "source": write_source.get(), "request_id": request_id.get()}

    def change(self, action: Action, vm_id: int, *, before: Any = None, after: Any = None) -> Change:
        return Change(
            VM_ENTITY,
            action,
            vm_id,
            before=before,
            after=after,
            actor_id=self.actor_id,
            source=self.source,
            request_id=self.request_id,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Creation(_Asked):
    data: VMCreate


@dataclass(frozen=True, slots=True, kw_only=True)
class _Update(_Asked):
    vm_id: int
    changes: dict[str, object]
    if_match: str | None


class VMService:
    """One per application: each write runs on a connection of its own (no session: see the module doc)."""

    def __init__(self, engine: AsyncEngine, write_gate: WriteGate, *, timeout_seconds: float) -> None:
        self.engine = engine
        self.write_gate = write_gate
        self.timeout_seconds = timeout_seconds
        self._creations = Coalescer(each_alone_if_refused(self._insert), max_batch=MAX_BATCH)
        self._updates = Coalescer(each_alone_if_refused(self._apply_updates), max_batch=MAX_BATCH)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[tuple[AsyncConnection, Transaction]]:
        async with (
            core_connection(self.engine, self.timeout_seconds) as connection,
            self.write_gate.transaction(connection) as transaction,
        ):
            yield connection, transaction

    async def create_vm(self, data: VMCreate, actor: User) -> StoredVM:
        """Creations made concurrently share one transaction (group commit: app/db/batching.py); each
        caller is answered after that commit, with its own VM."""
        return await self._creations.submit(_Creation(data=data, **_Asked.by(actor)))

    async def _insert(self, creations: Sequence[_Creation]) -> list[StoredVM]:
        async with self._write() as (connection, transaction):
            now = datetime.now(UTC)
            fields: list[dict[str, Any]] = [
                {**msgspec.structs.asdict(creation.data), "created_at": now, "updated_at": now}
                for creation in creations
            ]
            rows = [{**values, "version": 1} for values in fields]
            if len(rows) == 1:
                result = await connection.execute(INSERT, rows[0])
                ids: list[int] = list(result.inserted_primary_key or ())
            else:
                ids = await insert_returning_keys(connection, VM_TABLE, VM_TABLE.c.id, rows)
            created = [
                StoredVM(read=VMRead(id=vm_id, **values), version=1)
                for vm_id, values in zip(ids, fields, strict=True)
            ]
            for vm, creation in zip(created, creations, strict=True):
                transaction.record(creation.change("created", vm.read.id, after=vm.read))
        return created

    async def update_vm(self, vm_id: int, data: VMUpdate, actor: User, if_match: str | None) -> StoredVM:
        """Updates made concurrently share one transaction, as creations do; each is checked against the
        VM as the updates ahead of it in the batch left it."""
        update = _Update(vm_id=vm_id, changes=data.changes(), if_match=if_match, **_Asked.by(actor))
        return await self._updates.submit(update)

    async def _apply_updates(self, updates: Sequence[_Update]) -> list[StoredVM | Exception]:
        answers: list[StoredVM | Exception] = []
        async with self._write() as (connection, transaction):
            ids = sorted({update.vm_id for update in updates})
            current = {
                vm.read.id: vm for vm in map(stored_vm, await connection.execute(VMS_BY_IDS, {"ids": ids}))
            }
            now = datetime.now(UTC)
            rows: list[dict[str, Any]] = []
            for update in updates:
                vm = current.get(update.vm_id)
                if vm is None:
                    answers.append(NotFoundException(f"VM {update.vm_id} not found"))
                    continue
                if not if_match_allows(update.if_match, vm.etag):
                    answers.append(stale(vm))
                    continue
                changes = {
                    field: value
                    for field, value in update.changes.items()
                    if getattr(vm.read, field) != value
                }
                if not changes:  # nothing changed, nothing to record (the ETag and updated_at stay)
                    answers.append(vm)
                    continue
                changes["updated_at"] = now
                after = StoredVM(read=msgspec.structs.replace(vm.read, **changes), version=vm.version + 1)
                row = {f"new_{name}": getattr(after.read, name) for name in UPDATED}
                row.update(vm_id=vm.read.id, seen=vm.version, new_version=after.version)
                rows.append(row)
                transaction.record(update.change("updated", vm.read.id, before=vm.read, after=after.read))
                current[vm.read.id] = after  # the next update of this VM in the batch starts from here
                answers.append(after)
            await write_updates(connection, rows)
        return answers

    async def delete_vm(self, vm_id: int, actor: User, if_match: str | None = None) -> None:
        async with self._write() as (connection, transaction):
            if if_match is None:
                row = (await connection.execute(DELETE_RETURNING, {"vm_id": vm_id})).first()
                if row is None:
                    raise NotFoundException(f"VM {vm_id} not found")
                vm = stored_vm(row)
            else:
                vm = await self._get(connection, vm_id)
                check_precondition(if_match, vm)
                if (await connection.execute(DELETE, {"vm_id": vm_id, "seen": vm.version})).rowcount != 1:
                    raise overtaken(vm_id)
            transaction.record(Change(VM_ENTITY, "deleted", vm_id, before=vm.read, actor_id=actor.id))

    @staticmethod
    async def _get(connection: AsyncConnection, vm_id: int) -> StoredVM:
        # No FOR UPDATE: the version in the write's WHERE clause catches a concurrent change instead.
        row = (await connection.execute(VM_BY_ID, {"vm_id": vm_id})).first()
        if row is None:
            raise NotFoundException(f"VM {vm_id} not found")
        return stored_vm(row)
