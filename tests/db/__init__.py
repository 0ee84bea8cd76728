"""Tests of app/db: the engine, the migrations runner, transactions."""
