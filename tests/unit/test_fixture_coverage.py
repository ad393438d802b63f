"""The real-world coded fixture patients: every active chronic diagnosis is addressed by the plan.

fixtures/README.md "Real-world coding" lists every Condition of ft-24 ... ft-28 (a Synthea-like
record, a claims-derived one, an old one, an ICD-10-CM problem list and a SNOMED CT + ICD-10-CM
one) with its chronic group and whether it is in scope;
a clinician expects the plan to address exactly those in scope.
"""

from __future__ import annotations

import pytest
from builders import AS_OF

from fhir_tailor.definitions import Definitions, bundled_path
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.sources import file_source

FIXTURES = bundled_path("fixtures")
README = (FIXTURES / "README.md").read_text()


def documented() -> dict[str, bool]:
    """Condition id -> in scope, from the README's "Real-world coding" table."""
    text = README.split("### Real-world coding\n", 1)[1].split("\n#", 1)[0]
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ft-")]
    return {cells[0].strip(): cells[3].strip() == "yes" for cells in rows}


CONDITIONS = documented()
IN_SCOPE = [cid for cid, in_scope in CONDITIONS.items() if in_scope]
OUT_OF_SCOPE = [cid for cid, in_scope in CONDITIONS.items() if not in_scope]


@pytest.fixture(scope="module")
def addressed(definitions: Definitions) -> dict[str, set[str]]:
    """Patient id -> the Condition ids its plan addresses."""
    patients = {cid.rsplit("-", 1)[0] for cid in CONDITIONS}
    found: dict[str, set[str]] = {}
    for record in file_source(FIXTURES / "bundles").records(lambda issue: None):
        if record.patient_id in patients:
            _, plan = profile_and_plan(record, definitions, AS_OF)
            references = plan.addresses if plan else ()
            found[record.patient_id] = {r.removeprefix("Condition/") for r in references}
    assert set(found) == patients
    return found


def test_the_table_covers_every_condition_of_the_patients() -> None:
    patients = {cid.rsplit("-", 1)[0] for cid in CONDITIONS}
    assert patients == {"ft-24", "ft-25", "ft-26", "ft-27", "ft-28"}
    held = {
        str(condition["id"])
        for record in file_source(FIXTURES / "bundles").records(lambda issue: None)
        if record.patient_id in patients
        for condition in record.of_type("Condition")
    }
    assert held == set(CONDITIONS)


@pytest.mark.parametrize("condition", IN_SCOPE)
def test_an_active_chronic_diagnosis_is_addressed(
    addressed: dict[str, set[str]], condition: str
) -> None:
    assert condition in addressed[condition.rsplit("-", 1)[0]]


@pytest.mark.parametrize("condition", OUT_OF_SCOPE)
def test_a_resolved_diagnosis_is_not_addressed(
    addressed: dict[str, set[str]], condition: str
) -> None:
    assert condition not in addressed[condition.rsplit("-", 1)[0]]
