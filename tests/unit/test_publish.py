"""The catalog as PlanDefinitions and ActivityDefinitions, and idempotent publishing to a
respx-mocked server."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner
from fhir.resources.R4B.activitydefinition import ActivityDefinition
from fhir.resources.R4B.plandefinition import PlanDefinition

from fhir_tailor.catalog import ActivityTemplate
from fhir_tailor.cli import main
from fhir_tailor.client import FhirClient
from fhir_tailor.definitions import Definitions
from fhir_tailor.publish import (
    Definition,
    Publisher,
    PublishError,
    catalog_definitions,
    digest,
)
from fhir_tailor.resources import GENERATED_TAG

BASE = "http://fhir.test/fhir"


@pytest.fixture(scope="module")
def published(definitions: Definitions) -> list[Definition]:
    return catalog_definitions(definitions)


def by_canonical(published: list[Definition]) -> dict[str, dict[str, Any]]:
    return {d.canonical: d.resource for d in published}


def test_one_plan_definition_per_module_named_as_careplans_name_it(
    definitions: Definitions, published: list[Definition]
) -> None:
    catalog = definitions.catalog
    resources = by_canonical(published)
    for module in catalog.modules:
        plan = resources[f"{catalog.module_url(module)}|{module.version}"]
        PlanDefinition.model_validate(plan)
        assert plan["name"][0].isupper() and "-" not in plan["name"]
        assert (plan["title"], plan["description"]) == (module.title, module.description)
        assert plan["type"]["coding"][0]["code"] == "clinical-protocol"
        assert plan["status"] == "active" and plan["publisher"] == catalog.info.publisher
        assert plan["meta"]["tag"] == [GENERATED_TAG]
        assert [g["id"] for g in plan.get("goal", [])] == [g.id for g in module.goals]
        for goal in plan.get("goal", []):
            target = goal["target"][0]
            assert target["due"]["code"] == "d"
            assert "detailQuantity" in target or "text" in target["detailCodeableConcept"]
        (action,) = plan["action"]
        (condition,) = action["condition"]
        assert condition["kind"] == "applicability"
        assert condition["expression"]["language"] == "text/fhirpath"
        assert "%asOf" in condition["expression"]["description"]
        steps = action["action"]
        assert [s["id"] for s in steps] == [a.id for a in module.activities]
        for step in steps:
            activity = resources[step["definitionCanonical"]]
            assert activity["resourceType"] == "ActivityDefinition"
            assert set(step.get("goalId", [])) == {g.id for g in module.goals}


def test_one_activity_definition_per_activity_coded_by_standard_or_catalog_code(
    definitions: Definitions, published: list[Definition]
) -> None:
    catalog = definitions.catalog
    resources = by_canonical(published)
    for module in catalog.modules:
        for template in module.activities:
            url = f"{catalog.base}/ActivityDefinition/{template.id}"
            activity = resources[f"{url}|{module.version}"]
            ActivityDefinition.model_validate(activity)
            assert activity["kind"] == template.kind
            assert activity["description"] == template.description
            code = template.code or catalog.activity_code(template.id)
            assert activity["code"]["coding"][0]["code"] == code.code
            assert activity["code"]["coding"][0]["system"] == code.system
    assert len(resources) == len(published), "url|version identifies one definition"


def test_personalization_plan_lists_the_variants_in_order(
    definitions: Definitions, published: list[Definition]
) -> None:
    catalog = definitions.catalog
    canonical = f"{catalog.base}/PlanDefinition/personalization|{catalog.info.version}"
    plan = by_canonical(published)[canonical]
    PlanDefinition.model_validate(plan)
    actions = plan["action"]
    assert [a["id"] for a in actions] == [v.id for v in catalog.variants]
    for action, variant in zip(actions, catalog.variants, strict=True):
        assert action["description"] == f"{variant.label}: {variant.reason}"
        assert action["condition"][0]["kind"] == "applicability"
        assert action["textEquivalent"]
        if variant.add_activity is not None:
            added = by_canonical(published)[action["definitionCanonical"]]
            assert added["kind"] == variant.add_activity.kind
        else:
            assert "definitionCanonical" not in action


def test_two_activities_under_one_canonical_are_refused(definitions: Definitions) -> None:
    catalog = definitions.catalog
    first, second = catalog.modules[0], catalog.modules[1]
    clash = ActivityTemplate(
        id=first.activities[0].id, kind="Task", description="Something else entirely"
    )
    changed = second.model_copy(
        update={"version": first.version, "activities": [*second.activities, clash]}
    )
    modules = tuple(changed if m is second else m for m in catalog.modules)
    clashing = dataclasses.replace(
        definitions, catalog=dataclasses.replace(catalog, modules=modules)
    )
    with pytest.raises(PublishError, match=f"ActivityDefinition/{clash.id}"):
        catalog_definitions(clashing)


def test_digest_ignores_what_the_server_owns_and_how_numbers_are_written() -> None:
    resource = {"resourceType": "PlanDefinition", "url": "u", "version": "1", "goal": [{"v": 7}]}
    stored = {**resource, "id": "x", "meta": {"versionId": "3"}, "goal": [{"v": 7.0}]}
    assert digest(stored) == digest(resource)
    assert digest({**resource, "title": "changed"}) != digest(resource)


# -- publishing --------------------------------------------------------------------------------


def capability_statement(*params: str) -> dict[str, Any]:
    resources = [
        {
            "type": rtype,
            "conditionalCreate": True,
            "searchParam": [{"name": p, "type": "uri"} for p in params],
        }
        for rtype in ("PlanDefinition", "ActivityDefinition")
    ]
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [{"mode": "server", "resource": resources}],
    }


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def stored(definition: Definition, rid: str, version: str = "1") -> dict[str, Any]:
    meta = {**definition.resource["meta"], "versionId": version}
    return {**definition.resource, "id": rid, "meta": meta}


@pytest.fixture
def client() -> FhirClient:
    return FhirClient(BASE, sleep=lambda _: None)


@pytest.fixture
def two(published: list[Definition]) -> list[Definition]:
    """An ActivityDefinition and a PlanDefinition."""
    return [published[0], published[-1]]


@respx.mock
def test_missing_definitions_are_created_conditionally_where_searchable(
    client: FhirClient, two: list[Definition]
) -> None:
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement("url", "version"))
    )
    searches = [
        respx.get(f"{BASE}/{d.resource_type}", params={"url": d.url, "version": d.version}).mock(
            return_value=httpx.Response(200, json=searchset())
        )
        for d in two
    ]
    posts = [
        respx.post(f"{BASE}/{d.resource_type}").mock(
            return_value=httpx.Response(201, json=stored(d, f"new{n}"))
        )
        for n, d in enumerate(two)
    ]
    report = Publisher(client).publish(two)
    assert report.counts == {"created": 2}
    assert all(s.call_count == 1 for s in searches)
    for post, definition in zip(posts, two, strict=True):
        request = post.calls[0].request
        assert json.loads(request.content) == definition.resource
        condition = httpx.QueryParams(request.headers["If-None-Exist"])
        assert (condition["url"], condition["version"]) == (definition.url, definition.version)


@respx.mock
def test_undeclared_search_lists_each_type_once_and_creates_plainly(
    client: FhirClient, published: list[Definition]
) -> None:
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement())
    )
    activities = [d for d in published if d.resource_type == "ActivityDefinition"]
    listing = respx.get(f"{BASE}/ActivityDefinition").mock(
        return_value=httpx.Response(
            200, json=searchset(*(stored(d, f"a{n}") for n, d in enumerate(activities[1:])))
        )
    )
    post = respx.post(f"{BASE}/ActivityDefinition").mock(
        return_value=httpx.Response(201, json=stored(activities[0], "new"))
    )
    report = Publisher(client).publish(activities)
    assert report.counts == {"created": 1, "unchanged": len(activities) - 1}
    assert listing.call_count == 1
    assert "url" not in listing.calls[0].request.url.params
    assert "If-None-Exist" not in post.calls[0].request.headers


@respx.mock
def test_unchanged_definitions_are_not_written_again(
    client: FhirClient, two: list[Definition]
) -> None:
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement())
    )
    for n, definition in enumerate(two):
        respx.get(f"{BASE}/{definition.resource_type}").mock(
            return_value=httpx.Response(200, json=searchset(stored(definition, f"x{n}", "4")))
        )
    writes = [respx.post(url__startswith=BASE), respx.put(url__startswith=BASE)]
    report = Publisher(client).publish(two)
    assert report.counts == {"unchanged": 2}
    assert not any(w.called for w in writes)


@respx.mock
def test_changed_content_under_one_version_is_updated_with_if_match_and_a_warning(
    client: FhirClient, two: list[Definition]
) -> None:
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement())
    )
    plan = two[1]
    outdated = {**stored(plan, "p1", "3"), "description": "An older text"}
    respx.get(f"{BASE}/PlanDefinition").mock(
        return_value=httpx.Response(200, json=searchset(outdated))
    )
    put = respx.put(f"{BASE}/PlanDefinition/p1").mock(
        return_value=httpx.Response(200, json=stored(plan, "p1", "4"))
    )
    warnings: list[str] = []
    report = Publisher(client, warn=warnings.append).publish([plan])
    assert report.counts == {"updated": 1}
    assert put.calls[0].request.headers["If-Match"] == 'W/"3"'
    assert json.loads(put.calls[0].request.content) == {**plan.resource, "id": "p1"}
    (warning,) = warnings
    assert plan.canonical in warning and "version" in warning


@respx.mock
def test_dry_run_writes_nothing_and_duplicates_fail(
    client: FhirClient, two: list[Definition]
) -> None:
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement())
    )
    plan = two[1]
    respx.get(f"{BASE}/ActivityDefinition").mock(return_value=httpx.Response(200, json=searchset()))
    respx.get(f"{BASE}/PlanDefinition").mock(
        return_value=httpx.Response(200, json=searchset(stored(plan, "p1"), stored(plan, "p2")))
    )
    writes = [respx.post(url__startswith=BASE), respx.put(url__startswith=BASE)]
    report = Publisher(client, dry_run=True).publish(two)
    (_, created, _), (_, duplicated, detail) = report.outcomes
    assert (created, duplicated) == ("would-create", "failed")
    assert detail is not None and "PlanDefinition/p2" in detail
    assert report.failed
    assert not any(w.called for w in writes)


# -- the command line --------------------------------------------------------------------------


def test_catalog_show_lists_each_module_canonical(definitions: Definitions) -> None:
    result = CliRunner().invoke(main, ["catalog", "show"])
    assert result.exit_code == 0, result.stderr
    catalog = definitions.catalog
    for module in catalog.modules:
        assert f"{catalog.module_url(module)}|{module.version}" in result.stdout
    assert f"personalization|{catalog.info.version}" in result.stdout


def test_catalog_publish_to_a_folder_writes_valid_definitions(
    tmp_path: Path, published: list[Definition]
) -> None:
    dry = CliRunner().invoke(main, ["catalog", "publish", "--out", str(tmp_path), "--dry-run"])
    assert dry.exit_code == 0, dry.stderr
    assert not list(tmp_path.iterdir())
    result = CliRunner().invoke(main, ["catalog", "publish", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == len(published)
    for path in files:
        resource = json.loads(path.read_text())
        model = (
            PlanDefinition if resource["resourceType"] == "PlanDefinition" else ActivityDefinition
        )
        model.model_validate(resource)


def test_catalog_publish_needs_a_destination() -> None:
    result = CliRunner().invoke(main, ["catalog", "publish"], env={"FHIR_TAILOR_SERVER": None})
    assert result.exit_code == 2
    assert "give --server, or --out" in result.stderr
