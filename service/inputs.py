"""What the service accepts from a client before any handler works with it: JSON bodies (size, nesting depth,
strings), and which exceptions mean "the request was malformed" (a 400 with a JSON error, never a 500).

``json_object(request)`` is the one JSON body reader of the API; ``malformed(exc)`` is what ``api`` handlers ask
before answering 500, and the app answers ``MALFORMED_ERRORS`` escaping any other route with 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

MAX_JSON_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 16

# A JSON string token or a bracket: strings are skipped, so brackets inside them do not count as nesting.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
# What a database or a hash cannot take: lone surrogates (no UTF-8 encoding) and NUL (PostgreSQL text).
_UNUSABLE = re.compile("[\x00\ud800-\udfff]")


class BadInput(HTTPException):
    """A malformed request: 400 (or 413) with a JSON error."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


# Exceptions that, escaping a handler, mean unusable client input (answered 400, not 500): text that cannot be
# encoded or decoded (a lone surrogate, bytes that are not UTF-8).
MALFORMED_ERRORS: tuple[type[Exception], ...] = (UnicodeError,)
MALFORMED = "the request has text the service cannot read or store"


def malformed(exc: BaseException) -> bool:
    """Whether an exception that escaped a handler comes from unusable client input."""
    return isinstance(exc, MALFORMED_ERRORS)


async def read_body(request: Request, limit: int = MAX_JSON_BYTES) -> bytes:
    """The request body, refusing (413) one over ``limit`` bytes before reading the rest of it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadInput(f"the request body is limited to {limit} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadInput(f"the request body is limited to {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def check_depth(data: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` before parsing it (the parser would recurse that deep)."""
    depth = 0
    for match in _TOKEN.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise BadInput(f"the request body is nested deeper than {limit} levels")
        elif token in (b"]", b"}"):
            depth -= 1


def check_strings(value: Any, name: str = "body") -> None:
    """Refuse strings (keys and values) with a lone surrogate or a NUL anywhere in a parsed JSON value."""
    if isinstance(value, str):
        if _UNUSABLE.search(value):
            raise BadInput(f"{name} contains a NUL or an unpaired surrogate")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_strings(key, name)
            check_strings(item, str(key) if name == "body" else name)  # name the top-level field
    elif isinstance(value, list):
        for item in value:
            check_strings(item, name)


def parse_json(data: bytes) -> Any:
    """A JSON document within the depth limit whose strings the service can store; 400 otherwise."""
    check_depth(data)
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError and int-too-long errors are ValueErrors
        raise BadInput("the request body is not valid JSON") from None
    check_strings(value)
    return value


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body (at most ``MAX_JSON_BYTES``, ``MAX_JSON_DEPTH`` deep)."""
    body = parse_json(await read_body(request))
    if not isinstance(body, dict):
        raise BadInput("the request body must be a JSON object")
    return body
