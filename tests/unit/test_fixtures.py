"""The fixture patients map to exactly the findings fixtures/README.md documents.

The README's "All patients" matrix is the single statement of what each fixture means; this test
reads it and compares every cell with the profile fhir-tailor computes, for both the Bundle and
the NDJSON copies of the fixtures.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import AS_OF

from fhir_tailor.definitions import Definitions, bundled_path
from fhir_tailor.profile import Finding, Profile, build_profile
from fhir_tailor.sources import file_source

FIXTURES = bundled_path("fixtures")
NONE = "\N{EN DASH}"  # the README's mark for "no finding"
COLUMNS = {
    "t2d": "type2_diabetes",
    "htn": "hypertension",
    "hba1c": "hba1c_above_target",
    "bp": "bp_above_target",
    "depr": "depression",
    "lit": "low_health_literacy",
    "food": "food_insecurity",
    "housing": "housing_instability",
    "transport": "transportation_insecurity",
    "alone": "lives_alone",
    "falls": "fall_history",
    "adl": "adl_dependence",
}


def documented_matrix() -> dict[str, dict[str, str]]:
    text = (FIXTURES / "README.md").read_text()
    section = text.split("### All patients", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ft-")]
    header = next(line for line in section.splitlines() if line.startswith("| patient"))
    names = [cell.strip(" `") for cell in header.strip("|").split("|")]
    matrix = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        matrix[cells[0]] = dict(zip(names, cells, strict=True))
    return matrix


def describe(finding: Finding | None) -> str:
    if finding is None:
        return NONE
    if finding.status != "present":
        return finding.status
    return f"{'stale' if finding.stale else 'present'} ({finding.severity})"


def profiles(definitions: Definitions, folder: Path) -> dict[str, Profile]:
    return {
        record.patient_id: build_profile(record, definitions.rules, AS_OF)
        for record in file_source(folder).records(lambda issue: None)
    }


MATRIX = documented_matrix()


@pytest.mark.parametrize("layout", ["bundles", "ndjson"])
def test_every_fixture_patient_matches_the_documented_matrix(
    definitions: Definitions, layout: str
) -> None:
    computed = profiles(definitions, FIXTURES / layout)
    assert set(computed) == set(MATRIX) and len(MATRIX) >= 12
    mismatches = []
    for pid, row in MATRIX.items():
        profile = computed[pid]
        for column, feature in COLUMNS.items():
            computed_cell = describe(profile.finding(feature))
            if computed_cell != row[column]:
                mismatches.append(
                    f"{pid} {feature}: documented {row[column]}, computed {computed_cell}"
                )
        gaps = ", ".join(gap.id for gap in profile.data_gaps) or NONE
        if gaps != row["data gaps"].replace("`", ""):
            mismatches.append(f"{pid} gaps: documented {row['data gaps']}, computed {gaps}")
        if (profile.facts.preferred_language or NONE) != row["lang"]:
            mismatches.append(
                f"{pid} language: documented {row['lang']}, "
                f"computed {profile.facts.preferred_language}"
            )
    assert mismatches == []


def test_every_feature_is_present_somewhere_and_not_everywhere() -> None:
    for column in COLUMNS:
        cells = [row[column] for row in MATRIX.values()]
        assert any(re.match(r"present", c) for c in cells), column
        assert any(not c.startswith("present") for c in cells), column
