"""``fhir-tailor validate-profiles``: what loading the definitions folder checked."""

from __future__ import annotations

import json

import click

from ..exclusions import exclusion_pairs
from .group import command, pass_settings
from .settings import Settings


@command("validate-profiles")
@pass_settings
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
