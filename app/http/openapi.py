"""OpenAPI: the error body and the statuses each route declares, the docs page and its assets."""

from __future__ import annotations

from typing import TYPE_CHECKING, get_type_hints

import msgspec

# Litestar's own plugin for Structs, extended below; it is not exported publicly.
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, Schema, Server
from litestar.typing import FieldDefinition

from app.config import PROJECT_ROOT
from app.http.validation import read_only_fields

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

SCALAR_VERSION = "1.76.0"
SCALAR_ASSETS_DIR = PROJECT_ROOT / "app" / "static" / "scalar"
SCALAR_ASSETS_PATH = "/docs/assets"
ASYNCAPI_PATH = "/docs/asyncapi.json"
"""Where the WebSockets' AsyncAPI document is served; the docs page links to it."""


class Problem(msgspec.Struct, kw_only=True):
    """One offending or missing field of a 400: which (``key``), where (``source``), and why."""

    message: str
    key: str | None = None
    source: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error answer has this shape (Litestar's own). ``extra`` lists a 400's problems one by one
    (declared as a list of one struct, which every client generator can read)."""

    status_code: int
    detail: str
    extra: list[Problem] | None = None


_DESCRIPTIONS = {
    400: "Bad request: malformed JSON, a value out of bounds or of the wrong type (named in `detail`).",
    401: "Missing, invalid, expired or revoked token, or wrong credentials.",
    403: "Signed in, but this role or account may not do this.",
    404: "No such resource.",
    409: "Conflicts with the current state (duplicate email, last administrador).",
    412: "`If-Match` does not match the current ETag.",
    413: "Request body too large.",
    429: "Too many attempts; retry after `Retry-After` seconds.",
    503: "The database is unreachable, too slow, full or read-only (said in `detail`); retry after "
    "`Retry-After` seconds.",
}


def responses_for(*codes: int) -> dict[int, ResponseSpec]:
    """The error answers of a route that uses the database: ``codes``, and 503 for a database fault."""
    return {
        code: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[code], generate_examples=False)
        for code in (*codes, 503)
    }


class WriteBodySchemaPlugin(StructSchemaPlugin):
    """The schema of a request body says what app/http/validation.py enforces about its keys.

    Unknown fields are refused, so ``additionalProperties: false`` (a schema-driven client would otherwise
    send extra keys, as Schemathesis does); the representation's read-only fields are accepted and
    ignored, so they are listed with ``readOnly: true``.
    """

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return super().is_plugin_supported_field(field_definition) and bool(
            read_only_fields(field_definition.type_)
        )

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        hints = get_type_hints(field_definition.type_.representation, include_extras=True)
        properties = dict(schema.properties or {})
        for name in sorted(read_only_fields(field_definition.type_)):
            read_only = schema_creator.for_field_definition(
                FieldDefinition.from_annotation(hints[name], name=name)
            )
            if isinstance(read_only, Schema):
                read_only.read_only = True
            properties[name] = read_only
        schema.properties = properties
        schema.additional_properties = False
        return schema


class OfflineScalarPlugin(ScalarRenderPlugin):
    """Scalar from this server's own assets, configured by ``vms-config.js`` (see that file: the
    Content-Security-Policy refuses the inline script Litestar writes for ``options``)."""

    def render_options(self) -> str:
        return f'<script src="{SCALAR_ASSETS_PATH}/vms-config.js"></script>'


def create_openapi_config(*, use_cdn: bool, version: str, components: list[Components]) -> OpenAPIConfig:
    scalar = (
        ScalarRenderPlugin(version=SCALAR_VERSION, path="/")
        if use_cdn
        else OfflineScalarPlugin(
            js_url=f"{SCALAR_ASSETS_PATH}/standalone.js",
            css_url=f"{SCALAR_ASSETS_PATH}/vms.css",
            favicon="",
            path="/",
        )
    )
    return OpenAPIConfig(
        title="VMS",
        version=version,
        description="Virtual machine inventory and user accounts. Sign in with POST /login.\n\n"
        "Live changes stream over WebSocket on `/ws/vms` and `/ws/users`: their messages, authentication, "
        f"`since` and close codes are in the [AsyncAPI 3.0 document]({ASYNCAPI_PATH}).",
        path="/docs",
        render_plugins=[scalar],
        servers=[Server(url="/")],
        components=components,
        use_handler_docstrings=True,
    )
