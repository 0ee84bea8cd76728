"""Change events: their wire shape, and the one place that publishes them.

Services queue an event on their write's :class:`app.db.TransactionEnd`
(``end.after_commit(events.vm_event(...))``); :class:`app.db.WriteGate` runs it only once the transaction
has committed, in commit order, so a rolled-back write publishes nothing. Delivery to sockets is
Litestar's ``ChannelsPlugin`` (in-memory, or Redis across workers).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

import msgspec
from litestar.channels import ChannelsPlugin

from app.domain.users.schemas import UserRead
from app.domain.vms.schemas import VMRead

VMS_CHANNEL = "vms"
USERS_CHANNEL = "users"
# Internal: ids of sign-in sessions ended by /logout, so every worker closes the sockets opened in them.
REVOCATIONS_CHANNEL = "revocations"

VMEventName = Literal["vm_created", "vm_updated", "vm_deleted"]
UserEventName = Literal["user_created", "user_updated", "user_deleted"]


class VMEvent(msgspec.Struct, kw_only=True):
    event: VMEventName
    vm: VMRead
    seq: int
    at: datetime
    actor_id: int | None
    origin: str


class UserEvent(msgspec.Struct, kw_only=True):
    event: UserEventName
    user: UserRead
    seq: int
    at: datetime
    actor_id: int | None
    origin: str


_encoder = msgspec.json.Encoder()


class EventPublisher:
    """Builds events and hands them to the channels plugin after commit.

    ``seq`` increases by one per event published by this process; ``origin`` names the process, so with
    several workers a listener can tell the sources apart (events from one origin arrive in its order).
    """

    def __init__(self, channels: ChannelsPlugin) -> None:
        self._channels = channels
        self._seq = itertools.count(1)
        self.origin = f"{os.uname().nodename}:{os.getpid()}"

    def _publish(self, channel: str, build: Callable[[int, datetime], msgspec.Struct]) -> None:
        # The sequence number is taken at publish time (after commit), so it follows commit order.
        message = build(next(self._seq), datetime.now(UTC))
        self._channels.publish(_encoder.encode(message), channels=[channel])

    def vm_event(self, name: VMEventName, vm: VMRead, actor_id: int | None) -> Callable[[], None]:
        return lambda: self._publish(
            VMS_CHANNEL,
            lambda seq, at: VMEvent(event=name, vm=vm, seq=seq, at=at, actor_id=actor_id, origin=self.origin),
        )

    def user_event(self, name: UserEventName, user: UserRead, actor_id: int | None) -> Callable[[], None]:
        return lambda: self._publish(
            USERS_CHANNEL,
            lambda seq, at: UserEvent(
                event=name, user=user, seq=seq, at=at, actor_id=actor_id, origin=self.origin
            ),
        )

    def session_ended(self, session_id: int) -> None:
        self._channels.publish(_encoder.encode({"sid": session_id}), channels=[REVOCATIONS_CHANNEL])
