"""Value sets expanded on a FHIR terminology server (``ValueSet/$expand``), cached on disk.

Features map through value sets, and most ship with their expansion. Published ones that may
not be redistributed or are too large to ship (VSAC's) are named by canonical only and expanded
here, on the server given by ``--terminology``, once: the expansion is cached as one ValueSet
JSON file per ``url|version``, so later runs make no request and read the same codes.

The cache only answers requests that name a version. A canonical without one means "the
current version", which changes when the publisher revises the value set; reusing a cached
expansion for it would silently pin whatever was current on the day of the first run, and
re-fetching keeps the reference meaning what it says. Its expansion is still cached under the
version the server answered with, so pinning that version later (``url|version`` in the rule)
makes runs reproducible and offline. That is the recommended way, and a warning says so.

The server is someone else's, so its answers are checked (a ValueSet with the url, and the
version, that was asked for, and an expansion) and its OperationOutcome texts are never
repeated: ``diagnostics`` are free text, in which servers have been known to quote request
content. Errors carry the value set, the HTTP status and the issue severities and codes only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from fhir_tailor.client import FhirClient
from fhir_tailor.errors import FhirServerError, FhirTailorError, OutcomeIssue, parse_outcome_issues
from fhir_tailor.fhirdata import load_json
from fhir_tailor.retry import RetryPolicy

from .valuesets import EXPANSION_SOURCE, split_canonical

logger = logging.getLogger("fhir_tailor.terminology")

Resource = dict[str, Any]

#: Page size asked for when the server's first page was empty yet announced a total.
_FALLBACK_PAGE = 1000


class ExpansionError(FhirTailorError):
    """A value set could not be expanded on the terminology server, or the answer is unusable."""


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CACHE_HOME/fhir-tailor/valuesets``, or ``~/.cache/...`` when that is unset.

    The XDG Base Directory specification says a relative ``XDG_CACHE_HOME`` is invalid and
    must be ignored, so it is.
    """
    base = environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "fhir-tailor" / "valuesets"


