"""Fan-out through Litestar's channels: publishing change events (:mod:`.events`), the Redis backend under
a namespace (:mod:`.redis`), and the bounded subscriber every listener gets (:mod:`.subscribers`)."""
