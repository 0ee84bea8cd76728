"""Tests of app/domain/auth: sign-in, tokens, logout and revocation."""
