"""Tests of app/domain: one package per domain (auth, users, vms, realtime), as in app/domain/."""
