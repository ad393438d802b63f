"""The catalog published to a real FHIR server: twice without duplicates or new versions, the
value sets the PlanDefinitions depend on stored with their expansions, and the canonicals a synced
CarePlan instantiates resolve to the published PlanDefinitions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fhir.resources.R4B import get_fhir_model_class
from searching import search_all

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path, load_definitions
from fhir_tailor.publish import catalog_definitions

AS_OF = "2026-11-15"
#: A fixture patient (ft-01) loaded under ids of its own, so the other tests never see it.
FIXTURE = next((bundled_path("fixtures") / "bundles").glob("01-*.json"))
PATIENT = "pub-01"


def publish(server: str) -> str:
    result = CliRunner().invoke(main, ["--as-of", AS_OF, "catalog", "publish", "--server", server])
    assert result.exit_code == 0, result.stderr
    return result.stderr


def declares(http: httpx.Client, resource_type: str, *params: str) -> bool:
    statement = http.get("metadata").raise_for_status().json()
    for resource in statement["rest"][0]["resource"]:
        if resource["type"] == resource_type:
            return set(params) <= {p["name"] for p in resource.get("searchParam", [])}
    return False


def resolve(http: httpx.Client, resource_type: str, canonical: str) -> list[dict[str, Any]]:
    """What ``[type]?url=…&version=…`` finds; where the server does not declare those
    parameters (it would ignore them and return every resource), the same match made here."""
    url, version = canonical.split("|")
    if declares(http, resource_type, "url", "version"):
        query = httpx.QueryParams({"url": url, "version": version, "_count": "1000"})
        return search_all(http, f"{resource_type}?{query}")
    listing = search_all(http, f"{resource_type}?_count=1000")
    return [r for r in listing if (r.get("url"), r.get("version")) == (url, version)]


@pytest.fixture
def http(fhir_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=fhir_server + "/", headers={"Accept": "application/fhir+json"}, timeout=30
    ) as client:
        yield client


def test_publishing_twice_leaves_one_unchanged_version_of_each_definition(
    fhir_server: str, http: httpx.Client
) -> None:
    definitions = catalog_definitions(load_definitions(bundled_path("profiles")))
    first = publish(fhir_server)
    assert "updated" not in first and "failed" not in first, first
    versions = {}
    for definition in definitions:
        (stored,) = resolve(http, definition.resource_type, definition.canonical)
        get_fhir_model_class(definition.resource_type).model_validate(stored)
        versions[definition.canonical] = stored["meta"]["versionId"]
        if definition.resource_type == "ValueSet":
            assert stored["expansion"] == definition.resource["expansion"]

    second = publish(fhir_server)
    assert f"{len(definitions)} definitions ({len(definitions)} unchanged)" in second, second
    for definition in definitions:
        (stored,) = resolve(http, definition.resource_type, definition.canonical)
        assert stored["meta"]["versionId"] == versions[definition.canonical]
    for resource_type in ("PlanDefinition", "ActivityDefinition", "ValueSet"):
        stored = search_all(http, f"{resource_type}?_count=1000")
        assert len({(r["url"], r["version"]) for r in stored}) == len(stored), "no duplicates"


def test_the_value_sets_plans_depend_on_are_on_the_server(
    fhir_server: str, http: httpx.Client
) -> None:
    publish(fhir_server)
    depended = {
        artifact["resource"]
        for plan in search_all(http, "PlanDefinition?_count=1000")
        for artifact in plan.get("relatedArtifact", [])
        if artifact["type"] == "depends-on"
    }
    assert depended
    for canonical in depended:
        (valueset,) = resolve(http, "ValueSet", canonical)
        assert valueset["expansion"]["contains"]


@pytest.fixture
def synced_patient(fhir_server: str, http: httpx.Client) -> Iterator[dict[str, Any]]:
    """A fixture patient loaded and synced; everything written is deleted afterwards."""
    text = FIXTURE.read_text()
    bundle = json.loads(text.replace('"ft-01', f'"{PATIENT}').replace("/ft-01", f"/{PATIENT}"))
    http.post("", json=bundle).raise_for_status()
    written = [e["request"]["url"] for e in bundle["entry"]]
    try:
        result = CliRunner().invoke(
            main,
            ["--as-of", AS_OF, "sync", "--server", fhir_server, "--patient", PATIENT],
        )
        assert result.exit_code == 0, result.stderr
        (careplan,) = search_all(http, f"CarePlan?subject=Patient/{PATIENT}")
        # deleted in reverse: what refers to a resource goes first (servers that keep
        # referential integrity, such as HAPI, refuse to delete a referenced resource)
        written += [g["reference"] for g in careplan.get("goal", [])]
        written += [a["reference"]["reference"] for a in careplan["activity"] if "reference" in a]
        written += [f"CarePlan/{careplan['id']}"]
        provenances = search_all(http, f"Provenance?target=CarePlan/{careplan['id']}")
        written += [f"Provenance/{p['id']}" for p in provenances]
        yield careplan
    finally:
        for reference in reversed(written):
            http.delete(reference).raise_for_status()


def test_a_synced_careplan_instantiates_published_plan_definitions(
    fhir_server: str, http: httpx.Client, synced_patient: dict[str, Any]
) -> None:
    publish(fhir_server)
    canonicals = synced_patient["instantiatesCanonical"]
    assert canonicals
    for canonical in canonicals:
        (plan,) = resolve(http, "PlanDefinition", canonical)
        steps = plan["action"][0]["action"]
        for step in steps:
            (activity,) = resolve(http, "ActivityDefinition", step["definitionCanonical"])
            assert activity["kind"]
