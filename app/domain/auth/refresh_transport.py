"""How a refresh token travels: in JSON bodies, or, for browsers that ask, in an ``HttpOnly`` cookie.

A browser app that keeps the refresh token where its JavaScript can read it hands it to any script that
runs on its page. Asked with ``?refresh_cookie=true`` on ``POST /login`` or ``POST /login/refresh``, the
service sets the token in a cookie instead (``HttpOnly``: no script reads it; ``Secure``; ``SameSite=Strict``:
no other site's page sends it; ``Path=/login/refresh``: sent to that route only) and leaves it out of the
body: never both. ``POST /login/refresh`` reads the body's ``refresh_token`` when there is one, else the
cookie, and answers the way the token came (a cookie token is spent, so the next one goes back in the
cookie). ``POST /logout`` clears the cookie; so does a refusal of the token it held.

``SameSite=Strict`` stops other sites' pages from *sending* the cookie, not from making a browser *store*
one: a hostile page could submit a form to ``/login?refresh_cookie=true`` with the attacker's credentials
(or post the attacker's refresh token as ``text/plain`` to ``/login/refresh``), and the victim's app would
then work in the attacker's account (login CSRF). So an answer sets the cookie only to a request whose
body is JSON (``Content-Type: application/json``), which another site's page can send only through a CORS
preflight that VMS refuses unless ``VMS_CORS_ORIGINS`` names it, or to a refresh that presented the
cookie itself (the browser's own). The ``__Secure-`` prefix makes browsers refuse the cookie from a page
that is not HTTPS.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.datastructures import Cookie
from litestar.exceptions import ValidationException
from litestar.params import CookieParameter, Parameter

from app.domain.auth.schemas import RefreshRequest
from app.http.validation import Problem, check_object, invalid_request

REFRESH_COOKIE = "__Secure-vms_refresh_token"
REFRESH_PATH = "/login/refresh"
JSON_FOR_COOKIE = Problem(
    "refresh_cookie",
    "is answered only to a JSON body (Content-Type: application/json): a form or text body from another "
    "site's page could otherwise set a cookie of someone else's",
)
TOKEN_REQUIRED = Problem(
    "refresh_token", 'is required: send {"refresh_token": "..."} as JSON, or the refresh cookie'
)

RefreshInCookie = Annotated[
    bool,
    Parameter(
        description="true: set the refresh token in an HttpOnly, Secure, SameSite=Strict cookie scoped to "
        "/login/refresh, and leave it out of the body (for browser apps). Only with a JSON body (or, on "
        "/login/refresh, the cookie itself): a form or text body gets 400.",
    ),
]
CookieToken = Annotated[
    str | None,
    CookieParameter(
        name=REFRESH_COOKIE,
        required=False,
        description="The refresh token, as set by an answer to refresh_cookie=true; read when the body has "
        "no refresh_token. Anything but a current refresh token gets 401.",
    ),
]


def _cookie(value: str, max_age: int, **documentation: Any) -> Cookie:
    return Cookie(
        key=REFRESH_COOKIE,
        value=value,
        path=REFRESH_PATH,
        max_age=max_age,
        secure=True,
        httponly=True,
        samesite="strict",
        **documentation,
    )


def refresh_token_cookie(token: str, max_age: int) -> Cookie:
    return _cookie(token, max_age)


CLEARED_COOKIE = _cookie("", 0)
"""Set by ``/logout`` and by a refusal of a cookie's token: the browser drops the cookie."""
SET_COOKIE_DOCUMENTED = _cookie(
    "",
    0,
    documentation_only=True,
    description="With refresh_cookie=true, or a refresh that presented the cookie: the new refresh token "
    "(and no refresh_token in the body).",
)


def check_cookie_request(request: Request[Any, Any, Any]) -> None:
    """A request whose answer will set the cookie with a token its body brought: a JSON body only."""
    if request.content_type[0] != "application/json":
        raise invalid_request([JSON_FOR_COOKIE])


def cleared_cookie_header() -> dict[str, str]:
    """The header that clears the cookie, for an error answer (which takes headers, not cookies)."""
    return {"set-cookie": CLEARED_COOKIE.to_header(header="")}


async def presented_refresh_token(request: Request[Any, Any, Any], cookie: str | None) -> tuple[str, bool]:
    """The refresh token a request presents, and whether it came in the cookie.

    A body that is not a JSON object, or whose ``refresh_token`` is not a 1-1024 character string, is a
    400 naming the field in words; the value itself is never repeated in an answer.
    """
    raw = await request.body()
    if raw.strip():
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:  # msgspec's words name a byte offset, never the content
            raise ValidationException(str(exc)) from None
        if not isinstance(body, dict):
            raise invalid_request([Problem("body", 'must be a JSON object: {"refresh_token": "..."}')])
        if "refresh_token" in body:
            # Other keys are ignored, as on /login.
            if problems := check_object(RefreshRequest, {"refresh_token": body["refresh_token"]}):
                raise invalid_request(problems)
            token: str = body["refresh_token"]
            return token, False
    if cookie is not None:  # an empty one too: a bad cookie is a bad token (401), as any other
        return cookie, True
    raise invalid_request([TOKEN_REQUIRED])
