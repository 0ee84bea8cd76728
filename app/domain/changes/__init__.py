"""The change log: every committed change to a VM or a user, in one order; its history routes and the
per-process feed that turns it into live events."""
