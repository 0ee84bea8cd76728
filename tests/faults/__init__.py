"""Faults of the database, its storage and Redis, on servers each test starts and stops itself."""
