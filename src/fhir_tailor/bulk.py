"""Bulk Data ``$export``: read a whole population in a few files instead of many searches.

One export job is kicked off (system, ``Patient`` or ``Group/[id]`` level), its status URL is
polled until the manifest is ready, and each output file is streamed to a work folder, which
then feeds the ordinary :class:`~fhir_tailor.sources.files.NdjsonSource`. Safety rules:

* every URL the server hands back (status, output and error files) must be on the FHIR server's
  origin, checked before any request is made to it, since our access token goes with it;
* the token is sent for files only when the manifest says ``requiresAccessToken``;
* a refused or failed output file fails the whole export: plans made from part of a patient's
  data would silently overwrite good ones;
* the files together are bounded in size (``max_bytes``) and in download time
  (``download_budget``), so a runaway or hostile server cannot fill the disk or hold the run;
* with ``_since`` the export holds only what changed, not whole records, so it is used only to
  find the changed patients, who are then read in full, one by one.

A server whose CapabilityStatement does not declare the export falls back to the per-patient
server source. Logs and reports carry counts, types and URL paths, never resource contents.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from .client import FhirClient
from .errors import (
    CrossOriginLinkError,
    DeadlineExceededError,
    FhirServerError,
    FhirTailorError,
    ResponseTooLargeError,
    byte_size,
    parse_outcome_issues,
)
from .fhirdata import subject_patient_id
from .record import IssueHandler, PatientRecord, ReadIssue
from .retry import parse_retry_after
from .sources.files import TOO_DEEP, NdjsonSource
from .sources.server import (
    OPTIONAL_DATA_TYPES,
    PATIENT_DATA_TYPES,
    PatientSelection,
    ServerSource,
)

log = logging.getLogger("fhir_tailor.bulk")

#: The resource types fhir-tailor reads, asked for with ``_type``.
EXPORT_TYPES = ("Patient", *PATIENT_DATA_TYPES, *OPTIONAL_DATA_TYPES)
NDJSON = "application/fhir+ndjson"
#: Seconds before the first status poll; each later wait doubles (exponential backoff, as the
#: FHIR asynchronous request pattern asks of clients), up to the server's ``Retry-After``.
DEFAULT_POLL_DELAY = 2.0
#: The longest wait between polls when the server gives no ``Retry-After``.
MAX_POLL_DELAY = 60.0
#: The most one export downloads, in bytes, over all its files (output and error files, those
#: an earlier attempt left included): it bounds the disk a runaway or hostile server can fill
#: (one wrote 11 GB in two minutes before there was a limit). 10,000 generated patients with
#: 90 days of history export as 418 MB (docs/benchmarks.md), about 42 kB each, so 32 GiB holds
#: some 80 times that; a larger population sets it higher.
DEFAULT_MAX_BYTES = 32 * 2**30
#: Seconds for downloading all of one export's files, retries included: an hour moves the
#: whole of DEFAULT_MAX_BYTES at about 10 MB/s, and ends a server that trickles its files.
DEFAULT_DOWNLOAD_BUDGET = 3600.0
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
#: A percentage in the server's X-Progress header ("42%", "done: 42.5 %"): the only part of the
#: header that is logged or shown, the rest being free text that may quote anything.
_PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3})?)\s?%")


class BulkExportError(FhirTailorError):
    """The export could not be completed; nothing was read from it."""


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export: every patient (``group=None``) or a Group's members, since a time.

    ``level`` is where the job is kicked off: ``Group`` (with ``group``), ``Patient`` or
    ``system``; the last two differ only for types outside the patient compartment.
    """

    group: str | None = None
    since: datetime | None = None
    types: tuple[str, ...] = EXPORT_TYPES
    level: str = "Patient"


