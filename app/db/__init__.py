"""The database: the engine and its SQLite tuning (:mod:`.engine`, :mod:`.sqlite_fastpath`), pages of rows
read in one statement (:mod:`.pages`), and the write path that reports every change (:mod:`.transactions`)."""
