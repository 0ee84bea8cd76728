"""``X-Request-ID``: a sane id from the client (1 to 64 of letters, digits and ``._:-``) is kept; anything
else is replaced by a made one, never echoed, with VMS's access log on or off (two different wrappers).

The ids here go through the app in this process: a real HTTP server already refuses control characters
in a header (uvicorn answers 400 before the app), but the app must not count on the server in front of
it. tests/test_logs.py sends the ones a server lets through (spaces, non-ASCII) over the wire.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import (
    GENERATED_REQUEST_ID,
    VM_BODY,
    client_with,
    expect,
    read_log,
    sign_in_admin,
)

KEPT = [b"ops-1", b"trace.2026:a-b_c", b"x" * 64]
REPLACED = [
    b"",
    b"x" * 65,
    b"with space",
    b"tab\there",
    b"caf\xc3\xa9",  # non-ASCII (UTF-8)
    b"\xff\xfe",  # not even UTF-8
    b"a\x00b",
    b"a\x01b",
    b"a\x7fb",
    b"\x1b[31mred",  # a terminal escape: colours or rewrites a console log line
    b"forged\n",  # a line break: would end the header, or the log line, early
    b"forged\r\nSet-Cookie: a=b",
]


@pytest.mark.parametrize("access_log", [True, False], ids=["access-log", "no-access-log"])
async def test_a_sane_id_is_kept_and_anything_else_replaced(tmp_path: Path, access_log: bool) -> None:
    async with client_with(tmp_path, access_log=access_log) as client:
        for given in KEPT:
            response = await client.get("/health", headers={"X-Request-ID": given})
            assert response.headers["X-Request-ID"] == given.decode()
        made = set()
        for given in REPLACED:
            response = await client.get("/health", headers={"X-Request-ID": given})
            assert response.status_code == 200
            answered = response.headers["X-Request-ID"]
            assert GENERATED_REQUEST_ID.fullmatch(answered), (given, answered)
            made.add(answered)
        assert len(made) == len(REPLACED)  # a new one each time

        # The change a request makes carries the id the response named, the made one.
        admin = await sign_in_admin(client)
        created = await client.post(
            "/vms", json=VM_BODY, headers={**admin.headers, "X-Request-ID": b"forged\n"}
        )
        expect(created, 201)
        entries, _ = await read_log(client, admin, entity="vm")
        assert [entry["request_id"] for entry in entries] == [created.headers["X-Request-ID"]]
