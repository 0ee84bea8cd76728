"""JWT authentication: Litestar's middleware with the refusals VMS answers, the token cache, the OpenAPI
scheme, and token issue.

Who the subject of a token is, and whether it is still good, is decided by the handler the auth domain
passes in (``retrieve_user``); the refusals are in :mod:`app.security.refusals`."""

from __future__ import annotations

import hmac
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware.authentication import AuthenticationResult
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token

from app.http.errors import websocket_fault_close
from app.security.refusals import (
    AUTH_OPTIONAL,
    SCRAPE_TOKEN,
    SCRAPER,
    TOKEN_EXPIRED,
    TOKEN_MALFORMED,
    TOKEN_MISSING,
    TOKEN_REVOKED,
    refuse_unauthenticated,
)

JWT_ALGORITHM = "HS256"
RetrieveUser = Callable[[Token, ASGIConnection[Any, Any, Any, Any]], Awaitable[Any]]
"""The caller a verified token stands for, or None when it no longer counts (the auth domain decides)."""


class VMSAuthenticationMiddleware(JWTAuthenticationMiddleware):
    """Litestar's JWT middleware, plus what it lacks.

    - WebSocket clients in browsers cannot set headers, so ``?token=`` is accepted on WebSocket routes.
    - Routes marked ``auth_optional`` (self sign-up) also serve callers without a token.
    - A route whose ``scrape_token`` option is set (``/metrics``) also takes that static bearer token,
      compared in constant time; the caller is then no user, and ``auth`` is :data:`SCRAPER`.
    - A 401 says why (missing, malformed, expired, revoked) and carries RFC 6750's ``WWW-Authenticate``;
      on a WebSocket it is close code 4401 (see :func:`app.http.ws_close.accept_before_close`).
    - Verified tokens are remembered by their exact text: a dashboard sends the same token with every
      request, and verifying it again (base64, JSON, HMAC, claims) was a sixth of a read's CPU time. The
      expiry is still checked on every use, and so are the session and the user's current token version.
    """

    _VERIFIED_CACHE_SIZE = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._verified: OrderedDict[str, Token] = OrderedDict()

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        header = connection.headers.get(self.auth_header, "")
        scheme, _, encoded = header.partition(" ")
        if header and scheme.lower() != "bearer":
            refuse_unauthenticated(connection, "Authorization must use the Bearer scheme", presented=False)
        if not encoded and connection.scope["type"] == "websocket":
            encoded = connection.query_params.get("token", "")
        if not encoded:
            if connection.route_handler.opt.get(AUTH_OPTIONAL):
                return AuthenticationResult(user=None, auth=None)
            refuse_unauthenticated(connection, TOKEN_MISSING, presented=False)
        scrape_token = connection.route_handler.opt.get(SCRAPE_TOKEN)
        if scrape_token and hmac.compare_digest(encoded.strip().encode(), scrape_token.encode()):
            return AuthenticationResult(user=None, auth=SCRAPER)
        return await self.authenticate_token(encoded_token=encoded.strip(), connection=connection)

    def _verify(self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]) -> Token:
        token = self._verified.get(encoded_token)
        if token is None:
            try:
                token = self.token_cls.decode(
                    encoded_token=encoded_token,
                    secret=self.token_secret,
                    algorithm=self.algorithm,
                    audience=self.token_audience,
                    issuer=self.token_issuer,
                    require_claims=self.require_claims,
                    verify_exp=self.verify_expiry,
                    verify_nbf=self.verify_not_before,
                    strict_audience=self.strict_audience,
                )
            except NotAuthorizedException as exc:
                # Litestar says "Invalid token" for every failure; PyJWT's cause tells an expiry apart.
                expired = isinstance(exc.__cause__, jwt.ExpiredSignatureError)
                reason = TOKEN_EXPIRED if expired else TOKEN_MALFORMED
                refuse_unauthenticated(connection, reason, presented=True)
            self._verified[encoded_token] = token
            if len(self._verified) > self._VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        elif token.exp <= datetime.now(UTC):
            del self._verified[encoded_token]
            refuse_unauthenticated(connection, TOKEN_EXPIRED, presented=True)
        return token

    async def authenticate_token(
        self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = self._verify(encoded_token, connection)
        try:
            user = await self.retrieve_user_handler(token, connection)
        except Exception as exc:
            # Over HTTP a database fault reaches the 503 handler; a WebSocket gets a close that says so.
            websocket = connection.scope["type"] == "websocket"
            closing = websocket_fault_close(connection, exc) if websocket else None
            if closing is None:
                raise
            raise closing from None
        if not user:
            refuse_unauthenticated(connection, TOKEN_REVOKED, presented=True)
        return AuthenticationResult(user=user, auth=token)


@dataclass
class VMSJWTAuth(JWTAuth[Any, Token]):
    """JWT auth whose OpenAPI scheme is the OAuth2 password flow, so the docs page can sign in."""

    token_url: str = "/login"  # noqa: S105  (a path, not a secret)

    @property
    def openapi_components(self) -> Components:
        return Components(
            security_schemes={
                self.openapi_security_scheme_name: SecurityScheme(
                    type="oauth2",
                    description=self.description,
                    flows=OAuthFlows(password=OAuthFlow(token_url=self.token_url, scopes={})),
                )
            }
        )


@dataclass
class TokenService:
    """Issues tokens and answers whether a presented one is still good."""

    auth: VMSJWTAuth
    ttl: timedelta
    issuer: str
    audience: str

    def issue(self, user_id: int, token_version: int, session_id: int) -> str:
        """An access token for a user in the sign-in session ``session_id`` (claim ``extras.sid``), under the
        user's current token version (claim ``extras.ver``)."""
        return self.auth.create_token(
            identifier=str(user_id),
            token_expiration=self.ttl,
            token_issuer=self.issuer,
            token_audience=self.audience,
            token_unique_jwt_id=uuid.uuid4().hex,
            token_extras={"ver": token_version, "sid": session_id},
        )

    def verify(self, encoded_token: str) -> Token | None:
        """The claims of a token this service issued and that has not expired, or None.

        Only the signature and claims: whether its session is still live is the caller's question."""
        auth = self.auth
        try:
            return Token.decode(
                encoded_token=encoded_token,
                secret=auth.token_secret,
                algorithm=auth.algorithm,
                audience=auth.accepted_audiences,
                issuer=auth.accepted_issuers,
                require_claims=auth.require_claims,
                verify_exp=True,
                strict_audience=auth.strict_audience,
            )
        except NotAuthorizedException:
            return None


def session_id_of(token: Token) -> int | None:
    """The sign-in session a token belongs to; None for a token without one (never accepted)."""
    sid = token.extras.get("sid")
    return sid if isinstance(sid, int) and not isinstance(sid, bool) and 0 < sid < 2**63 else None


def create_jwt_auth(
    *,
    secret: str,
    issuer: str,
    audience: str,
    ttl: timedelta,
    retrieve_user: RetrieveUser,
    exclude: list[str],
) -> VMSJWTAuth:
    return VMSJWTAuth(
        token_secret=secret,
        retrieve_user_handler=retrieve_user,
        algorithm=JWT_ALGORITHM,
        accepted_issuers=[issuer],
        accepted_audiences=[audience],
        strict_audience=True,
        require_claims=["exp", "iat", "sub", "jti", "iss", "aud"],
        default_token_expiration=ttl,
        authentication_middleware_class=VMSAuthenticationMiddleware,
        exclude=exclude,
        openapi_security_scheme_name="OAuth2PasswordBearer",
        description="Bearer JWT from POST /login (JSON or OAuth2 password form).",
    )
