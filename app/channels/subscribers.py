"""A channels subscriber that is cut off, rather than silently losing events, when it falls behind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.channels.subscriber import Subscriber

from app.metrics import EVENTS_DROPPED


class CutOffSubscriber(Subscriber):
    """Bounded backlog; a full backlog calls the ``on_overflow`` callback instead of dropping events.

    Every listener must get every event in order, so a listener that cannot keep up is disconnected (it can
    reconnect and reload) instead of receiving a stream with holes. Its bounded queue also bounds the
    server's memory, and since the channels plugin only ever calls ``put_nowait``, it never slows the
    publisher or the other listeners.

    A subscriber can instead :meth:`handle_inline`: its callback then runs synchronously inside the plugin's
    distribution loop, before any other subscriber's task sees the event (used for access bookkeeping).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.overflowed = False
        self._on_overflow: Callable[[], None] | None = None
        self._inline: Callable[[bytes], None] | None = None

    def when_overflowed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when the backlog overflows; the subscriber accepts nothing after that."""
        self._on_overflow = callback
        if self.overflowed:
            callback()

    def handle_inline(self, callback: Callable[[bytes], None]) -> None:
        """Hand every event to ``callback`` at once, with no queue. ``callback`` must not block or raise."""
        self._inline = callback

    def put_nowait(self, item: bytes | None) -> bool:
        if self._inline is not None and item is not None:
            self._inline(item)
            return True
        if self.overflowed:
            EVENTS_DROPPED.inc()
            return False
        if super().put_nowait(item):
            return True
        self.overflowed = True
        EVENTS_DROPPED.inc()
        if self._on_overflow is not None:
            self._on_overflow()
        return False

    async def put(self, item: bytes | None) -> None:
        # The plugin puts the end-of-stream marker with ``put`` on unsubscribe; on a full queue that would
        # wait forever for a consumer that is gone, so make room first.
        # This reaches into ``Subscriber._queue`` on purpose: Litestar's Subscriber has no public way to
        # drop what is queued (only ``put``, ``put_nowait``, ``qsize`` and ``iter_events``, which waits for
        # items), and the drained items must be marked done so that ``stop(join=True)`` does not hang.
        if self._queue.full():
            while not self._queue.empty():
                self._queue.get_nowait()
                self._queue.task_done()
        self._queue.put_nowait(item)
