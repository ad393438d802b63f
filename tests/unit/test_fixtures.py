"""The fixture patients map to exactly the findings fixtures/README.md documents.

The README is the single statement of what each fixture means: its "All patients" matrix (the
first-slice features, preferred language, contact preference and data gaps of every patient) and
its "Every feature" table (every finding of the patients added for the 2.0.0 features, with the
resources that decide it). These tests read both and compare every cell with the profile
fhir-tailor computes, for both the Bundle and the NDJSON copies of the fixtures. Nothing expected
is written here: a changed mapping shows up as a README cell to re-check against its scenario.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from builders import AS_OF

from fhir_tailor.definitions import Definitions, bundled_path
from fhir_tailor.profile import build_profile
from fhir_tailor.profile_model import Finding, Profile
from fhir_tailor.sources import file_source

FIXTURES = bundled_path("fixtures")
MAKE_NDJSON = Path(__file__).resolve().parents[2] / "scripts" / "make-ndjson"
README = (FIXTURES / "README.md").read_text()
NONE = "\N{EN DASH}"  # the README's mark for "no finding"
NO_SEVERITY = "-"
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


def section(title: str) -> str:
    """The text under a README heading, up to the next heading of any level."""
    return README.split(f"### {title}\n", 1)[1].split("\n#", 1)[0]


def table(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in ``text``, keyed by header (backticks removed)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip(" `") for cell in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


def documented_matrix() -> dict[str, dict[str, str]]:
    return {row["patient"]: row for row in table(section("All patients"))}


def documented_features() -> dict[tuple[str, str], dict[str, str]]:
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for row in table(section("Every feature")):
        key = (row["patient"], row["feature"].strip("`"))
        assert key not in rows, f"{key} is listed twice"
        rows[key] = row
    return rows


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
EVERY_FEATURE = documented_features()


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
        if (profile.facts.contact_preference or NONE) != row["contact"]:
            mismatches.append(
                f"{pid} contact: documented {row['contact']}, "
                f"computed {profile.facts.contact_preference}"
            )
    assert mismatches == []


def test_every_feature_is_present_somewhere_and_not_everywhere() -> None:
    for column in COLUMNS:
        cells = [row[column] for row in MATRIX.values()]
        assert any(re.match(r"present", c) for c in cells), column
        assert any(not c.startswith("present") for c in cells), column


@pytest.mark.parametrize("layout", ["bundles", "ndjson"])
def test_every_feature_table_matches_the_computed_profiles(
    definitions: Definitions, layout: str
) -> None:
    computed = profiles(definitions, FIXTURES / layout)
    patients = sorted({pid for pid, _ in EVERY_FEATURE})
    assert len(patients) >= 8 and set(patients) <= set(computed)
    mismatches = []
    for (pid, feature), row in EVERY_FEATURE.items():
        assert feature in definitions.rules.index.features, f"{pid}: unknown feature {feature}"
        got, want = computed_row(computed[pid].finding(feature)), documented_row(row)
        if got != want:
            mismatches.append(f"{pid} {feature}: documented {want}, computed {got}")
    # The table lists every finding of the patients it covers: nothing unlisted may appear.
    for pid in patients:
        listed = {feature for p, feature in EVERY_FEATURE if p == pid}
        for _, finding in computed[pid].findings():
            if finding.feature not in listed:
                mismatches.append(
                    f"{pid} {finding.feature}: computed {describe(finding)}, not listed"
                )
    assert mismatches == []


def computed_row(finding: Finding | None) -> tuple[str, str, set[str]]:
    """A finding as an "Every feature" row reads: status, severity, deciding resource ids."""
    if finding is None:
        return (NONE, NO_SEVERITY, set())
    status = "stale" if finding.status == "present" and finding.stale else finding.status
    sources = {source.split("/", 1)[1] for source in finding.sources}
    return (status, finding.severity or NO_SEVERITY, sources)


def documented_row(row: dict[str, str]) -> tuple[str, str, set[str]]:
    resources = set(filter(None, re.split(r",\s*", row["deciding resources"])))
    return (row["expected"], row["severity"], resources)


def test_every_defined_feature_is_present_and_current_in_some_fixture_patient(
    definitions: Definitions,
) -> None:
    """Adding a feature to profiles/features/*.yaml needs a fixture patient that has it."""
    defined = set(definitions.rules.index.features)
    computed = profiles(definitions, FIXTURES / "bundles")
    current = {f.feature for p in computed.values() for _, f in p.findings() if f.current_present}
    assert sorted(defined - current) == []
    documented = {f for (_, f), row in EVERY_FEATURE.items() if row["expected"] == "present"}
    documented |= {
        COLUMNS[c] for row in MATRIX.values() for c in COLUMNS if row[c].startswith("present")
    }
    assert sorted(defined - documented) == []


def test_the_ndjson_copy_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(MAKE_NDJSON), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
