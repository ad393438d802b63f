"""The ``fhir-tailor`` command line.

Exit codes: 0 every patient succeeded; 1 at least one patient failed (see the report);
2 usage error; 3 the run could not start (bad definitions, server unreachable or not R4);
4 the run stopped part-way (reading the patient list failed after some patients were done;
--state resumes it).
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import httpx
from click.core import ParameterSource

from . import __version__
from .access import PortableKey, ServerAccess
from .auth import auth_from_settings
from .bulk import BulkSource, ExportProgress, ExportRequest, bulk_source
from .client import FhirClient
from .definitions import Definitions, bundled_path, load_definitions
from .errors import FhirTailorError
from .exclusions import exclusion_pairs
from .logs import LEVELS, LogFormat, configure, notice
from .pipeline import assess, profile_and_plan, run
from .population import PopulationSummary
from .population_report import render_html, report_data, require_plotting
from .publish import Definition, Publisher, catalog_definitions, write_files
from .record import PatientRecord, ReadIssue
from .report import RunReport
from .requester import RequesterError, parse_requester
from .retry import RetryPolicy
from .sinks import Sink
from .sinks.files import FolderSink, StdoutSink, summarize
from .sinks.server import ServerSink
from .smart import load_signing_key, smart_auth_from_settings
from .sources import Source, file_source
from .sources.server import PatientSelection, ServerSource
from .state import RunState
from .terminology.expand import ExpansionCache, ServerExpander, default_cache_dir

SINCE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"]
#: Some patients (sync) or definitions (catalog publish) failed; the rest were written.
EXIT_PARTIAL_FAILURE = 1
EXIT_CANNOT_START = 3
#: The run stopped part-way (the patient list failed after some patients were done).
EXIT_STOPPED = 4

log = logging.getLogger("fhir_tailor")
#: What SMART auth asks a terminology server for: reading value sets (SMART v1 syntax).
TERMINOLOGY_SCOPE = "system/ValueSet.read"


@dataclass(frozen=True, slots=True)
class Settings:
    definitions: Definitions
    as_of: date


def _fail(message: str) -> NoReturn:
    notice(f"error: {message}")
    sys.exit(EXIT_CANNOT_START)


def auth_options(prefix: str, default_scope: str) -> list[Callable[..., Any]]:
    """The options saying how to authenticate to a server: a bearer token, HTTP basic, or SMART
    Backend Services. ``prefix`` names another server's set (``terminology-`` gives
    ``--terminology-token`` and ``FHIR_TAILOR_TERMINOLOGY_TOKEN``); :func:`_auth` reads them."""
    env = "FHIR_TAILOR_" + prefix.upper().replace("-", "_")
    return [
        click.option(f"--{prefix}token", envvar=f"{env}TOKEN", help="Static bearer token."),
        click.option(f"--{prefix}username", envvar=f"{env}USERNAME", help="HTTP basic user."),
        click.option(f"--{prefix}password", envvar=f"{env}PASSWORD", help="HTTP basic password."),
        click.option(
            f"--{prefix}client-id",
            envvar=f"{env}CLIENT_ID",
            help="SMART Backend Services client id.",
        ),
        click.option(
            f"--{prefix}private-key",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            envvar=f"{env}PRIVATE_KEY",
            help="SMART signing key: PEM private key or JWKS file (private_key_jwt).",
        ),
        click.option(f"--{prefix}kid", envvar=f"{env}KID", help="Key id of the signing key."),
        click.option(
            f"--{prefix}client-secret",
            envvar=f"{env}CLIENT_SECRET",
            help="SMART client secret (client_secret_basic), instead of a private key.",
        ),
        click.option(
            f"--{prefix}token-url",
            help="OAuth token endpoint. Default: from .well-known/smart-configuration.",
        ),
        click.option(
            f"--{prefix}scope",
            envvar=f"{env}SCOPE",
            help=f"SMART scopes to request (v1 or v2 syntax). Default: {default_scope}.",
        ),
    ]


def terminology_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options naming the terminology server that expands value sets shipped without an
    expansion, how to reach it, and where expansions are cached (what ``_expander`` reads).

    They are the group's, next to ``--profiles``, because definitions load before any command
    runs: ``fhir-tailor --terminology URL sync ...``."""
    options = [
        click.option(
            "--terminology",
            envvar="FHIR_TAILOR_TERMINOLOGY",
            help="FHIR terminology server (base URL) that expands value sets shipped without an "
            "expansion (ValueSet/$expand). Default: none; such value sets are an error.",
        ),
        *auth_options("terminology-", TERMINOLOGY_SCOPE),
        click.option(
            "--terminology-cache",
            type=click.Path(file_okay=False, path_type=Path),
            envvar="FHIR_TAILOR_TERMINOLOGY_CACHE",
            help="Folder of cached expansions, one per url|version. "
            "Default: $XDG_CACHE_HOME/fhir-tailor/valuesets (~/.cache/...).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group()
@click.version_option(__version__, prog_name="fhir-tailor")
@click.option(
    "--profiles",
    "--catalog",
    "profiles_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FHIR_TAILOR_PROFILES",
    help="Definitions folder (mappings, segments, catalog). Default: the bundled profiles/.",
)
@click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    envvar="FHIR_TAILOR_AS_OF",
    help="Date the profile is computed for (ages, recency, gaps). Default: today.",
)
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    envvar="FHIR_TAILOR_LOG_LEVEL",
    help="Log level on stderr (overrides -v). Default: WARNING.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="FHIR_TAILOR_LOG_FORMAT",
    show_default=True,
    help="Logs on stderr as text, or as one JSON object per line (time, level, logger, ...).",
)
@terminology_options
@click.pass_context
def main(
    ctx: click.Context,
    /,
    profiles_dir: Path | None,
    as_of: datetime | None,
    verbose: int,
    log_level: str | None,
    log_format: LogFormat,
    **terminology: Any,
) -> None:
    """Standardized, personalized care plans from FHIR R4 data."""
    configure(
        log_level.upper() if log_level else ("WARNING", "INFO", "DEBUG")[min(verbose, 2)],
        log_format,
    )
    if ctx.invoked_subcommand is None:
        return
    try:
        definitions = load_definitions(
            profiles_dir or bundled_path("profiles"), expand=_expander(terminology)
        )
    except FhirTailorError as exc:
        _fail(str(exc))
    ctx.obj = Settings(definitions, as_of.date() if as_of else date.today())
    _spare_the_garbage_collector()


