"""In-process caches kept exact by invalidating after every commit, for the single-process deployment.

One process that makes every write (the embedded SQLite default, or one worker without Redis) can cache
rows safely: every change goes through a service that calls :meth:`InvalidatedCache.invalidate` right
after its commit. With several workers (Redis configured) a change made by another worker would leave a
stale entry here, so the caches are off and every request reads the database.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from app.metrics import CACHE_LOOKUPS

K = TypeVar("K")
V = TypeVar("V")


class InvalidatedCache(Generic[K, V]):
    def __init__(self, name: str, *, enabled: bool, max_entries: int) -> None:
        self.enabled = enabled and max_entries > 0
        self.max_entries = max_entries
        self._entries: dict[K, V] = {}
        # Bumped by every invalidation: a row read before a change committed must not be cached after it.
        self._generation = 0
        self._hit = CACHE_LOOKUPS.labels(name, "hit")
        self._miss = CACHE_LOOKUPS.labels(name, "miss")

    @property
    def generation(self) -> int:
        """Take this before reading the database; hand it back to :meth:`put`."""
        return self._generation

    def get(self, key: K) -> V | None:
        if not self.enabled:
            return None
        found = self._entries.get(key)
        (self._miss if found is None else self._hit).inc()
        return found

    def put(self, key: K, value: V, generation: int) -> None:
        """Remember a value read from the database, unless a change committed since ``generation``."""
        if not self.enabled or generation != self._generation:
            return
        self._entries[key] = value
        if len(self._entries) > self.max_entries:
            # Oldest insertion first (dicts keep insertion order): cheap, and good enough to bound memory.
            del self._entries[next(iter(self._entries))]

    def invalidate(self, key: K) -> None:
        self._generation += 1
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
