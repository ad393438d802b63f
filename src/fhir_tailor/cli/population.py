"""``fhir-tailor segments`` and ``fhir-tailor report``: counts over a source's population,
no PHI."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from ..errors import FhirTailorError
from ..logs import notice
from ..pipeline import assess
from ..population import PopulationSummary
from ..population_report import render_html, report_data, require_plotting
from ..record import ReadIssue
from ..report import RunReport
from .exits import fail
from .group import command, pass_settings
from .not_found import exit_if_missing
from .options import creatable_file, source_options
from .progress import start_progress
from .settings import Settings
from .sources import open_source


@command()
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_settings
def segments(settings: Settings, /, as_json: bool, **params: Any) -> None:
    """Count the patients of a source per segment, dimension need and plan variant."""
    summary, issues = _summarize_population(settings, params)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    else:
        click.echo(summary.table(), nl=False)
    exit_if_missing(issues)


def _summarize_population(
    settings: Settings, params: dict[str, Any]
) -> tuple[PopulationSummary, list[ReadIssue]]:
    """One pass over the source's patients: the summary and what could not be read."""
    definitions = settings.definitions
    summary = PopulationSummary.over(definitions.segments)
    report = RunReport()
    with ExitStack() as stack:
        choice = open_source(stack, params)
        progress = stack.enter_context(start_progress(choice, quiet=settings.quiet))
        for record in choice.patients(report.read_issue):
            summary.add(*assess(record, definitions, settings.as_of, report))
            progress()
    unreadable = [issue for issue in report.read_issues if not issue.not_found]
    if unreadable:
        notice(f"{len(unreadable)} unreadable resources skipped")
    return summary, report.read_issues


@command("report")
@source_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    callback=creatable_file,
    help="Write the report to this file (HTML: required; JSON: default stdout); its folder is "
    "made if missing.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["html", "json"]),
    default="html",
    show_default=True,
    help="A self-contained HTML page with plots, or the same numbers as JSON.",
)
@pass_settings
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
            fail(str(exc))
    summary, issues = _summarize_population(settings, params)
    unreadable = sum(not issue.not_found for issue in issues)
    data = report_data(summary, settings.definitions, settings.as_of, unreadable)
    text = render_html(data) if output_format == "html" else json.dumps(data, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror}")
        notice(f"wrote {out} ({summary.patients} patients)")
    exit_if_missing(issues)
