"""Property tests: arbitrary JSON shaped like FHIR never crashes reading or profiling.

The generators put random JSON of any type into every field we read, and real mapped codes
into the code fields, so the mapping paths (bands, answers, components, questionnaire items)
see hostile values too, not only the early type checks.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from builders import AS_OF, LOINC
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_tailor.definitions import Definitions, bundled_path, load_definitions
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.profile import bears_on, build_profile
from fhir_tailor.record import Located, PatientRecord, ReadIssue, check_resource, group_by_patient
from fhir_tailor.resources import to_fhir
from fhir_tailor.sources import NdjsonSource

DEFINITIONS: Definitions = load_definitions(bundled_path("profiles"))
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: Codes the bundled rules map, so generated resources reach the value and answer readers.
MAPPED = [
    (LOINC, "39156-5"),  # BMI: value bands
    (LOINC, "88122-7"),  # Hunger Vital Sign: coded answers
    (LOINC, "44261-6"),  # PHQ-9 total
    (LOINC, "93025-5"),  # PRAPARE panel
    ("http://snomed.info/sct", "44054006"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "E11.9"),
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_any = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
coding = st.one_of(
    json_any,
    st.sampled_from(MAPPED).map(lambda sc: {"system": sc[0], "code": sc[1]}),
    st.fixed_dictionaries({"system": json_any, "code": json_any, "display": json_any}),
)
concept = st.one_of(
    json_any, st.fixed_dictionaries({"coding": st.one_of(json_any, st.lists(coding, max_size=3))})
)
reference = st.one_of(json_any, st.just({"reference": "Patient/p1"}))
maybe = st.one_of(json_any, st.sampled_from(["final", "active", "completed", "2026-01-01", "x"]))


def shaped(
    rtype: str, fields: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    """A resource of ``rtype`` whose fields each hold the given strategy or are absent."""
    return st.fixed_dictionaries(
        {"resourceType": st.just(rtype), "id": st.one_of(st.just("r1"), json_any)},
        optional={**fields, "subject": reference},
    )


value_fields = {
    "valueQuantity": st.one_of(
        json_any, st.fixed_dictionaries({"value": json_any, "unit": json_any})
    ),
    "valueInteger": json_any,
    "valueBoolean": json_any,
    "valueCodeableConcept": concept,
    "interpretation": st.one_of(json_any, st.lists(concept, max_size=2)),
}
item = st.recursive(
    st.fixed_dictionaries(
        {"linkId": st.one_of(st.sampled_from(["/88122-7", "44261-6"]), json_any)},
        optional={
            "answer": st.one_of(
                json_any,
                st.lists(
                    st.dictionaries(
                        st.sampled_from(["valueCoding", "valueInteger", "valueQuantity", "item"]),
                        json_any,
                    ),
                    max_size=2,
                ),
            )
        },
    ),
    lambda inner: st.fixed_dictionaries({"linkId": json_any, "item": st.lists(inner, max_size=2)}),
    max_leaves=4,
)
resources = st.one_of(
    shaped(
        "Condition",
        {
            "code": concept,
            "category": st.one_of(json_any, st.lists(concept, max_size=2)),
            "clinicalStatus": concept,
            "verificationStatus": concept,
            "onsetDateTime": maybe,
            "onsetPeriod": json_any,
            "recordedDate": maybe,
        },
    ),
    shaped(
        "Observation",
        {
            "status": maybe,
            "code": concept,
            "category": st.one_of(json_any, st.lists(concept, max_size=2)),
            "effectiveDateTime": maybe,
            "effectivePeriod": json_any,
            "issued": maybe,
            "hasMember": st.one_of(json_any, st.lists(reference, max_size=2)),
            "component": st.one_of(
                json_any, st.lists(st.fixed_dictionaries({"code": concept}, optional=value_fields))
            ),
            **value_fields,
        },
    ),
    shaped(
        "QuestionnaireResponse",
        {
            "status": maybe,
            "authored": maybe,
            "item": st.one_of(json_any, st.lists(item, max_size=3)),
        },
    ),
    shaped(
        "Encounter",
        {
            "status": maybe,
            "class": st.one_of(json_any, coding),
            "type": json_any,
            "period": json_any,
        },
    ),
    shaped(
        "MedicationRequest",
        {
            "status": maybe,
            "intent": maybe,
            "authoredOn": maybe,
            "medicationCodeableConcept": concept,
            "medicationReference": json_any,
        },
    ),
)
patients = st.fixed_dictionaries(
    {"resourceType": st.just("Patient"), "id": st.just("p1")},
    optional={
        "birthDate": maybe,
        "gender": json_any,
        "telecom": st.one_of(json_any, st.lists(json_any, max_size=3)),
        "communication": st.one_of(
            json_any, st.lists(st.fixed_dictionaries({"language": concept, "preferred": json_any}))
        ),
    },
)


@SETTINGS
@given(patients, st.lists(resources, max_size=4))
def test_build_profile_never_raises(patient: dict[str, Any], others: list[dict[str, Any]]) -> None:
    issues: list[tuple[str, str]] = []
    build_profile(
        PatientRecord(patient, tuple(others)),
        DEFINITIONS.rules,
        AS_OF,
        lambda ref, problem: issues.append((ref, problem)),
    )


@SETTINGS
@given(st.lists(st.one_of(resources, patients, json_any), max_size=6))
def test_check_resource_and_grouping_never_raise(raw: list[object]) -> None:
    for item in raw:
        check_resource(item)
    issues: list[ReadIssue] = []
    records = list(
        group_by_patient((Located(r, f"x:{n}") for n, r in enumerate(raw)), issues.append)
    )
    for record in records:
        assert record.patient["resourceType"] == "Patient"


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=40), resources.map(json.dumps)), max_size=8))
def test_ndjson_source_never_raises_and_reports_bad_lines(
    tmp_path_factory: Any, lines: list[str]
) -> None:
    folder: Path = tmp_path_factory.mktemp("ndjson")
    clean = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    (folder / "Mixed.ndjson").write_text("\n".join(clean) + "\n", encoding="utf-8")
    issues: list[ReadIssue] = []
    list(NdjsonSource(folder).records(issues.append))
    flagged = {issue.location for issue in issues}
    for number, line in enumerate(clean, start=1):
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except (ValueError, RecursionError):
            assert f"Mixed.ndjson:{number}" in flagged, line
            continue
        if check_resource(parsed)[2] is not None:
            assert f"Mixed.ndjson:{number}" in flagged, line


@SETTINGS
@given(patients, st.lists(resources, max_size=4))
def test_any_profiled_patient_gets_a_valid_plan_or_none(
    patient: dict[str, Any], others: list[dict[str, Any]]
) -> None:
    """What the readers let through never makes invalid output (strictly validated FHIR)."""
    _, plan = profile_and_plan(PatientRecord(patient, tuple(others)), DEFINITIONS, AS_OF)
    if plan is not None:
        to_fhir(plan, datetime(2026, 11, 15, tzinfo=UTC))


#: Observations of a sound shape, mapped or not, void or not: what ``bears_on`` may reject.
routine = st.fixed_dictionaries(
    {
        "resourceType": st.just("Observation"),
        "id": st.just("o9"),
        "status": st.sampled_from(["final", "amended", "cancelled", "entered-in-error"]),
        "code": st.fixed_dictionaries(
            {
                "coding": st.lists(
                    st.sampled_from([*MAPPED, (LOINC, "8310-5"), (LOINC, "8867-4")]).map(
                        lambda sc: {"system": sc[0], "code": sc[1]}
                    ),
                    min_size=1,
                    max_size=2,
                )
            }
        ),
        "subject": st.just({"reference": "Patient/p1"}),
    },
    optional={
        "effectiveDateTime": maybe,
        "component": st.lists(
            st.fixed_dictionaries({"code": concept}, optional=value_fields), max_size=2
        ),
        **value_fields,
    },
)


@SETTINGS
@given(patients, st.lists(resources, max_size=4), st.one_of(routine, resources))
def test_a_resource_bearing_on_no_profile_changes_nothing(
    patient: dict[str, Any], others: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    """What ``bears_on`` rejects can be left out of a record (grouping leaves it out in a run):
    the profile and every data issue are the same, wherever it stood in the record."""

    def built(*resources: dict[str, Any]) -> tuple[object, list[tuple[str, str]]]:
        issues: list[tuple[str, str]] = []
        made = build_profile(
            PatientRecord(patient, resources),
            DEFINITIONS.rules,
            AS_OF,
            lambda ref, problem: issues.append((ref, problem)),
        )
        return made, issues

    if not bears_on(extra, DEFINITIONS.rules.index):
        assert built(*others, extra) == built(*others)
        assert built(extra, *others) == built(*others)
