"""The database: the engine and the one session configuration (:mod:`.engine`), SQLite's settings and
cheaper driver path (:mod:`.sqlite_tuning`, :mod:`.sqlite_fastpath`), pages of rows read in one statement
(:mod:`.pages`), several rows in one INSERT with their keys in order (:mod:`.multirow`), and the write
path that reports every change (:mod:`.transactions`)."""
