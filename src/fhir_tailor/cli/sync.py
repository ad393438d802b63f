"""``fhir-tailor sync``: build and write the selected patients' plans, to a server, a folder or
stdout, resumably with ``--state``."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..bulk import BulkSource
from ..errors import FhirTailorError
from ..logs import notice
from ..pipeline import run
from ..report import RunReport
from ..sinks import Sink
from ..sinks.files import FolderSink, StdoutSink
from ..sinks.server import ServerSink
from ..state import RunState
from ..workers import WorkerError, default_workers
from .exits import EXIT_STOPPED, fail
from .finish import finish
from .group import command, pass_settings
from .options import (
    bulk_options,
    recorded_option,
    report_option,
    requester_option,
    source_options,
)
from .progress import start_progress
from .settings import Settings
from .sources import SourceChoice, open_bulk_source, open_source
from .stdout import OutputClosed, echo


def _out_folder(_ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """``--out``: '-', or a folder, made now if missing, so that a file in its place or a folder
    that cannot be made stops the command before it reads anything (exit 2, naming it)."""
    if value is None or str(value) == "-":
        return value
    if value.exists() and not value.is_dir():
        raise click.BadParameter(
            f"{value} is a file: --out names a folder ('-' for NDJSON on stdout)", param=param
        )
    try:
        value.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot make {value}: {exc.strerror}", param=param) from None
    return value


@command()
@source_options
@bulk_options
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    callback=_out_folder,
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
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    envvar="FHIR_TAILOR_WORKERS",
    show_default="this machine's cores",
    help="Processes that profile and plan the patients of --input or --bulk files at a time "
    "(the output is the same with any number).",
)
@pass_settings
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
    workers: int | None,
    **params: Any,
) -> None:
    """Build and write personalized CarePlans for the selected patients.

    With no --server and no --input, runs on the bundled fixture patients and prints each plan.
    """
    report = RunReport()
    now = datetime.now(UTC).replace(microsecond=0)
    state = _begin_state(state_path, params, now) if state_path and not dry_run else None
    with ExitStack() as stack:
        if state is not None:
            stack.callback(state.close)
        choice = (
            open_bulk_source(stack, params, state) if params["bulk"] else open_source(stack, params)
        )
        sink = _open_sink(stack, choice, out, out_format, dry_run)
        progress = stack.enter_context(start_progress(choice, quiet=settings.quiet))
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
                workers=workers or default_workers(),
            )
        except FhirTailorError as exc:  # the source failed (one patient's failure never gets here)
            progress.close()
            report.finish()
            report.retries = choice.client.retries if choice.client else 0
            # A worker process that died says so itself; anything else was the source.
            why = str(exc) if isinstance(exc, WorkerError) else f"reading patients failed: {exc}"
            finish(report, report_path, stopped=why)
        except OutputClosed:  # '--out - | head': stop, as other commands in a pipe do, silently
            progress.close()
            report.finish()
            if report_path is not None:
                report.write(report_path)
            sys.exit(EXIT_STOPPED)
        report.retries = choice.client.retries if choice.client else 0
        if isinstance(choice.source, BulkSource):
            report.bulk = choice.source.result.summary()
        elif params["bulk"]:
            report.bulk = {"level": None, "fallback": "the server declares no $export"}
    finish(report, report_path)


def _begin_state(path: Path, params: dict[str, Any], now: datetime) -> RunState:
    """Load the run state, resolve ``--since auto``, and begin or resume the run.

    The run is identified by its selection (server or input, patients, since), so the same
    command resumes and a different one starts afresh. ``params`` is updated in place.
    """
    try:
        state = RunState.load(path)
    except FhirTailorError as exc:
        fail(str(exc))
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
        sink = StdoutSink(echo, "ndjson")
    elif out is not None:
        sink = FolderSink(out, "ndjson" if out_format == "ndjson" else "bundles")
    elif choice.client is not None:
        sink = ServerSink(choice.client, dry_run=dry_run, echo=echo)
    else:
        sink = StdoutSink(echo, "summary")
    stack.callback(sink.close)
    return sink
