"""Wire shapes for virtual machines, with the bounds every input must respect."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

from msgspec import UNSET, Meta, Struct, UnsetType

from app.domain.vms.models import VMStatus
from app.http.validation import visible_text

VMName = Annotated[str, visible_text("web-01")]
OSName = Annotated[str, visible_text("Debian 12")]
Cores = Annotated[int, Meta(ge=1, le=1024, examples=[4])]
RamMB = Annotated[int, Meta(ge=1, le=16_777_216, description="RAM in MB", examples=[8192])]
DiskGB = Annotated[int, Meta(ge=1, le=1_048_576, description="Disk in GB", examples=[100])]


class VMRead(Struct, kw_only=True):
    id: int
    name: str
    cores: int
    ram: int
    disk: int
    os: str
    status: VMStatus
    created_at: datetime
    updated_at: datetime


class VMCreate(Struct, kw_only=True):
    # Clients PUT back what they GET: its other fields are accepted and ignored (app/http/validation.py).
    representation: ClassVar[type[Struct]] = VMRead

    name: VMName
    cores: Cores
    ram: RamMB
    disk: DiskGB
    os: OSName
    status: VMStatus = "provisioning"


class VMUpdate(Struct, kw_only=True, omit_defaults=True):
    representation: ClassVar[type[Struct]] = VMRead

    name: VMName | UnsetType = UNSET
    cores: Cores | UnsetType = UNSET
    ram: RamMB | UnsetType = UNSET
    disk: DiskGB | UnsetType = UNSET
    os: OSName | UnsetType = UNSET
    status: VMStatus | UnsetType = UNSET

    def changes(self) -> dict[str, object]:
        return {name: value for name in self.__struct_fields__ if (value := getattr(self, name)) is not UNSET}