class ExpansionCache:
    """Expanded ValueSets on disk, one file per ``url|version``.

    The file name is the SHA-256 of the canonical: any url and version map to a safe, fixed
    length name, and two versions of one value set never share a file. Each file is a plain
    FHIR ValueSet (with the ``expansion-source`` extension saying where the expansion came
    from), so it can be read, diffed, or (where its licence allows) shipped in
    ``profiles/valuesets/``.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, url: str, version: str) -> Path:
        digest = hashlib.sha256(f"{url}|{version}".encode()).hexdigest()
        return self.folder / f"{digest}.json"

    def get(self, url: str, version: str) -> Resource | None:
        """The cached expansion of ``url|version``, or ``None``. A file that does not hold that
        value set's expansion (truncated by a full disk, edited by hand) counts as missing, so
        it is fetched again and replaced."""
        path = self.path(url, version)
        try:
            resource = load_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            logger.warning("ignoring unreadable cached value set %s (%s)", path, type(exc).__name__)
            return None
        if _problem(resource, url, version) is not None:
            logger.warning("ignoring cached value set %s: it is not %s|%s", path, url, version)
            return None
        assert isinstance(resource, dict)  # checked by _problem
        return resource

    def put(self, resource: Resource) -> None:
        """Write an expansion under its url and version, atomically (a temporary file in the
        same folder, then a rename): a concurrent run or a kill leaves the old file or the new
        one, never half of one. Failing to write is logged, not raised: the expansion is in
        hand, and only the next run pays for the missing file."""
        path = self.path(resource["url"], resource["version"])
        data = orjson.dumps(resource, option=orjson.OPT_INDENT_2)
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle, partial = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".partial")
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(partial, path)
            except BaseException:
                Path(partial).unlink(missing_ok=True)
                raise
        except OSError as exc:
            logger.warning("cannot cache value set expansion in %s: %s", self.folder, exc.strerror)


class ServerExpander:
    """Expands value sets by canonical on a FHIR terminology server, through the cache.

    An instance is the ``expand`` callable :func:`~fhir_tailor.definitions.load_definitions`
    takes. The connection is opened only when some value set is not cached, so a run whose
    expansions are all shipped or cached makes no request at all.
    """

    def __init__(
        self,
        base_url: str,
        cache: ExpansionCache,
        *,
        auth: httpx.Auth | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache = cache
        self._auth = auth
        self._timeout = timeout
        self._retry = retry

    def __call__(self, canonicals: Sequence[str]) -> list[Resource]:
        """The expanded ValueSet of each canonical (``url|version`` or ``url``), once each, in
        the order first named."""
        found: dict[str, Resource] = {}
        missing: list[str] = []
        for canonical in dict.fromkeys(canonicals):
            url, version = split_canonical(canonical)
            cached = self.cache.get(url, version) if version is not None else None
            if cached is not None:
                logger.debug("value set %s: expansion read from the cache", canonical)
                found[canonical] = cached
            else:
                missing.append(canonical)
        if missing:
            try:
                client = FhirClient(
                    self.base_url, auth=self._auth, timeout=self._timeout, retry=self._retry
                )
            except ValueError as exc:
                raise ExpansionError(f"terminology server: {exc}") from None
            with client:
                for canonical in missing:
                    found[canonical] = self._fetch(client, canonical)
        return [found[canonical] for canonical in dict.fromkeys(canonicals)]

    def _fetch(self, client: FhirClient, canonical: str) -> Resource:
        """Expand one value set on the server, check it, record where it came from, cache it."""
        url, version = split_canonical(canonical)
        resource, codes = self._pages(client, canonical)
        expansion = {k: v for k, v in resource["expansion"].items() if k != "offset"}
        expansion["contains"] = codes
        stamp = expansion.get("timestamp") or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        source = {
            "url": EXPANSION_SOURCE,
            "valueString": f"ValueSet/$expand on {_public(self.base_url)} at {stamp}",
        }
        kept = [
            e
            for e in resource.get("extension") or ()
            if not (isinstance(e, dict) and e.get("url") == EXPANSION_SOURCE)
        ]
        expanded = {**resource, "extension": [*kept, source], "expansion": expansion}
        if version is not None and not resource.get("version"):
            expanded["version"] = version  # asked for as valueSetVersion; the answer named none
            source["valueString"] += f" (the answer named no version: {version}, as asked for)"
        logger.info(
            "value set %s: %d codes expanded by the terminology server", canonical, len(codes)
        )
        answered = expanded.get("version")
        if isinstance(answered, str) and answered:
            self.cache.put(expanded)
        if version is None:
            pin = f"name {url}|{answered} to pin it" if answered else "the server gives no version"
            logger.warning(
                "value set %s has no version: the server's current expansion is fetched again "
                "on every run (%s)",
                url,
                pin,
            )
        return expanded

    def _pages(self, client: FhirClient, canonical: str) -> tuple[Resource, list[Resource]]:
        """The first answer and the codes of every page, flattened.

        Paging applies to flat expansions only (FHIR R4 ValueSet/$expand, ``count``): a server
        returning a hierarchy returns all of it, so the codes, not the top-level entries, are
        what ``expansion.total`` is compared with. A page must start where asked (its
        ``offset``, when given) and bring codes not seen yet: a server that ignores ``offset``
        would otherwise hand the first page again and again until the total is reached.
        """
        first = self._page(client, canonical, None, None)
        entries = _contains_of(first)
        codes = _flatten(entries, canonical)
        total = first["expansion"].get("total")
        page_size = len(entries) or _FALLBACK_PAGE
        seen = {_key(code) for code in codes}
        while isinstance(total, int) and len(codes) < total:
            page = self._page(client, canonical, len(entries), page_size)
            more = _contains_of(page)
            offset = page["expansion"].get("offset")
            added = _flatten(more, canonical)
            if (isinstance(offset, int) and offset != len(entries)) or all(
                _key(code) in seen for code in added
            ):
                raise ExpansionError(
                    f"value set {canonical}: the terminology server stopped paging at "
                    f"{len(codes)} of {total} codes"
                )
            entries.extend(more)
            codes.extend(added)
            seen.update(_key(code) for code in added)
        return first, codes

    def _page(
        self, client: FhirClient, canonical: str, offset: int | None, count: int | None
    ) -> Resource:
        """One ``GET [base]/ValueSet/$expand`` answer, checked to be the value set asked for."""
        url, version = split_canonical(canonical)
        params = [("url", url)]
        if version is not None:
            params.append(("valueSetVersion", version))
        if offset is not None and count is not None:
            params += [("offset", str(offset)), ("count", str(count))]
        request = httpx.URL(f"{client.base_url}/ValueSet/$expand", params=params)
        try:
            response = client.operation("GET", request)
        except FhirServerError as exc:
            raise ExpansionError(
                f"value set {canonical}: the terminology server answered HTTP {exc.status}"
                f"{_issues(exc.issues)}"
            ) from None
        except FhirTailorError as exc:  # retries exhausted, transport failure: no server text
            raise ExpansionError(f"value set {canonical}: cannot expand it: {exc}") from None
        try:
            body = load_json(response.content)
        except (ValueError, RecursionError):
            body = None
        issues = parse_outcome_issues(body)
        if issues:
            raise ExpansionError(
                f"value set {canonical}: the terminology server answered with an "
                f"OperationOutcome{_issues(issues)}"
            )
        problem = _problem(body, url, version)
        if problem is not None:
            raise ExpansionError(
                f"value set {canonical}: the terminology server's answer {problem}"
            )
        assert isinstance(body, dict)  # checked by _problem
        return body


def _problem(resource: object, url: str, version: str | None) -> str | None:
    """What makes ``resource`` not an expansion of ``url`` (and ``version``), or ``None``."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "ValueSet":
        return "is not a ValueSet"
    if resource.get("url") != url:
        return f"is another value set ({resource.get('url')!r})"
    # An answer that names no version is taken as the version asked for (valueSetVersion):
    # HAPI FHIR leaves ValueSet.version out of $expand answers. Another version is refused.
    if version is not None and resource.get("version") not in (version, None):
        return f"is version {resource.get('version')!r}, not {version!r}"
    expansion = resource.get("expansion")
    if not isinstance(expansion, dict):
        return "has no expansion"
    if not isinstance(expansion.get("contains", []), list):
        return "has an expansion.contains that is not a list"
    return None


