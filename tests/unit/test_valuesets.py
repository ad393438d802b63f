"""Value sets: the shipped ones say where they came from, the project's own expand from their
compose, and membership reads a record's codes as the index reads them."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from fhir_tailor.definitions import Definitions, bundled_path
from fhir_tailor.terminology.valuesets import (
    CODE_SOURCE,
    ValueSetError,
    ValueSetLibrary,
    parse_valueset,
)

FOLDER = bundled_path("profiles") / "valuesets"
SHIPPED = sorted(FOLDER.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    resource: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return resource


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_value_set_says_what_and_where_from(path: Path) -> None:
    valueset = parse_valueset(load(path), str(path))
    assert valueset.version, "a value set is referenced by url|version"
    assert valueset.publisher and valueset.title
    assert valueset.source, "expansion-source: where the expansion came from"
    assert valueset.concepts, "an expansion with at least one code"
    assert path.stem == valueset.resource["id"]


@pytest.mark.parametrize(
    "path", [p for p in SHIPPED if load(p)["publisher"] == "fhir-tailor"], ids=lambda p: p.stem
)
def test_own_value_set_cites_every_code(path: Path) -> None:
    for include in load(path)["compose"]["include"]:
        if "filter" in include:
            assert _source(include), f"{path.stem}: filter on {include['system']} has no source"
        for concept in include.get("concept", []):
            assert _source(concept), f"{path.stem}: {concept['code']} has no source"


def _source(element: dict[str, Any]) -> str:
    return next(
        (e["valueString"] for e in element.get("extension", []) if e["url"] == CODE_SOURCE), ""
    )


def test_own_expansions_are_what_their_compose_gives(tmp_path: Path) -> None:
    """scripts/expand-valuesets --check: a hand edit of a compose without expanding again, or an
    expansion edited by hand, fails here."""
    script = _expand_script()
    for path in SHIPPED:
        resource = load(path)
        if resource["publisher"] != "fhir-tailor":
            continue
        fresh = script.expansion_of(resource, str(path))
        shipped = {key: resource["expansion"].get(key) for key in fresh}
        assert shipped == fresh, path.stem


def test_expansion_of_an_icd10_filter_holds_the_billable_subcodes() -> None:
    script = _expand_script()
    resource = {
        "compose": {
            "include": [
                {
                    "system": "http://hl7.org/fhir/sid/icd-10-cm",
                    "filter": [{"property": "concept", "op": "is-a", "value": "E11"}],
                }
            ],
            "exclude": [
                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "concept": [{"code": "E11.9"}]}
            ],
        }
    }
    codes = {c["code"] for c in script.expansion_of(resource, "test")["contains"]}
    assert {"E11", "E11.65", "E11.649", "E11.3551"} <= codes
    assert "E11.9" not in codes
    assert not any(c.startswith("E10") for c in codes)


def test_unknown_icd10_code_in_a_compose_is_refused() -> None:
    script = _expand_script()
    include = {"system": "http://hl7.org/fhir/sid/icd-10-cm", "concept": [{"code": "E11.99"}]}
    with pytest.raises(SystemExit, match=r"E11\.99 is not in the tabular list"):
        script.expansion_of({"compose": {"include": [include]}}, "test")


def _expand_script() -> Any:
    path = Path(__file__).parents[2] / "scripts" / "expand-valuesets"
    loader = importlib.machinery.SourceFileLoader("expand_valuesets", str(path))
    spec = importlib.util.spec_from_loader("expand_valuesets", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


# -- membership --------------------------------------------------------------------------------


def _library(*contains: dict[str, Any], url: str = "http://example.org/vs", **extra: Any) -> Any:
    resource = {"resourceType": "ValueSet", "url": url, **extra}
    if contains:
        resource["expansion"] = {"contains": list(contains)}
    return ValueSetLibrary([parse_valueset(resource, "test")])


def test_icd10_membership_ignores_the_dot_and_case() -> None:
    library = _library({"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.65"})
    members = library.find("http://example.org/vs").members()
    assert ("http://hl7.org/fhir/sid/icd-10-cm", "E1165") in members


def test_nested_contains_are_flattened_and_groupers_left_out() -> None:
    grouper = {
        "system": "http://snomed.info/sct",
        "code": "1",
        "abstract": True,
        "contains": [{"system": "http://snomed.info/sct", "code": "2"}],
    }
    valueset = _library(grouper).find("http://example.org/vs")
    assert valueset.members() == frozenset({("http://snomed.info/sct", "2")})


def test_versionless_reference_resolves_only_when_one_version_is_held() -> None:
    one = {"system": "http://loinc.org", "code": "1-8"}
    first = parse_valueset(
        {
            "resourceType": "ValueSet",
            "url": "u:vs",
            "version": "1",
            "expansion": {"contains": [one]},
        },
        "a",
    )
    second = parse_valueset(
        {
            "resourceType": "ValueSet",
            "url": "u:vs",
            "version": "2",
            "expansion": {"contains": [one]},
        },
        "b",
    )
    assert ValueSetLibrary([first]).find("u:vs") is first
    assert ValueSetLibrary([first, second]).find("u:vs|2") is second
    with pytest.raises(ValueSetError, match="several versions held"):
        ValueSetLibrary([first, second]).find("u:vs")


@pytest.mark.parametrize(
    ("resource", "problem"),
    [
        ({"resourceType": "CodeSystem"}, "not a ValueSet"),
        ({"resourceType": "ValueSet"}, "ValueSet.url: missing"),
        (
            {"resourceType": "ValueSet", "url": "u", "expansion": {"contains": [{"code": "x"}]}},
            r"contains\[0\]: needs a system and a code",
        ),
    ],
)
def test_malformed_value_set_is_named(resource: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueSetError, match=problem):
        parse_valueset(resource, "file.json")


def test_every_shipped_value_set_is_used(definitions: Definitions) -> None:
    """A value set no rule names is dead weight in what we publish."""
    used = {
        definitions.rules.index.library.find(c).canonical  # type: ignore[union-attr]
        for feature, _ in definitions.rules.index.features.values()
        for rule in feature.rules
        for c in (*rule.valuesets, *rule.excluding)
    }
    assert {v.canonical for v in definitions.rules.index.library} == used


def test_an_expansion_replaces_the_unexpanded_file_of_its_url() -> None:
    """A versionless file without expansion, answered by a server with a versioned expansion."""
    shipped = _library(url="u:vs")
    expanded = {
        "resourceType": "ValueSet",
        "url": "u:vs",
        "version": "7",
        "expansion": {"contains": [{"system": "http://loinc.org", "code": "1-8"}]},
    }
    library = shipped.with_expansions([expanded], "server")
    assert len(library) == 1
    found = library.find("u:vs")
    assert found is not None and found.version == "7" and found.expanded
