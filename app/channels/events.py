"""Change events: their wire shape, and the in-process fan-out that hands them to every listener.

Events are built from change-log entries (app/domain/changes/feed.py), so an event exists if and only if
its change committed, and they leave in ``seq`` order. The fan-out is Litestar's ``ChannelsPlugin`` on its
in-memory backend: every process fans out the whole log to its own sockets, whichever process wrote it.

An event is ``{"event": "<entity>_<action>", "<entity>": <public representation>, "seq", "at",
"actor_id", "origin"}``: ``vm_created`` with ``"vm": {...}``, ``user_deleted`` with ``"user": {...}``;
``seq`` is the change's place in the log, ``origin`` names the process that delivered it. Each entity's
frame is an instance of the message struct the composition root gives for it (the struct the AsyncAPI
document describes), so a key the struct does not declare, or one it lacks, fails the frame's build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec
from litestar.channels import ChannelsPlugin

from app.metrics import EVENTS_PUBLISHED

VMS_CHANNEL = "vms"
USERS_CHANNEL = "users"
# Internal: ids of ended sign-in sessions, so every worker closes the sockets opened in them.
REVOCATIONS_CHANNEL = "revocations"

_encoder = msgspec.json.Encoder()


class EventFanout:
    """Builds event frames and publishes them to this process's listeners of their entity's channel."""

    def __init__(
        self,
        channels: ChannelsPlugin,
        routes: Mapping[str, str],
        messages: Mapping[str, type[msgspec.Struct]],
    ) -> None:
        """``routes``: the channel of each entity; ``messages``: the struct each entity's frame is."""
        self._channels = channels
        self._routes = dict(routes)
        self._messages = dict(messages)
        self._published = {channel: EVENTS_PUBLISHED.labels(channel) for channel in self._routes.values()}
        self.origin = f"{os.uname().nodename}:{os.getpid()}"

    def frame(
        self, *, seq: int, at: datetime, entity: str, action: str, actor_id: int | None, representation: Any
    ) -> bytes:
        """One event as sent. ``representation`` is a struct, or ``msgspec.Raw`` JSON from the log (a
        struct's constructor does not check types, and the encoder writes ``Raw`` as it is)."""
        message = self._messages[entity](
            event=f"{entity}_{action}",
            seq=seq,
            at=at,
            actor_id=actor_id,
            origin=self.origin,
            **{entity: representation},
        )
        return _encoder.encode(message)

    def publish(self, entity: str, frame: bytes) -> None:
        channel = self._routes.get(entity)
        if channel is not None:
            self._channels.publish(frame, channels=[channel])
            self._published[channel].inc()

    def session_ended(self, session_id: int) -> None:
        self._channels.publish(session_frame(session_id), channels=[REVOCATIONS_CHANNEL])


def session_frame(session_id: int) -> bytes:
    return _encoder.encode({"sid": session_id})
