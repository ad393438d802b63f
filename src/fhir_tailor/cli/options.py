"""Option decorators shared by several commands, so each command module declares only its own.

What they produce is read by :mod:`.connect` (server and auth options) and :mod:`.sources`
(source and bulk options).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx

from ..bulk import DEFAULT_DOWNLOAD_BUDGET, DEFAULT_MAX_BYTES
from ..requester import RequesterError, parse_requester

SINCE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"]
#: What SMART auth asks a terminology server for: reading value sets (SMART v1 syntax).
TERMINOLOGY_SCOPE = "system/ValueSet.read"
#: Requests in flight to a FHIR server by default. Over a network each request holds its
#: connection for a whole round trip, so N connections do at most about N times what a
#: one-at-a-time client does: with 4, sync could not be 5 times as fast (issue 17 #3). Eight is
#: well within what servers for many clients serve at once (HAPI FHIR on Spring Boot's Tomcat:
#: 200 request threads by default), and a slow server is never asked more than 8 at a time: it
#: answers later, it is not asked more.
DEFAULT_CONCURRENCY = 8


def base_url(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A server's base URL, refused here (exit 2, naming it) unless it is an http(s) URL with a
    host and no query or fragment, as the client needs: ``127.0.0.1:8080/fhir`` has no scheme."""
    if value is None:
        return None
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise click.BadParameter(
            f"{value!r} is not an http(s) URL: give the base URL with its scheme, "
            "e.g. http://127.0.0.1:8080/fhir",
            param=param,
        )
    if url.query or url.fragment:
        raise click.BadParameter(f"{value!r}: a base URL has no query or fragment", param=param)
    return value


def base_urls(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    """Each of a repeatable option's base URLs, checked as :func:`base_url` checks one."""
    return tuple(str(base_url(ctx, param, value)) for value in values)


def creatable_file(_ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A file the command writes at its end (``--report``), checked before anything is done:
    its folder is made if missing, and a folder in its place, or one that cannot be made or
    written to, is refused (exit 2, naming it). Otherwise a whole run would be done, and its
    plans written, only for the report to be lost."""
    if value is None:
        return None
    if value.is_dir():
        raise click.BadParameter(f"{value} is a folder; name a file in it", param=param)
    folder = value.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"cannot make the folder {folder}: {exc.strerror}"
        raise click.BadParameter(message, param=param) from None
    if not os.access(folder, os.W_OK) or (value.exists() and not os.access(value, os.W_OK)):
        raise click.BadParameter(f"cannot write {value}: permission denied", param=param)
    return value


def apply(func: Callable[..., Any], options: list[Callable[..., Any]]) -> Callable[..., Any]:
    """Decorate ``func`` with ``options`` so they show in ``--help`` in list order."""
    for option in reversed(options):
        func = option(func)
    return func


def auth_options(
    prefix: str, default_scope: str, cls: type[click.Option] = click.Option
) -> list[Callable[..., Any]]:
    """The options saying how to authenticate to a server: a bearer token, HTTP basic, or SMART
    Backend Services. ``prefix`` names another server's set (``terminology-`` gives
    ``--terminology-token`` and ``FHIR_TAILOR_TERMINOLOGY_TOKEN``); :func:`.connect.auth` reads
    them. ``cls`` is the class of the options made."""
    env = "FHIR_TAILOR_" + prefix.upper().replace("-", "_")
    option = functools.partial(click.option, cls=cls)
    return [
        option(f"--{prefix}token", envvar=f"{env}TOKEN", help="Static bearer token."),
        option(f"--{prefix}username", envvar=f"{env}USERNAME", help="HTTP basic user."),
        option(f"--{prefix}password", envvar=f"{env}PASSWORD", help="HTTP basic password."),
        option(
            f"--{prefix}client-id",
            envvar=f"{env}CLIENT_ID",
            help="SMART Backend Services client id.",
        ),
        option(
            f"--{prefix}private-key",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            envvar=f"{env}PRIVATE_KEY",
            help="SMART signing key: PEM private key or JWKS file (private_key_jwt).",
        ),
        option(f"--{prefix}kid", envvar=f"{env}KID", help="Key id of the signing key."),
        option(
            f"--{prefix}client-secret",
            envvar=f"{env}CLIENT_SECRET",
            help="SMART client secret (client_secret_basic), instead of a private key.",
        ),
        option(
            f"--{prefix}token-url",
            callback=base_url,
            help="OAuth token endpoint. Default: from .well-known/smart-configuration.",
        ),
        option(
            f"--{prefix}scope",
            envvar=f"{env}SCOPE",
            help=f"SMART scopes to request (v1 or v2 syntax). Default: {default_scope}.",
        ),
    ]


def terminology_options(
    func: Callable[..., Any], cls: type[click.Option] = click.Option
) -> Callable[..., Any]:
    """Options naming the terminology server that expands value sets shipped without an
    expansion, how to reach it, and where expansions are cached (what
    :func:`.connect.expander` reads); ``cls`` is the class of the options made.

    They are shared by every command, next to ``--profiles``, because definitions are loaded
    with them: ``fhir-tailor --terminology URL sync ...`` or ``fhir-tailor sync --terminology URL``.
    """
    option = functools.partial(click.option, cls=cls)
    return apply(
        func,
        [
            option(
                "--terminology",
                envvar="FHIR_TAILOR_TERMINOLOGY",
                callback=base_url,
                help="FHIR terminology server (base URL) that expands value sets shipped without "
                "an expansion (ValueSet/$expand). Default: none; such value sets are an error.",
            ),
            *auth_options("terminology-", TERMINOLOGY_SCOPE, cls),
            option(
                "--terminology-cache",
                type=click.Path(file_okay=False, path_type=Path),
                envvar="FHIR_TAILOR_TERMINOLOGY_CACHE",
                help="Folder of cached expansions, one per url|version. "
                "Default: $XDG_CACHE_HOME/fhir-tailor/valuesets (~/.cache/...).",
            ),
        ],
    )


def server_options(
    func: Callable[..., Any], *, concurrency: int = DEFAULT_CONCURRENCY
) -> Callable[..., Any]:
    """Options that name a FHIR server and how to reach it (what :func:`.connect.connect`
    reads); ``concurrency`` is ``--concurrency``'s default."""
    return apply(
        func,
        [
            click.option(
                "--server",
                envvar="FHIR_TAILOR_SERVER",
                callback=base_url,
                help="FHIR R4 base URL (http:// or https://).",
            ),
            *auth_options("", "read all, write plans"),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=30.0,
                envvar="FHIR_TAILOR_TIMEOUT",
                show_default=True,
                help="Seconds one HTTP request may take as a whole (connecting and reading the "
                "entire answer), each attempt.",
            ),
            click.option(
                "--concurrency",
                type=click.IntRange(1, 64),
                default=concurrency,
                envvar="FHIR_TAILOR_CONCURRENCY",
                show_default=True,
                help="Requests in flight to the server at once (its connections); up to twice "
                "as many patients are read, and as many written, meanwhile.",
            ),
            click.option(
                "--retry-budget",
                type=click.FloatRange(min=0),
                default=120.0,
                envvar="FHIR_TAILOR_RETRY_BUDGET",
                show_default=True,
                help="Total seconds one request may spend retrying before it fails.",
            ),
            click.option(
                "--show-server-diagnostics",
                is_flag=True,
                envvar="FHIR_TAILOR_SHOW_SERVER_DIAGNOSTICS",
                help="Quote the server's OperationOutcome diagnostics and error pages in "
                "messages and the report. Default: severities, codes and locations only "
                "(servers quote patient names and birth dates there).",
            ),
        ],
    )


