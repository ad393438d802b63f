"""The catalog as PlanDefinitions and ActivityDefinitions, and idempotent publishing to a
respx-mocked server."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import yaml
from click.testing import CliRunner
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.activitydefinition import ActivityDefinition
from fhir.resources.R4B.plandefinition import PlanDefinition
from fhir.resources.R4B.valueset import ValueSet

from fhir_tailor import cql
from fhir_tailor.catalog import ActivityTemplate
from fhir_tailor.cli import main
from fhir_tailor.client import FhirClient
from fhir_tailor.definitions import Definitions, bundled_path, load_definitions
from fhir_tailor.fhirpath import NOT_DECEASED
from fhir_tailor.mapping import Rule
from fhir_tailor.publish import (
    Definition,
    Publisher,
    PublishError,
    catalog_definitions,
    digest,
)
from fhir_tailor.resources import GENERATED_TAG
from fhir_tailor.terminology.valuesets import ValueSet as TerminologyValueSet
from fhir_tailor.terminology.valuesets import ValueSetLibrary

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
        assert plan["status"] == "draft" and plan["experimental"] is True
        assert "not clinically validated" in plan["usage"]
        assert plan["publisher"] == catalog.info.publisher
        assert plan["meta"]["tag"] == [GENERATED_TAG]
        assert [g["id"] for g in plan.get("goal", [])] == [g.id for g in module.goals]
        for goal, template in zip(plan.get("goal", []), module.goals, strict=True):
            target = goal["target"][0]
            days = template.target.due_in_days
            assert target.get("due") == (
                {"value": days, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}
                if days
                else None
            )
            aim = template.target
            if aim.value is not None:
                assert target["detailQuantity"]["value"] == aim.value
            elif aim.answer is not None:  # a coded answer, as the SDOH Clinical Care IG's goals
                (coding,) = target["detailCodeableConcept"]["coding"]
                assert (coding["system"], coding["code"]) == (aim.answer.system, aim.answer.code)
            else:
                assert target["detailCodeableConcept"] == {"text": aim.text}
        (action,) = plan["action"]
        condition, alive = action["condition"]
        library = resources[condition["expression"]["reference"]]
        assert plan["library"] == [condition["expression"]["reference"]]
        assert library["resourceType"] == "Library"
        cql_text = base64.b64decode(library["content"][0]["data"]).decode()
        defines = cql.Translator(definitions.rules).defines([("Applies", module.applies_when)])
        defines.append(("Alive", cql.NOT_DECEASED))
        assert cql_text == cql.library(library["name"], module.version, defines)
        assert library["url"].endswith(f"/Library/{library['name']}"), "named as CQL names it"
        assert [c["expression"]["expression"] for c in (condition, alive)] == ["Applies", "Alive"]
        assert alternative(alive)["expression"] == NOT_DECEASED
        assert alternative(condition)["language"] == "text/fhirpath"
        for test in (condition, alive):
            assert test["kind"] == "applicability"
            assert test["expression"]["language"] == "text/cql-identifier"
            assert "%asOf" in test["expression"]["description"]
            assert "%asOf" in alternative(test)["description"]
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


def test_every_catalog_definition_says_it_awaits_clinical_validation(
    published: list[Definition],
) -> None:
    """PlanDefinitions and ActivityDefinitions are drafts and experimental: a CDS engine or a
    reader sees at once that the content is not clinically validated."""
    ours = [d.resource for d in published if d.resource_type != "ValueSet"]
    assert {r["resourceType"] for r in ours} == {"PlanDefinition", "ActivityDefinition", "Library"}
    for resource in ours:
        assert (resource["status"], resource["experimental"]) == ("draft", True), resource["url"]
        assert "validate locally before use" in resource["usage"]


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


# -- value sets --------------------------------------------------------------------------------


def test_every_value_set_the_rules_name_is_published_with_its_expansion(
    definitions: Definitions, published: list[Definition]
) -> None:
    resources = by_canonical(published)
    named = {c for f, _ in definitions.rules.index.features.values() for c in _named(f.rules)}
    valuesets = [d for d in published if d.resource_type == "ValueSet"]
    assert {d.canonical for d in valuesets} == named
    first_other = next(n for n, d in enumerate(published) if d.resource_type != "ValueSet")
    assert all(d.resource_type != "ValueSet" for d in published[first_other:]), "value sets first"
    for canonical in named:
        resource = resources[canonical]
        ValueSet.model_validate(resource)
        shipped = definitions.rules.index.library.find(canonical)
        assert shipped is not None and shipped.concepts
        assert resource["expansion"] == shipped.resource["expansion"]
        assert "id" not in resource, "the server assigns the id"
        assert GENERATED_TAG in resource["meta"]["tag"]


def _named(rules: list[Rule]) -> set[str]:
    return {c for rule in rules for c in (*rule.valuesets, *rule.excluding)}


def test_a_value_set_copy_leaves_the_servers_meta_behind(definitions: Definitions) -> None:
    library = definitions.rules.index.library
    shipped = next(iter(library))
    other_tag = {"system": "http://example.org/tags", "code": "imported"}
    meta = {"versionId": "7", "lastUpdated": "2026-01-01T00:00:00Z", "tag": [other_tag]}
    elsewhere = dataclasses.replace(shipped, resource={**shipped.resource, "meta": meta})
    (copied,) = [d for d in _publish_valuesets(definitions, elsewhere) if d.url == shipped.url]
    assert copied.resource["meta"] == {"tag": [other_tag, GENERATED_TAG]}
    assert digest(copied.resource) == digest(dict(shipped.resource))


def _publish_valuesets(
    definitions: Definitions, replacement: TerminologyValueSet
) -> list[Definition]:
    """The ValueSets published from ``definitions`` with one value set replaced."""
    index = copy.copy(definitions.rules.index)
    others = [v for v in index.library if v.canonical != replacement.canonical]
    index.library = ValueSetLibrary([*others, replacement])
    rules = dataclasses.replace(definitions.rules, index=index)
    found = catalog_definitions(dataclasses.replace(definitions, rules=rules))
    return [d for d in found if d.resource_type == "ValueSet"]


def test_a_value_set_without_a_version_is_refused(tmp_path: Path) -> None:
    """A rule may name a value set by url alone, and the folder ship it without a version, but
    publishing finds a definition again by url|version."""
    folder = tmp_path / "profiles"
    shutil.copytree(bundled_path("profiles"), folder)
    features = folder / "features" / "medical.yaml"
    medical = yaml.safe_load(features.read_text())
    rule = medical["features"][0]["rules"][0]
    url = rule["valuesets"][0].split("|")[0]
    rule["valuesets"][0] = url
    features.write_text(yaml.safe_dump(medical))
    for path in (folder / "valuesets").glob("*.json"):
        resource = json.loads(path.read_text())
        if resource["url"] == url:
            del resource["version"]
            path.write_text(json.dumps(resource))
    definitions = load_definitions(folder)
    with pytest.raises(PublishError, match=f"value set {re.escape(url)} has no version"):
        catalog_definitions(definitions)


def alternative(condition: dict[str, Any]) -> dict[str, Any]:
    """The FHIRPath beside a condition's CQL (cqf-alternativeExpression)."""
    (extension,) = condition["expression"]["extension"]
    assert extension["url"] == "http://hl7.org/fhir/StructureDefinition/cqf-alternativeExpression"
    expression: dict[str, Any] = extension["valueExpression"]
    return expression


