"""``fhir-tailor profile`` and ``fhir-tailor plan``: one patient's profile or plan, printed,
nothing written."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import click

from ..pipeline import profile_and_plan
from ..sinks.files import summarize
from .group import command, pass_settings
from .options import source_options
from .settings import Settings
from .sources import one_record


@command()
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
@pass_settings
def profile(settings: Settings, /, as_json: bool, **params: Any) -> None:
    """Print one patient's four-dimension profile."""
    with ExitStack() as stack:
        record = one_record(params, stack)
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
        f"{'dimension':<22}{'need':<10}{'feature':<28}{'severity':<10}{'date':<12}finding [source]"
    )
    for name, finding in result.findings():  # the statement, not a status beside a band label
        stale = " (out of date, not counted)" if finding.stale else ""
        click.echo(
            f"{name:<22}{result.dimension(name).need:<10}{finding.feature:<28}"
            f"{finding.severity or '-':<10}{finding.effective or '-'!s:<12}"
            f"{finding.statement}{stale} [{', '.join(finding.sources)}]"
        )
    for gap in result.data_gaps:
        click.echo(f"data gap: {gap.label}")


@command()
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@pass_settings
def plan(settings: Settings, /, as_json: bool, **params: Any) -> None:
    """Print one patient's personalized plan without writing anything."""
    with ExitStack() as stack:
        record = one_record(params, stack)
    found, result = profile_and_plan(record, settings.definitions, settings.as_of)
    if found.facts.deceased:
        click.echo(f"{found.patient}: recorded as deceased; no plan")
    elif result is None:
        click.echo(f"Patient/{record.patient_id}: no care module applies")
    elif as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        click.echo(summarize(result), nl=False)
