"""Tests of app/domain/users: the user API."""
