"""The messages ``/ws/vms`` and ``/ws/users`` send, and the one they accept, as structs: the one
description of each frame.

:meth:`app.channels.events.EventFanout.frame` builds every frame as one of these (the composition root
gives it the struct of each entity), so a frame has exactly their keys; the AsyncAPI document
(app/domain/realtime/asyncapi.py) takes its payload schemas from these structs, and the realtime tests
decode every frame they receive with them, so the document, the frames and the structs cannot drift apart.
Unknown fields are forbidden so that a key added to the frame and not here fails those tests.

:class:`TokenRenewal` is the one frame a client may send: the realtime controller decodes it with this
struct, and the document publishes its schema as the channels' receive operation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from app.domain.users.schemas import UserRead
from app.domain.vms.schemas import VMRead

Seq = Annotated[
    int, Meta(ge=1, description="The change's place in the change log: resume with `?since=<seq>`.")
]
At = Annotated[datetime, Meta(description="When the change committed (UTC, ISO 8601 with an offset).")]
ActorId = Annotated[
    int | None, Meta(description="The user who made the change; null for the CLI and the start-up bootstrap.")
]
Origin = Annotated[str, Meta(description="The process that delivered the event (`host:pid`).")]


class VMEvent(Struct, kw_only=True, forbid_unknown_fields=True):
    """A VM was created, updated or deleted; `vm` is its representation (the last one, once deleted)."""

    event: Literal["vm_created", "vm_updated", "vm_deleted"]
    vm: VMRead
    seq: Seq
    at: At
    actor_id: ActorId
    origin: Origin


class UserEvent(Struct, kw_only=True, forbid_unknown_fields=True):
    """A user was created, updated or deleted; `user` is its representation (never a password)."""

    event: Literal["user_created", "user_updated", "user_deleted"]
    user: UserRead
    seq: Seq
    at: At
    actor_id: ActorId
    origin: Origin


class TokenRenewal(Struct, forbid_unknown_fields=True):
    """A fresh access token of this socket's session: the socket then lives until that token expires."""

    # Sent before the socket's token expires, with one from POST /login/refresh. A token of another
    # session or user, an invalid one, or a key besides `token` closes the socket with 1008.

    token: Annotated[
        str, Meta(max_length=4096, description="An access token of this socket's session (a JWT).")
    ]
