"""Change events: their wire shape, and the one place that publishes them.

The composition root subscribes :meth:`EventPublisher.publish` to the write path (app/db/transactions.py),
which calls it only once a transaction has committed, in commit order, so a rolled-back write publishes
nothing. Delivery to sockets is Litestar's ``ChannelsPlugin`` (in-memory, or Redis across workers).

An event is ``{"event": "<entity>_<action>", "<entity>": <public representation>, "seq", "at",
"actor_id", "origin"}``: ``vm_created`` with ``"vm": {...}``, ``user_deleted`` with ``"user": {...}``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import msgspec
from litestar.channels import ChannelsPlugin

from app.db.transactions import Change

VMS_CHANNEL = "vms"
USERS_CHANNEL = "users"
# Internal: ids of sign-in sessions ended by /logout, so every worker closes the sockets opened in them.
REVOCATIONS_CHANNEL = "revocations"

_encoder = msgspec.json.Encoder()


class EventPublisher:
    """Builds events from committed changes and hands them to the channels plugin.

    ``routes`` maps each published entity to its channel; changes to other entities publish nothing.
    ``seq`` increases by one per event published by this process; ``origin`` names the process, so with
    several workers a listener can tell the sources apart (events from one origin arrive in its order).
    """

    def __init__(self, channels: ChannelsPlugin, routes: Mapping[str, str]) -> None:
        self._channels = channels
        self._routes = dict(routes)
        self._seq = itertools.count(1)
        self.origin = f"{os.uname().nodename}:{os.getpid()}"

    def publish(self, changes: Sequence[Change]) -> None:
        for change in changes:
            channel = self._routes.get(change.entity)
            if channel is None:
                continue
            # The sequence number is taken at publish time (after commit), so it follows commit order.
            message = {
                "event": f"{change.entity}_{change.action}",
                change.entity: change.current,
                "seq": next(self._seq),
                "at": datetime.now(UTC),
                "actor_id": change.actor_id,
                "origin": self.origin,
            }
            self._channels.publish(_encoder.encode(message), channels=[channel])

    def session_ended(self, session_id: int) -> None:
        self._channels.publish(_encoder.encode({"sid": session_id}), channels=[REVOCATIONS_CHANNEL])
