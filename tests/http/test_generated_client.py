"""A client generated from ``/docs/openapi.json`` by openapi-python-client works against the real service.

The service runs as a process of its own (SQLite in ``tmp_path``); its document is fetched over HTTP and
handed to the generator, which must not warn: it warns, and leaves the piece out, for every response or
schema it cannot read (Litestar's generic 400 schema was one). The generated package lives in ``tmp_path``
only, under a name of its own, and is imported from there to sign in, create and list VMs, and read a 400
as the documented ``ErrorBody`` with its list of ``Problem``.
"""

from __future__ import annotations

import importlib
import json
import shlex
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, VM_BODY
from tests.helpers.processes import ServerProcess, server_process, sqlite_server_env

GENERATE_SECONDS = 120
# One post-hook instead of the default ruff fix and format: `from __future__ import annotations` at the top
# of every generated module. openapi-python-client 0.29 annotates a body that has several content types
# (POST /login: JSON or form) as `... | Unset` without importing Unset, so that module cannot be imported
# otherwise (github.com/openapi-generators/openapi-python-client/issues/1451); with the future import the
# annotation is never evaluated. `-P`: the output directory, the hook's working directory, holds a
# `types.py` that must not shadow the standard library's.
FUTURE_ANNOTATIONS = "lint.isort.required-imports = ['from __future__ import annotations']"
RUFF = [sys.executable, "-P", "-m", "ruff", "check", ".", "--isolated", "--fix-only"]
POST_HOOK = shlex.join([*RUFF, "--select", "I002", "--config", FUTURE_ANNOTATIONS])


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    env = sqlite_server_env(tmp_path / "vms.sqlite3")
    async with server_process(env, tmp_path / "server.log") as started:
        yield started


@pytest.fixture
def generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """Where the generated package goes (its directory's parent goes on sys.path) and its unique name;
    its modules are dropped from sys.modules afterwards."""
    root = tmp_path / "generated"
    root.mkdir()
    name = f"vms_client_{uuid.uuid4().hex[:12]}"
    monkeypatch.syspath_prepend(str(root))
    yield root, name
    for module in [module for module in sys.modules if module == name or module.startswith(f"{name}.")]:
        del sys.modules[module]


def generate_client(document: Path, output: Path) -> None:
    """Run openapi-python-client on ``document``; any warning (a skipped operation, response or schema)
    fails the test."""
    config = document.with_name("generator.json")
    config.write_text(json.dumps({"post_hooks": [POST_HOOK]}))
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document)]
    options = ["--output-path", str(output), "--meta", "none", "--config", str(config), "--fail-on-warning"]
    result = subprocess.run(
        [*command, *options], capture_output=True, text=True, timeout=GENERATE_SECONDS, check=False
    )
    printed = result.stdout + result.stderr
    assert result.returncode == 0, f"openapi-python-client failed:\n{printed}"
    assert "warning" not in printed.lower(), f"openapi-python-client warned:\n{printed}"
    assert (output / "client.py").is_file(), printed


def module(package: str, name: str) -> ModuleType:
    return importlib.import_module(f"{package}.{name}")


async def test_a_generated_client_signs_in_creates_and_lists_vms_and_reads_a_400(
    server: ServerProcess, generated: tuple[Path, str], tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.get("/docs/openapi.json")
    assert response.status_code == 200, response.text
    document = tmp_path / "openapi.json"
    document.write_bytes(response.content)
    root, package = generated
    generate_client(document, root / package)

    client_module = module(package, "client")
    models = module(package, "models")
    login = module(package, "api.auth.login_login")
    create_vm = module(package, "api.vms.vms_create_vm")
    list_vms = module(package, "api.vms.vms_list_vms")

    # raise_on_unexpected_status: a status the document does not declare raises instead of parsing as None.
    anonymous = client_module.Client(base_url=server.url, raise_on_unexpected_status=True, timeout=10)
    signed_in = await login.asyncio_detailed(
        client=anonymous, body=models.LoginLoginJsonBody(email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
    )
    assert signed_in.status_code == 200, signed_in.content
    assert isinstance(signed_in.parsed, models.TokenResponse)
    admin = client_module.AuthenticatedClient(
        base_url=server.url, token=signed_in.parsed.access_token, raise_on_unexpected_status=True, timeout=10
    )

    name = f"generated-{uuid.uuid4().hex[:8]}"
    body = models.VMCreate(
        name=name,
        cores=VM_BODY["cores"],
        ram=VM_BODY["ram"],
        disk=VM_BODY["disk"],
        os=VM_BODY["os"],
        status=models.VMCreateStatus.RUNNING,
    )
    created = await create_vm.asyncio_detailed(client=admin, body=body)
    assert created.status_code == 201, created.content
    vm: Any = created.parsed
    assert isinstance(vm, models.VMRead)
    assert (vm.name, vm.cores, vm.ram, vm.disk, vm.os) == (
        name,
        VM_BODY["cores"],
        VM_BODY["ram"],
        VM_BODY["disk"],
        VM_BODY["os"],
    )
    assert vm.status == models.VMReadStatus.RUNNING
    assert isinstance(vm.id, int)
    assert vm.created_at.utcoffset() is not None

    listed = await list_vms.asyncio_detailed(client=admin, q=name)
    assert listed.status_code == 200, listed.content
    assert isinstance(listed.parsed, list)
    assert all(isinstance(item, models.VMRead) for item in listed.parsed)
    assert [item.id for item in listed.parsed] == [vm.id]
    assert listed.parsed[0].to_dict() == vm.to_dict()
    assert listed.headers["X-Total-Count"] == "1"

    # A body out of bounds, and a query parameter out of bounds: both parse as the documented error.
    invalid = models.VMCreate.from_dict({**body.to_dict(), "name": "", "cores": 0})
    refused = await create_vm.asyncio_detailed(client=admin, body=invalid)
    assert_documented_400(models, refused, {"name", "cores"})
    refused = await list_vms.asyncio_detailed(client=admin, limit=0)
    assert_documented_400(models, refused, {"limit"})

    still = await list_vms.asyncio_detailed(client=admin, q=name)
    assert [item.id for item in still.parsed] == [vm.id], "the refused VM was stored"


def assert_documented_400(models: ModuleType, response: Any, keys: set[str]) -> None:
    """``response`` is a 400 parsed as the generated ErrorBody: ``status_code``, ``detail``, and ``extra``,
    one Problem (``message``, ``key``, ``source``) per offending field, naming ``keys``."""
    assert response.status_code == 400, response.content
    error = response.parsed
    assert isinstance(error, models.ErrorBody), response.content
    assert error.status_code == 400
    assert isinstance(error.detail, str)
    assert error.detail
    assert hasattr(models, "Problem"), "the document has no Problem schema: extra is not a list of Problem"
    assert isinstance(error.extra, list)
    assert error.extra
    assert all(isinstance(problem, models.Problem) for problem in error.extra)
    for problem in error.extra:
        assert isinstance(problem.message, str)
        assert problem.message
        assert isinstance(problem.key, str)
        assert isinstance(problem.source, str)
    assert keys <= {problem.key for problem in error.extra}, error.to_dict()