def _spare_the_garbage_collector() -> None:
    """Fewer cyclic-GC passes for a command's run (a process setting: the CLI's, not the API's).

    Parsed FHIR JSON is trees of dicts and lists without cycles, yet each container allocated
    counts towards the collector's next pass, which walks every object still alive: a population
    run parses millions. Collecting the young generation every 50,000 allocations instead of
    700 takes about 7% off a population run.
    """
    gc.set_threshold(50_000, 20, 100)


def server_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options that name a FHIR server and how to reach it (what ``_connect`` reads)."""
    options = [
        click.option("--server", envvar="FHIR_TAILOR_SERVER", help="FHIR R4 base URL."),
        *auth_options("", "read all, write plans"),
        click.option(
            "--timeout",
            type=float,
            default=30.0,
            envvar="FHIR_TAILOR_TIMEOUT",
            show_default=True,
            help="HTTP timeout in seconds.",
        ),
        click.option(
            "--concurrency",
            type=click.IntRange(1, 64),
            default=4,
            envvar="FHIR_TAILOR_CONCURRENCY",
            show_default=True,
            help="Patients read and written at a time (one connection pool, bounded queue).",
        ),
        click.option(
            "--retry-budget",
            type=float,
            default=120.0,
            envvar="FHIR_TAILOR_RETRY_BUDGET",
            show_default=True,
            help="Total seconds one request may spend retrying before it fails.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class SinceType(click.ParamType):  # type: ignore[type-arg]
    """A date or date-time, or ``auto`` (resolved from the run state by ``sync --state``)."""

    name = "since"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime) or value == "auto":
            return value
        return click.DateTime(formats=SINCE_FORMATS).convert(value, param, ctx)


def source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options that choose where patients are read from (``--server`` reads and writes)."""
    options = [
        click.option(
            "--input",
            "input_path",
            type=click.Path(exists=True, path_type=Path),
            help="Bundle JSON file, folder of Bundles, or folder of Bulk NDJSON files.",
        ),
        click.option("--patient", "patient_ids", multiple=True, help="Patient id (repeatable)."),
        click.option("--all", "everyone", is_flag=True, help="Every patient on the server."),
        click.option(
            "--since",
            type=SinceType(),
            help=(
                "Patients whose data changed since this time (server _lastUpdated); 'auto' "
                "(sync with --state): since the last complete run."
            ),
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return server_options(func)


@dataclass(slots=True)
class SourceChoice:
    """The chosen source, its server client if any, and the ``--patient`` filter for files."""

    source: Source
    client: FhirClient | None
    patient_ids: tuple[str, ...]

    def records(self, on_issue: Callable[[ReadIssue], None]) -> Iterator[PatientRecord]:
        wanted = set(self.patient_ids)
        for record in self.source.records(on_issue):
            if not wanted or record.patient_id in wanted:
                yield record


def _open_source(stack: ExitStack, params: dict[str, Any]) -> SourceChoice:
    if params.get("group") or params.get("bulk_dir") or params.get("keep_bulk_files"):
        raise click.UsageError("--group, --bulk-dir and --keep-bulk-files need --bulk")
    server, input_path = params["server"], params["input_path"]
    patient_ids: tuple[str, ...] = params["patient_ids"]
    if params["since"] == "auto":
        raise click.UsageError("--since auto is for sync with --state")
    if server and input_path is None:
        try:
            selection = PatientSelection(patient_ids, params["everyone"], params["since"])
        except ValueError as exc:
            raise click.UsageError(f"with --server, {exc} (--patient, --all or --since)") from exc
    client = _connect(stack, params) if server else None
    if input_path is not None:
        return SourceChoice(file_source(input_path), client, patient_ids)
    if client is not None:
        source = ServerSource(client, selection, concurrency=params["concurrency"])
        return SourceChoice(source, client, ())
    return SourceChoice(file_source(bundled_path("fixtures") / "bundles"), None, patient_ids)


def _open_bulk_source(
    stack: ExitStack, params: dict[str, Any], state: RunState | None
) -> SourceChoice:
    """``sync --bulk``: the export is downloaded now, so a failure stops the run before any
    write. With ``--state`` the job and its files are remembered, so a killed run resumes the
    same export; otherwise its temporary folder goes when the run ends."""
    if not params["server"] or params["input_path"] is not None or params["patient_ids"]:
        raise click.UsageError("--bulk needs --server, and takes no --input or --patient")
    client = _connect(stack, params)
    folder: Path | None = params["bulk_dir"]
    progress = _export_progress(state) if state is not None else None
    if folder is None and state is not None:
        folder = kept = state.path.with_name(state.path.name + ".bulk")

        def tidy() -> None:  # the files stay while the run can still be resumed
            if not state.resuming and not params["keep_bulk_files"]:
                shutil.rmtree(kept, ignore_errors=True)

        stack.callback(tidy)
    elif folder is None:
        folder = Path(tempfile.mkdtemp(prefix="fhir-tailor-bulk-"))
        if params["keep_bulk_files"]:
            notice(f"bulk export files are kept in {folder}")
        else:
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
    request = ExportRequest(group=params["group"], since=params["since"])
    try:
        source = bulk_source(client, folder, request, progress=progress)
    except FhirTailorError as exc:
        _fail(f"bulk export failed: {exc}")
    return SourceChoice(source, client, ())


def _export_progress(state: RunState) -> ExportProgress:
    """The run's ``$export`` job, saved into the state file as it advances."""
    job = state.bulk_job
    progress = ExportProgress(job.get("status_url"), dict(job.get("files") or {}), resumable=True)

    def save() -> None:
        state.bulk_job = {"status_url": progress.status_url, "files": progress.files}
        state.save()

    progress.save = save
    return progress


def _connect(stack: ExitStack, params: dict[str, Any]) -> FhirClient:
    """A client for ``--server``, checked to be a reachable FHIR R4 server."""
    retry = RetryPolicy(total_budget=params["retry_budget"])
    client = FhirClient(
        params["server"],
        auth=_auth(params, params["server"], timeout=params["timeout"]),
        timeout=params["timeout"],
        retry=retry,
        max_connections=params["concurrency"],
    )
    stack.enter_context(client)
    try:
        client.capabilities()
    except FhirTailorError as exc:
        _fail(f"cannot use server: {exc}")
    return client


def _auth(
    params: dict[str, Any],
    server: str,
    *,
    prefix: str = "",
    timeout: float = 30.0,
    default_scope: str | None = None,
) -> httpx.Auth | None:
    """The auth the options of :func:`auth_options` (with ``prefix``) ask for, or ``None``."""
    key = prefix.replace("-", "_")
    try:
        auth = auth_from_settings(
            params[f"{key}token"], params[f"{key}username"], params[f"{key}password"]
        )
        smart = smart_auth_from_settings(
            server,
            params[f"{key}client_id"],
            private_key=params[f"{key}private_key"],
            kid=params[f"{key}kid"],
            client_secret=params[f"{key}client_secret"],
            token_url=params[f"{key}token_url"],
            scope=params[f"{key}scope"] or default_scope,
            timeout=timeout,
        )
    except ValueError as exc:
        label = f"{prefix.removesuffix('-')} server: " if prefix else ""
        raise click.UsageError(f"{label}{exc}") from exc
    except FhirTailorError as exc:
        _fail(str(exc))
    if smart is not None:
        if auth is not None:
            raise click.UsageError(
                f"--{prefix}client-id cannot be combined with --{prefix}token or --{prefix}username"
            )
        return smart
    return auth


def _expander(params: dict[str, Any]) -> ServerExpander | None:
    """What expands value sets for ``load_definitions``: ``--terminology``, through the cache;
    ``None`` without it. Nothing is requested here: the server is asked only for a value set
    that is neither shipped expanded nor cached."""
    server = params["terminology"]
    if not server:
        return None
    auth = _auth(params, server, prefix="terminology-", default_scope=TERMINOLOGY_SCOPE)
    cache = ExpansionCache(params["terminology_cache"] or default_cache_dir())
    return ServerExpander(server, cache, auth=auth)


class _Progress:
    """A patient counter on stderr, shown only when stderr is a terminal."""

    def __init__(self) -> None:
        self.count = 0
        self.shown = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self) -> None:
        self.count += 1
        if self.shown:
            rate = self.count / max(time.monotonic() - self.started, 1e-9)
            click.echo(f"\r{self.count} patients ({rate:.0f}/s)", err=True, nl=False)

    def done(self) -> None:
        if self.shown and self.count:
            click.echo("", err=True)


def bulk_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options of ``sync --bulk`` (what ``_open_bulk_source`` reads)."""
    options = [
        click.option("--bulk", is_flag=True, help="Read every patient with one Bulk Data $export."),
        click.option("--group", help="With --bulk: export only this Group's members."),
        click.option(
            "--bulk-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="With --bulk: download the export here. Default: a temporary folder.",
        ),
        click.option(
            "--keep-bulk-files", is_flag=True, help="With --bulk: keep the temporary folder."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _utc(value: datetime | None) -> datetime | None:
    """A ``--recorded`` time; one given without an offset is read as UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


report_option = click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON run report here.",
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


@main.command()
@source_options
@bulk_options
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Write to this folder instead of the server ('-' for NDJSON on stdout).",
)
@click.option(
    "--out-format",
    type=click.Choice(["bundles", "ndjson"]),
    default="bundles",
    show_default=True,
    help="Folder layout: one transaction Bundle per patient, or NDJSON per resource type.",
)
@click.option(
    "--dry-run", is_flag=True, help="Show what would be written and the diff; write nothing."
)
@report_option
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="FHIR_TAILOR_STATE",
    help="Run state file: resume a killed run; remember the watermark for --since auto.",
)
@recorded_option
@requester_option
@click.pass_obj
def sync(
    settings: Settings,
    /,
    out: Path | None,
    out_format: str,
    dry_run: bool,
    report_path: Path | None,
    state_path: Path | None,
    recorded: datetime | None,
    requester: str | None,
    **params: Any,
) -> None:
    """Build and write personalized CarePlans for the selected patients.

    With no --server and no --input, runs on the bundled fixture patients and prints each plan.
    """
    report = RunReport()
    progress = _Progress()
    now = datetime.now(UTC).replace(microsecond=0)
    state = _begin_state(state_path, params, now) if state_path and not dry_run else None
    with ExitStack() as stack:
        if state is not None:
            stack.callback(state.close)
        choice = (
            _open_bulk_source(stack, params, state)
            if params["bulk"]
            else _open_source(stack, params)
        )
        sink = _open_sink(stack, choice, out, out_format, dry_run)
        try:
            run(
                choice,
                sink,
                settings.definitions,
                as_of=settings.as_of,
                recorded=recorded or now,
                report=report,
                progress=progress,
                state=state,
                concurrency=params["concurrency"],
                requester=requester,
            )
        except FhirTailorError as exc:  # the source failed (one patient's failure never gets here)
            report.finish()
            report.retries = choice.client.retries if choice.client else 0
            _finish(report, report_path, stopped=f"reading patients failed: {exc}")
        report.retries = choice.client.retries if choice.client else 0
        if isinstance(choice.source, BulkSource):
            report.bulk = choice.source.result.summary()
        elif params["bulk"]:
            report.bulk = {"level": None, "fallback": "the server declares no $export"}
    progress.done()
    _finish(report, report_path)


