"""The request bodies of the sign-in routes in the OpenAPI schema, where Litestar cannot infer them from
a handler's signature (the handlers read their bodies themselves)."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.enums import RequestEncodingType
from litestar.openapi.spec import Example, OpenAPIMediaType, Operation, RequestBody, Schema

from app.domain.auth.schemas import REFRESH_TOKEN_MAX_LENGTH


# @dataclass is needed: Operation's generated __init__ calls no __post_init__ (it has none), so without
# it the request body below was never set and POST /login had no body at all in the OpenAPI schema.
@dataclass
class LoginOperation(Operation):
    """Documents the two body encodings ``/login`` accepts (Litestar infers only one from a signature)."""

    def __post_init__(self) -> None:
        json_schema = Schema(
            type="object",  # type: ignore[arg-type]
            required=["email", "password"],
            properties={"email": Schema(type="string", max_length=254), "password": Schema(type="string")},  # type: ignore[arg-type]
        )
        form_schema = Schema(
            type="object",  # type: ignore[arg-type]
            required=["username", "password"],
            properties={
                "username": Schema(type="string", max_length=254, description="The email."),  # type: ignore[arg-type]
                "password": Schema(type="string"),  # type: ignore[arg-type]
                "grant_type": Schema(type="string", const="password"),  # type: ignore[arg-type]
            },
        )
        example = {"email": "admin@example.com", "password": "correct horse battery"}
        self.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(
                    schema=json_schema, examples={"login": Example(value=example)}
                ),
                RequestEncodingType.URL_ENCODED.value: OpenAPIMediaType(schema=form_schema),
            },
        )


@dataclass  # as LoginOperation
class RefreshOperation(Operation):
    """Documents the JSON body (Litestar infers none: the handler reads it itself, or the cookie)."""

    def __post_init__(self) -> None:
        schema = Schema(
            type="object",  # type: ignore[arg-type]
            required=["refresh_token"],
            properties={
                "refresh_token": Schema(type="string", min_length=1, max_length=REFRESH_TOKEN_MAX_LENGTH)  # type: ignore[arg-type]
            },
        )
        # Documented as required: a request with neither the body nor the cookie is a 400, and OpenAPI has no
        # way to say "one of the two". A browser holding the refresh cookie sends no body.
        self.request_body = RequestBody(
            required=True,
            description="The refresh token. A browser holding the refresh cookie (see refresh_cookie) "
            "sends no body instead.",
            content={
                "application/json": OpenAPIMediaType(
                    schema=schema,
                    examples={"refresh": Example(value={"refresh_token": "kP9x...the refresh_token"})},
                )
            },
        )
