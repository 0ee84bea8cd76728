"""The long-lived objects a request needs, built once in ``create_app`` and injected as ``runtime``."""

from __future__ import annotations

from litestar.datastructures import State

from app.config import Settings
from app.db import WriteGate
from app.domain.auth.principals import Principals
from app.domain.vms.reads import VMReadCache
from app.events import EventPublisher
from app.passwords import PasswordHasher
from app.security import TokenService
from app.throttle import FailureCounters

RUNTIME_STATE_KEY = "runtime"


class Runtime:
    # A plain class on purpose: Litestar validates injected values with msgspec, which would try to
    # introspect a dataclass's fields (and everything they reference) on every request.
    __slots__ = (
        "events",
        "hasher",
        "login_failures",
        "principals",
        "settings",
        "tokens",
        "vm_reads",
        "write_gate",
    )

    def __init__(
        self,
        *,
        settings: Settings,
        hasher: PasswordHasher,
        write_gate: WriteGate,
        events: EventPublisher,
        tokens: TokenService,
        principals: Principals,
        vm_reads: VMReadCache,
        login_failures: FailureCounters,
    ) -> None:
        self.settings = settings
        self.hasher = hasher
        self.write_gate = write_gate
        self.events = events
        self.tokens = tokens
        self.principals = principals
        self.vm_reads = vm_reads
        self.login_failures = login_failures


def runtime_of(state: State) -> Runtime:
    runtime: Runtime = state[RUNTIME_STATE_KEY]
    return runtime


def provide_runtime(state: State) -> Runtime:
    return runtime_of(state)