def member_of(expression: str) -> set[str]:
    return set(re.findall(r"memberOf\('([^']*)'\)", expression))


def test_plans_depend_on_exactly_the_value_sets_their_conditions_test(
    published: list[Definition],
) -> None:
    resources = by_canonical(published)
    plans = [d for d in published if d.resource_type == "PlanDefinition"]
    assert any("relatedArtifact" in p.resource for p in plans)
    for plan in plans:
        used = {
            canonical
            for action in plan.resource["action"]
            for condition in action.get("condition", [])
            for canonical in member_of(alternative(condition)["expression"])
        }
        artifacts = plan.resource.get("relatedArtifact", [])
        named = [artifact["resource"] for artifact in artifacts]
        assert set(named) == used and len(named) == len(used), plan.canonical
        for artifact in artifacts:
            valueset = resources[artifact["resource"]]
            assert artifact["type"] == "depends-on"
            assert valueset["resourceType"] == "ValueSet", "published with the plan"
            assert artifact["display"] == f"Value set {valueset['title']}"
        if artifacts:
            keys = list(plan.resource)
            assert keys.index("relatedArtifact") < keys.index("action")


def with_first_module_applying(definitions: Definitions, rule: dict[str, Any]) -> dict[str, Any]:
    """The first module's PlanDefinition, had the module applied when ``rule`` holds."""
    catalog = definitions.catalog
    first = catalog.modules[0]
    module = type(first).model_validate({**first.model_dump(by_alias=True), "applies_when": rule})
    modules = (module, *catalog.modules[1:])
    changed = dataclasses.replace(
        definitions, catalog=dataclasses.replace(catalog, modules=modules)
    )
    canonical = f"{catalog.module_url(module)}|{module.version}"
    plan = by_canonical(catalog_definitions(changed))[canonical]
    PlanDefinition.model_validate(plan)
    return plan


