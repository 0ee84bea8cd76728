"""GET /health, the Scalar docs page and its assets, and what the OpenAPI schema promises clients."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient
from openapi_spec_validator import validate

from app import create_app
from tests.helpers import assert_error, expect, make_settings

# Every status a route can answer, as the contract lists them (400 for any route with input).
DECLARED: dict[tuple[str, str], set[str]] = {
    ("/login", "post"): {"200", "400", "401", "429", "503"},
    ("/login/refresh", "post"): {"200", "400", "401", "503"},
    ("/logout", "post"): {"204", "401", "503"},
    ("/users/me/sessions", "get"): {"200", "400", "401", "503"},
    ("/users/me/sessions/{session_id}", "delete"): {"204", "400", "401", "404", "503"},
    ("/users/{user_id}/sessions", "delete"): {"204", "400", "401", "403", "404", "503"},
    ("/users/me", "get"): {"200", "401", "503"},
    ("/users", "get"): {"200", "400", "401", "403", "503"},
    ("/users", "post"): {"201", "400", "401", "403", "409", "503"},
    ("/users/{user_id}", "get"): {"200", "400", "401", "403", "404", "503"},
    ("/users/{user_id}", "put"): {"200", "400", "401", "403", "404", "409", "503"},
    ("/users/{user_id}", "patch"): {"200", "400", "401", "403", "404", "409", "503"},
    ("/users/{user_id}", "delete"): {"204", "400", "401", "403", "404", "409", "503"},
    ("/vms", "get"): {"200", "400", "401", "503"},
    ("/vms", "post"): {"201", "400", "401", "403", "503"},
    ("/vms/{vm_id}", "get"): {"200", "400", "401", "404", "503"},
    ("/vms/{vm_id}", "put"): {"200", "400", "401", "403", "404", "412", "503"},
    ("/vms/{vm_id}", "patch"): {"200", "400", "401", "403", "404", "412", "503"},
    ("/vms/{vm_id}", "delete"): {"204", "400", "401", "403", "404", "503"},
    ("/health", "get"): {"200", "503"},
}
PUBLIC = {("/login", "post"), ("/login/refresh", "post"), ("/health", "get")}


async def schema(client: Any) -> dict[str, Any]:
    response = await client.get("/docs/openapi.json")
    assert response.status_code == 200
    assert "json" in response.headers["content-type"]
    body: dict[str, Any] = response.json()
    return body


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        node = spec["components"]["schemas"][name]
    return node


# ---------------------------------------------------------------- health


async def test_health_reports_the_database(client: Any) -> None:
    body = expect(await client.get("/health"), 200)
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["channels"] == "ok"
    assert body["channels_backend"] == "memory"


async def test_health_needs_no_token_and_is_not_cached(client: Any) -> None:
    response = await client.get("/health", headers={"Authorization": "Bearer not-a-token"})
    # a public route: a bad token is ignored rather than refused
    assert response.status_code == 200
    response = await client.get("/health")
    assert "max-age" not in response.headers.get("cache-control", "")


# ---------------------------------------------------------------- errors


async def test_errors_are_json_with_detail(client: Any) -> None:
    assert_error(await client.get("/no-such-route"), 404)
    assert_error(await client.delete("/health"), 405)
    assert_error(await client.get("/vms"), 401)


# ---------------------------------------------------------------- docs page


async def test_docs_page_uses_the_bundled_scalar(client: Any) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/docs/assets/standalone.js" in response.text
    assert "/docs/openapi.json" in response.text
    assert "cdn.jsdelivr.net" not in response.text
    assert "unpkg.com" not in response.text

    asset = await client.get("/docs/assets/standalone.js")
    assert asset.status_code == 200
    assert "javascript" in asset.headers["content-type"]
    assert len(asset.content) > 100_000  # the real bundle, not a placeholder
    assert (await client.get("/docs/assets/vms.css")).status_code == 200
    assert_error(await client.get("/docs/assets/../../config.py"), 404, 400)


async def test_docs_can_use_the_cdn_when_configured(tmp_path: Any) -> None:
    async with AsyncTestClient(app=create_app(make_settings(tmp_path, docs_cdn=True))) as client:
        response = await client.get("/docs")
        assert response.status_code == 200
        assert "/docs/assets/standalone.js" not in response.text
        assert "https://" in response.text


# ---------------------------------------------------------------- OpenAPI


async def test_openapi_declares_every_status(client: Any) -> None:
    spec = await schema(client)
    for (path, method), codes in DECLARED.items():
        operation = spec["paths"][path][method]
        declared = set(operation["responses"])
        assert codes <= declared, f"{method.upper()} {path} lacks {codes - declared}"
        for code in codes - {"200", "201", "204"}:
            content = operation["responses"][code].get("content", {})
            assert "application/json" in content, (path, method, code)
            if (path, code) != ("/health", "503"):
                error = resolve(spec, content["application/json"]["schema"])
                assert "detail" in error["properties"], (path, method, code)


async def test_the_openapi_document_is_valid(client: Any) -> None:
    """openapi-spec-validator accepts it (it refused the header objects without a schema)."""
    validate(await schema(client))


async def test_openapi_security_is_the_oauth2_password_flow(client: Any) -> None:
    spec = await schema(client)
    schemes = spec["components"]["securitySchemes"]
    assert len(schemes) == 1
    [(name, scheme)] = schemes.items()
    assert scheme["type"] == "oauth2"
    assert scheme["flows"]["password"]["tokenUrl"] == "/login"
    for path, method in DECLARED:
        security = spec["paths"][path][method].get("security", spec.get("security"))
        if (path, method) in PUBLIC:
            assert security is None or {} in security, (path, method, security)
        else:
            assert security, (path, method)
            assert {name: []} in security, (path, method, security)


async def test_openapi_documents_both_login_encodings_with_examples(client: Any) -> None:
    spec = await schema(client)
    body = spec["paths"]["/login"]["post"].get("requestBody")
    assert body is not None, "POST /login has no request body in the schema"
    content = body["content"]
    assert set(content["application/json"]["schema"]["required"]) == {"email", "password"}
    assert set(content["application/x-www-form-urlencoded"]["schema"]["required"]) == {"username", "password"}
    assert content["application/json"].get("examples") or content["application/json"]["schema"].get(
        "examples"
    )


async def test_openapi_has_examples_and_bounds(client: Any) -> None:
    spec = await schema(client)
    schemas = spec["components"]["schemas"]
    vm = schemas["VMCreate"]["properties"]
    assert vm["cores"]["minimum"] == 1
    assert vm["cores"]["maximum"] == 1024
    assert vm["ram"]["maximum"] == 16_777_216
    assert vm["disk"]["maximum"] == 1_048_576
    assert vm["name"]["maxLength"] == 100
    assert set(vm["status"]["enum"]) == {"provisioning", "running", "stopped", "paused", "error"}
    for name in ("VMCreate", "UserCreate"):
        with_examples = [field for field, prop in schemas[name]["properties"].items() if prop.get("examples")]
        assert with_examples, f"{name} has no examples"
    user = schemas["UserRead"]["properties"]
    assert set(user) == {"id", "name", "email", "rol", "created_at", "updated_at"}
    assert not {"password", "password_hash"} & set(schemas["VMRead"]["properties"])


async def test_openapi_documents_list_parameters_and_headers(client: Any) -> None:
    spec = await schema(client)
    for path, filters in (("/vms", {"status", "os", "q"}), ("/users", {"rol", "q"})):
        operation = spec["paths"][path]["get"]
        params = {param["name"]: param for param in operation["parameters"]}
        assert {"limit", "offset", "sort", "order", *filters} <= set(params), (path, set(params))
        assert params["limit"]["schema"]["maximum"] == 1000
        assert params["limit"]["schema"]["minimum"] == 1
        assert "X-Total-Count" in operation["responses"]["200"].get("headers", {}), path
    vm = spec["paths"]["/vms/{vm_id}"]
    assert "ETag" in vm["get"]["responses"]["200"].get("headers", {})
    assert "If-Match" in {param["name"] for param in vm["patch"]["parameters"]}
