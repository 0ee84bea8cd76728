from __future__ import annotations

from typing import Final, Literal, get_args

from advanced_alchemy.base import BigIntAuditBase
from sqlalchemy import CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

# The one definition of the statuses: the wire schemas, the filters and the CHECK constraint all use it.
VMStatus = Literal["provisioning", "running", "stopped", "paused", "error"]
VM_STATUSES: Final[tuple[VMStatus, ...]] = get_args(VMStatus)


# The name of this entity in the changes its writes report (app/db/transactions.py).
VM_ENTITY: Final = "vm"


class VirtualMachine(BigIntAuditBase):
    __tablename__ = "virtual_machine"
    __table_args__ = (
        CheckConstraint("status IN (" + ", ".join(f"'{s}'" for s in VM_STATUSES) + ")", name="status"),
        # Ids are never reused, so an ETag names one version of one VM for the life of the database.
        {"sqlite_autoincrement": True},
    )

    name: Mapped[str] = mapped_column(String(100), index=True)
    cores: Mapped[int] = mapped_column(Integer)
    ram: Mapped[int] = mapped_column(Integer)  # MB
    disk: Mapped[int] = mapped_column(Integer)  # GB
    os: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    # Optimistic concurrency: UPDATE ... WHERE version = :seen, the source of the ETag.
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
