"""msgspec's and Litestar's own validation messages, rewritten in words a person reads (no regexes)."""

from __future__ import annotations

import re
from collections.abc import Callable

from app.http.validation import NO_NUL, NO_NUL_WORDS, VISIBLE_TEXT

# What Litestar reports for query parameters and bodies it decodes itself is msgspec's wording:
# each known shape is rewritten; anything else loses msgspec's location suffix and keeps its text.
_TYPE_WORDS = {
    "int": "an integer",
    "str": "a string",
    "float": "a number",
    "bool": "true or false",
    "object": "a JSON object",
    "array": "an array",
    "null": "null",
}
# msgspec quotes a failed pattern with repr().
_PATTERN_WORDS = {
    repr(NO_NUL): NO_NUL_WORDS,
    repr(VISIBLE_TEXT): "must not be only spaces or contain NUL characters",
}
_OPERATORS = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than"}


def _wrong_type(match: re.Match[str]) -> str:
    return f"must be {_TYPE_WORDS.get(match[1], 'a ' + match[1])}"


def _pattern(match: re.Match[str]) -> str:
    return _PATTERN_WORDS.get(match[1], "has characters that are not allowed")


def _length(match: re.Match[str]) -> str:
    return f"must be {_OPERATORS[match[1]]} {match[2]} characters long"


def _bound(match: re.Match[str]) -> str:
    return f"must be {_OPERATORS[match[1]]} {match[2]}"


def _choice(match: re.Match[str]) -> str:
    return "is not one of the allowed values"


_SHAPES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"^Expected `(\w+)`, got `\w+`$"), _wrong_type),
    (re.compile(r"^Expected `str` matching regex ('.*')$", re.DOTALL), _pattern),
    (re.compile(r"^Expected `str` of length (>=|<=|>|<) (\d+)$"), _length),
    (re.compile(r"^Expected `(?:int|float)` (>=|<=|>|<) (\S+)$"), _bound),
    (re.compile(r"^Invalid enum value ", re.DOTALL), _choice),
]


def humanise(message: str) -> str:
    """msgspec's wording of a validation error rewritten for a person; no regex, no type jargon."""
    message = message.partition(" - at `$")[0]
    for shape, words in _SHAPES:
        if match := shape.match(message):
            return words(match)
    return message
