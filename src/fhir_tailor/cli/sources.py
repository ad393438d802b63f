"""The source of patients the options of :func:`.options.source_options` and
:func:`.options.bulk_options` choose: files, a server's search, or a Bulk Data export."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..bulk import ExportProgress, ExportRequest, bulk_source
from ..client import FhirClient
from ..definitions import bundled_path
from ..errors import FhirTailorError, NoPatientsError
from ..logs import notice
from ..record import PatientRecord, ReadIssue
from ..sources import Source, file_source
from ..sources.server import PatientSelection, ServerSource
from ..state import RunState
from .connect import connect
from .exits import fail
from .not_found import exit_if_missing


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

    def patients(self, on_issue: Callable[[ReadIssue], None]) -> Iterator[PatientRecord]:
        """:meth:`records`, for a command that has nothing to do without patients: input files
        that hold none stop it (exit 3, naming what was found instead)."""
        try:
            yield from self.records(on_issue)
        except NoPatientsError as exc:
            fail(str(exc))


def open_source(stack: ExitStack, params: dict[str, Any]) -> SourceChoice:
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
    client = connect(stack, params) if server else None
    if input_path is not None:
        return SourceChoice(file_source(input_path, patient_ids), client, patient_ids)
    if client is not None:
        source = ServerSource(client, selection, concurrency=params["concurrency"])
        return SourceChoice(source, client, ())
    fixtures = file_source(bundled_path("fixtures") / "bundles", patient_ids)
    return SourceChoice(fixtures, None, patient_ids)


def open_bulk_source(
    stack: ExitStack, params: dict[str, Any], state: RunState | None
) -> SourceChoice:
    """``sync --bulk``: the export is downloaded now, so a failure stops the run before any
    write. With ``--state`` the job and its files are remembered, so a killed run resumes the
    same export; otherwise its temporary folder goes when the run ends."""
    if not params["server"] or params["input_path"] is not None or params["patient_ids"]:
        raise click.UsageError("--bulk needs --server, and takes no --input or --patient")
    client = connect(stack, params)
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
        source = bulk_source(
            client,
            folder,
            request,
            progress=progress,
            max_bytes=int(params["bulk_max_gib"] * 2**30),
            download_budget=params["bulk_download_budget"],
        )
    except FhirTailorError as exc:
        fail(f"bulk export failed: {exc}")
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


def one_record(params: dict[str, Any], stack: ExitStack) -> PatientRecord:
    """The one ``--patient`` a command about a single patient reads."""
    if len(params["patient_ids"]) != 1:
        raise click.UsageError("give exactly one --patient ID")
    choice = open_source(stack, params)
    issues: list[ReadIssue] = []
    for record in choice.patients(issues.append):
        return record
    exit_if_missing(issues)
    unread = next((issue for issue in issues if issue.unread_patient), None)
    if unread is not None:  # there, but could not be read (a server error, say)
        fail(f"Patient/{unread.unread_patient} could not be read: {unread.reason}")
    fail(f"Patient/{params['patient_ids'][0]} not found")