class SinceType(click.ParamType):  # type: ignore[type-arg]
    """A date or date-time, or ``auto`` (resolved from the run state by ``sync --state``)."""

    name = "since"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime) or value == "auto":
            return value
        return click.DateTime(formats=SINCE_FORMATS).convert(value, param, ctx)


def source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options that choose where patients are read from (``--server`` reads and writes)."""
    func = apply(
        func,
        [
            click.option(
                "--input",
                "input_path",
                type=click.Path(exists=True, path_type=Path),
                help="Bundle JSON file, folder of Bundles, or folder of Bulk NDJSON files.",
            ),
            click.option(
                "--patient", "patient_ids", multiple=True, help="Patient id (repeatable)."
            ),
            click.option("--all", "everyone", is_flag=True, help="Every patient on the server."),
            click.option(
                "--since",
                type=SinceType(),
                help=(
                    "Patients whose data changed since this time (server _lastUpdated); 'auto' "
                    "(sync with --state): since the last complete run."
                ),
            ),
        ],
    )
    return server_options(func)


def bulk_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of ``sync --bulk`` (what :func:`.sources.open_bulk_source` reads)."""
    return apply(
        func,
        [
            click.option(
                "--bulk", is_flag=True, help="Read every patient with one Bulk Data $export."
            ),
            click.option("--group", help="With --bulk: export only this Group's members."),
            click.option(
                "--bulk-dir",
                type=click.Path(file_okay=False, path_type=Path),
                help="With --bulk: download the export here. Default: a temporary folder.",
            ),
            click.option(
                "--keep-bulk-files", is_flag=True, help="With --bulk: keep the temporary folder."
            ),
            click.option(
                "--bulk-max-gib",
                type=click.FloatRange(min=0, min_open=True),
                default=DEFAULT_MAX_BYTES / 2**30,
                envvar="FHIR_TAILOR_BULK_MAX_GIB",
                show_default=True,
                help="With --bulk: the most the export's files may hold together, in GiB.",
            ),
            click.option(
                "--bulk-download-budget",
                type=click.FloatRange(min=0, min_open=True),
                default=DEFAULT_DOWNLOAD_BUDGET,
                envvar="FHIR_TAILOR_BULK_DOWNLOAD_BUDGET",
                show_default=True,
                help="With --bulk: seconds for downloading all the export's files.",
            ),
        ],
    )


def _utc(value: datetime | None) -> datetime | None:
    """A ``--recorded`` time; one given without an offset is read as UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


report_option = click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=creatable_file,
    help="Write the JSON run report here (its folder is made if missing).",
)


def _requester(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    try:
        return parse_requester(value) if value else None
    except RequesterError as exc:
        raise click.BadParameter(str(exc)) from None


requester_option = click.option(
    "--requester",
    envvar="FHIR_TAILOR_REQUESTER",
    callback=_requester,
    help="Who requests the referrals: Organization/<id> or PractitionerRole/<id> (relative "
    "reference). Default: none, and referrals are written without a requester.",
)
recorded_option = click.option(
    "--recorded",
    type=click.DateTime(formats=SINCE_FORMATS[1:]),
    callback=lambda _ctx, _param, value: _utc(value),
    help="Provenance recorded time (ISO date-time, UTC unless it has an offset), so a rerun "
    "writes the same bytes. Default: now.",
)
