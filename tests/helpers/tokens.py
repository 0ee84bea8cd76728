"""Forged and dissected tokens: what an attacker who knows (or does not know) the JWT secret can send.

Nothing here reaches into the app's internals except the JWT secret, which a forger needs to sign a token
the app would otherwise accept.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import jwt

from app.config import Settings, jwt_secret
from tests.helpers.accounts import Account
from tests.helpers.servers import LiveServer, settings_of


def claims_for(
    settings: Settings, user_id: int | str, *, version: int = 0, session: int | None = None, ttl: int = 600
) -> dict[str, Any]:
    """The claims POST /login puts in a token (see app.security.jwt.TokenService.issue)."""
    now = int(time.time())
    return {
        "sub": str(user_id),
        "iat": now,
        "exp": now + ttl,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": uuid.uuid4().hex,
        "extras": {"ver": version, "sid": session},
    }


def forge(
    settings: Settings,
    user_id: int | str,
    *,
    version: int = 0,
    session: int | None = None,
    key: str | None = None,
    algorithm: str = "HS256",
    drop: Iterable[str] = (),
    **overrides: Any,
) -> str:
    """A token signed with the app's own secret (or ``key``), with claims dropped or overridden."""
    claims = claims_for(settings, user_id, version=version, session=session)
    claims.update(overrides)
    for name in drop:
        claims.pop(name, None)
    return jwt.encode(claims, key if key is not None else jwt_secret(settings), algorithm=algorithm)


def version_of(token: str) -> int:
    """The token version a real token was issued under (what ``ver`` must say for that user now)."""
    return int(split(token)[1]["extras"]["ver"])


def session_of(token: str) -> int:
    """The sign-in session a real token belongs to (what ``sid`` must say)."""
    return int(split(token)[1]["extras"]["sid"])


def forge_as(settings: Settings, account: Account, **kwargs: Any) -> str:
    """A token for ``account`` that differs from a real one only in what ``kwargs`` change."""
    kwargs.setdefault("version", version_of(account.token))
    kwargs.setdefault("session", session_of(account.token))
    return forge(settings, account.id, **kwargs)


def forge_token(
    server: LiveServer, valid_token: str, *, expires_in: timedelta, secret: str | None = None
) -> str:
    """A copy of ``valid_token`` (same user, token version, session, issuer, audience) with another expiry
    and id, signed with the server's secret or ``secret``. ``expires_in`` may be negative."""
    settings = settings_of(server)
    claims = jwt.decode(  # the copy is of a token the server really issued
        valid_token,
        jwt_secret(settings),
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    now = int(time.time())
    return forge(
        settings,
        claims["sub"],
        version=claims["extras"]["ver"],
        session=claims["extras"]["sid"],
        key=secret,
        iat=now - 1,
        exp=now + int(expires_in.total_seconds()),
    )


def sign_claims(settings: Settings, claims: dict[str, Any]) -> str:
    """Sign claims as they are, even ones PyJWT's encoder refuses to produce (``"iss": null``)."""
    return jwt.api_jws.encode(json.dumps(claims).encode(), jwt_secret(settings), algorithm="HS256")


def resign(settings: Settings, token: str, **changes: Any) -> str:
    """``token``'s own claims with ``changes``, signed again with the app's secret."""
    return sign_claims(settings, {**split(token)[1], **changes})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    """A JWS built by hand: any header (``alg: none``), any claims, any signature segment."""
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), signature],
    )


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, claims, signature = token.split(".")

    def load(segment: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        return loaded

    return load(header), load(claims), signature
