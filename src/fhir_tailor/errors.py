"""Exceptions raised by fhir-tailor.

:class:`FhirTailorError` is the single root so that the command line can catch everything we
raise on purpose and turn it into a clean message, while real bugs still show a traceback.
The rest of this module describes failures of talking to a FHIR server.

Messages name the HTTP method and the URL *path* only, never the query string: search
parameters often carry identifiers (MRNs, names, birth dates) that must not end up in logs.
For the same reason a server's own text (an OperationOutcome's ``diagnostics`` or
``details.text``, an error page) is left out of messages unless the operator asks for it
(``server_text``): servers quote patient names and birth dates there. Severities, codes and
locations are structure, not data, and are always given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

SNIPPET_LIMIT = 200
_MEDIA_TYPE = re.compile(r"[\w.+-]{1,64}/[\w.+-]{1,64}")


class FhirTailorError(Exception):
    """Root of every error fhir-tailor raises deliberately."""


@dataclass(frozen=True)
class OutcomeIssue:
    """One ``OperationOutcome.issue``, reduced to what a human needs to act on it."""

    severity: str
    code: str
    diagnostics: str | None = None
    expression: tuple[str, ...] = ()

    def describe(self, *, diagnostics: bool = False) -> str:
        """``error processing at CarePlan.foo``, and the server's free text after a colon
        only with ``diagnostics`` (see the module docstring)."""
        text = f"{self.severity} {self.code}"
        if self.expression:
            text += f" at {', '.join(self.expression)}"
        if diagnostics and self.diagnostics:
            text += f": {self.diagnostics}"
        return text

    def __str__(self) -> str:
        return self.describe()


def parse_outcome_issues(body: object) -> list[OutcomeIssue]:
    """The issues of an OperationOutcome, or ``[]`` when ``body`` is anything else.

    Servers fill different elements (HAPI uses ``diagnostics``, others only ``details.text``;
    ``location`` is the deprecated form of ``expression``), so each falls back to the other.
    """
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return []
    return [_parse_issue(raw) for raw in body.get("issue") or () if isinstance(raw, dict)]


def _parse_issue(raw: dict[str, object]) -> OutcomeIssue:
    details = raw.get("details")
    diagnostics = raw.get("diagnostics")
    if not isinstance(diagnostics, str) and isinstance(details, dict):
        diagnostics = details.get("text")
    paths = raw.get("expression") or raw.get("location") or ()
    return OutcomeIssue(
        severity=str(raw.get("severity", "error")),
        code=str(raw.get("code", "unknown")),
        diagnostics=diagnostics if isinstance(diagnostics, str) else None,
        expression=tuple(p for p in paths if isinstance(p, str)) if isinstance(paths, list) else (),
    )


def body_snippet(response: httpx.Response) -> str:
    """The start of a response body on one line, so a proxy's HTML error page stays readable."""
    text = " ".join(response.text.split())
    return text if len(text) <= SNIPPET_LIMIT else text[: SNIPPET_LIMIT - 3] + "..."


def body_kind(response: httpx.Response) -> str | None:
    """What a body that is no OperationOutcome is, without quoting it: ``a text/html body of
    412 bytes``; ``None`` when there is no body."""
    if not response.content:
        return None
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    kind = media_type if _MEDIA_TYPE.fullmatch(media_type) else "untyped"
    return f"a {kind} body of {len(response.content)} bytes"


class FhirServerError(FhirTailorError):
    """The server answered with a non-2xx status.

    ``issues`` holds the parsed OperationOutcome, if the server sent one; otherwise
    ``snippet`` holds the start of whatever it sent instead and ``body`` what kind of body it
    was. The message quotes the server's text (diagnostics, snippet) only with
    ``server_text``.
    """

    def __init__(
        self,
        status: int,
        issues: Sequence[OutcomeIssue],
        method: str,
        url_path: str,
        *,
        snippet: str | None = None,
        body: str | None = None,
        server_text: bool = False,
    ) -> None:
        self.status = status
        self.issues = list(issues)
        self.method = method
        self.url_path = url_path
        self.snippet = snippet
        self.body = body
        self.server_text = server_text
        super().__init__(self._describe())

    def _describe(self) -> str:
        head = f"HTTP {self.status} from {self.method} {self.url_path}"
        if self.issues:
            issues = (issue.describe(diagnostics=self.server_text) for issue in self.issues)
            return f"{head}: {'; '.join(issues)}"
        if self.snippet and self.server_text:
            return f"{head}: {self.snippet}"
        if self.body:
            return f"{head}: {self.body}, not an OperationOutcome"
        return head

    @classmethod
    def from_response(
        cls, response: httpx.Response, *, server_text: bool = False
    ) -> FhirServerError:
        """The most specific error class for ``response``, with its OperationOutcome parsed;
        ``server_text`` lets the message quote the server's own words."""
        try:
            issues = parse_outcome_issues(response.json())
        except (ValueError, RecursionError):  # not JSON, not decodable, or nested too deeply
            issues = []
        error_class = _ERRORS_BY_STATUS.get(response.status_code, FhirServerError)
        return error_class(
            response.status_code,
            issues,
            response.request.method,
            response.request.url.path,
            snippet=None if issues else body_snippet(response),
            body=None if issues else body_kind(response),
            server_text=server_text,
        )


class ResourceNotFoundError(FhirServerError):
    """404 or 410: the resource does not exist (or no longer does)."""


class ConflictError(FhirServerError):
    """409: the server refused the write because of a conflicting version or duplicate."""


