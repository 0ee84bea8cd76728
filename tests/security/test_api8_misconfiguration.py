"""API8:2023 Security Misconfiguration: response headers, CORS, error bodies, the docs page.

Headers: every response, success or error, tells browsers not to sniff, not to frame and what the page may
load. CORS: closed by default, open to exactly the configured origins. Errors: what went wrong, never how
the server is built. Docs: the page works under the app's own Content-Security-Policy.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    VM_BODY,
    Account,
    assert_no_internals,
    bearer,
    client_with,
    create_vm,
)

HEADERS_MISSING_ON_ERRORS = (
    "F12: the security headers are Litestar `response_headers`, which only route handlers' own responses "
    "get; errors from middleware, routing and exception handlers go out without them"
)


def assert_security_headers(response: Any, what: str) -> None:
    headers = response.headers
    assert headers.get("x-content-type-options") == "nosniff", f"{what}: {dict(headers)}"
    assert headers.get("x-frame-options") == "DENY", f"{what}: {dict(headers)}"
    policy = headers.get("content-security-policy", "")
    assert "default-src" in policy, f"{what}: no Content-Security-Policy"
    assert "frame-ancestors 'none'" in policy, f"{what}: {policy}"
    assert "'unsafe-eval'" not in policy, f"{what}: {policy}"
    script_src = re.search(r"script-src([^;]*)", policy)
    assert script_src is None or "'unsafe-inline'" not in script_src.group(1), f"{what}: {policy}"


# ---------------------------------------------------------------- security headers


async def test_security_headers_on_successful_responses(client: Any, admin: Account) -> None:
    vm = await create_vm(client, admin)
    for what, response in [
        ("GET /health", await client.get("/health")),
        ("GET /vms", await client.get("/vms", headers=admin.headers)),
        ("GET /vms/{id}", await client.get(f"/vms/{vm['id']}", headers=admin.headers)),
        ("POST /login", await client.post("/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        ("GET /docs", await client.get("/docs")),
        ("GET /docs/openapi.json", await client.get("/docs/openapi.json")),
        ("DELETE /vms/{id}", await client.delete(f"/vms/{vm['id']}", headers=admin.headers)),
    ]:
        assert response.status_code < 300, (what, response.status_code)
        assert_security_headers(response, what)


async def test_security_headers_on_error_responses(client: Any, admin: Account, cliente: Account) -> None:
    json_headers = {**admin.headers, "Content-Type": "application/json"}
    missing = []
    for what, response in [
        ("404 no route", await client.get("/no-such-route")),
        ("404 no record", await client.get("/vms/987654", headers=admin.headers)),
        ("405", await client.delete("/health")),
        ("401 no token", await client.get("/users/me")),
        ("401 bad token", await client.get("/users/me", headers={"Authorization": "Bearer nonsense"})),
        ("401 login", await client.post("/login", json={"email": ADMIN_EMAIL, "password": "wrong-password"})),
        ("403", await client.get("/users", headers=cliente.headers)),
        ("400 malformed", await client.post("/vms", content=b"{", headers=json_headers)),
        ("400 invalid", await client.post("/vms", json={**VM_BODY, "cores": 0}, headers=admin.headers)),
        (
            "409",
            await client.post("/users", json={"name": "a", "email": ADMIN_EMAIL, "password": "password-1"}),
        ),
    ]:
        assert response.status_code >= 400, (what, response.status_code)
        try:
            assert_security_headers(response, what)
        except AssertionError:
            missing.append(f"{what} ({response.status_code})")
    assert not missing, f"security headers missing on: {missing}"


async def test_security_headers_on_limit_responses(tmp_path: Any) -> None:
    async with client_with(tmp_path, login_rate_limit=1, max_body_bytes=1024) as client:
        too_large = await client.post(
            "/users", content=b"x" * 4096, headers={"Content-Type": "application/json"}
        )
        assert too_large.status_code == 413
        await client.post("/login", json={"email": "a@example.com", "password": "password-1"})
        limited = await client.post("/login", json={"email": "a@example.com", "password": "password-1"})
        assert limited.status_code == 429
        for what, response in (("413", too_large), ("429", limited)):
            assert_security_headers(response, what)


async def test_no_server_banner_reveals_versions(client: Any) -> None:
    response = await client.get("/health")
    assert "x-powered-by" not in response.headers
    assert not re.search(r"\d+\.\d+", response.headers.get("server", "")), response.headers.get("server")


# ---------------------------------------------------------------- CORS

EVIL = "https://evil.example"
DASH = "https://dash.example"


async def preflight(client: Any, origin: str, method: str = "GET") -> Any:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization",
    }
    return await client.options("/vms", headers=headers)


async def test_without_configured_origins_no_origin_is_allowed(client: Any, admin: Account) -> None:
    for origin in (EVIL, DASH, "null", "http://localhost"):
        answer = await preflight(client, origin)
        assert "access-control-allow-origin" not in answer.headers, (origin, dict(answer.headers))
        simple = await client.get("/vms", headers={**admin.headers, "Origin": origin})
        assert "access-control-allow-origin" not in simple.headers, (origin, dict(simple.headers))
        assert "access-control-allow-credentials" not in simple.headers


async def test_configured_origins_are_allowed_and_no_others(tmp_path: Any) -> None:
    async with client_with(tmp_path, cors_origins=DASH) as client:
        allowed = await preflight(client, DASH, "DELETE")
        assert allowed.status_code in {200, 204}, allowed.text
        assert allowed.headers.get("access-control-allow-origin") == DASH
        assert "authorization" in allowed.headers.get("access-control-allow-headers", "").lower()

        token = (await client.post("/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})).json()
        headers = bearer(token["access_token"])
        simple = await client.get("/vms", headers={**headers, "Origin": DASH})
        assert simple.headers.get("access-control-allow-origin") == DASH

        for origin in (
            EVIL,
            "null",
            "https://dash.example.evil.example",
            "https://evil.example/https://dash.example",
            "https://dashXexample",
            "http://dash.example",
            "https://sub.dash.example",
        ):
            answer = await preflight(client, origin)
            assert answer.headers.get("access-control-allow-origin") in {None, DASH}, (
                origin,
                dict(answer.headers),
            )
            assert answer.headers.get("access-control-allow-origin") != "*"
            simple = await client.get("/vms", headers={**headers, "Origin": origin})
            assert simple.headers.get("access-control-allow-origin") in {None, DASH}, origin


# ---------------------------------------------------------------- error bodies


async def test_error_bodies_hold_no_internals(client: Any, admin: Account, cliente: Account) -> None:
    vm = await create_vm(client, admin)
    json_headers = {**admin.headers, "Content-Type": "application/json"}
    responses = [
        await client.get("/no-such-route"),
        await client.get("/vms/987654", headers=admin.headers),
        await client.get("/vms/not-a-number", headers=admin.headers),
        await client.get(f"/vms/{2**64}", headers=admin.headers),
        await client.delete("/health"),
        await client.post("/vms", content=b'{"name": ', headers=json_headers),
        await client.post("/vms", content=b"\xff\xfe", headers=json_headers),
        await client.post("/vms", content=b"name=x", headers={**admin.headers, "Content-Type": "text/plain"}),
        await client.post("/vms", json=[VM_BODY], headers=admin.headers),
        await client.post("/vms", json={**VM_BODY, "status": "exploded"}, headers=admin.headers),
        await client.get("/vms", params={"sort": "name; DROP TABLE virtual_machine"}, headers=admin.headers),
        await client.patch(
            f"/vms/{vm['id']}", json={"cores": 1}, headers={**admin.headers, "If-Match": '"0-0"'}
        ),
        await client.post("/users", json={"name": "dup", "email": ADMIN_EMAIL, "password": "password-1"}),
        await client.patch(f"/users/{cliente.id}", json={"email": ADMIN_EMAIL}, headers=cliente.headers),
        await client.delete(f"/users/{admin.id}", headers=admin.headers),
        await client.get("/users/me", headers={"Authorization": "Bearer a.b.c"}),
        await client.post("/login", content=b"username=&password=", headers={"Content-Type": "text/xml"}),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500, (response.request.url, response.status_code, response.text)
        assert response.headers.get("content-type", "").startswith("application/json"), response.headers
        body = response.json()
        assert isinstance(body.get("detail"), str), body
        assert_no_internals(response.text)


async def test_sql_in_a_search_is_data(client: Any, admin: Account) -> None:
    """A search for SQL is a search, not SQL: it finds the VM literally named so, and nothing else."""
    await create_vm(client, admin, name="ordinary")
    literal = await create_vm(client, admin, name="x' OR '1'='1")
    for q, expected in [("' OR '1'='1", [literal["id"]]), ("'; DROP TABLE virtual_machine; --", [])]:
        response = await client.get("/vms", params={"q": q}, headers=admin.headers)
        assert response.status_code == 200, response.text
        assert [vm["id"] for vm in response.json()] == expected, q
    assert len((await client.get("/vms", headers=admin.headers)).json()) == 2


@pytest.mark.parametrize("path", ["/vms", "/users"])
async def test_like_wildcards_in_a_search_are_literal(client: Any, admin: Account, path: str) -> None:
    """F13, fixed during this review: `q=%` used to list everything."""
    await create_vm(client, admin, name="ordinary")
    for q in ("%", "_", "%%", "a%"):
        response = await client.get(path, params={"q": q}, headers=admin.headers)
        assert response.status_code == 200, response.text
        assert response.json() == [], f"q={q!r} matched {len(response.json())} records"


# ---------------------------------------------------------------- the docs page


async def test_the_docs_page_loads_its_script_from_its_own_assets(client: Any) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, flags=re.DOTALL)
    sources = [re.search(r'src="([^"]+)"', attributes) for attributes, _ in scripts]
    assert any(source and source.group(1).startswith("/docs/assets/") for source in sources), page.text
    for (attributes, content), source in zip(scripts, sources, strict=True):
        # script-src 'self' allows no inline code: any <script> without src must be an empty data holder
        assert source is not None or not content.strip(), attributes
        if source is not None:
            assert source.group(1).startswith("/"), f"script from another origin: {source.group(1)}"
            asset = await client.get(source.group(1))
            assert asset.status_code == 200, source.group(1)
            assert "javascript" in asset.headers["content-type"]
    assert not re.search(r"""(?:src|href)=["']https?://""", page.text), "the page loads from a CDN"
    schema = await client.get(re.search(r'data-url="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
    assert schema.status_code == 200
    assert schema.json()["openapi"].startswith("3.")


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/../../app/config.py",
        "/docs/assets/%2e%2e/%2e%2e/app/config.py",
        "/docs/assets/..%2f..%2fapp%2fconfig.py",
        "/docs/assets/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/docs/assets/....//....//pyproject.toml",
        "/docs/assets//etc/passwd",
    ],
)
async def test_the_docs_assets_do_not_serve_files_outside_their_folder(client: Any, path: str) -> None:
    response = await client.get(path)
    assert response.status_code in {400, 404}, (path, response.status_code)
    assert "MIN_SECRET_BYTES" not in response.text
    assert "[project]" not in response.text
    assert "root:" not in response.text
