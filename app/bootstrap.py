"""The start-up bootstrap: the configured administrador, or one line saying how to make the first one."""

from __future__ import annotations

import structlog
from litestar.exceptions import HTTPException

from app.context import writes_from
from app.wiring import Wiring, user_service

log = structlog.get_logger("vms.bootstrap")

# Runs as printed, in a terminal or a script: the password comes from the first line of its stdin (not an
# option, which other local users would see in the process list; not a prompt, which a script cannot answer).
CREATE_ADMIN_COMMAND = (
    "uv run litestar users create --role administrador --email admin@example.com --name Admin "
    "--password-stdin"
)


async def bootstrap_admin(wiring: Wiring) -> None:
    """Create the administrador of VMS_ADMIN_EMAIL / VMS_ADMIN_PASSWORD when none exists; without those,
    when nobody can administer this deployment yet, log the command that fixes it. One session."""
    settings = wiring.settings
    async with wiring.alchemy.get_session() as session:
        users = user_service(wiring, session)
        if not (settings.admin_email and settings.admin_password):
            if not await users.has_admin():
                log.warning(
                    "no administrador exists; create one, its password on standard input, with: "
                    f"{CREATE_ADMIN_COMMAND}"
                )
            return
        try:
            with writes_from("startup"):
                user = await users.ensure_admin(
                    email=settings.admin_email, password=settings.admin_password, name=settings.admin_name
                )
        except HTTPException as exc:  # another worker created it first, or the email is taken
            log.warning("configured administrador not created", reason=exc.detail)
            return
    if user is not None:
        log.info("created the configured administrador", email=user.email, user_id=user.id)