def _begin_state(path: Path, params: dict[str, Any], now: datetime) -> RunState:
    """Load the run state, resolve ``--since auto``, and begin or resume the run.

    The run is identified by its selection (server or input, patients, since), so the same
    command resumes and a different one starts afresh. ``params`` is updated in place.
    """
    try:
        state = RunState.load(path)
    except FhirTailorError as exc:
        _fail(str(exc))
    since = params["since"]
    if since == "auto":
        if not params["server"]:
            raise click.UsageError("--since auto reads a server: give --server")
        since = state.since if state.resuming else state.watermark
        params["since"] = since
        params["everyone"] = since is None and not params["patient_ids"]
    selection = json.dumps(
        {
            "server": params["server"],
            "input": str(params["input_path"]) if params["input_path"] else None,
            "patients": sorted(params["patient_ids"]),
            "all": params["everyone"],
            "since": since.isoformat() if since else None,
        },
        sort_keys=True,
    )
    state.begin(selection, now, since)
    if state.done:
        notice(f"resuming: {len(state.done)} patients done earlier")
    return state


def _open_sink(
    stack: ExitStack, choice: SourceChoice, out: Path | None, out_format: str, dry_run: bool
) -> Sink:
    sink: Sink
    if out is not None and str(out) == "-":
        sink = StdoutSink(click.echo, "ndjson")
    elif out is not None:
        sink = FolderSink(out, "ndjson" if out_format == "ndjson" else "bundles")
    elif choice.client is not None:
        sink = ServerSink(choice.client, dry_run=dry_run, echo=click.echo)
    else:
        sink = StdoutSink(click.echo, "summary")
    stack.callback(sink.close)
    return sink