class PreconditionFailedError(FhirServerError):
    """412: an ``If-Match`` version was stale, or a conditional write matched several."""


_ERRORS_BY_STATUS: dict[int, type[FhirServerError]] = {
    404: ResourceNotFoundError,
    410: ResourceNotFoundError,
    409: ConflictError,
    412: PreconditionFailedError,
}


class RetryBudgetExceededError(FhirTailorError):
    """Transient failures persisted past the retry policy's attempts or time budget.

    ``__cause__`` is the last failure (a :class:`FhirServerError` or ``httpx`` exception).
    """

    def __init__(
        self,
        method: str,
        url_path: str,
        attempts: int,
        elapsed: float,
        last_failure: str,
        reason: str | None = None,
    ) -> None:
        self.method = method
        self.url_path = url_path
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_failure = last_failure
        plural = "" if attempts == 1 else "s"
        message = (
            f"gave up on {method} {url_path} after {attempts} attempt{plural} "
            f"in {elapsed:.1f}s (last failure: {last_failure})"
        )
        super().__init__(f"{message}: {reason}" if reason else message)


class UnsafeToRetryError(FhirTailorError):
    """A non-idempotent request failed in a way that leaves its effect on the server unknown."""

    def __init__(self, method: str, url_path: str, failure: str) -> None:
        self.method = method
        self.url_path = url_path
        self.failure = failure
        super().__init__(
            f"{method} {url_path} failed with {failure} and was not retried: the server may "
            "already have applied it, so check before repeating it"
        )


def byte_size(count: int) -> str:
    """``count`` bytes as an operator reads a limit: ``64 MiB``, ``4 GiB``, ``1 KiB``, ``900 B``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.4g} {unit}"
    return f"{count} B"


class ResponseTooLargeError(FhirTailorError):
    """A response body was larger than the limit set for it; reading stopped at the limit.

    Not retried: a server that sent too much once will send as much again. ``declared`` is the
    Content-Length when the server declared one past the limit (the body was then not read).
    """

    def __init__(self, method: str, url_path: str, limit: int, declared: int | None = None) -> None:
        self.method = method
        self.url_path = url_path
        self.limit = limit
        self.declared = declared
        claim = f" (Content-Length {declared})" if declared is not None else ""
        super().__init__(
            f"the response to {method} {url_path} is larger than the {byte_size(limit)} "
            f"limit{claim}: refused and not retried"
        )


class DeadlineExceededError(FhirTailorError):
    """A request, retries included, did not finish in the time it was given."""

    def __init__(self, method: str, url_path: str, seconds: float) -> None:
        self.method = method
        self.url_path = url_path
        self.seconds = seconds
        super().__init__(f"{method} {url_path} did not finish within {seconds:.0f}s")


class UnsupportedFhirVersionError(FhirTailorError):
    """The server does not speak FHIR R4 (4.0.x) or R4B (4.3.x)."""

    def __init__(self, found: str | None) -> None:
        self.found = found
        wanted = "fhir-tailor needs FHIR R4 (4.0.x) or R4B (4.3.x)"
        if found is None:
            message = f"the server's CapabilityStatement has no fhirVersion; {wanted}"
        else:
            message = f"the server reports FHIR version {found!r}; {wanted}"
        super().__init__(message)


class CrossOriginLinkError(FhirTailorError):
    """A paging link pointed at another origin; following it would leak our credentials."""

    def __init__(self, expected_origin: str, found_origin: str) -> None:
        self.expected_origin = expected_origin
        self.found_origin = found_origin
        super().__init__(
            f"refusing to follow a next link to {found_origin}: it is not the FHIR server's "
            f"origin {expected_origin}, and credentials must not be sent elsewhere"
        )


class PagingLoopError(FhirTailorError):
    """A search's next link pointed back at a page already fetched."""

    def __init__(self, url_path: str) -> None:
        self.url_path = url_path
        super().__init__(
            f"search paging loop: the next link under {url_path} repeats a page already fetched"
        )


class InvalidResponseError(FhirTailorError):
    """A 2xx response whose body is not the FHIR JSON the operation promises."""

    def __init__(self, method: str, url_path: str, problem: str) -> None:
        self.method = method
        self.url_path = url_path
        self.problem = problem
        super().__init__(f"unexpected response to {method} {url_path}: {problem}")


class UnconfirmedWriteError(InvalidResponseError):
    """A write answered 2xx, so the server may well have applied it, with a body that does not
    confirm it (cut short, unreadable, an OperationOutcome instead of the result).

    Told apart from other invalid responses so the message says what a connection reset's
    does: the write may have taken effect. ``failure`` is what the answer was, in a few words.
    """

    def __init__(self, method: str, url_path: str, failure: str) -> None:
        self.failure = failure
        super().__init__(method, url_path, f"{failure}; the server may have applied it")


class PatientNotFoundError(FhirTailorError):
    """A patient asked for by id is not in the source: not on the server, not in the files.

    One class for every source, so a command about one patient says "not found" the same way
    whichever source it read, and tells it apart from a source that failed to answer.
    """

    def __init__(self, patient_id: str, where: str) -> None:
        self.patient_id = patient_id
        super().__init__(f"Patient/{patient_id} not found {where}")


class NoPatientsError(FhirTailorError):
    """The input files hold no patient at all (an empty folder, files that are not FHIR).

    A run over them would do nothing and report success, which is how a job pointed at the
    wrong folder goes unnoticed; so it is an error, naming what was found instead.
    """