@dataclass(slots=True)
class ExportResult:
    """The downloaded files and what the server reported it could not export, with the
    figures an operator wants in the run report."""

    files: list[Path] = field(default_factory=list)
    issues: list[ReadIssue] = field(default_factory=list)
    bytes: int = 0
    level: str = "Patient"
    files_by_type: dict[str, int] = field(default_factory=dict)
    #: Files an earlier attempt of the run had downloaded, not fetched again.
    files_reused: int = 0
    polls: int = 0
    wait_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The export's part of the run report: counts only, no URLs (they can hold ids)."""
        return {
            "level": self.level,
            "files": len(self.files),
            "files_by_type": dict(sorted(self.files_by_type.items())),
            "files_reused": self.files_reused,
            "bytes_downloaded": self.bytes,
            "server_errors": len(self.issues),
            "status_polls": self.polls,
            "wait_seconds": round(self.wait_seconds, 3),
        }


@dataclass(slots=True)
class ExportProgress:
    """Where a job stands, kept in the run state so a killed run resumes the same export:
    its status URL, and the output files already downloaded (URL -> file name)."""

    status_url: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    save: Callable[[], None] = lambda: None
    #: Kept in a state file: a failed job is left on the server for the resumed run.
    resumable: bool = False


def declares_export(client: FhirClient, level: str) -> bool:
    """Whether the CapabilityStatement declares ``$export`` at ``level``.

    ``level`` is ``system``, ``Patient`` or ``Group``. Servers spell it as an operation named
    ``export`` (system, or on the resource) or ``Patient-export``/``Group-export``, and point
    ``definition`` at the matching OperationDefinition; any of those counts.
    """
    wanted = {"export"} if level == "system" else {"export", f"{level.lower()}-export"}
    for rest in client.capabilities().get("rest") or ():
        operations = list(rest.get("operation") or ()) if level == "system" else []
        for resource in rest.get("resource") or ():
            if level != "system" and resource.get("type") == level:
                operations += resource.get("operation") or ()
        if level != "system":  # some servers list type-level exports at rest level
            operations += [
                op
                for op in rest.get("operation") or ()
                if _operation_name(op) == f"{level.lower()}-export"
            ]
        if any(_operation_name(op) in wanted for op in operations):
            return True
    return False


def _operation_name(operation: object) -> str | None:
    if not isinstance(operation, dict):
        return None
    definition = operation.get("definition")
    if isinstance(definition, str) and definition.rstrip("/").rsplit("/", 1)[-1].lower() in (
        "export",
        "patient-export",
        "group-export",
    ):
        return definition.rstrip("/").rsplit("/", 1)[-1].lower()
    name = operation.get("name")
    return name.lstrip("$").lower() if isinstance(name, str) else None


def _percent(header: str | None) -> str | None:
    """The percentage an X-Progress header holds, written by us ("42%", "42.5%"), or None: the
    header is the server's free text (a job name, a query, a message), never logged as such."""
    match = _PERCENT.search(header or "")
    if match is None or float(match[1]) > 100:
        return None
    return f"{float(match[1]):g}%"


def _poll_delay(polls: int, retry_after: float | None) -> float:
    """Seconds to wait after the ``polls``-th status poll: a backoff doubling from
    DEFAULT_POLL_DELAY, never longer than the server's ``Retry-After`` (or MAX_POLL_DELAY).

    The pattern's clients SHOULD back off exponentially and let ``Retry-After`` inform the
    timing; a server's fixed hint (HAPI FHIR answers ``Retry-After: 120`` to every poll, even
    for an export ready in two seconds) is taken as the longest wait, not the only one.
    """
    backoff = DEFAULT_POLL_DELAY * (1 << min(polls - 1, 16))
    return min(backoff, MAX_POLL_DELAY if retry_after is None else retry_after)


