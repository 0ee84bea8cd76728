"""Who is calling: JWT authentication, the refusals it answers with, and role guards.

Password hashing is in :mod:`app.passwords`."""

from __future__ import annotations

import ipaddress
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NoReturn

import jwt
from litestar.connection import ASGIConnection, Request
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, WebSocketException
from litestar.middleware.authentication import AuthenticationResult
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token

from app.domain.auth.principals import Principals
from app.domain.users.models import User

if TYPE_CHECKING:
    from litestar.handlers.base import BaseRouteHandler
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

JWT_ALGORITHM = "HS256"
RUNTIME_KEY = "runtime"  # app.state key of the Runtime (kept here to avoid an import cycle)
AUTH_OPTIONAL = "auth_optional"
"""Route option: the route also serves anonymous callers (``connection.user`` is then None)."""


# Messages, not secrets (S105 mistakes the names for passwords).
TOKEN_MISSING = "Not authenticated: send 'Authorization: Bearer <token>'"  # noqa: S105
TOKEN_MALFORMED = "Invalid token: malformed, or not signed by this service"  # noqa: S105
TOKEN_EXPIRED = "Token expired: sign in again"  # noqa: S105
TOKEN_REVOKED = "Token revoked: signed out, password or role changed, or account deleted"  # noqa: S105
WS_UNAUTHORIZED = 4401
"""WebSocket close code for a missing, invalid, expired or revoked token (4000 + HTTP 401)."""
WS_FORBIDDEN = 4403
"""WebSocket close code for a signed-in caller not allowed on this channel (4000 + HTTP 403)."""


def refuse_unauthenticated(
    connection: ASGIConnection[Any, Any, Any, Any], detail: str, *, presented: bool
) -> NoReturn:
    """Raise the 401 of RFC 6750, or its WebSocket close code.

    ``presented``: a token was sent and failed, so ``WWW-Authenticate`` says ``error="invalid_token"``;
    without one it only names the scheme.
    """
    if connection.scope["type"] == "websocket":
        raise WebSocketException(detail=detail, code=WS_UNAUTHORIZED)
    challenge = 'Bearer error="invalid_token"' if presented else "Bearer"
    raise NotAuthorizedException(detail, headers={"WWW-Authenticate": challenge})


def refuse_forbidden(connection: ASGIConnection[Any, Any, Any, Any], detail: str) -> NoReturn:
    if connection.scope["type"] == "websocket":
        raise WebSocketException(detail=detail, code=WS_FORBIDDEN)
    raise PermissionDeniedException(detail)


class VMSAuthenticationMiddleware(JWTAuthenticationMiddleware):
    """Litestar's JWT middleware, plus what it lacks.

    - WebSocket clients in browsers cannot set headers, so ``?token=`` is accepted on WebSocket routes.
    - Routes marked ``auth_optional`` (self sign-up) also serve callers without a token.
    - A 401 says why (missing, malformed, expired, revoked) and carries RFC 6750's ``WWW-Authenticate``;
      on a WebSocket it is close code 4401 (see :func:`app.ws_close.accept_before_close`).
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
        user = await self.retrieve_user_handler(token, connection)
        if not user:
            refuse_unauthenticated(connection, TOKEN_REVOKED, presented=True)
        return AuthenticationResult(user=user, auth=token)


@dataclass
class VMSJWTAuth(JWTAuth[User, Token]):
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

    def issue(self, user: User, session_id: int) -> str:
        """An access token for ``user`` in the sign-in session ``session_id`` (claim ``extras.sid``)."""
        return self.auth.create_token(
            identifier=str(user.id),
            token_expiration=self.ttl,
            token_issuer=self.issuer,
            token_audience=self.audience,
            token_unique_jwt_id=uuid.uuid4().hex,
            token_extras={"ver": user.token_version, "sid": session_id},
        )


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
    session_maker: async_sessionmaker[AsyncSession],
    principals: Principals,
    exclude: list[str],
) -> VMSJWTAuth:
    async def retrieve_user(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> User | None:
        # The role, the token version and the session come from the database (or caches invalidated on
        # every change), never from the token, so a logout, demotion, password change or deletion takes
        # effect at once, and still after a restart.
        try:
            user_id = int(token.sub)
        except ValueError:
            return None
        session_id = session_id_of(token)
        if not 0 < user_id < 2**63 or session_id is None or not isinstance(token.jti, str):
            return None
        user = await principals.load(session_maker, user_id, session_id)
        if user is None or token.extras.get("ver") != user.token_version:
            return None
        return user

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


# Guards are coroutines: Litestar runs a plain function guard in a worker thread, a hop per request.
async def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    user = connection.user
    if not isinstance(user, User):
        refuse_unauthenticated(connection, TOKEN_MISSING, presented=False)
    if not user.is_admin:
        refuse_forbidden(connection, "This action requires the administrador role")


async def requires_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if not isinstance(connection.user, User):
        refuse_unauthenticated(connection, TOKEN_MISSING, presented=False)


def client_address(request: Request[Any, Any, Any]) -> str:
    """The caller's address for rate limiting: the socket peer, unless that peer is a trusted proxy.

    ``X-Forwarded-For`` is believed only when it comes from a configured proxy (``VMS_TRUSTED_PROXIES``), and
    then the right-most address that is not itself a trusted proxy is used: anything further left is
    client-supplied and could be forged.
    """
    peer = request.client.host if request.client else "unknown"
    trusted = _trusted_networks(tuple(request.app.state[RUNTIME_KEY].settings.trusted_proxies))
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return peer


@lru_cache(maxsize=8)
def _trusted_networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _is_trusted(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