def _finish(report: RunReport, report_path: Path | None, stopped: str | None = None) -> None:
    """Write the report, summarize it on stderr and exit with the run's status: ``stopped``
    says why a run ended early: part-way (exit 4; with --state the same command resumes it),
    or before any patient (exit 3, as for a server refusing us at the start)."""
    if report_path is not None:
        report.write(report_path)
    if stopped is not None:
        notice(f"error: {stopped}")
        notice(f"stopped after {report.summary()}")
        sys.exit(EXIT_STOPPED if report.patients else EXIT_CANNOT_START)
    notice(report.summary())
    for issue in report.read_issues[:20]:
        notice(f"  skipped: {issue}")
    if len(report.read_issues) > 20:
        notice(f"  ... and {len(report.read_issues) - 20} more (see --report)")
    for outcome in report.patients:
        # A deceased patient's line only when something was, or was not, done to a stored plan.
        if outcome.outcome in ("failed", "skipped-edited") or (
            outcome.outcome == "skipped-deceased" and outcome.detail
        ):
            notice(f"  {outcome.outcome}: {outcome.patient}: {outcome.detail}")
    if report.failed:
        sys.exit(EXIT_PARTIAL_FAILURE)


def _one_record(settings: Settings, params: dict[str, Any], stack: ExitStack) -> PatientRecord:
    if len(params["patient_ids"]) != 1:
        raise click.UsageError("give exactly one --patient ID")
    choice = _open_source(stack, params)
    issues: list[ReadIssue] = []
    for record in choice.records(issues.append):
        return record
    _fail(f"patient {params['patient_ids'][0]!r} not found")