class BulkExport:
    """One ``$export`` job from kick-off to downloaded files, deleted on the server afterwards.

    ``budget`` bounds the whole wait for the manifest (seconds); ``max_bytes`` and
    ``download_budget`` bound the files (see DEFAULT_MAX_BYTES and DEFAULT_DOWNLOAD_BUDGET).
    ``sleep`` and ``clock`` exist so tests can run without waiting.
    """

    def __init__(
        self,
        client: FhirClient,
        folder: Path,
        request: ExportRequest,
        *,
        budget: float = 3600.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        progress: ExportProgress | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        download_budget: float = DEFAULT_DOWNLOAD_BUDGET,
    ) -> None:
        self.client = client
        self.folder = folder
        self.request = request
        self.budget = budget
        self.max_bytes = max_bytes
        self.download_budget = download_budget
        self.progress = progress or ExportProgress()
        self._sleep = sleep
        self._clock = clock
        self._polls = 0
        self._waited = 0.0

    def run(self) -> ExportResult:
        """Kick off (or resume), wait for the manifest, download every file not yet downloaded;
        BulkExportError on failure. The job is deleted on the server once its files are here;
        a failed job is kept when a resumed run could still use it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            status_url, manifest = self._manifest()
            try:
                result = self._download(manifest)
                result.level, result.polls, result.wait_seconds = (
                    self.request.level,
                    self._polls,
                    self._waited,
                )
            except FhirTailorError:
                if not self.progress.resumable:
                    self._delete(status_url)
                raise
            self._delete(status_url)
            return result
        except CrossOriginLinkError as exc:
            raise BulkExportError(
                f"refusing a $export URL on {exc.found_origin}: it is not the FHIR server's "
                f"origin {exc.expected_origin}, and credentials must not be sent elsewhere"
            ) from exc

    def _manifest(self) -> tuple[httpx.URL, dict[str, Any]]:
        """The manifest of the job in progress, or of a new one if there is none (or it is
        gone: servers drop finished jobs after a while)."""
        progress = self.progress
        if progress.status_url is not None:
            status_url = self.client.resolve_link(progress.status_url)
            try:
                return status_url, self._wait(status_url)
            except (BulkExportError, FhirServerError) as exc:
                log.warning("the earlier $export job cannot be resumed (%s): starting anew", exc)
        status_url = self._kick_off()
        progress.status_url, progress.files = str(status_url), {}
        progress.save()
        try:
            return status_url, self._wait(status_url)
        except FhirTailorError:
            self._delete(status_url)
            progress.status_url = None
            progress.save()
            raise

    def _kick_off(self) -> httpx.URL:
        base = self.client.base_url
        paths = {"Group": f"Group/{self.request.group}/$export", "Patient": "Patient/$export"}
        path = paths.get(self.request.level, "$export")
        params = [("_type", ",".join(self.request.types))]
        if self.request.since is not None:
            params.append(("_since", _instant(self.request.since)))
        url = httpx.URL(f"{base}/{path}", params=params)
        headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
        response = self.client.operation("GET", url, headers=headers)
        location = response.headers.get("Content-Location")
        if response.status_code != 202 or not location:
            raise BulkExportError(
                f"$export kick-off at {url.path} answered {response.status_code} "
                "without a Content-Location status URL"
            )
        status_url = self.client.resolve_link(location)
        log.info("bulk export started at %s; status at %s", url.path, status_url.path)
        return status_url

    def _wait(self, status_url: httpx.URL) -> dict[str, Any]:
        """Poll until the manifest; 4xx/5xx raise FhirServerError (429/5xx retried first)."""
        started = self._clock()
        polls = 0
        while True:
            response = self.client.operation("GET", status_url)
            polls += 1
            self._polls += 1
            self._waited = self._clock() - started
            if response.status_code == 200:
                return _manifest(response)
            if response.status_code != 202:
                raise BulkExportError(
                    f"$export status {status_url.path} answered {response.status_code}"
                )
            percent = _percent(response.headers.get("X-Progress"))
            shown = f" ({percent})" if percent else ""
            delay = _poll_delay(polls, parse_retry_after(response.headers.get("Retry-After")))
            log.info(
                "bulk export in progress%s; poll %d, %.0fs elapsed", shown, polls, self._waited
            )
            left = self.budget - (self._clock() - started)
            if delay > left:
                raise BulkExportError(
                    f"the $export was not ready within {self.budget:.0f}s after {polls} polls"
                    f"{f' (last progress: {percent})' if percent else ''}; "
                    "the server may still be preparing it, try again later"
                )
            self._sleep(delay)

    def _download(self, manifest: dict[str, Any]) -> ExportResult:
        result = ExportResult()
        token = manifest.get("requiresAccessToken") is not False
        self._download_started = self._clock()
        self._on_disk = 0
        outputs = _entries(manifest, "output")
        counters: dict[str, int] = {}
        for number, (rtype, link) in enumerate(outputs):
            if rtype not in self.request.types:
                log.info("skipping a %s file of the $export: not a type fhir-tailor reads", rtype)
                continue
            self.client.resolve_link(link)  # refuse before downloading anything
            counters[rtype] = counters.get(rtype, 0) + 1
            path = self.folder / f"{rtype}.{counters[rtype]}.ndjson"
            if self.progress.files.get(link) == path.name and path.is_file():
                log.info("output file %d was downloaded by an earlier attempt", number + 1)
                result.files_reused += 1
                self._on_disk += path.stat().st_size
            else:
                result.bytes += self._fetch(link, path, token, f"output file {number + 1}")
                self.progress.files[link] = path.name
                self.progress.save()
            result.files.append(path)
        error_folder = self.folder / "errors"
        for number, (_, link) in enumerate(_entries(manifest, "error"), start=1):
            error_folder.mkdir(exist_ok=True)
            path = error_folder / f"OperationOutcome.{number}.ndjson"
            self._fetch(link, path, token, f"error file {number}")
            result.issues += _error_issues(path, number)
        result.files_by_type = counters
        log.info(
            "bulk export downloaded: %d files (%s), %d bytes, %d issues reported by the server",
            len(result.files),
            ", ".join(f"{t} {n}" for t, n in sorted(counters.items())) or "none",
            result.bytes,
            len(result.issues),
        )
        return result

    def _fetch(self, link: str, path: Path, token: bool, what: str) -> int:
        """Download one file within what is left of ``max_bytes`` and ``download_budget``."""
        size_limit = f"the {byte_size(self.max_bytes)} limit on one export's files"
        time_limit = f"within {self.download_budget:g}s"
        left_bytes = self.max_bytes - self._on_disk
        left_seconds = self.download_budget - (self._clock() - self._download_started)
        try:
            if left_bytes <= 0:
                raise BulkExportError(f"could not download $export {what}: {size_limit} is used up")
            if left_seconds <= 0:
                raise BulkExportError(f"could not download $export {what}: not {time_limit}")
            written = self.client.download(
                link,
                path,
                authenticated=token,
                accept=NDJSON,
                max_bytes=left_bytes,
                seconds=left_seconds,
            )
        except CrossOriginLinkError:
            raise
        except ResponseTooLargeError as exc:
            raise BulkExportError(
                f"could not download $export {what}: it would pass {size_limit}"
            ) from exc
        except DeadlineExceededError as exc:
            raise BulkExportError(
                f"could not download $export {what}: the files were not downloaded {time_limit}"
            ) from exc
        except BulkExportError:
            raise
        except FhirTailorError as exc:
            raise BulkExportError(f"could not download $export {what}: {exc}") from exc
        self._on_disk += written
        return written

    def _delete(self, status_url: httpx.URL) -> None:
        """Ask the server to drop the job and its files; a failure here costs nothing."""
        try:
            self.client.operation("DELETE", status_url)
        except FhirTailorError as exc:
            log.info("could not delete the $export job at %s: %s", status_url.path, exc)


def _instant(when: datetime) -> str:
    """``_since`` is a FHIR instant and needs a zone: a naive time is taken as UTC."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def _manifest(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to read
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("output"), list):
        raise BulkExportError(
            f"the $export manifest at {response.request.url.path} is not a JSON object "
            "with an output list"
        )
    return body


