"""Conditional requests (RFC 9110 section 13): ``If-Match`` and ``If-None-Match`` against one entity tag.

``If-Match`` uses the strong comparison: a weak tag (``W/"..."``) never matches, because a write must
only go through against exactly the version the client saw. ``If-None-Match`` uses the weak comparison
(a cache revalidating may hold a weak copy). ``*`` matches any current representation.
"""

from __future__ import annotations


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def if_match_allows(header: str | None, current: str) -> bool:
    """Whether a write may proceed on the resource whose entity tag is ``current``."""
    if header is None:
        return True
    tags = _tags(header)
    return "*" in tags or current in tags  # a weak tag keeps its W/ prefix, so it never equals ``current``


def if_none_match_matches(header: str | None, current: str) -> bool:
    """Whether a GET can answer 304 Not Modified for the resource whose entity tag is ``current``."""
    if header is None:
        return False
    tags = _tags(header)
    return "*" in tags or current.removeprefix("W/") in {tag.removeprefix("W/") for tag in tags}
