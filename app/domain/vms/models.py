from __future__ import annotations

from advanced_alchemy.base import BigIntAuditBase
from sqlalchemy import CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

VM_STATUSES = ("provisioning", "running", "stopped", "paused", "error")


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