def _entries(manifest: dict[str, Any], key: str) -> list[tuple[str, str]]:
    """``(type, url)`` of each manifest entry under ``key``; malformed entries fail the export."""
    entries = []
    for raw in manifest.get(key) or ():
        rtype = raw.get("type") if isinstance(raw, dict) else None
        url = raw.get("url") if isinstance(raw, dict) else None
        if not isinstance(rtype, str) or not _RESOURCE_TYPE.fullmatch(rtype):
            raise BulkExportError(f"a $export manifest {key} entry has no valid type")
        if not isinstance(url, str) or not url:
            raise BulkExportError(f"a $export manifest {key} entry for {rtype} has no url")
        entries.append((rtype, url))
    return entries


def _error_issues(path: Path, number: int) -> list[ReadIssue]:
    """The issues of an error file's OperationOutcomes, without their free text.

    ``diagnostics`` is free text a server may fill with names or values, so only severity, code
    and the FHIRPath expression (structure, no data) are kept.
    """
    issues = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            location = f"$export error file {number}:{line_number}"
            try:
                parsed = parse_outcome_issues(json.loads(line))
            except (json.JSONDecodeError, RecursionError):
                issues.append(ReadIssue(location, "unreadable OperationOutcome line"))
                continue
            for issue in parsed:
                where = f" at {', '.join(issue.expression)}" if issue.expression else ""
                reason = f"server could not export: {issue.severity} {issue.code}{where}"
                issues.append(ReadIssue(location, reason, "OperationOutcome"))
    return issues


