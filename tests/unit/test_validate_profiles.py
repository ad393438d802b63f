"""fhir-tailor validate-profiles: what it checked on success, each problem named on failure."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import Definitions, bundled_path


def validate(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "validate-profiles"])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    folder = tmp_path / "profiles"
    shutil.copytree(bundled_path("profiles"), folder)
    return folder


def edit_medical(profiles: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the medical features, addressed by id."""
    path = profiles / "features" / "medical.yaml"
    data = yaml.safe_load(path.read_text())
    change({feature["id"]: feature for feature in data["features"]})
    path.write_text(yaml.safe_dump(data))


def rule(features: dict[str, Any], rule_id: str) -> dict[str, Any]:
    feature = features[rule_id.split(".")[0]]
    found: dict[str, Any] = next(r for r in feature["rules"] if r["id"] == rule_id)
    return found


def test_bundled_profiles_pass_with_a_summary(definitions: Definitions) -> None:
    code, out, err = validate()
    assert code == 0, err
    summary = json.loads(out.removeprefix("profiles OK: "))
    index = definitions.rules.index
    valuesets = index.valuesets()
    codes = {concept.key for valueset in valuesets for concept in valueset.concepts or ()}
    assert summary["features"] == len(index.features)
    assert summary["rules"] == sum(len(f.rules) for f, _ in index.features.values())
    assert summary["valuesets"] == len(valuesets) > 0
    assert summary["codes"] == len(codes) > 0
    pairs = {frozenset((f.id, other)) for f, _ in index.features.values() for other in f.excludes}
    assert summary["exclusions"] == len(pairs)
    assert summary["modules"] == len(definitions.catalog.modules)


def test_features_that_exclude_each_other_and_share_codes_fail(profiles: Path) -> None:
    """Type 1 diabetes declared to exclude type 2, and its ICD-10-CM rule given the type 2 value
    set too: every type 2 code is then in both."""
    type2: list[str] = []

    def clash(features: dict[str, Any]) -> None:
        type2.extend(rule(features, "type2_diabetes.icd10")["valuesets"])
        features["type1_diabetes"]["excludes"] = ["type2_diabetes"]
        rule(features, "type1_diabetes.icd10")["valuesets"] += type2

    edit_medical(profiles, clash)
    code, out, err = validate("--profiles", str(profiles))
    assert code == 3 and not out
    assert "features that exclude each other share codes" in err
    assert "type2_diabetes / type1_diabetes: " in err  # named in the order the files define
    lines = err.splitlines()
    sources = next(n for n, line in enumerate(lines) if line.startswith("    in "))
    assert lines[sources] == (
        f"    in type2_diabetes.icd10 ({type2[0]}) and in type1_diabetes.icd10 ({type2[0]}):"
    ), "both rules get the codes from the type 2 value set"
    assert lines[sources + 1].startswith("      http://hl7.org/fhir/sid/icd-10-cm|E11")


def test_features_that_exclude_each_other_without_shared_codes_pass(profiles: Path) -> None:
    code, out, err = validate("--profiles", str(profiles))
    declared = json.loads(out.removeprefix("profiles OK: "))["exclusions"]
    edit_medical(profiles, lambda f: f["asthma"].update(excludes=["osteoporosis"]))
    code, out, err = validate("--profiles", str(profiles))
    assert code == 0, err
    assert json.loads(out.removeprefix("profiles OK: "))["exclusions"] == declared + 1


def test_excluding_an_unknown_feature_fails(profiles: Path) -> None:
    edit_medical(profiles, lambda f: f["type1_diabetes"].update(excludes=["type_2_diabetes"]))
    code, _, err = validate("--profiles", str(profiles))
    assert code == 3
    assert "feature 'type1_diabetes' excludes unknown feature 'type_2_diabetes'" in err


def test_a_missing_value_set_is_named_with_the_rules_naming_it(profiles: Path) -> None:
    missing = "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.0.0|20250101"

    def name_it(features: dict[str, Any]) -> None:
        for rule_id in ("type1_diabetes.snomed", "type2_diabetes.snomed"):
            rule(features, rule_id)["valuesets"].append(missing)

    edit_medical(profiles, name_it)
    code, _, err = validate("--profiles", str(profiles))
    assert code == 3
    assert "value sets not found (1):" in err
    (line,) = [line for line in err.splitlines() if missing in line]
    assert line.startswith(f"  {missing}, named by rules ")
    assert "type1_diabetes.snomed" in line and "type2_diabetes.snomed" in line
