"""``/docs/asyncapi.json``: a valid AsyncAPI 3.0.0 document that says what the WebSockets really send.

The document is validated against the official JSON Schema (tests/fixtures/README.md says where it comes
from). It cannot drift from the sockets: every frame a real server sends, live and replayed with
``since``, is valid against the schema the document publishes for it with unknown keys refused and every
key required at every level (inside ``vm`` and ``user`` too, whose structs do not forbid unknown fields
themselves), and decodes with its struct; the published schemas are what msgspec generates from those
structs now; the renewal frame the document says a socket receives is the one the server takes; and every
close code constant the realtime code closes with is documented.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args, get_type_hints

import jsonschema
import msgspec
import pytest
from litestar import Litestar
from litestar.routes import WebSocketRoute
from litestar.status_codes import WS_1012_SERVICE_RESTART
from litestar.testing import AsyncTestClient
from websockets.asyncio.client import ClientConnection

from app.domain.changes.models import Action
from app.domain.realtime import controller
from app.domain.realtime.messages import TokenRenewal, UserEvent, VMEvent
from app.http import errors
from app.security import refusals
from tests.helpers import (
    EVENT_TIMEOUT,
    Account,
    LiveServer,
    admin_account,
    create_account,
    create_vm,
    expect,
    receive_event,
    wait_closed_with,
    ws_connect,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "fixtures" / "asyncapi-3.0.0.schema.json"
CLOSING_MODULES: tuple[ModuleType, ...] = (controller, refusals, errors)
"""The modules whose ``WS_*`` constants sockets are closed with."""
CHANNELS = {"/ws/vms": (VMEvent, "vm"), "/ws/users": (UserEvent, "user")}
MESSAGES = (VMEvent, UserEvent, TokenRenewal)


async def asyncapi(client: AsyncTestClient[Litestar]) -> dict[str, Any]:
    # A plain request: expect() would refuse the word "password" the user schemas never contain anyway.
    response = await client.get("/docs/asyncapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"not a reference inside the document: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        assert key in node, f"{ref} does not resolve"
        node = node[key]
    return node


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs_in(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs_in(value)]
    return []


def channel_of(document: dict[str, Any], address: str) -> dict[str, Any]:
    found = [channel for channel in document["channels"].values() if channel["address"] == address]
    assert len(found) == 1, f"{address}: {len(found)} channels"
    return found[0]


# ---------------------------------------------------------------- the document


async def test_the_document_is_valid_asyncapi_3_0_0_and_served_to_anyone(
    client: AsyncTestClient[Litestar],
) -> None:
    document = await asyncapi(client)
    assert document["asyncapi"] == "3.0.0"
    validator = asyncapi_validator()
    problems = [f"{error.json_path}: {error.message}" for error in validator.iter_errors(document)]
    assert not problems, problems
    for ref in refs_in(document):
        resolve(document, ref)
    # The validator does refuse what AsyncAPI 3.0 does not allow (2.x's publish/subscribe).
    broken = copy.deepcopy(document)
    next(iter(broken["operations"].values()))["action"] = "subscribe"
    assert not validator.is_valid(broken)


async def test_the_channels_are_the_apps_websockets_with_both_ways_to_authenticate(
    client: AsyncTestClient[Litestar], app: Litestar
) -> None:
    document = await asyncapi(client)
    sockets = {route.path for route in app.routes if isinstance(route, WebSocketRoute)}
    assert {channel["address"] for channel in document["channels"].values()} == sockets == set(CHANNELS)
    schemes = document["components"]["securitySchemes"]
    assert {(scheme["type"], scheme.get("in"), scheme.get("name")) for scheme in schemes.values()} == {
        ("httpApiKey", "query", "token"),
        ("http", None, None),
    }
    assert [scheme["scheme"] for scheme in schemes.values() if scheme["type"] == "http"] == ["bearer"]
    for address in CHANNELS:
        binding = channel_of(document, address)["bindings"]["ws"]
        assert set(binding["query"]["properties"]) == {"token", "since"}
        assert "Authorization" in binding["headers"]["properties"]
        operations = {
            operation["action"]: operation
            for operation in document["operations"].values()
            if resolve(document, operation["channel"]["$ref"])["address"] == address
        }
        assert set(operations) == {"send", "receive"}
        for operation in operations.values():
            assert {ref["$ref"] for ref in operation["security"]} == {
                f"#/components/securitySchemes/{name}" for name in schemes
            }


async def test_the_payload_schemas_are_what_msgspec_generates_from_the_structs_now(
    client: AsyncTestClient[Litestar],
) -> None:
    document = await asyncapi(client)
    _, generated = msgspec.json.schema_components(MESSAGES, ref_template="#/components/schemas/{name}")
    assert document["components"]["schemas"] == generated
    for address, (struct, _) in CHANNELS.items():
        assert {
            action: [payload_of(document, ref["$ref"]) for ref in operation["messages"]]
            for action, operation in operations_of(document, address).items()
        } == {"send": [struct.__name__], "receive": [TokenRenewal.__name__]}


def operations_of(document: dict[str, Any], address: str) -> dict[str, dict[str, Any]]:
    return {
        operation["action"]: operation
        for operation in document["operations"].values()
        if resolve(document, operation["channel"]["$ref"])["address"] == address
    }


def payload_of(document: dict[str, Any], message_ref: str) -> str:
    """The name of the schema a message (referenced from an operation or a channel) carries."""
    message = resolve(document, message_ref)
    if "payload" not in message:  # a channel's entry is itself a reference to the component
        message = resolve(document, message["$ref"])
    assert message["contentType"] == "application/json"
    payload_ref: str = message["payload"]["$ref"]
    return payload_ref.removeprefix("#/components/schemas/")


async def test_every_close_code_the_sockets_use_is_documented(client: AsyncTestClient[Litestar]) -> None:
    used = {
        value
        for module in CLOSING_MODULES
        for name, value in vars(module).items()
        if name.startswith("WS_") and isinstance(value, int)
    }
    used.add(WS_1012_SERVICE_RESTART)  # uvicorn's, on SIGTERM (tests/faults/test_sigterm.py)
    assert {1008, 1013, 4400, 4401, 4403, 4410} <= used
    document = await asyncapi(client)
    for address in CHANNELS:
        channel = channel_of(document, address)
        documented = {entry["code"] for entry in channel["x-close-codes"]}
        assert documented == used, f"{address}: documented {sorted(documented)}, used {sorted(used)}"
        assert all(entry["meaning"] for entry in channel["x-close-codes"])
        for code in used:
            assert f"**{code}**" in channel["description"]
        (ended,) = [entry["meaning"] for entry in channel["x-close-codes"] if entry["code"] == 1008]
        assert "session ended" in ended
        assert "POST /login/refresh" in ended
        assert "sign in again" in ended


async def test_the_docs_page_links_to_the_document(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/docs/openapi.json")
    assert response.status_code == 200
    assert "](/docs/asyncapi.json)" in response.json()["info"]["description"]


# ---------------------------------------------------------------- what the sockets send


def strict(node: Any) -> Any:
    """The published schemas with, at every level, unknown keys refused and every declared key required.

    msgspec publishes ``additionalProperties: false`` only for structs that forbid unknown fields: the
    event structs do, the ``VMRead`` and ``UserRead`` nested in them do not (the HTTP API shares them), so
    a key added inside ``vm`` or ``user`` would pass the published schema and the struct's decoding."""
    if isinstance(node, list):
        return [strict(value) for value in node]
    if not isinstance(node, dict):
        return node
    tightened = {key: strict(value) for key, value in node.items()}
    if "properties" in node:
        tightened["additionalProperties"] = False
        tightened["required"] = sorted(node["properties"])
    return tightened