def test_a_module_on_two_features_depends_on_their_value_sets(definitions: Definitions) -> None:
    """Worked out from the mapping, not from the FHIRPath: a module for type 2 diabetes without
    cognitive impairment tests the value sets of those two features' rules."""
    rule = {"all": [{"feature": "type2_diabetes"}, {"not": {"feature": "cognitive_impairment"}}]}
    plan = with_first_module_applying(definitions, rule)
    features = definitions.rules.index.features
    expected = _named(features["type2_diabetes"][0].rules)
    expected |= _named(features["cognitive_impairment"][0].rules)
    assert {artifact["resource"] for artifact in plan["relatedArtifact"]} == expected


def test_a_module_without_coded_conditions_depends_on_nothing(definitions: Definitions) -> None:
    plan = with_first_module_applying(definitions, {"age_at_least": 65})
    assert "relatedArtifact" not in plan


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
    first = next(d for d in published if d.resource_type == "ActivityDefinition")
    return [first, published[-1]]


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
def test_value_sets_are_published_once_and_then_left_alone(
    client: FhirClient, published: list[Definition]
) -> None:
    """A server that does not declare ValueSet search (sekmet, and others): the type is listed
    once; what it holds is matched by url|version and digest, what it lacks is created."""
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement())
    )
    valuesets = [d for d in published if d.resource_type == "ValueSet"]
    held, missing = valuesets[1:], valuesets[0]
    listing = respx.get(f"{BASE}/ValueSet").mock(
        return_value=httpx.Response(
            200, json=searchset(*(stored(d, f"vs{n}") for n, d in enumerate(held)))
        )
    )
    post = respx.post(f"{BASE}/ValueSet").mock(
        return_value=httpx.Response(201, json=stored(missing, "new"))
    )
    put = respx.put(url__startswith=BASE)
    report = Publisher(client).publish(valuesets)
    assert report.counts == {"created": 1, "unchanged": len(held)}
    assert listing.call_count == 1 and not put.called
    (call,) = post.calls
    assert json.loads(call.request.content) == missing.resource


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
    tmp_path: Path, published: list[Definition], definitions: Definitions
) -> None:
    dry = CliRunner().invoke(main, ["catalog", "publish", "--out", str(tmp_path), "--dry-run"])
    assert dry.exit_code == 0, dry.stderr
    assert not list(tmp_path.iterdir())
    result = CliRunner().invoke(main, ["catalog", "publish", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == len(published)
    types = Counter()
    for path in files:
        resource = json.loads(path.read_text())
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        types[resource["resourceType"]] += 1
    assert types["ValueSet"] == len(definitions.rules.index.valuesets())
    assert types.keys() == {"ValueSet", "ActivityDefinition", "PlanDefinition", "Library"}
    assert types["Library"] == types["PlanDefinition"], "a library of conditions per plan"


def test_catalog_publish_needs_a_destination() -> None:
    result = CliRunner().invoke(main, ["catalog", "publish"], env={"FHIR_TAILOR_SERVER": None})
    assert result.exit_code == 2
    assert "give --server, or --out" in result.stderr