@dataclass(slots=True)
class BulkSource:
    """Patient records from a finished export: the NDJSON folder, or with ``since`` the
    changed patients read in full from the server."""

    client: FhirClient
    folder: Path
    result: ExportResult
    since: datetime | None = None

    def records(self, on_issue: IssueHandler) -> Iterator[PatientRecord]:
        for issue in self.result.issues:
            on_issue(issue)
        if not self.result.files:  # an empty ``only`` would read the whole folder
            return
        ndjson = NdjsonSource(self.folder, tuple(self.result.files))
        if self.since is None:
            yield from ndjson.records(on_issue)
            return
        changed = _patient_ids(ndjson, on_issue)
        log.info("bulk export since %s: %d patients changed", self.since, len(changed))
        if changed:
            yield from ServerSource(self.client, PatientSelection(ids=changed)).records(on_issue)


def _patient_ids(ndjson: NdjsonSource, on_issue: IssueHandler) -> tuple[str, ...]:
    ids: set[str] = set()
    for path in ndjson.files():
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    resource = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:
                    on_issue(ReadIssue(f"{path.name}:{number}", "invalid JSON"))
                    continue
                except RecursionError:
                    on_issue(ReadIssue(f"{path.name}:{number}", TOO_DEEP))
                    continue
                pid = subject_patient_id(resource) if isinstance(resource, dict) else None
                if pid:
                    ids.add(pid)
    return tuple(sorted(ids))


def bulk_source(
    client: FhirClient,
    folder: Path,
    request: ExportRequest,
    *,
    budget: float = 3600.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: ExportProgress | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    download_budget: float = DEFAULT_DOWNLOAD_BUDGET,
) -> ServerSource | BulkSource:
    """Run the export now (so failures stop the run before anything is written) and return
    its source; a server that does not declare the export gets the per-patient source.
    ``max_bytes`` and ``download_budget`` bound its files (:class:`BulkExport`).

    Without a group, ``Patient/$export`` is preferred and the system-level export is the
    second choice: both carry every patient's data of the requested types.
    """
    levels = ("Group",) if request.group else ("Patient", "system")
    level = next((lvl for lvl in levels if declares_export(client, lvl)), None)
    if level is None:
        log.warning(
            "the server declares no %s $export: reading patients one by one instead", levels[0]
        )
        return ServerSource(client, _fallback_selection(client, request))
    request = replace(request, level=level)
    export = BulkExport(
        client,
        folder,
        request,
        budget=budget,
        sleep=sleep,
        progress=progress,
        max_bytes=max_bytes,
        download_budget=download_budget,
    )
    result = export.run()
    return BulkSource(client, folder, result, request.since)


def _fallback_selection(client: FhirClient, request: ExportRequest) -> PatientSelection:
    """The same patients without ``$export``: the Group's members, changed ones, or all."""
    if request.group:
        group = client.read("Group", request.group)
        members = [
            member.get("entity", {}).get("reference", "")
            for member in group.get("member") or ()
            if isinstance(member, dict)
        ]
        ids = tuple(ref.rsplit("/", 1)[-1] for ref in members if "Patient/" in ref)
        if not ids:
            raise BulkExportError(f"Group/{request.group} has no Patient members")
        return PatientSelection(ids=ids)
    if request.since is not None:
        return PatientSelection(since=request.since)
    return PatientSelection(everyone=True)