def frame_checker(document: dict[str, Any], struct: type[msgspec.Struct]) -> Callable[[str], None]:
    """Checks one frame: valid against the document's schema for ``struct`` made strict (:func:`strict`),
    and decoded by ``struct``."""
    schema = {
        "$ref": f"#/components/schemas/{struct.__name__}",
        "components": {"schemas": strict(document["components"]["schemas"])},
    }
    validator = jsonschema.Draft202012Validator(schema)

    def check(frame: str) -> None:
        problems = [
            f"{error.json_path}: {error.message}" for error in validator.iter_errors(json.loads(frame))
        ]
        assert not problems, f"{frame} drifted from the document: {problems}"
        msgspec.json.decode(frame, type=struct)

    return check


async def test_a_frame_that_drifted_at_any_level_fails_the_check(client: AsyncTestClient[Litestar]) -> None:
    check = frame_checker(await asyncapi(client), VMEvent)
    vm = {"id": 1, "name": "a", "cores": 1, "ram": 1, "disk": 1, "os": "b", "status": "running"}
    vm |= {"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
    frame = {"event": "vm_deleted", "seq": 1, "at": "2026-01-01T00:00:00Z", "actor_id": None, "origin": "h:1"}
    check(json.dumps({**frame, "vm": vm}))
    # VMRead alone takes an unknown key: only the strict schema refuses it.
    msgspec.json.decode(json.dumps({**frame, "vm": {**vm, "owner": 7}}), type=VMEvent)
    without_name = {key: value for key, value in vm.items() if key != "name"}
    for drifted in (
        {**frame, "vm": {**vm, "owner": 7}},
        {**frame, "vm": without_name},
        {**frame, "vm": {**vm, "status": "sleeping"}},
        {**frame, "vm": vm, "extra": 1},
        frame,
    ):
        with pytest.raises(AssertionError, match="drifted from the document"):
            check(json.dumps(drifted))


def test_the_structs_refuse_a_key_they_do_not_declare_and_name_every_event() -> None:
    for struct, entity in CHANNELS.values():
        assert struct.__struct_config__.forbid_unknown_fields
        event_names = get_args(get_type_hints(struct)["event"])
        assert set(event_names) == {f"{entity}_{action}" for action in get_args(Action)}
    frame = {"event": "vm_deleted", "seq": 1, "at": "2026-01-01T00:00:00Z", "actor_id": None, "origin": "h:1"}
    vm = {"id": 1, "name": "a", "cores": 1, "ram": 1, "disk": 1, "os": "b", "status": "running"}
    vm |= {"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
    msgspec.json.decode(msgspec.json.encode({**frame, "vm": vm}), type=VMEvent)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(msgspec.json.encode({**frame, "vm": vm, "extra": 1}), type=VMEvent)
    with pytest.raises(msgspec.ValidationError, match="missing required field"):
        msgspec.json.decode(msgspec.json.encode(frame), type=VMEvent)


async def frames(socket: ClientConnection, count: int) -> list[str]:
    received = []
    for _ in range(count):
        message = await asyncio.wait_for(socket.recv(), EVENT_TIMEOUT)
        assert isinstance(message, str), "expected a text frame"
        received.append(message)
    return received


Entity = Literal["vm", "user"]


async def create_update_delete(server: LiveServer, entity: Entity, admin: Account) -> None:
    if entity == "vm":
        path = f"/vms/{(await create_vm(server.http, admin, name='drift'))['id']}"
        change: dict[str, Any] = {"cores": 8}
    else:
        path = f"/users/{(await create_account(server.http, admin)).id}"
        change = {"name": "Renamed Person"}
    assert (await server.http.patch(path, json=change, headers=admin.headers)).status_code == 200
    assert (await server.http.delete(path, headers=admin.headers)).status_code == 204


async def test_every_frame_live_and_replayed_matches_its_documented_schema(
    live_server: LiveServer,
) -> None:
    server = live_server
    document = (await server.http.get("/docs/asyncapi.json")).json()
    admin = await admin_account(server)
    since = int((await server.http.get("/vms", headers=admin.headers)).headers["X-Change-Seq"])
    received: dict[str, list[str]] = {}
    async with (
        ws_connect(server, "/ws/vms", admin.token) as vms,
        ws_connect(server, "/ws/users", admin.token, header=True) as users,
    ):
        await create_update_delete(server, "vm", admin)
        await create_update_delete(server, "user", admin)
        received["/ws/vms"] = await frames(vms, 3)
        received["/ws/users"] = await frames(users, 3)
    for address in CHANNELS:
        async with ws_connect(server, f"{address}?since={since}", admin.token) as replaying:
            received[f"{address}?since"] = await frames(replaying, 3)

    for where, raw_frames in received.items():
        struct, entity = CHANNELS[where.removesuffix("?since")]
        check = frame_checker(document, struct)
        for frame in raw_frames:
            check(frame)
        events = [msgspec.json.decode(frame, type=struct) for frame in raw_frames]
        assert [event.event for event in events] == [f"{entity}_{action}" for action in get_args(Action)]
        assert all(event.seq > since and event.at.utcoffset() is not None for event in events), where
    for address in CHANNELS:
        assert [json.loads(frame) for frame in received[f"{address}?since"]] == [
            json.loads(frame) for frame in received[address]
        ]


async def test_the_renewal_frame_the_document_describes_is_the_one_a_socket_takes(
    live_server: LiveServer,
) -> None:
    """What the receive operation publishes (``{"token": ...}``, nothing else) is what the server does: a
    fresh token of the session keeps the socket, another key closes it with 1008, other text is ignored."""
    server = live_server
    document = (await server.http.get("/docs/asyncapi.json")).json()
    renewal = document["components"]["schemas"][TokenRenewal.__name__]
    assert (renewal["required"], renewal["additionalProperties"]) == (["token"], False)
    admin = await admin_account(server)
    pair = expect(
        await server.http.post("/login", json={"email": admin.email, "password": admin.password}), 200
    )
    async with ws_connect(server, "/ws/vms", pair["access_token"]) as socket:
        fresh = expect(
            await server.http.post("/login/refresh", json={"refresh_token": pair["refresh_token"]}), 200
        )
        frame = json.dumps({"token": fresh["access_token"]})
        jsonschema.validate(json.loads(frame), renewal)
        await socket.send("hello")  # names no token: ignored
        await socket.send(frame)
        vm = await create_vm(server.http, admin)
        assert (await receive_event(socket))["vm"] == vm
        await socket.send(json.dumps({"token": fresh["access_token"], "scope": "all"}))
        await wait_closed_with(socket, [1008])