def _contains_of(resource: Resource) -> list[Any]:
    """The top-level ``expansion.contains`` of a checked answer (an empty value set has none)."""
    contains: list[Any] = resource["expansion"].get("contains") or []
    return list(contains)


def _flatten(entries: list[Any], canonical: str) -> list[Resource]:
    """``contains`` within ``contains`` as one list, parents before their children, each entry
    without its nested ones. Iterative, so a deep hierarchy cannot exhaust the stack."""
    flat: list[Resource] = []
    stack = list(reversed(entries))
    while stack:
        entry = stack.pop()
        if not isinstance(entry, dict):
            raise ExpansionError(
                f"value set {canonical}: the terminology server's expansion holds an entry "
                "that is not an object"
            )
        nested = entry.get("contains") or []
        if not isinstance(nested, list):
            raise ExpansionError(
                f"value set {canonical}: the terminology server's expansion nests a contains "
                "that is not a list"
            )
        flat.append({k: v for k, v in entry.items() if k != "contains"})
        stack.extend(reversed(nested))
    return flat


def _key(entry: Resource) -> tuple[object, object, object]:
    return entry.get("system"), entry.get("version"), entry.get("code")


def _issues(issues: Sequence[OutcomeIssue]) -> str:
    """`` (error not-found; warning too-costly)``: severities and codes, never diagnostics."""
    if not issues:
        return ""
    return " (" + "; ".join(f"{issue.severity} {issue.code}" for issue in issues) + ")"


def _public(base_url: str) -> str:
    """The server's URL as recorded in cached files: without any user:password in it."""
    return str(httpx.URL(base_url).copy_with(userinfo=b""))
