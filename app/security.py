"""Who is calling: password hashing, JWT authentication, token revocation and role guards."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import sys
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import bcrypt
from litestar.connection import ASGIConnection, Request
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException
from litestar.middleware.authentication import AuthenticationResult
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token

from app.credentials import MAX_PASSWORD_BYTES
from app.domain.users.models import User
from app.domain.users.principals import PrincipalCache

if TYPE_CHECKING:
    from litestar.handlers.base import BaseRouteHandler
    from litestar.stores.base import Store
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

JWT_ALGORITHM = "HS256"
REVOKED_TOKENS_STORE = "revoked_tokens"
RUNTIME_KEY = "runtime"  # app.state key of the Runtime (kept here to avoid an import cycle)
AUTH_OPTIONAL = "auth_optional"
"""Route option: the route also serves anonymous callers (``connection.user`` is then None)."""


BCRYPT_THREAD_NICENESS = 10  # added to the process's niceness


def _yield_cpu_to_the_event_loop() -> None:
    """Run this bcrypt thread at a lower CPU priority than the event loop (Linux: per-thread niceness).

    With one hashing thread per core, a login storm kept every core busy and the event loop waited for the
    scheduler: reads slowed to 3.6 times their idle p99. At lower priority the hashes still take every
    core the requests leave idle, and a request preempts them.
    """
    if sys.platform == "linux":  # elsewhere PRIO_PROCESS would renice the whole process
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):
            # Relative to the process's own niceness, so the threads always end up below the event loop.
            niceness = min(os.getpriority(os.PRIO_PROCESS, thread) + BCRYPT_THREAD_NICENESS, 19)
            os.setpriority(os.PRIO_PROCESS, thread, niceness)


class PasswordHasher:
    """bcrypt on a small dedicated thread pool.

    bcrypt releases the GIL, so hashing runs in parallel with the event loop; a pool of its own bounds how
    many hashes run at once, so a login storm queues here instead of starving the default executor.
    """

    def __init__(self, rounds: int, threads: int) -> None:
        self.rounds = rounds
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._dummy_hash: bytes | None = None

    async def _run(self, func: Any, *args: Any) -> Any:
        if self._executor is None:  # created lazily: an app may be started again after a shutdown
            self._executor = ThreadPoolExecutor(
                max_workers=self.threads,
                thread_name_prefix="bcrypt",
                initializer=_yield_cpu_to_the_event_loop,
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(self.rounds)
        hashed: bytes = await self._run(bcrypt.hashpw, password.encode(), salt)
        return hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Check a password; with no hash (unknown account) do the same work against a dummy hash."""
        candidate = password.encode()
        # bcrypt (>= 5) raises on longer input, and no stored password is longer: spend the same work on
        # an empty candidate and fail, so the answer and its timing match any other failed login.
        too_long = len(candidate) > MAX_PASSWORD_BYTES
        ok = await self._check(b"" if too_long else candidate, hashed)
        return ok and not too_long

    async def _check(self, candidate: bytes, hashed: str | None) -> bool:
        if hashed is None:
            if self._dummy_hash is None:
                self._dummy_hash = (await self.hash(uuid.uuid4().hex)).encode()
            await self._run(bcrypt.checkpw, candidate, self._dummy_hash)
            return False
        try:
            return bool(await self._run(bcrypt.checkpw, candidate, hashed.encode()))
        except ValueError:  # a malformed stored hash never authenticates
            return False

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class VMSAuthenticationMiddleware(JWTAuthenticationMiddleware):
    """Litestar's JWT middleware, plus three things it lacks.

    - WebSocket clients in browsers cannot set headers, so ``?token=`` is accepted on WebSocket routes.
    - Routes marked ``auth_optional`` (self sign-up) also serve callers without a token.
    - Verified tokens are remembered by their exact text: a dashboard sends the same token with every
      request, and verifying it again (base64, JSON, HMAC, claims) was a sixth of a read's CPU time. The
      expiry is still checked on every use, and so are revocation and the user's current token version.
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
            raise NotAuthorizedException("Authorization must use the Bearer scheme")
        if not encoded and connection.scope["type"] == "websocket":
            encoded = connection.query_params.get("token", "")
        if not encoded:
            if connection.route_handler.opt.get(AUTH_OPTIONAL):
                return AuthenticationResult(user=None, auth=None)
            raise NotAuthorizedException("Not authenticated: send 'Authorization: Bearer <token>'")
        return await self.authenticate_token(encoded_token=encoded.strip(), connection=connection)

    def _verify(self, encoded_token: str) -> Token:
        token = self._verified.get(encoded_token)
        if token is None:
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
            self._verified[encoded_token] = token
            if len(self._verified) > self._VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        elif token.exp <= datetime.now(UTC):
            del self._verified[encoded_token]
            raise NotAuthorizedException("Invalid token")
        return token

    async def authenticate_token(
        self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = self._verify(encoded_token)
        user = await self.retrieve_user_handler(token, connection)
        revoked = await self.revoked_token_handler(token, connection) if self.revoked_token_handler else False
        if not user or revoked:
            raise NotAuthorizedException()
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

    def issue(self, user: User) -> str:
        return self.auth.create_token(
            identifier=str(user.id),
            token_expiration=self.ttl,
            token_issuer=self.issuer,
            token_audience=self.audience,
            token_unique_jwt_id=uuid.uuid4().hex,
            token_extras={"ver": user.token_version},
        )


async def revoke_token(store: Store, token: Token) -> None:
    """Remember a token's id until it would have expired anyway."""
    remaining = int((token.exp - datetime.now(UTC)).total_seconds()) + 1
    if remaining > 0 and isinstance(token.jti, str):
        await store.set(token.jti, b"1", expires_in=remaining)