@main.command()
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
@click.pass_obj
def profile(settings: Settings, /, as_json: bool, **params: Any) -> None:
    """Print one patient's four-dimension profile."""
    with ExitStack() as stack:
        record = _one_record(settings, params, stack)
    result, _ = profile_and_plan(record, settings.definitions, settings.as_of)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    facts = result.facts
    click.echo(
        f"{result.patient} as of {result.as_of}: age {facts.age}, gender {facts.gender}, "
        f"preferred language {facts.preferred_language}"
        + ("; recorded as deceased (no plan)" if facts.deceased else "")
    )
    click.echo(
        f"{'dimension':<22}{'need':<10}{'feature':<28}{'status':<9}{'severity':<10}"
        f"{'value':<14}{'date':<12}source"
    )
    for name, finding in result.findings():
        value = (
            f"{finding.value:g} {finding.unit or ''}"
            if finding.value is not None
            else (finding.answer or "")
        )
        status = finding.status + (" (stale)" if finding.stale else "")
        click.echo(
            f"{name:<22}{result.dimension(name).need:<10}{finding.feature:<28}{status:<9}"
            f"{finding.severity or '-':<10}{value[:13]:<14}{finding.effective or '-'!s:<12}"
            f"{', '.join(finding.sources)}"
        )
    for gap in result.data_gaps:
        click.echo(f"data gap: {gap.label}")


