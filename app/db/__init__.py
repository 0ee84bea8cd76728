"""The database: the engine and the one session configuration (:mod:`.engine`), SQLite's settings and
cheaper driver path (:mod:`.sqlite_tuning`, :mod:`.sqlite_fastpath`), pages of rows read in one statement
(:mod:`.pages`), and the write path that reports every change (:mod:`.transactions`)."""
