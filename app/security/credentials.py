"""The credential rules shared by the API schemas and the start-up settings check.

Infrastructure, so both ``app/config.py`` and the users domain import it without a cycle: an
administrador configured through ``VMS_ADMIN_*`` must obey the same policy as one created through the API.
"""

from __future__ import annotations

import re

MIN_PASSWORD_CHARS = 8
# bcrypt only reads 72 bytes; a longer password would be silently truncated, so it is refused.
MAX_PASSWORD_BYTES = 72
PASSWORD_POLICY = f"{MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} UTF-8 bytes"

MIN_EMAIL_CHARS = 3
MAX_EMAIL_CHARS = 254
# Deliberately simple: one @, no spaces, a dot in the domain. Deliverability is not our business.
# Spelled out rather than \s, which means different things in Python and in JSON Schema regexes.
EMAIL_PATTERN = r"^[^@ \t\n\r\f\v\x00]+@[^@ \t\n\r\f\v\x00]+\.[^@ \t\n\r\f\v\x00]+$"


def password_problem(password: str) -> str | None:
    """Why this password breaks the policy, in words, or None; never repeats the password."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"must be {PASSWORD_POLICY} (got {len(password)} characters)"
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return f"must be {PASSWORD_POLICY} (got {len(password.encode())} bytes)"
    return None


def email_problem(email: str) -> str | None:
    if not MIN_EMAIL_CHARS <= len(email) <= MAX_EMAIL_CHARS or not re.fullmatch(EMAIL_PATTERN, email):
        return f"must be an email address such as admin@example.com (got {email!r})"
    return None