@main.command()
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_obj
def plan(settings: Settings, /, as_json: bool, **params: Any) -> None:
    """Print one patient's personalized plan without writing anything."""
    with ExitStack() as stack:
        record = _one_record(settings, params, stack)
    found, result = profile_and_plan(record, settings.definitions, settings.as_of)
    if found.facts.deceased:
        click.echo(f"{found.patient}: recorded as deceased; no plan")
    elif result is None:
        click.echo(f"Patient/{record.patient_id}: no care module applies")
    elif as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        click.echo(summarize(result), nl=False)


@main.command()
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def segments(settings: Settings, /, as_json: bool, **params: Any) -> None:
    """Count the patients of a source per segment, dimension need and plan variant."""
    summary, _ = _summarize_population(settings, params)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        click.echo(summary.table(), nl=False)


def _summarize_population(
    settings: Settings, params: dict[str, Any]
) -> tuple[PopulationSummary, int]:
    """One pass over the source's patients: the summary and how many resources were unreadable."""
    definitions = settings.definitions
    summary = PopulationSummary.over(definitions.segments)
    report = RunReport()
    progress = _Progress()
    with ExitStack() as stack:
        choice = _open_source(stack, params)
        for record in choice.records(report.read_issue):
            summary.add(*assess(record, definitions, settings.as_of, report))
            progress()
    progress.done()
    if report.read_issues:
        notice(f"{len(report.read_issues)} unreadable resources skipped")
    return summary, len(report.read_issues)


@main.command("report")
@source_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the report to this file (HTML: required; JSON: default stdout).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["html", "json"]),
    default="html",
    show_default=True,
    help="A self-contained HTML page with plots, or the same numbers as JSON.",
)
@click.pass_obj
def population_report(
    settings: Settings, /, out: Path | None, output_format: str, **params: Any
) -> None:
    """Report on a source's population: segments, needs per dimension and feature, data gaps,
    and how many distinct personalized plans the catalog produced. Counts only, no PHI.

    The HTML page embeds its plots (needs the 'report' extra: pip install 'fhir-tailor[report]').
    """
    if output_format == "html":
        if out is None:
            raise click.UsageError("give --out FILE.html, or --format json")
        try:
            require_plotting()
        except FhirTailorError as exc:
            _fail(str(exc))
    summary, unreadable = _summarize_population(settings, params)
    data = report_data(summary, settings.definitions, settings.as_of, unreadable)
    text = render_html(data) if output_format == "html" else json.dumps(data, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror}")
    notice(f"wrote {out} ({summary.patients} patients)")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, type=int, show_default=True, help="Port to listen on.")
