"""The VM table's write statements, and the rows they read and write as :class:`StoredVM`.

Core statements built once, so SQLAlchemy finds their compiled forms in its statement cache (see
:mod:`app.domain.vms.services` for why the writes are Core statements rather than the ORM).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.exceptions import ClientException
from litestar.status_codes import HTTP_412_PRECONDITION_FAILED
from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain.vms.models import VirtualMachine
from app.domain.vms.reads import VM_BY_ID, etag_for
from app.domain.vms.schemas import VMRead, VMUpdate
from app.http.conditional import if_match_allows

VM_TABLE: Table = VirtualMachine.__table__  # type: ignore[assignment]
# The new id comes from the cursor's lastrowid on SQLite and from an implicit RETURNING on PostgreSQL;
# several creations at once go in through app/db/multirow.py.
INSERT = insert(VM_TABLE)
# Every field is set on update, changed or not: one statement, compiled once (building a statement for
# the changed columns on each request was a tenth of PATCH's CPU), and the row is rewritten anyway.
UPDATED = (*VMUpdate.__struct_fields__, "updated_at")
UPDATE = (
    update(VM_TABLE)
    .where(VM_TABLE.c.id == bindparam("vm_id"), VM_TABLE.c.version == bindparam("seen"))
    .values({name: bindparam(f"new_{name}") for name in (*UPDATED, "version")})
)
VMS_BY_IDS = select(*VM_BY_ID.selected_columns).where(VM_TABLE.c.id.in_(bindparam("ids", expanding=True)))
DELETE = delete(VM_TABLE).where(VM_TABLE.c.id == bindparam("vm_id"), VM_TABLE.c.version == bindparam("seen"))
# Without If-Match a delete needs no read first: the row it removed comes back with it (SQLite 3.35+ and
# PostgreSQL), one statement instead of two.
DELETE_RETURNING = (
    delete(VM_TABLE).where(VM_TABLE.c.id == bindparam("vm_id")).returning(*VM_BY_ID.selected_columns)
)


class PreconditionFailedException(ClientException):
    status_code = HTTP_412_PRECONDITION_FAILED


class StoredVM(msgspec.Struct, frozen=True):
    """A VM as a write left it: its public representation and the version its ETag names."""

    read: VMRead
    version: int

    @property
    def etag(self) -> str:
        return etag_for(self.read.id, self.version)


def stale(vm: StoredVM) -> PreconditionFailedException:
    return PreconditionFailedException(f"VM {vm.read.id} has changed: its ETag is {vm.etag}")


def check_precondition(if_match: str | None, vm: StoredVM) -> None:
    if not if_match_allows(if_match, vm.etag):
        raise stale(vm)


def overtaken(vm_id: int) -> PreconditionFailedException:
    # Another transaction changed the row between our read and our write (PostgreSQL; on SQLite the write
    # gate runs one write at a time, so only another process, such as the CLI, can get in between).
    return PreconditionFailedException(f"VM {vm_id} was changed concurrently; retry")


async def write_updates(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Each row's UPDATE names the version it read; one that matched no row was overtaken by another
    writer. Several rows go as one executemany where the driver counts the rows it matched across them
    (sqlite3 does, asyncpg does not: there each is its own statement, in the same transaction)."""
    if not rows:
        return
    if len(rows) > 1 and connection.dialect.supports_sane_multi_rowcount:
        if (await connection.execute(UPDATE, rows)).rowcount != len(rows):
            raise overtaken(rows[0]["vm_id"])  # some row of the batch: the batch is retried one by one
        return
    for row in rows:
        if (await connection.execute(UPDATE, row)).rowcount != 1:
            raise overtaken(row["vm_id"])


def stored_vm(row: Any) -> StoredVM:
    """A row of VM_BY_ID's columns as a StoredVM."""
    values = row._asdict()
    version = values.pop("version")
    return StoredVM(read=VMRead(**values), version=version)
