"""Bodies for size-limit tests: exactly ``n`` bytes of JSON or of a form, and one that never
ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx

CHUNK = 64 * 2**10


def padded(document: dict[str, Any], size: int, field: str = "padding") -> bytes:
    """``document`` as JSON of exactly ``size`` bytes, filled up with spaces in ``field``."""
    bare = len(json.dumps(document | {field: ""}).encode())
    body = json.dumps(document | {field: " " * (size - bare)}).encode()
    assert len(body) == size, "the document alone is larger than the size asked for"
    return body


def padded_form(fields: dict[str, str], size: int, field: str = "padding") -> bytes:
    """``fields`` urlencoded in exactly ``size`` bytes, filled up with ``x`` in ``field``."""
    bare = len(urlencode(fields | {field: ""}))
    body = urlencode(fields | {field: "x" * (size - bare)}).encode()
    assert len(body) == size, "the fields alone are larger than the size asked for"
    return body


class Endless(httpx.AsyncByteStream):
    """A body that goes on and on in 64 KiB chunks, counting the bytes taken from it.

    It stops after ``bound`` bytes only so that a reader without a limit fails its test instead
    of hanging it; a reader with one stops taking long before."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.taken < self.bound:
            self.taken += CHUNK
            yield b" " * CHUNK