@click.option("--client-id", required=True, envvar="FHIR_TAILOR_CLIENT_ID", help="OAuth client id.")
@click.option(
    "--client-secret",
    envvar="FHIR_TAILOR_CLIENT_SECRET",
    help="Secret of a confidential client (env var preferred). Default: a public client.",
)
@click.option("--fhir-server", help="FHIR base URL for standalone launches (also trusted as iss).")
@click.option(
    "--allow-iss",
    multiple=True,
    help="Another FHIR server an EHR launch may name (repeatable). Default: --fhir-server only.",
)
@click.option("--public-url", help="URL browsers reach the app at. Default: http://HOST:PORT.")
@click.option(
    "--scope-syntax",
    type=click.Choice(["v1", "v2"]),
    default="v1",
    show_default=True,
    help="SMART scope syntax: v1 (patient/*.read) or v2 (patient/*.rs).",
)
@requester_option
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    client_id: str,
    client_secret: str | None,
    fhir_server: str | None,
    allow_iss: tuple[str, ...],
    public_url: str | None,
    scope_syntax: Any,
    requester: str | None,
) -> None:
    """Serve the SMART on FHIR app: review a patient's plan, drop activities, approve it."""
    try:
        import uvicorn

        from .web.app import AppConfig, create_app
    except ImportError:
        _fail("the app needs the serve extra: pip install 'fhir-tailor[serve]'")
    settings: Settings = ctx.obj
    pinned = ctx.find_root().params.get("as_of") is not None
    config = AppConfig(
        client_id=client_id,
        definitions=settings.definitions,
        public_url=public_url or f"http://{host}:{port}",
        fhir_server=fhir_server,
        client_secret=client_secret,
        scope_syntax=scope_syntax,
        allowed_issuers=frozenset(allow_iss),
        as_of=settings.as_of if pinned else None,
        requester=requester,
    )
    if not config.issuers:
        notice("warning: no --fhir-server or --allow-iss: any FHIR server may launch this app")
    try:
        app = create_app(config)
    except FhirTailorError as exc:
        _fail(str(exc))
    uvicorn.run(app, host=host, port=port, log_level="warning")


@main.command("spark-sync")
@server_options
@click.option(
    "--input",
    "input_url",
    required=True,
    help="Folder of Bulk NDJSON files: a path, or a URL Spark reads (s3a://, abfss://, gs://).",
)
@click.option(
    "--out",
    help="Output folder every executor can write (local, shared or mounted); or give --server.",
)
@click.option(
    "--writers",
    type=click.IntRange(1),
    help="With --server: partitions writing at once, each with --concurrency connections "
    "(at most WRITERS x CONCURRENCY requests in flight). Default: 2.",
)
@click.option(
    "--out-format",
    type=click.Choice(["bundles", "ndjson"]),
    default="ndjson",
    show_default=True,
    help="With --out: one transaction Bundle per patient, or NDJSON per type and partition.",
)
@click.option(
    "--master",
    help="Spark master (local[2], yarn, k8s://..., spark://...). Default: spark-submit's.",
)
@click.option(
    "--partitions",
    type=click.IntRange(1),
    help="Patient partitions (hash of the patient id); with --server, --writers sets them. "
    "Default: Spark's default parallelism.",
)
@report_option
@recorded_option
@requester_option
@click.pass_obj
def spark_sync_command(
    settings: Settings,
    /,
    input_url: str,
    out: str | None,
    out_format: str,
    master: str | None,
    partitions: int | None,
    writers: int | None,
    report_path: Path | None,
    recorded: datetime | None,
    requester: str | None,
    **params: Any,
) -> None:
    """Run sync over Bulk NDJSON on Apache Spark, partitioned by patient: the same plans as
    'sync --input DIR --out OUT' (needs the spark extra: pip install 'fhir-tailor[spark]').

    With --server instead of --out, the executors write the plans back as 'sync --server'
    does, throttled to --writers partitions of --concurrency connections each.
    """
    from .spark import spark_context, spark_sync  # pyspark itself is imported when a run starts

    target = _spark_target(out, partitions, writers, params)
    try:  # without pyspark or Java, spark_context fails saying what to install
        with spark_context(master) as sc:
            report = spark_sync(
                sc,
                input_url,
                target,
                settings.definitions,
                as_of=settings.as_of,
                recorded=recorded or datetime.now(UTC).replace(microsecond=0),
                out_format="ndjson" if out_format == "ndjson" else "bundles",
                partitions=partitions,
                requester=requester,
            )
    except FhirTailorError as exc:
        _fail(str(exc))
    _finish(report, report_path)


