"""``fhir-tailor catalog``: the care-module catalog as FHIR definitions, listed or published."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from ..errors import FhirTailorError
from ..logs import notice
from ..publish import Definition, Publisher, catalog_definitions, write_files
from .connect import connect
from .exits import EXIT_PARTIAL_FAILURE, fail
from .group import TailorCommand, pass_settings
from .options import server_options
from .settings import Settings


@click.group()
def catalog() -> None:
    """The care-module catalog as FHIR PlanDefinitions, ActivityDefinitions and ValueSets."""


@catalog.command("show", cls=TailorCommand)
@pass_settings
def catalog_show(settings: Settings) -> None:
    """List the PlanDefinitions publish writes (one per module, then the personalization
    variants) by the canonical url|version that CarePlans name them by."""
    info = settings.definitions.catalog.info
    click.echo(f"{info.id} {info.version}: {info.title}")
    for definition in _catalog_definitions(settings):
        if definition.resource_type == "PlanDefinition":
            click.echo(f"{definition.canonical}  {definition.resource['title']}")


@catalog.command("publish", cls=TailorCommand)
@server_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the definitions as JSON files to this folder instead of to --server.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing.")
@pass_settings
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
        client = connect(stack, params)
        report = Publisher(client, dry_run=dry_run, warn=notice).publish(definitions)
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
        fail(str(exc))
