"""What the server's command line says about this start: how many workers, and where it serves.

The application is told neither (ASGI's start-up message carries no address, and each worker is its own
process), so it reads the arguments and environment variables the server itself reads: ``litestar run``
and ``uvicorn`` spawn workers with the parent's ``sys.argv``.
"""

from __future__ import annotations

_WORKER_FLAGS = ("-W", "-w", "--wc", "--web-concurrency", "--workers")  # -w: gunicorn, hypercorn


def requested_workers(argv: list[str], environ: dict[str, str]) -> int:
    """How many server processes this start asked for (``litestar run -W N`` or ``uvicorn --workers N``).

    Worker processes are spawned with the parent's ``sys.argv``, so each of them sees the same answer.
    """
    count = 1
    for name in ("LITESTAR_WEB_CONCURRENCY", "WEB_CONCURRENCY"):
        if environ.get(name, "").isdigit():
            count = max(count, int(environ[name]))
    for index, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in _WORKER_FLAGS:
            if not value and index + 1 < len(argv):
                value = argv[index + 1]
            if value.isdigit():
                count = max(count, int(value))
    return count


def _flag_value(argv: list[str], flags: tuple[str, ...]) -> str | None:
    """The value of the last of ``flags`` on the command line (``--port 9000`` or ``--port=9000``)."""
    found = None
    for index, arg in enumerate(argv):
        flag, equals, value = arg.partition("=")
        if flag in flags:
            found = value if equals else (argv[index + 1] if index + 1 < len(argv) else None)
    return found


def serving_url(argv: list[str], environ: dict[str, str]) -> str:
    """Where this start serves, as its command line (``litestar run``, ``uvicorn``) and environment say.

    The application hears of its address from nowhere else (ASGI's start-up message has none), and it
    starts before the server binds, so it reads the same arguments the server reads."""
    socket = _flag_value(argv, ("--uds",)) or environ.get("LITESTAR_UNIX_DOMAIN_SOCKET")
    if socket:
        return f"http://unix:{socket}"
    host = (
        _flag_value(argv, ("-H", "--host"))
        or environ.get("LITESTAR_HOST")
        or environ.get("UVICORN_HOST")
        or "127.0.0.1"
    )
    # The first that is a port number: another program's ``-p`` (``pytest -p plugin``) is not one.
    candidates = (
        _flag_value(argv, ("-p", "--port")),
        environ.get("LITESTAR_PORT"),
        environ.get("UVICORN_PORT"),
    )
    port = next((value for value in candidates if value and value.isdigit()), "8000")
    tls = _flag_value(argv, ("--ssl-certfile",)) or "--create-self-signed-cert" in argv
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"