def _spark_target(
    out: str | None, partitions: int | None, writers: int | None, params: dict[str, Any]
) -> str | ServerAccess:
    """Where spark-sync writes: the --out folder, or --server, checked by connecting once here
    so bad credentials or an unreachable server stop the run before Spark starts any task.

    A server named only by FHIR_TAILOR_SERVER gives way to --out: the variable is ambient."""
    source = click.get_current_context().get_parameter_source("server")
    from_env = source is ParameterSource.ENVIRONMENT
    server: str | None = None if out is not None and from_env else params["server"]
    if (out is None) == (not server):
        raise click.UsageError("give exactly one of --out FOLDER and --server URL (write back)")
    if out is not None:
        if writers is not None:
            raise click.UsageError("--writers is for writing back with --server")
        return out
    if partitions is not None:
        raise click.UsageError("with --server, --writers is the number of partitions")
    with ExitStack() as stack:
        _connect(stack, params)
    key_path: Path | None = params["private_key"]
    return ServerAccess(
        params["server"],
        writers=writers or 2,
        concurrency=params["concurrency"],
        timeout=params["timeout"],
        retry_budget=params["retry_budget"],
        token=params["token"],
        username=params["username"],
        password=params["password"],
        client_id=params["client_id"],
        signing_key=PortableKey.of(load_signing_key(key_path, params["kid"])) if key_path else None,
        client_secret=params["client_secret"],
        token_url=params["token_url"],
        scope=params["scope"],
    )


@main.command("validate-profiles")
@click.pass_obj
def validate_profiles(settings: Settings) -> None:
    """Check the definitions folder: every file against its schema, every reference, every value
    set the rules name (present and expanded), and that features declared to exclude each other
    share no code. Loading runs the checks, so every command refuses what fails here (exit 3,
    each problem listed); this prints what was checked."""
    definitions = settings.definitions
    catalog = definitions.catalog
    index = definitions.rules.index
    valuesets = index.valuesets()
    summary = {
        "features": len(index.features),
        "rules": sum(len(feature.rules) for feature, _ in index.features.values()),
        "valuesets": len(valuesets),
        "codes": len({concept.key for vs in valuesets for concept in vs.concepts or ()}),
        "exclusions": len(exclusion_pairs(index)),
        "segments": len(definitions.segments),
        "modules": len(catalog.modules),
        "variants": len(catalog.variants),
        "catalog": f"{catalog.info.id} {catalog.info.version}",
    }
    click.echo("profiles OK: " + json.dumps(summary))


# -- fhir-tailor catalog: the catalog as FHIR definitions ------------------------------------


@main.group()
def catalog() -> None:
    """The care-module catalog as FHIR PlanDefinitions, ActivityDefinitions and ValueSets."""


@catalog.command("show")
@click.pass_obj
def catalog_show(settings: Settings) -> None:
    """List the PlanDefinitions publish writes (one per module, then the personalization
    variants) by the canonical url|version that CarePlans name them by."""
    info = settings.definitions.catalog.info
    click.echo(f"{info.id} {info.version}: {info.title}")
    for definition in _catalog_definitions(settings):
        if definition.resource_type == "PlanDefinition":
            click.echo(f"{definition.canonical}  {definition.resource['title']}")


@catalog.command("publish")
@server_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the definitions as JSON files to this folder instead of to --server.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing.")
@click.pass_obj
def catalog_publish(settings: Settings, /, out: Path | None, dry_run: bool, **params: Any) -> None:
    """Publish the catalog: the ValueSets the feature rules name (with their expansions), a
    PlanDefinition per module, an ActivityDefinition per activity and a PlanDefinition of the
    personalization variants. Each PlanDefinition lists the value sets its conditions test with
    memberOf as relatedArtifact depends-on.

    Idempotent: what the server holds under the same url|version is left alone, or updated
    (with a warning) when its content differs. Exits 1 when a definition could not be written.
    """
    if out is None and params["server"] is None:
        raise click.UsageError("give --server, or --out for files")
    definitions = _catalog_definitions(settings)
    if out is not None:
        if dry_run:
            paths = [out / definition.file_name for definition in definitions]
        else:
            paths = write_files(definitions, out)
        for path in paths:
            click.echo(f"{'would write' if dry_run else 'wrote'} {path}")
        return
    with ExitStack() as stack:
        client = _connect(stack, params)
        report = Publisher(client, dry_run=dry_run, warn=_warn).publish(definitions)
    for definition, outcome, detail in report.outcomes:
        if outcome != "unchanged":
            line = f"{outcome}: {definition.resource_type} {definition.canonical}"
            click.echo(line + (f" ({detail})" if detail else ""), err=outcome == "failed")
    notice(report.summary())
    if report.failed:
        sys.exit(EXIT_PARTIAL_FAILURE)


def _catalog_definitions(settings: Settings) -> list[Definition]:
    try:
        return catalog_definitions(settings.definitions)
    except FhirTailorError as exc:
        _fail(str(exc))


def _warn(message: str) -> None:
    notice(message)
