"""A small client for the FHIR R4 REST API, asynchronous with a synchronous face.

It does only what fhir-tailor needs (capabilities, read, search with paging, create, update,
transaction) but does it defensively, because it talks to servers we do not control:

* transient failures are retried under a :class:`~fhir_tailor.retry.RetryPolicy`;
* every attempt is bounded as a whole: ``timeout`` covers connecting, sending and reading the
  entire body (a server trickling a byte at a time is cut off), and a body past
  ``max_response_bytes`` is refused, not retried, and never held whole in memory;
* searches ask for strict handling, so a misspelt parameter fails loudly instead of
  silently widening the search to every resource of the type;
* paging never follows a link off the server's origin, which would hand our credentials
  to whoever the server (or an attacker who controls its responses) names;
* errors and logs carry the URL path but never the query string, headers or bodies,
  since those can hold patient identifiers or tokens; a server's own words (OperationOutcome
  diagnostics, an error page) only with ``show_server_diagnostics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from fhir_tailor.concurrency import EventLoop
from fhir_tailor.errors import (
    CrossOriginLinkError,
    DeadlineExceededError,
    FhirServerError,
    InvalidResponseError,
    PagingLoopError,
    ResponseTooLargeError,
    UnconfirmedWriteError,
    UnsafeToRetryError,
    UnsupportedFhirVersionError,
    parse_outcome_issues,
)
from fhir_tailor.fhirdata import load_json
from fhir_tailor.retry import RetryBudget, RetryPolicy, describe_failure, parse_retry_after
from fhir_tailor.version import __version__

logger = logging.getLogger("fhir_tailor.client")

FHIR_JSON = "application/fhir+json"

Resource = dict[str, Any]
T = TypeVar("T")
SearchParams = Mapping[str, str | Sequence[str]] | Sequence[tuple[str, str]]

# R4 is 4.0.x and R4B is 4.3.x; the other 4.x versions were ballots and R5 previews.
_SUPPORTED_VERSION = re.compile(r"4\.[03](\.\d+)?(-\S+)?")
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]+")
_RESOURCE_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9\-]{0,63}")
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CHUNK_BYTES = 64 * 1024
# How a body was framed on the wire; a body read (and decoded) here is framed anew.
_FRAMING_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})

#: The largest response body read into memory, in bytes. Searches ask for pages of ``_count``
#: resources (100 by default), a few megabytes even for large QuestionnaireResponses, and a
#: CapabilityStatement or ValueSet expansion page is of the same order; 64 MiB leaves room for
#: servers that ignore ``_count`` while refusing the runaway or hostile answer (one claiming
#: 2 GB was read whole, and retried, before this limit). Bodies are counted after decoding,
#: so a compressed answer is held to the same limit. Bulk Data files stream to disk instead,
#: under limits of their own (:mod:`fhir_tailor.bulk`).
DEFAULT_MAX_RESPONSE_BYTES = 64 * 2**20


class AsyncFhirClient:
    """A FHIR R4 REST client over one ``httpx.AsyncClient``; use it as an async context manager.

    ``retries`` counts every retry made so far, for the run report. ``max_connections`` bounds
    the connection pool, and so how many requests are in flight at once; the others wait their
    turn in arrival order, which does not count against their timeout. ``timeout`` (seconds)
    bounds each attempt of a request as a whole, not each read; the retry policy's budget
    bounds the attempts together. ``max_response_bytes`` is the largest body read (see
    DEFAULT_MAX_RESPONSE_BYTES). ``show_server_diagnostics`` lets error messages quote the
    server's free text, which is off by default because servers quote patient names and birth
    dates there. ``transport`` and ``sleep`` exist so tests can run without a network and
    without waiting.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        strict_search: bool = True,
        verify: bool = True,
        max_connections: int | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        show_server_diagnostics: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        url = httpx.URL(self.base_url)
        if url.scheme not in _DEFAULT_PORTS or not url.host or url.query or url.fragment:
            raise ValueError("the FHIR base URL must be an http(s) URL without query or fragment")
        if timeout <= 0 or max_response_bytes <= 0:
            raise ValueError("the timeout and the response size limit must be positive")
        self._origin = _origin(url)
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._server_text = show_server_diagnostics
        self._retry = retry or RetryPolicy()
        self._strict_search = strict_search
        self._sleep = sleep
        self._capabilities: Resource | None = None
        self.retries = 0
        # Requests past max_connections wait here rather than in httpx's pool, which looks at
        # every queued request each time one finishes: with dozens queued (patients read and
        # written concurrently) that cost more CPU than the requests themselves.
        self._slots = asyncio.Semaphore(max_connections) if max_connections else None
        self._http = httpx.AsyncClient(
            auth=auth,
            timeout=httpx.Timeout(timeout),
            verify=verify,
            limits=httpx.Limits(max_connections=max_connections),
            transport=transport,
            headers={"Accept": FHIR_JSON, "User-Agent": f"fhir-tailor/{__version__}"},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release pooled connections."""
        await self._http.aclose()

    async def capabilities(self) -> Resource:
        """The server's CapabilityStatement, fetched once; refuses servers that are not R4/R4B.

        Checking up front turns the confusing failures an STU3 or R5 server would cause later
        (renamed elements, different search parameters) into one clear message.
        """
        if self._capabilities is None:
            response = await self._request("GET", f"{self.base_url}/metadata")
            statement = _resource_body(response, "CapabilityStatement")
            _check_fhir_version(statement.get("fhirVersion"))
            self._capabilities = statement
        return self._capabilities

    async def supports_search(self, resource_type: str, parameter: str) -> bool:
        """Whether the CapabilityStatement declares a search parameter for a resource type.

        Conditional writes (``ifNoneExist``) on an undeclared parameter fail a whole transaction
        on strict servers, so writers ask first instead of assuming HAPI's full parameter set.
        """
        for rest in (await self.capabilities()).get("rest") or ():
            for resource in rest.get("resource") or ():
                if resource.get("type") == resource_type:
                    declared = resource.get("searchParam") or ()
                    return any(p.get("name") == parameter for p in declared)
        return False

    async def read(self, resource_type: str, resource_id: str) -> Resource:
        """``GET [type]/[id]``; a missing or deleted resource raises ResourceNotFoundError."""
        url = f"{self.base_url}/{_checked_type(resource_type)}/{_checked_id(resource_id)}"
        return _resource_body(await self._request("GET", url), resource_type)

    def search(
        self,
        resource_type: str,
        params: SearchParams | None = None,
        *,
        count: int | None = None,
    ) -> AsyncIterator[Resource]:
        """Every resource the search returns, matches and ``_include``\\ d ones, over all pages.

        ``params`` may be a mapping (a list value repeats the parameter) or a sequence of
        pairs; ``count`` becomes ``_count``, the page size.
        """
        return _entry_resources(self.search_pages(resource_type, params, count=count))

    async def search_all(
        self,
        resource_type: str,
        params: SearchParams | None = None,
        *,
        count: int | None = None,
    ) -> list[Resource]:
        """:meth:`search`, collected: for searches known to be small, such as one patient's."""
        return [r async for r in self.search(resource_type, params, count=count)]

    def everything(
        self, patient_id: str, types: Sequence[str], *, count: int | None = None
    ) -> AsyncIterator[Resource]:
        """The resources ``Patient/[id]/$everything`` returns, of ``types`` (its ``_type``
        parameter), over all pages: for types a server declares no patient search for."""
        query = _query_pairs({"_type": ",".join(map(_checked_type, types))}, count)
        url = f"{self.base_url}/Patient/{_checked_id(patient_id)}/$everything"
        return _entry_resources(self._pages(httpx.URL(url, params=query)))

    def search_pages(
        self,
        resource_type: str,
        params: SearchParams | None = None,
        *,
        count: int | None = None,
    ) -> AsyncIterator[Resource]:
        """Each searchset Bundle of the search in turn, following ``next`` links.

        Arguments are checked now, not when iteration starts, so mistakes surface where made.
        """
        query = _query_pairs(params, count)
        url = httpx.URL(f"{self.base_url}/{_checked_type(resource_type)}", params=query)
        return self._pages(url)

    async def create(self, resource: Resource, *, if_none_exist: str | None = None) -> Resource:
        """``POST [type]``; with ``if_none_exist`` (a search query) the create is conditional.

        A conditional create is also safe to retry, since a repeat finds the first one.
        """
        resource_type = _checked_type(resource.get("resourceType"))
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        url = f"{self.base_url}/{resource_type}"
        return _resource_body(await self._request("POST", url, body=resource, headers=headers))

    async def update(self, resource: Resource, *, if_match: str | None = None) -> Resource:
        """``PUT [type]/[id]``; ``if_match`` (a version id or ETag) guards against lost updates.

        A stale version raises PreconditionFailedError rather than overwriting someone
        else's change.
        """
        resource_type = _checked_type(resource.get("resourceType"))
        url = f"{self.base_url}/{resource_type}/{_checked_id(resource.get('id'))}"
        headers = {"Prefer": "return=representation"}
        if if_match is not None:
            headers["If-Match"] = weak_etag(if_match)
        return _resource_body(await self._request("PUT", url, body=resource, headers=headers))

    async def transaction(self, bundle: Resource) -> Resource:
        """``POST [base]`` a transaction Bundle; returns the transaction-response Bundle.

        The server applies all entries or none, which is what keeps a write-back consistent.
        A 2xx answer that is not a transaction-response (cut short, an OperationOutcome)
        raises UnconfirmedWriteError: the server may have applied the transaction all the same.
        """
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            raise ValueError("transaction() needs a Bundle of type 'transaction'")
        response = await self._request("POST", self.base_url, body=bundle)
        path, status = response.request.url.path, response.status_code
        try:
            result = _resource_body(response)
        except InvalidResponseError as exc:
            raise UnconfirmedWriteError("POST", path, f"HTTP {status}, {exc.problem}") from None
        if result.get("resourceType") == "OperationOutcome":
            issues = parse_outcome_issues(result)
            codes = "; ".join(i.describe(diagnostics=self._server_text) for i in issues)
            raise UnconfirmedWriteError(
                "POST", path, f"HTTP {status} with an OperationOutcome ({codes or 'no issues'})"
            )
        if result.get("resourceType") != "Bundle" or result.get("type") != "transaction-response":
            if result.get("resourceType") == "Bundle":
                what = f"a Bundle of type {_named(result.get('type'))}"
            else:
                what = f"resourceType {_named(result.get('resourceType'))}"
            raise UnconfirmedWriteError(
                "POST", path, f"HTTP {status} with {what}, not a transaction-response Bundle"
            )
        return result

    async def operation(
        self, method: str, url: httpx.URL | str, *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """Send a request the typed methods do not cover (Bulk Data kick-off, status, delete).

        Retries like every other call; any 2xx response (202 included) is returned for the
        caller to interpret, anything else raises.
        """
        return await self._request(method, url, headers=headers)

    def resolve_link(self, link: str) -> httpx.URL:
        """The absolute URL of a link the server handed us, refused unless it is on the
        server's origin, because our credentials may only ever go there.

        A link that is only a query (``?_getpages=x``) is relative to the base URL itself;
        any other relative link is resolved inside the base URL, as for ``Patient?page=2``.
        """
        try:
            if link.startswith("?"):
                url = httpx.URL(self.base_url + link)
            else:
                url = httpx.URL(self.base_url + "/").join(link)
        except httpx.InvalidURL:
            raise InvalidResponseError(
                "GET", httpx.URL(self.base_url).path, "a next link is not a valid URL"
            ) from None
        if _origin(url) != self._origin:
            raise CrossOriginLinkError(self._origin, _origin(url))
        return url

    async def download(
        self,
        link: str,
        path: Path,
        *,
        authenticated: bool,
        accept: str,
        max_bytes: int | None = None,
        seconds: float | None = None,
    ) -> int:
        """Stream the file at ``link`` (same origin only) into ``path``; returns bytes written.

        The body goes to disk in chunks, never whole into memory. A failure part-way through
        (reset, timeout, 429/5xx) restarts the file from its start under the retry policy.
        ``authenticated=False`` sends the request without our credentials at all.

        A file may be far larger and slower than any other response, so the client's
        ``timeout`` bounds each read here, not the whole; the caller bounds the whole instead:
        ``max_bytes`` (ResponseTooLargeError, checked against Content-Length first and counted
        while writing) and ``seconds`` for all attempts together (DeadlineExceededError).
        Neither is retried, and the partial file is removed.
        """
        url = self.resolve_link(link)
        request = self._http.build_request("GET", url, headers={"Accept": accept})
        try:
            async with asyncio.timeout(seconds):
                return await self._download(request, path, authenticated, max_bytes)
        except TimeoutError:
            path.unlink(missing_ok=True)
            raise DeadlineExceededError("GET", url.path, seconds or 0.0) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    async def _download(
        self, request: httpx.Request, path: Path, authenticated: bool, max_bytes: int | None
    ) -> int:
        budget = RetryBudget(self._retry, "GET", request.url.path)
        while True:
            started = time.monotonic()
            outcome: httpx.Response | httpx.TransportError
            try:
                if authenticated:
                    response = await self._http.send(request, stream=True)
                else:
                    response = await self._http.send(request, stream=True, auth=None)
                try:
                    if response.is_success:
                        return await _write_body(response, path, max_bytes)
                    # the error body, for its OperationOutcome
                    outcome = await _read_body(response, self._max_response_bytes)
                finally:
                    await response.aclose()
            except httpx.TransportError as error:
                outcome = error
            finally:
                budget.spend(time.monotonic() - started, attempt=True)
            await self._after_failure(outcome, budget, idempotent=True)

    async def _pages(self, url: httpx.URL) -> AsyncIterator[Resource]:
        headers = {"Prefer": "handling=strict"} if self._strict_search else None
        fetched: set[str] = set()
        while True:
            fetched.add(str(url))
            bundle = _resource_body(await self._request("GET", url, headers=headers), "Bundle")
            yield bundle
            link = _next_link(bundle)
            if link is None:
                return
            url = self.resolve_link(link)
            if str(url) in fetched:
                raise PagingLoopError(url.path)

    async def _request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        body: Resource | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one logical request (retrying as needed); any non-2xx outcome raises."""
        headers = dict(headers or {})
        content = None
        if body is not None:
            content = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = FHIR_JSON
        request = self._http.build_request(method, url, content=content, headers=headers)
        budget = RetryBudget(self._retry, method, request.url.path)
        idempotent = method in _IDEMPOTENT_METHODS or "If-None-Exist" in request.headers
        while True:
            started = time.monotonic()
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self._attempt(request)
            except httpx.TransportError as error:
                outcome = error
            finally:
                budget.spend(time.monotonic() - started, attempt=True)
            if isinstance(outcome, httpx.Response) and outcome.is_success:
                return outcome
            await self._after_failure(outcome, budget, idempotent=idempotent)

    async def _attempt(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` once and read its whole body, all within ``timeout`` (counted from
        when it has its turn among ``max_connections``).

        httpx applies its timeout to each read, so a server sending a byte every few seconds
        would hold the request open for ever; the deadline here ends it as a ReadTimeout, which
        the retry policy treats like any other (a plain POST is not repeated).
        """
        async with self._slots or contextlib.nullcontext():
            try:
                async with asyncio.timeout(self._timeout):
                    response = await self._http.send(request, stream=True)
                    try:
                        return await _read_body(response, self._max_response_bytes)
                    finally:
                        await response.aclose()
            except TimeoutError:
                raise httpx.ReadTimeout(
                    f"the response was not complete within {self._timeout:g}s", request=request
                ) from None

    async def _after_failure(
        self,
        outcome: httpx.Response | httpx.TransportError,
        budget: RetryBudget,
        *,
        idempotent: bool,
    ) -> None:
        """Raise the error ``outcome`` stands for, or sleep if it is worth a retry."""
        retry_after = None
        if isinstance(outcome, httpx.TransportError):
            if not self._retry.should_retry_error(outcome, idempotent=idempotent):
                failure = describe_failure(outcome)
                raise UnsafeToRetryError(budget.method, budget.url_path, failure) from outcome
            error: Exception = outcome
        else:
            error = FhirServerError.from_response(outcome, server_text=self._server_text)
            if not self._retry.should_retry_status(outcome.status_code, idempotent=idempotent):
                raise error
            retry_after = parse_retry_after(outcome.headers.get("Retry-After"))
        delay = budget.next_delay(error, retry_after)
        self.retries += 1
        logger.warning(
            "retrying %s %s after %s (attempt %d of %d) in %.2fs",
            budget.method,
            budget.url_path,
            describe_failure(error),
            budget.attempts,
            self._retry.max_attempts,
            delay,
        )
        await self._sleep(delay)
        budget.spend(delay)


class FhirClient:
    """The synchronous face of :class:`AsyncFhirClient`; use it as a context manager.

    It runs one AsyncFhirClient on a private event loop (:class:`~.concurrency.EventLoop`), so
    synchronous code (the CLI, catalog publishing, Bulk Data) and concurrent patient work share
    one implementation and one connection pool. :attr:`aio` is that client and :meth:`submit`
    schedules a coroutine that uses it, for callers that want many requests in flight. The
    methods are those of AsyncFhirClient, blocking; ``sleep`` is a plain function here.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        strict_search: bool = True,
        verify: bool = True,
        max_connections: int | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        show_server_diagnostics: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        async def pause(seconds: float) -> None:
            assert sleep is not None
            sleep(seconds)

        self.aio = AsyncFhirClient(
            base_url,
            auth=auth,
            timeout=timeout,
            retry=retry,
            strict_search=strict_search,
            verify=verify,
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
            show_server_diagnostics=show_server_diagnostics,
            transport=transport,
            sleep=asyncio.sleep if sleep is None else pause,
        )
        self._loop = EventLoop()

    @property
    def base_url(self) -> str:
        return self.aio.base_url

    @property
    def retries(self) -> int:
        return self.aio.retries

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Cancel requests still in flight, release pooled connections, stop the event loop."""
        try:
            self._loop.cancel_pending()
            self._loop.call(self.aio.aclose())
        finally:
            self._loop.close()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule a coroutine on the client's event loop (where :attr:`aio` lives)."""
        return self._loop.submit(coroutine)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's event loop and wait for its result."""
        return self._loop.call(coroutine)

    def capabilities(self) -> Resource:
        return self.call(self.aio.capabilities())

    def supports_search(self, resource_type: str, parameter: str) -> bool:
        return self.call(self.aio.supports_search(resource_type, parameter))

    def read(self, resource_type: str, resource_id: str) -> Resource:
        return self.call(self.aio.read(resource_type, resource_id))

    def search(
        self, resource_type: str, params: SearchParams | None = None, *, count: int | None = None
    ) -> Iterator[Resource]:
        return self._iterate(self.aio.search(resource_type, params, count=count))

    def search_pages(
        self, resource_type: str, params: SearchParams | None = None, *, count: int | None = None
    ) -> Iterator[Resource]:
        return self._iterate(self.aio.search_pages(resource_type, params, count=count))

    def create(self, resource: Resource, *, if_none_exist: str | None = None) -> Resource:
        return self.call(self.aio.create(resource, if_none_exist=if_none_exist))

    def update(self, resource: Resource, *, if_match: str | None = None) -> Resource:
        return self.call(self.aio.update(resource, if_match=if_match))

    def transaction(self, bundle: Resource) -> Resource:
        return self.call(self.aio.transaction(bundle))

    def operation(
        self, method: str, url: httpx.URL | str, *, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.call(self.aio.operation(method, url, headers=headers))

    def resolve_link(self, link: str) -> httpx.URL:
        return self.aio.resolve_link(link)

    def download(
        self,
        link: str,
        path: Path,
        *,
        authenticated: bool,
        accept: str,
        max_bytes: int | None = None,
        seconds: float | None = None,
    ) -> int:
        return self.call(
            self.aio.download(
                link,
                path,
                authenticated=authenticated,
                accept=accept,
                max_bytes=max_bytes,
                seconds=seconds,
            )
        )

    def _iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        """A blocking iterator over an async one, one item per round trip to the loop."""

        async def following() -> tuple[bool, T | None]:
            try:
                return True, await anext(items)
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self.call(following())
                if not more:
                    return
                yield item  # type: ignore[misc]
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                self.call(aclose())


def weak_etag(version: str) -> str:
    """``If-Match`` wants the weak ETag ``W/"3"``; accept that, ``"3"`` or a bare ``3``."""
    version = version.strip()
    if not version:
        raise ValueError("if_match must not be empty")
    if version.startswith('W/"'):
        return version
    return f"W/{version}" if version.startswith('"') else f'W/"{version}"'


async def _write_body(response: httpx.Response, path: Path, limit: int | None) -> int:
    """Write a streamed body to ``path`` (truncating what an earlier attempt left), stopping
    with ResponseTooLargeError once it passes ``limit`` bytes."""
    if limit is not None:
        _check_declared_length(response, limit)
    written = 0
    with path.open("wb") as handle:
        async for chunk in response.aiter_bytes(chunk_size=_CHUNK_BYTES):
            written += len(chunk)
            if limit is not None and written > limit:
                raise ResponseTooLargeError("GET", response.request.url.path, limit)
            handle.write(chunk)
    return written


async def _read_body(response: httpx.Response, limit: int) -> httpx.Response:
    """A streamed response with its body read, refused with ResponseTooLargeError past
    ``limit`` bytes: by its Content-Length before reading, and by counting while reading
    (a server may declare none, or lie). Counted after decoding, so a small compressed body
    cannot unfold into gigabytes. The answer is a new, non-streaming Response."""
    _check_declared_length(response, limit)
    request = response.request
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise ResponseTooLargeError(request.method, request.url.path, limit)
    headers = [
        (name, value)
        for name, value in response.headers.multi_items()
        if name.lower() not in _FRAMING_HEADERS
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=bytes(body),
        request=request,
        extensions=response.extensions,
    )


async def read_within(response: httpx.Response, limit: int) -> None:
    """Read a streamed ``response``'s body into it, as ``aread()`` does, but refused with
    ResponseTooLargeError past ``limit`` bytes, exactly as :func:`_read_body` refuses.

    For code that must leave the body in the response httpx handed it: an auth flow (httpx
    reads each of its responses again once the flow goes on, and a stream already consumed
    cannot be) or a ``response`` event hook (its caller parses that response object). The raw
    stream is read through a stand-in response, so the one given is never left half-consumed;
    afterwards it holds the decoded body and no framing headers, like :func:`_read_body`'s."""
    stand_in = httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=response.stream,
        request=response.request,
    )
    read = await _read_body(stand_in, limit)
    response.headers, response.stream = read.headers, read.stream
    await response.aread()


def _check_declared_length(response: httpx.Response, limit: int) -> None:
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        request = response.request
        raise ResponseTooLargeError(request.method, request.url.path, limit, int(declared))


def _origin(url: httpx.URL) -> str:
    """``scheme://host:port`` with the default port spelt out, so equal origins compare equal."""
    port = url.port or _DEFAULT_PORTS.get(url.scheme)
    return f"{url.scheme}://{url.host}:{port}"


def _check_fhir_version(version: object) -> None:
    if version is None:
        raise UnsupportedFhirVersionError(None)
    if not _SUPPORTED_VERSION.fullmatch(str(version)):
        raise UnsupportedFhirVersionError(str(version))


def _checked_type(resource_type: object) -> str:
    """``resource_type`` if it looks like a FHIR type; it goes into a URL path, so be strict."""
    if not isinstance(resource_type, str) or not _RESOURCE_TYPE.fullmatch(resource_type):
        raise ValueError(f"not a FHIR resource type: {resource_type!r}")
    return resource_type


def _checked_id(resource_id: object) -> str:
    """``resource_id`` if it is a valid FHIR id; a ``/`` or ``?`` in it would change the URL."""
    if not isinstance(resource_id, str) or not _RESOURCE_ID.fullmatch(resource_id):
        raise ValueError(f"not a FHIR resource id: {resource_id!r}")
    return resource_id


def _query_pairs(params: SearchParams | None, count: int | None) -> list[tuple[str, str]]:
    """Search parameters as ordered pairs, so repeated ones (``_include``) survive."""
    if params is None:
        pairs: list[tuple[str, str]] = []
    elif isinstance(params, Mapping):
        pairs = [
            (name, value)
            for name, values in params.items()
            for value in ([values] if isinstance(values, str) else values)
        ]
    else:
        pairs = list(params)
    if count is not None:
        if count < 0 or any(name == "_count" for name, _ in pairs):
            raise ValueError("count must be non-negative and not also given as _count")
        pairs.append(("_count", str(count)))
    return pairs


def _resource_body(response: httpx.Response, resource_type: str | None = None) -> Resource:
    """The response body as a resource, checked to be of ``resource_type`` if given."""
    method, path = response.request.method, response.request.url.path
    try:
        body = load_json(response.content)  # FHIR JSON is UTF-8 (orjson, as files are read)
    except ValueError:
        body = None
    except RecursionError:  # past orjson's 1,024 levels, Python's reader runs out of stack
        raise InvalidResponseError(method, path, "the body is JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidResponseError(method, path, "the body is not a JSON object")
    if resource_type is not None and body.get("resourceType") != resource_type:
        found = _named(body.get("resourceType"))
        raise InvalidResponseError(method, path, f"expected a {resource_type}, got {found}")
    return body


def _named(value: object) -> str:
    """A resource type or code the server sent, quoted if it is one (``'Patient'``); anything
    else may be free text, and is not repeated."""
    if isinstance(value, str) and _CODE.fullmatch(value):
        return repr(value)
    return "(none)" if value is None else "(not a code)"


def _next_link(bundle: Resource) -> str | None:
    for link in bundle.get("link") or ():
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


async def _entry_resources(pages: AsyncIterator[Resource]) -> AsyncIterator[Resource]:
    """The resources of search entries, skipping ``outcome`` entries (server warnings)."""
    async for page in pages:
        for entry in page.get("entry") or ():
            if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
                continue
            search = entry.get("search")
            if not (isinstance(search, dict) and search.get("mode") == "outcome"):
                yield entry["resource"]
