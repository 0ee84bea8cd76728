"""The docs page works on a private network: rendered in headless Chromium, it lists the operations, shows
none of Scalar's cloud-only features, and makes no request to another host.

Chromium is driven over its DevTools protocol (the ``websockets`` client the suite already has): every
request the page makes is seen there, fonts and scripts included. CI installs Debian's ``chromium``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers import IN_CI
from tests.helpers.processes import ServerProcess, server_process, sqlite_server_env

CLOUD_ONLY = ("Ask AI", "Generate SDK", "Generate MCP", "Deploy", "Developer Tools")
OPERATIONS = ("Sign in: get a bearer token", "/login", "/logout")  # the first tag opens expanded


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if IN_CI:
        pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
    pytest.skip("chromium is not installed (apt-get install chromium)")


@contextlib.asynccontextmanager
async def browser(tmp_path: Path) -> AsyncIterator[str]:
    """A headless Chromium of this test's own; yields its DevTools HTTP address, stopped by its PID."""
    process = subprocess.Popen(
        [
            chromium_binary(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        address = None
        async with asyncio.timeout(30):
            while address is None:
                line = await asyncio.to_thread(process.stderr.readline)
                assert line, "chromium exited before it listened"
                if "DevTools listening on ws://" in line:
                    address = "http://" + line.split("ws://", 1)[1].split("/", 1)[0]
        yield address
    finally:
        process.kill()
        process.wait(timeout=10)


class DevTools:
    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.socket.recv())
            if message.get("id") == call_id:
                assert "error" not in message, message
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    async def collect(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    self.events.append(json.loads(await self.socket.recv()))


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    env = sqlite_server_env(tmp_path / "vms.sqlite3")
    async with server_process(env, tmp_path / "server.log") as started:
        yield started


async def test_the_docs_page_renders_offline_with_the_operations_listed(
    server: ServerProcess, tmp_path: Path
) -> None:
    async with browser(tmp_path) as devtools, httpx.AsyncClient(timeout=10) as http:
        pages = (await http.get(f"{devtools}/json/list")).json()
        page = next(target for target in pages if target["type"] == "page")
        async with connect(page["webSocketDebuggerUrl"], max_size=2**24) as socket:
            tools = DevTools(socket)
            await tools.call("Network.enable")
            await tools.call("Page.enable")
            await tools.call("Page.navigate", url=f"{server.url}/docs")
            text = ""
            async with asyncio.timeout(60):
                while not all(operation in text for operation in OPERATIONS):
                    await tools.collect(1.0)
                    evaluated = await tools.call(
                        "Runtime.evaluate", expression="document.body ? document.body.innerText : ''"
                    )
                    text = str(evaluated["result"].get("value", ""))
            await tools.collect(2.0)  # anything the page fetches once it has rendered
            links = await tools.call(
                "Runtime.evaluate",
                expression="Array.from(document.querySelectorAll('a[href]')).map(a => a.href).join(' ')",
            )
    # The WebSockets' AsyncAPI document is linked from the page (from the API description).
    assert f"{server.url}/docs/asyncapi.json" in str(links["result"].get("value", "")).split(), links
    shown = [feature for feature in CLOUD_ONLY if feature in text]
    assert not shown, f"cloud-only features on the page: {shown}"
    requested = [
        event["params"]["request"]["url"]
        for event in tools.events
        if event.get("method") == "Network.requestWillBeSent"
    ]
    assert any(url.endswith("/docs/openapi.json") for url in requested), requested
    elsewhere = [
        url
        for url in requested
        if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).hostname != "127.0.0.1"
    ]
    assert not elsewhere, f"the page asked other hosts: {elsewhere}"