def create_jwt_auth(
    *,
    secret: str,
    issuer: str,
    audience: str,
    ttl: timedelta,
    session_maker: async_sessionmaker[AsyncSession],
    principals: PrincipalCache,
    exclude: list[str],
) -> VMSJWTAuth:
    async def retrieve_user(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> User | None:
        # The role and token version come from the database (or a cache invalidated on every user change),
        # never from the token, so a demotion, password change or deletion takes effect at once.
        try:
            user_id = int(token.sub)
        except ValueError:
            return None
        if not 0 < user_id < 2**63:
            return None
        user = await principals.load(session_maker, user_id)
        if user is None or token.extras.get("ver") != user.token_version:
            return None
        return user

    async def is_revoked(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
        if not isinstance(token.jti, str):
            return True
        store = connection.app.stores.get(REVOKED_TOKENS_STORE)
        return await store.exists(token.jti)

    return VMSJWTAuth(
        token_secret=secret,
        retrieve_user_handler=retrieve_user,
        revoked_token_handler=is_revoked,
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
    if not isinstance(user, User) or not user.is_admin:
        raise PermissionDeniedException("This action requires the administrador role")


async def requires_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if not isinstance(connection.user, User):
        raise NotAuthorizedException("Not authenticated: send 'Authorization: Bearer <token>'")


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


class LoginThrottle:
    """At most ``limit`` login attempts per minute against one email, whoever sends them.

    Litestar's rate-limit middleware already limits each client address; this second limit stops a
    password-guessing run spread over many addresses. It shares the middleware's store, so it follows
    ``VMS_REDIS_URL`` across workers. Fixed one-minute windows: cheap, and good enough for this purpose.
    """

    WINDOW_SECONDS = 60

    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def check(self, store: Store, email: str) -> None:
        window = int(datetime.now(UTC).timestamp()) // self.WINDOW_SECONDS
        key = f"login-email:{window}:{hashlib.sha256(email.lower().encode()).hexdigest()}"
        raw = await store.get(key)
        attempts = int(raw or 0) + 1
        await store.set(key, str(attempts).encode(), expires_in=self.WINDOW_SECONDS)
        if attempts > self.limit:
            retry_after = self.WINDOW_SECONDS - int(datetime.now(UTC).timestamp()) % self.WINDOW_SECONDS
            raise TooManyRequestsException(
                "Too many login attempts for this account; try again later",
                headers={"Retry-After": str(max(retry_after, 1))},
            )
