"""A channels subscriber that is cut off, rather than silently losing events, when it falls behind."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.channels.subscriber import Subscriber


class CutOffSubscriber(Subscriber):
    """Bounded backlog; a full backlog marks the subscriber ``overflowed`` instead of dropping events.

    Every listener must get every event in order, so a listener that cannot keep up is disconnected (it can
    reconnect and reload) instead of receiving a stream with holes. Its bounded queue also bounds the
    server's memory, and since the channels plugin only ever calls ``put_nowait``, it never slows the
    publisher or the other listeners.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.overflowed = asyncio.Event()

    def put_nowait(self, item: bytes | None) -> bool:
        if self.overflowed.is_set():
            return False
        accepted = super().put_nowait(item)
        if not accepted:
            self.overflowed.set()
        return accepted

    async def put(self, item: bytes | None) -> None:
        # The plugin puts the end-of-stream marker with ``put`` on unsubscribe; on a full queue that would
        # wait forever for a consumer that is gone, so make room first.
        if self._queue.full():
            while not self._queue.empty():
                self._queue.get_nowait()
                self._queue.task_done()
        self._queue.put_nowait(item)
