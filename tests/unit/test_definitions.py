"""Definition files: the bundled ones load; mistakes fail at load time naming file and place."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from fhir_tailor.definitions import DefinitionError, Definitions, bundled_path, load_definitions
from fhir_tailor.mapping import DIMENSIONS


def test_bundled_definitions_cover_every_dimension(definitions: Definitions) -> None:
    dimensions = {dim for _, dim in definitions.rules.index.features.values()}
    assert dimensions == set(DIMENSIONS)
    assert len(definitions.catalog.modules) >= 5
    assert len(definitions.segments) >= 5


def test_lookup_is_by_code_not_by_scan(definitions: Definitions) -> None:
    index = definitions.rules.index
    hits = index.lookup("http://loinc.org", "4548-4", "Observation")
    # the control bands and the urgent threshold (very_high_hba1c) read the same codes
    assert [h.feature.id for h in hits] == ["hba1c_above_target", "very_high_hba1c"]
    assert index.lookup("http://loinc.org", "4548-4", "Condition") == ()
    assert index.lookup("http://example.org/local", "4548-4", "Observation") == ()


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    target = tmp_path / "profiles"
    shutil.copytree(bundled_path("profiles"), target)
    return target


def edit(path: Path, change: object) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(data))


def test_unknown_key_is_named(profiles: Path) -> None:
    edit(profiles / "features" / "medical.yaml", lambda d: d["features"][0].update(severty="high"))
    with pytest.raises(DefinitionError, match=r"medical\.yaml:\d+: features\.0\.severty"):
        load_definitions(profiles)


def test_rule_referring_to_unknown_feature(profiles: Path) -> None:
    edit(
        profiles / "segments.yaml", lambda d: d["segments"][0].update(when={"feature": "diabetis"})
    )
    with pytest.raises(
        DefinitionError, match=r"segments\.yaml: segment .* unknown feature 'diabetis'"
    ):
        load_definitions(profiles)


def test_bands_out_of_order(profiles: Path) -> None:
    def swap(data: dict) -> None:  # type: ignore[type-arg]
        for feature in data["features"]:
            for rule in feature["rules"]:
                if "value" in rule:
                    rule["value"]["bands"].reverse()
                    return

    edit(profiles / "features" / "medical.yaml", swap)
    with pytest.raises(DefinitionError, match="band"):
        load_definitions(profiles)


def test_unknown_value_set_is_named(profiles: Path) -> None:
    missing = "https://example.org/fhir/ValueSet/not-shipped|1"
    edit(
        profiles / "features" / "medical.yaml",
        lambda d: d["features"][0]["rules"][0].update(valuesets=[missing]),
    )
    named = f"value sets not found \\(1\\):\n  {re.escape(missing)}, named by rule "
    with pytest.raises(DefinitionError, match=named):
        load_definitions(profiles)


def test_value_set_without_expansion_asks_for_a_terminology_server(profiles: Path) -> None:
    medical = yaml.safe_load((profiles / "features" / "medical.yaml").read_text())
    url = medical["features"][0]["rules"][0]["valuesets"][0].split("|")[0]
    files = (profiles / "valuesets").glob("*.json")
    path = next(f for f in files if json.loads(f.read_text())["url"] == url)
    resource = json.loads(path.read_text())
    del resource["expansion"]
    path.write_text(json.dumps(resource))
    with pytest.raises(DefinitionError, match=r"without an expansion \(1\); .*--terminology"):
        load_definitions(profiles)


def test_value_set_canonical_is_checked(profiles: Path) -> None:
    edit(
        profiles / "features" / "medical.yaml",
        lambda d: d["features"][0]["rules"][0].update(valuesets=["not a url"]),
    )
    with pytest.raises(DefinitionError, match="not a value set canonical"):
        load_definitions(profiles)


def test_duplicate_feature(profiles: Path) -> None:
    edit(profiles / "features" / "social.yaml", lambda d: d["features"].append(d["features"][0]))
    with pytest.raises(DefinitionError, match="defined twice"):
        load_definitions(profiles)


def test_bad_rule_kind(profiles: Path) -> None:
    edit(profiles / "variants.yaml", lambda d: d["variants"][0].update(when={"feture": "x"}))
    with pytest.raises(
        DefinitionError, match=r"variants\.yaml:\d+: variants\.0\.when: .*one of the keys"
    ):
        load_definitions(profiles)


def test_invalid_yaml(profiles: Path) -> None:
    (profiles / "catalog.yaml").write_text("catalog: [unclosed\n")
    with pytest.raises(DefinitionError, match=r"catalog\.yaml:\d+: invalid YAML"):
        load_definitions(profiles)


def test_error_names_the_line_of_the_bad_value(profiles: Path) -> None:
    path = profiles / "features" / "extra.yaml"
    path.write_text(
        "version: '1'\n"
        "changelog: ['1: test']\n"
        "dimension: medical\n"
        "features:\n"
        "  - id: extra\n"
        "    label: Extra\n"
        "    rules:\n"
        "      - id: extra.one\n"
        "        resource: Observation\n"
        "        valuesets: ['https://example.org/fhir/ValueSet/x']\n"
        "        value:\n"
        "          bands:\n"
        "            - {min: 5, status: present, severity: moderate}\n"
        "            - {status: presnt}\n"
    )
    with pytest.raises(DefinitionError) as caught:
        load_definitions(profiles)
    message = str(caught.value)
    assert message.startswith(f"{path}:14: features.0.rules.0.value.bands.1.status:")
    assert "'present', 'absent' or 'unknown'" in message
