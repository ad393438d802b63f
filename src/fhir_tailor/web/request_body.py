"""Reading a client's request body under a size limit.

Starlette's ``request.body()`` and ``request.json()`` read the whole body into memory, however
large it is, so any client able to reach an endpoint could make the process hold gigabytes.
:func:`read_body` reads ``request.stream()`` instead: a body whose ``Content-Length`` passes the
limit is refused before a byte of it is read, and one sent without a length (chunked) or with a
false one is refused as soon as the bytes received pass it; the rest is never read. The body is
counted as it arrives: Starlette does not decode a request's ``Content-Encoding``, and neither
does the JSON parser that reads it next.

:func:`read_form` does the same for a form: ``request.form()`` reads an urlencoded body whole too
(its ``max_fields`` and ``max_part_size`` bound multipart bodies only, Starlette 0.52).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from ..errors import byte_size


class BodyTooLargeError(Exception):
    """A request body past the limit; the message names the limit, nothing of the body."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than the {byte_size(limit)} limit")
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """The body of ``request``, at most ``limit`` bytes; :class:`BodyTooLargeError` past it."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLargeError(limit)
    return bytes(body)


async def read_form(request: Request, limit: int) -> FormData:
    """The fields of an ``application/x-www-form-urlencoded`` body of at most ``limit`` bytes
    (:func:`read_body`), decoded as ``request.form()`` decodes them; any other body is not read
    and has no fields (forms posted by a browser are urlencoded unless they ask otherwise)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        return FormData()
    body = await read_body(request, limit)
    fields: list[tuple[str, str | UploadFile]] = list(
        parse_qsl(body.decode("latin-1"), keep_blank_values=True)
    )
    return FormData(fields)
