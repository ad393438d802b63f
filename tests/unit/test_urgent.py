"""Urgent findings: each rule on both sides of its threshold, the Task it writes, idempotent
writing to a server (respx-mocked), the CDS Hooks card, the SMART page and the run report.

The thresholds are the guidelines' (profiles/urgent.yaml and the features it reads): suicide
risk (PHQ-9 item 9 above "Not at all", C-SSRS screener items, a recorded risk level), PHQ-9 20+,
blood pressure 180/120+, HbA1c 10%+ (and 86 mmol/mol), eGFR below 30 without nephrology care.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import yaml
from builders import (
    AS_OF,
    ICD10,
    LOINC,
    SNOMED,
    answer,
    condition,
    observation,
    profile_of,
    quantity,
    record,
)
from click.testing import CliRunner
from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models

from fhir_tailor.cli import main
from fhir_tailor.client import FhirClient
from fhir_tailor.definitions import (
    DefinitionError,
    Definitions,
    bundled_path,
    load_definitions,
)
from fhir_tailor.fhirpath import Translator
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.plan import Plan, plan_for
from fhir_tailor.profile import build_profile
from fhir_tailor.record import PatientRecord
from fhir_tailor.report import PatientOutcome, RunReport
from fhir_tailor.resources import (
    TASK_ID_SYSTEM,
    URGENT_CODE_SYSTEM,
    PlanResources,
    create_transaction,
    to_fhir,
)
from fhir_tailor.rules import FeatureRule
from fhir_tailor.segments import segment
from fhir_tailor.sinks.server import ServerSink
from fhir_tailor.sources import file_source
from fhir_tailor.terminology.valuesets import normalize_code
from fhir_tailor.urgent import urgent_findings
from fhir_tailor.web.cds_hooks import SUMMARY_LIMIT, CarePlanCards
from fhir_tailor.web.cds_suggestion import Stored, propose
from fhir_tailor.web.page import PageView, plan_page

RECORDED = datetime(2026, 11, 15, tzinfo=UTC)
BASE = "http://fhir.test/fhir"
FIXTURES = bundled_path("fixtures") / "bundles"

# LOINC answers (PHQ-9 answer list LL358-3, C-SSRS Yes/No, suicide risk level)
NOT_AT_ALL, SEVERAL_DAYS, MORE_THAN_HALF, NEARLY_EVERY_DAY = (
    "LA6568-5",
    "LA6569-3",
    "LA6570-1",
    "LA6571-9",
)
YES, NO = "LA33-6", "LA32-8"
HIGH, MODERATE, LOW = "LA9193-9", "LA6751-7", "LA9194-7"
RECENT = "2026-11-01"  # within every urgent feature's window as of AS_OF (2026-11-15)


def urgent(definitions: Definitions, *resources: dict[str, Any]) -> dict[str, str]:
    """Rule id -> priority of the urgent findings of a record."""
    profile = profile_of(definitions, record(*resources))
    return {f.rule: f.priority for f in urgent_findings(profile, definitions.catalog.urgent)}


def bp_panel(oid: str, systolic: float, diastolic: float, when: str = RECENT) -> dict[str, Any]:
    def component(code: str, value: float) -> dict[str, Any]:
        return {"code": {"coding": [{"system": LOINC, "code": code}]}, **quantity(value, "mm[Hg]")}

    return {
        **observation(oid, "85354-9", when),
        "component": [component("8480-6", systolic), component("8462-4", diastolic)],
    }


def questionnaire(qid: str, when: str, *items: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": qid,
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": when,
        "item": [{"linkId": link, "answer": [value]} for link, value in items],
    }


def coded(code: str) -> dict[str, Any]:
    return {"valueCoding": {"system": LOINC, "code": code}}


def referral(
    rid: str,
    status: str = "active",
    when: str = "2026-10-01",
    code: str = "306286007",
    intent: str = "order",
) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": status,
        "intent": intent,
        "code": {"coding": [{"system": SNOMED, "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": when,
    }


def egfr(value: float, when: str = "2026-09-01", oid: str = "o1") -> dict[str, Any]:
    return observation(oid, "98979-8", when, **quantity(value, "mL/min/{1.73_m2}"))


# -- definitions --------------------------------------------------------------------------------


def test_every_urgent_rule_is_cited_and_justified(definitions: Definitions) -> None:
    rules = definitions.catalog.urgent
    assert {r.id for r in rules} == {
        "suicide-risk-high",
        "suicide-risk",
        "severe-depression",
        "severe-hypertension",
        "severe-range-bp-pregnancy",
        "very-high-hba1c",
        "egfr-below-30-no-nephrology",
    }
    for rule in rules:
        assert rule.source and rule.priority_reason and rule.reason and rule.request.description
        assert (rule.request.code is None) == (rule.request.code_source is None)


@pytest.fixture
def profiles(tmp_path: Path) -> Path:
    target = tmp_path / "profiles"
    shutil.copytree(bundled_path("profiles"), target)
    return target


def edit_urgent(profiles: Path, change: Any) -> None:
    path = profiles / "urgent.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_typo_in_urgent_yaml_fails_at_load_with_file_and_line(profiles: Path) -> None:
    edit_urgent(profiles, lambda d: d["rules"][2].update(priorty="stat"))
    with pytest.raises(DefinitionError, match=r"urgent\.yaml:\d+: rules\.2\.priorty"):
        load_definitions(profiles)


def test_a_priority_outside_the_request_priorities_is_refused(profiles: Path) -> None:
    edit_urgent(profiles, lambda d: d["rules"][0].update(priority="routine"))
    with pytest.raises(DefinitionError, match=r"urgent\.yaml:\d+: rules\.0\.priority"):
        load_definitions(profiles)


def test_an_urgent_rule_naming_an_unknown_feature_fails_at_load(profiles: Path) -> None:
    edit_urgent(profiles, lambda d: d["rules"][2].update(when={"feature": "severe_depresion"}))
    with pytest.raises(DefinitionError, match="urgent rule 'severe-depression' refers to unknown"):
        load_definitions(profiles)


def test_a_request_code_without_its_source_is_refused(profiles: Path) -> None:
    edit_urgent(profiles, lambda d: d["rules"][0]["request"].pop("code_source"))
    with pytest.raises(DefinitionError, match=r"urgent\.yaml:\d+: rules\.0\.request"):
        load_definitions(profiles)


# -- suicide risk -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (NOT_AT_ALL, {}),
        (SEVERAL_DAYS, {"suicide-risk": "asap"}),
        (MORE_THAN_HALF, {"suicide-risk": "asap"}),
        (NEARLY_EVERY_DAY, {"suicide-risk": "asap"}),
    ],
)
def test_phq9_item9_observation(
    definitions: Definitions, code: str, expected: dict[str, str]
) -> None:
    assert urgent(definitions, observation("o1", "44260-8", RECENT, **answer(code))) == expected


@pytest.mark.parametrize(("code", "positive"), [(NOT_AT_ALL, False), (SEVERAL_DAYS, True)])
def test_phq9_item9_as_a_panel_member_takes_the_panel_date(
    definitions: Definitions, code: str, positive: bool
) -> None:
    panel = {**observation("p", "44249-1", RECENT), "hasMember": [{"reference": "Observation/m9"}]}
    dated = observation("m9", "44260-8", **answer(code))
    member = {key: value for key, value in dated.items() if key != "effectiveDateTime"}
    found = profile_of(definitions, record(panel, member)).finding("suicide_risk")
    assert found is not None and found.effective is not None
    assert (found.status == "present") == positive
    assert ("suicide-risk" in urgent(definitions, panel, member)) == positive


@pytest.mark.parametrize(("code", "positive"), [(NOT_AT_ALL, False), (SEVERAL_DAYS, True)])
def test_phq9_item9_in_a_questionnaire_response(
    definitions: Definitions, code: str, positive: bool
) -> None:
    form = questionnaire("q1", RECENT, ("/44249-1/44260-8", coded(code)))
    assert ("suicide-risk" in urgent(definitions, form)) == positive


def test_a_positive_item9_older_than_30_days_is_stale_and_not_urgent(
    definitions: Definitions,
) -> None:
    old = observation("o1", "44260-8", "2026-10-15", **answer(SEVERAL_DAYS))
    found = profile_of(definitions, record(old)).finding("suicide_risk")
    assert found is not None and found.stale
    assert urgent(definitions, old) == {}


def test_a_newer_negative_item9_overrides_an_older_positive(definitions: Definitions) -> None:
    older = observation("o1", "44260-8", "2026-11-01", **answer(SEVERAL_DAYS))
    newer = observation("o2", "44260-8", "2026-11-10", **answer(NOT_AT_ALL))
    assert urgent(definitions, older, newer) == {}


@pytest.mark.parametrize(
    ("link", "code", "expected"),
    [
        ("/93246-7", NO, {}),  # wish to be dead: no
        ("/93246-7", YES, {"suicide-risk": "asap"}),
        ("/93247-5", YES, {"suicide-risk": "asap"}),  # suicidal thoughts
        ("/93248-3", YES, {"suicide-risk": "asap"}),  # thoughts of a method
        ("/93249-1", NO, {}),
        ("/93249-1", YES, {"suicide-risk-high": "stat"}),  # intent
        ("/93250-9", YES, {"suicide-risk-high": "stat"}),  # plan and intent
        ("/93267-3", YES, {"suicide-risk": "asap"}),  # behavior, lifetime
        ("/93269-9", NO, {}),
        ("/93269-9", YES, {"suicide-risk-high": "stat"}),  # behavior within 3 months
    ],
)
def test_cssrs_screener_items(
    definitions: Definitions, link: str, code: str, expected: dict[str, str]
) -> None:
    form = questionnaire("q1", RECENT, (f"/93373-9{link}", coded(code)))
    assert urgent(definitions, form) == expected


def test_cssrs_high_risk_answer_wins_over_a_low_risk_answer_of_the_same_day(
    definitions: Definitions,
) -> None:
    form = questionnaire(
        "q1", RECENT, ("/93246-7", coded(YES)), ("/93250-9", coded(YES)), ("/93374-7", coded(LOW))
    )
    assert urgent(definitions, form) == {"suicide-risk-high": "stat"}


@pytest.mark.parametrize(
    ("level", "expected"),
    [(LOW, {}), (MODERATE, {"suicide-risk": "asap"}), (HIGH, {"suicide-risk-high": "stat"})],
)
def test_recorded_suicide_risk_level(
    definitions: Definitions, level: str, expected: dict[str, str]
) -> None:
    assert urgent(definitions, observation("o1", "93374-7", RECENT, **answer(level))) == expected


# -- severe depression --------------------------------------------------------------------------


@pytest.mark.parametrize(("score", "severe"), [(19, False), (20, True)])
def test_phq9_total_at_20(definitions: Definitions, score: int, severe: bool) -> None:
    phq9 = observation("o1", "44261-6", RECENT, valueInteger=score)
    assert urgent(definitions, phq9) == ({"severe-depression": "urgent"} if severe else {})
    # the depression feature grades 15-19 and 20-27 alike: the urgent feature tells them apart
    assert profile_of(definitions, record(phq9)).finding("depression").severity == "high"  # type: ignore[union-attr]


# -- severe hypertension ------------------------------------------------------------------------


@pytest.mark.parametrize(("systolic", "severe"), [(179, False), (180, True)])
def test_systolic_at_180(definitions: Definitions, systolic: float, severe: bool) -> None:
    reading = bp_panel("bp1", systolic, 90)
    assert urgent(definitions, reading) == ({"severe-hypertension": "urgent"} if severe else {})


@pytest.mark.parametrize(("diastolic", "severe"), [(119, False), (120, True)])
def test_diastolic_at_120(definitions: Definitions, diastolic: float, severe: bool) -> None:
    reading = bp_panel("bp1", 150, diastolic)
    assert urgent(definitions, reading) == ({"severe-hypertension": "urgent"} if severe else {})


def test_severe_reading_in_mm_hg_spelled_as_text(definitions: Definitions) -> None:
    reading = observation("o1", "8480-6", RECENT, valueQuantity={"value": 186, "unit": "mmHg"})
    assert urgent(definitions, reading) == {"severe-hypertension": "urgent"}


def test_a_newer_normal_reading_clears_severe_hypertension(definitions: Definitions) -> None:
    assert urgent(definitions, bp_panel("a", 190, 100, "2026-11-01"), bp_panel("b", 132, 82)) == {
        "severe-hypertension": "urgent"
    }
    newer = bp_panel("b", 132, 82, "2026-11-10")
    assert urgent(definitions, bp_panel("a", 190, 100, "2026-11-01"), newer) == {}


# -- severe-range blood pressure in pregnancy (160/110, ACOG Committee Opinion 767) -------------


def pregnant(when: str = "2026-09-01") -> dict[str, Any]:
    """Pre-existing essential hypertension complicating pregnancy, second trimester (ICD-10-CM
    O10.012): a pregnancy code as records carry it, with no separate pregnancy diagnosis."""
    return condition("preg", ICD10, "O10.012", onsetDateTime=when, recordedDate=when)


@pytest.mark.parametrize(("systolic", "severe"), [(159, False), (160, True)])
def test_systolic_at_160_in_pregnancy(
    definitions: Definitions, systolic: float, severe: bool
) -> None:
    reading = bp_panel("bp1", systolic, 96)
    assert urgent(definitions, pregnant(), reading) == (
        {"severe-range-bp-pregnancy": "stat"} if severe else {}
    )


@pytest.mark.parametrize(("diastolic", "severe"), [(109, False), (110, True)])
def test_diastolic_at_110_in_pregnancy(
    definitions: Definitions, diastolic: float, severe: bool
) -> None:
    reading = bp_panel("bp1", 150, diastolic)
    assert urgent(definitions, pregnant(), reading) == (
        {"severe-range-bp-pregnancy": "stat"} if severe else {}
    )


def test_160_110_outside_pregnancy_is_not_the_pregnancy_emergency(
    definitions: Definitions,
) -> None:
    assert urgent(definitions, bp_panel("bp1", 168, 112)) == {}


def test_a_pregnancy_ended_over_42_weeks_ago_does_not_count(definitions: Definitions) -> None:
    assert urgent(definitions, pregnant("2025-11-01"), bp_panel("bp1", 168, 112)) == {}


def test_a_reading_of_both_ranges_in_pregnancy_raises_both(definitions: Definitions) -> None:
    assert urgent(definitions, pregnant(), bp_panel("bp1", 184, 112)) == {
        "severe-range-bp-pregnancy": "stat",
        "severe-hypertension": "urgent",
    }


# -- HbA1c --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "high"), [(9.9, False), (10.0, True)])
def test_hba1c_at_10_percent(definitions: Definitions, value: float, high: bool) -> None:
    a1c = observation("o1", "4548-4", "2026-10-01", **quantity(value, "%"))
    assert urgent(definitions, a1c) == ({"very-high-hba1c": "urgent"} if high else {})


@pytest.mark.parametrize(("mmol", "high"), [(85, False), (86, True)])
def test_hba1c_in_ifcc_mmol_per_mol_across_10_percent(
    definitions: Definitions, mmol: float, high: bool
) -> None:
    """85 mmol/mol is 9.93% NGSP, 86 is 10.02% (NGSP = 0.09148 x IFCC + 2.152)."""
    a1c = observation("o1", "4548-4", "2026-10-01", **quantity(mmol, "mmol/mol"))
    assert urgent(definitions, a1c) == ({"very-high-hba1c": "urgent"} if high else {})


def test_an_hba1c_older_than_90_days_is_not_urgent(definitions: Definitions) -> None:
    a1c = observation("o1", "4548-4", "2026-08-01", **quantity(11.2, "%"))
    assert urgent(definitions, a1c) == {}


# -- eGFR below 30 and nephrology care ----------------------------------------------------------


@pytest.mark.parametrize(("value", "low"), [(30, False), (29.9, True)])
def test_egfr_at_30(definitions: Definitions, value: float, low: bool) -> None:
    assert urgent(definitions, egfr(value)) == (
        {"egfr-below-30-no-nephrology": "urgent"} if low else {}
    )


def test_egfr_in_ml_per_min_on_a_per_1_73_code_reads_as_below_30(definitions: Definitions) -> None:
    reading = observation("o1", "33914-3", **quantity(24, "mL/min"))
    assert urgent(definitions, reading) == {"egfr-below-30-no-nephrology": "urgent"}


@pytest.mark.parametrize(
    "care",
    [
        referral("sr1"),
        referral("sr1", status="completed"),
        referral("sr1", code="183916004"),  # private referral to a nephrologist
        condition("c1", ICD10, "Z99.2"),  # dependence on renal dialysis
        condition("c1", ICD10, "Z94.0"),  # kidney transplant status
        condition("c1", SNOMED, "236435004"),  # end stage renal failure on dialysis
    ],
)
def test_egfr_below_30_with_nephrology_care_is_not_urgent(
    definitions: Definitions, care: dict[str, Any]
) -> None:
    assert urgent(definitions, egfr(24), care) == {}
    found = profile_of(definitions, record(care)).finding("nephrology_care")
    assert found is not None and found.current_present and found.severity is None


@pytest.mark.parametrize(
    "care",
    [
        referral("sr1", status="draft"),  # fhir-tailor's own referrals are drafts
        referral("sr1", status="revoked"),
        referral("sr1", status="entered-in-error"),
        referral("sr1", intent="proposal"),
        referral("sr1", when="2025-10-01"),  # more than a year old
        referral("sr1", code="306206005"),  # a referral, not to a nephrologist
        condition("c1", ICD10, "Z99.2", clinical="resolved"),
    ],
)
def test_egfr_below_30_without_nephrology_care_is_urgent(
    definitions: Definitions, care: dict[str, Any]
) -> None:
    assert urgent(definitions, egfr(24), care) == {"egfr-below-30-no-nephrology": "urgent"}


def test_nephrology_care_raises_no_need(definitions: Definitions) -> None:
    profile = profile_of(definitions, record(referral("sr1")))
    assert profile.dimension("medical").need == "none"


# -- the plan -----------------------------------------------------------------------------------


def test_findings_come_most_pressing_first_with_their_evidence(definitions: Definitions) -> None:
    rec = record(
        bp_panel("bp1", 184, 122),
        observation("o2", "44261-6", RECENT, valueInteger=22),
        questionnaire("q1", RECENT, ("/93250-9", coded(YES)), ("/93246-7", coded(YES))),
        observation("o3", "44260-8", RECENT, **answer(NEARLY_EVERY_DAY)),
    )
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None
    assert [(f.rule, f.priority) for f in plan.urgent] == [
        ("suicide-risk-high", "stat"),
        ("severe-depression", "urgent"),
        ("severe-hypertension", "urgent"),
    ]
    # the gravest reading of the day decides: the C-SSRS plan answer, not the PHQ-9 item
    assert plan.urgent[0].sources == ("QuestionnaireResponse/q1",)
    assert plan.urgent[2].sources == ("Observation/bp1",)
    assert "Observation/bp1" in plan.supporting_info


def test_the_key_follows_the_evidence(definitions: Definitions) -> None:
    def key(*resources: dict[str, Any]) -> str:
        _, plan = profile_and_plan(record(*resources), definitions, AS_OF)
        assert plan is not None
        return plan.urgent[0].key

    first = key(bp_panel("bp1", 184, 100))
    assert key(bp_panel("bp1", 184, 100)) == first  # same evidence, same request
    assert key(bp_panel("bp2", 184, 100)) != first  # a new reading, a new request
    assert first.startswith("severe-hypertension/")


def test_an_urgent_finding_alone_makes_a_plan(definitions: Definitions) -> None:
    """With no care module applying, the urgent finding still reaches a clinician."""
    catalog = dataclasses.replace(definitions.catalog, modules=())
    rec = record(bp_panel("bp1", 150, 124))
    profile = build_profile(rec, definitions.rules, AS_OF)
    plan = plan_for(profile, segment(profile, definitions.segments), catalog)
    assert plan is not None and plan.modules == () and plan.activities == ()
    assert [f.rule for f in plan.urgent] == ["severe-hypertension"]
    calm = build_profile(record(bp_panel("bp1", 150, 95)), definitions.rules, AS_OF)
    assert plan_for(calm, [], catalog) is None
    resources = to_fhir(plan, RECORDED)
    careplan = resources.careplan.resource
    assert careplan["title"] == "Urgent findings for clinician review"
    assert "instantiatesCanonical" not in careplan
    assert careplan["activity"] == [{"reference": {"reference": resources.tasks[0].full_url}}]


def test_a_deceased_patient_gets_no_urgent_request(definitions: Definitions) -> None:
    rec = record(bp_panel("bp1", 200, 125), deceasedDateTime="2026-11-10")
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is None


# -- the Task -----------------------------------------------------------------------------------


def suicide_plan(definitions: Definitions, pid: str = "p1") -> Plan:
    item9 = observation("o9", "44260-8", RECENT, pid=pid, **answer(SEVERAL_DAYS))
    _, plan = profile_and_plan(record(item9, pid=pid), definitions, AS_OF)
    assert plan is not None and plan.urgent
    return plan


def test_the_task_is_a_worklist_request_with_its_reason(definitions: Definitions) -> None:
    plan = suicide_plan(definitions)
    resources = to_fhir(plan, RECORDED)
    [task] = [t.resource for t in resources.tasks]
    assert task["status"] == "requested" and task["intent"] == "proposal"
    assert task["priority"] == "asap"
    assert task["for"] == {"reference": "Patient/p1"}
    assert task["authoredOn"] == "2026-11-15"
    assert task["reasonReference"] == {"reference": "Observation/o9"}
    codings = {(c["system"], c["code"]) for c in task["code"]["coding"]}
    assert codings == {(SNOMED, "225337009"), (URGENT_CODE_SYSTEM, "suicide-risk")}
    assert task["identifier"] == [{"system": TASK_ID_SYSTEM, "value": f"p1/{plan.urgent[0].key}"}]
    assert any("Joint Commission NPSG 15.01.01" in n["text"] for n in task["note"])
    assert any("[Observation/o9]" in n["text"] for n in task["note"])
    careplan = resources.careplan.resource
    # listed first among the CarePlan's activities; written with it and its Provenance
    assert careplan["activity"][0] == {"reference": {"reference": resources.tasks[0].full_url}}
    provenance = resources.provenance.resource
    assert {"reference": resources.tasks[0].full_url} in provenance["target"]
    assert "Urgent findings" in careplan["text"]["div"]


def test_file_output_carries_the_task_conditionally(definitions: Definitions) -> None:
    resources = to_fhir(suicide_plan(definitions), RECORDED)
    [entry] = [
        e for e in create_transaction(resources)["entry"] if e["resource"]["resourceType"] == "Task"
    ]
    assert entry["request"]["ifNoneExist"].startswith(f"identifier={TASK_ID_SYSTEM}|p1/")


# -- writing to a server (HTTP mocked) ----------------------------------------------------------


def capability_statement(*task_params: str) -> dict[str, Any]:
    def declared(rtype: str, *names: str) -> dict[str, Any]:
        return {"type": rtype, "searchParam": [{"name": n, "type": "token"} for n in names]}

    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "mode": "server",
                "resource": [
                    declared("CarePlan", "identifier"),
                    declared("Goal", "identifier"),
                    declared("ServiceRequest", "identifier"),
                    declared("Task", *task_params),
                ],
            }
        ],
    }


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def transaction_response() -> httpx.Response:
    return httpx.Response(
        200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []}
    )


def sent(post: respx.Route, call: int = 0) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(post.calls[call].request.content)["entry"]
    return entries


def of_type(entries: list[dict[str, Any]], rtype: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["resource"]["resourceType"] == rtype]


def stored(resource: dict[str, Any], rid: str, version: str = "1") -> dict[str, Any]:
    return {**resource, "id": rid, "meta": {**resource.get("meta", {}), "versionId": version}}


def stored_plan(resources: PlanResources) -> dict[str, dict[str, Any]]:
    """CarePlan, Goals and Tasks as the server keeps them, references rewritten to ids."""
    ids = {resources.careplan.full_url: "CarePlan/cp1"}
    ids |= {g.full_url: f"Goal/g{n}" for n, g in enumerate(resources.goals)}
    ids |= {t.full_url: f"Task/t{n}" for n, t in enumerate(resources.tasks)}

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: ids.get(v, v) if isinstance(v, str) else rewrite(v) for k, v in value.items()
            }
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        return value

    return {
        ids[e.full_url]: stored(rewrite(e.resource), ids[e.full_url].split("/")[1], "3")
        for e in (resources.careplan, *resources.goals, *resources.tasks)
    }


def serve(server: dict[str, dict[str, Any]], tasks: list[dict[str, Any]]) -> respx.Route:
    respx.get(f"{BASE}/CarePlan").mock(
        return_value=httpx.Response(200, json=searchset(server["CarePlan/cp1"]))
    )
    for rid, resource in server.items():
        respx.get(f"{BASE}/{rid}").mock(return_value=httpx.Response(200, json=resource))
    return respx.get(f"{BASE}/Task").mock(return_value=httpx.Response(200, json=searchset(*tasks)))


@pytest.fixture
def client() -> FhirClient:
    return FhirClient(BASE, sleep=lambda _: None)


@respx.mock
@pytest.mark.parametrize("task_params", [("identifier", "patient"), ("patient",)])
def test_first_sync_writes_the_task_with_the_plan_in_one_transaction(
    definitions: Definitions, client: FhirClient, task_params: tuple[str, ...]
) -> None:
    plan = suicide_plan(definitions)
    resources = to_fhir(plan, RECORDED)
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement(*task_params))
    )
    respx.get(f"{BASE}/CarePlan").mock(return_value=httpx.Response(200, json=searchset()))
    lookup = respx.get(f"{BASE}/Task").mock(return_value=httpx.Response(200, json=searchset()))
    post = respx.post(BASE).mock(return_value=transaction_response())
    assert ServerSink(client).write(plan, resources).outcome == "created"
    assert post.call_count == 1
    [task] = of_type(sent(post), "Task")
    assert task["request"]["method"] == "POST"
    assert ("ifNoneExist" in task["request"]) == ("identifier" in task_params)
    query = dict(lookup.calls[0].request.url.params)
    if "identifier" in task_params:
        assert query["identifier"] == f"{TASK_ID_SYSTEM}|p1/{plan.urgent[0].key}"
    else:
        assert query["patient"] == "p1"
    [provenance] = of_type(sent(post), "Provenance")
    assert {"reference": task["fullUrl"]} in provenance["resource"]["target"]


@respx.mock
def test_a_stored_task_is_referenced_never_written_again(
    definitions: Definitions, client: FhirClient
) -> None:
    """The CarePlan is gone (deleted by someone), its Task is not: the new plan points at it."""
    plan = suicide_plan(definitions)
    resources = to_fhir(plan, RECORDED)
    task = stored(resources.tasks[0].resource, "t7")
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement("identifier"))
    )
    respx.get(f"{BASE}/CarePlan").mock(return_value=httpx.Response(200, json=searchset()))
    respx.get(f"{BASE}/Task").mock(return_value=httpx.Response(200, json=searchset(task)))
    post = respx.post(BASE).mock(return_value=transaction_response())
    assert ServerSink(client).write(plan, resources).outcome == "created"
    entries = sent(post)
    assert of_type(entries, "Task") == []
    [careplan] = of_type(entries, "CarePlan")
    assert careplan["resource"]["activity"][0] == {"reference": {"reference": "Task/t7"}}
    [provenance] = of_type(entries, "Provenance")
    assert {"reference": "Task/t7"} not in provenance["resource"]["target"]
    assert resources.tasks[0].full_url not in json.dumps(entries)


@respx.mock
def test_unchanged_plan_looks_for_no_task(definitions: Definitions, client: FhirClient) -> None:
    plan = suicide_plan(definitions)
    resources = to_fhir(plan, RECORDED)
    server = stored_plan(resources)
    lookup = serve(server, [server["Task/t0"]])
    post = respx.post(BASE)
    assert ServerSink(client).write(plan, resources).outcome == "unchanged"
    assert not post.called and not lookup.called


@respx.mock
def test_changed_plan_keeps_the_stored_task_and_adds_a_new_one(
    definitions: Definitions, client: FhirClient
) -> None:
    old_plan = suicide_plan(definitions)
    server = stored_plan(to_fhir(old_plan, RECORDED))
    rec = record(
        observation("o9", "44260-8", RECENT, **answer(SEVERAL_DAYS)), bp_panel("bp1", 182, 100)
    )
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None and [f.rule for f in plan.urgent] == [
        "suicide-risk",
        "severe-hypertension",
    ]
    resources = to_fhir(plan, RECORDED)
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement("identifier"))
    )
    serve(server, [server["Task/t0"]])
    post = respx.post(BASE).mock(return_value=transaction_response())
    assert ServerSink(client).write(plan, resources).outcome == "updated"
    entries = sent(post)
    [new] = of_type(entries, "Task")
    assert new["resource"]["code"]["coding"][-1]["code"] == "severe-hypertension"
    assert new["request"]["ifNoneExist"].startswith(f"identifier={TASK_ID_SYSTEM}|")
    [careplan] = of_type(entries, "CarePlan")
    assert careplan["request"]["method"] == "PUT"
    assert careplan["resource"]["activity"][:2] == [
        {"reference": {"reference": "Task/t0"}},
        {"reference": {"reference": new["fullUrl"]}},
    ]


@respx.mock
def test_a_clinician_edited_plan_still_gets_its_new_urgent_task(
    definitions: Definitions, client: FhirClient
) -> None:
    plan = suicide_plan(definitions)
    resources = to_fhir(plan, RECORDED)
    server = stored_plan(resources)
    del server["Task/t0"]  # never written (the plan was a clinician's before the finding)
    server["CarePlan/cp1"]["status"] = "active"  # a clinician's plan now
    server["CarePlan/cp1"]["activity"] = server["CarePlan/cp1"]["activity"][1:]
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement("identifier"))
    )
    serve(server, [])
    post = respx.post(BASE).mock(return_value=transaction_response())
    outcome = ServerSink(client).write(plan, resources)
    assert outcome.outcome == "skipped-edited" and "wrote 1 urgent Tasks" in (outcome.detail or "")
    entries = sent(post)
    assert [e["resource"]["resourceType"] for e in entries] == ["Task", "Provenance"]
    assert entries[1]["resource"]["target"] == [{"reference": entries[0]["fullUrl"]}]
    # next run: the Task is stored, nothing is written
    respx.get(f"{BASE}/Task").mock(
        return_value=httpx.Response(200, json=searchset(stored(resources.tasks[0].resource, "t9")))
    )
    again = ServerSink(client).write(plan, resources)
    assert again.outcome == "skipped-edited" and post.call_count == 1


@respx.mock
def test_without_task_search_a_first_sync_creates_the_task(
    definitions: Definitions, client: FhirClient
) -> None:
    plan = suicide_plan(definitions)
    resources = to_fhir(plan, RECORDED)
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement())
    )
    respx.get(f"{BASE}/CarePlan").mock(return_value=httpx.Response(200, json=searchset()))
    post = respx.post(BASE).mock(return_value=transaction_response())
    assert ServerSink(client).write(plan, resources).outcome == "created"
    [task] = of_type(sent(post), "Task")
    assert "ifNoneExist" not in task["request"]  # no identifier search to make it conditional


@respx.mock
def test_without_task_search_the_tasks_the_careplan_lists_are_known(
    definitions: Definitions, client: FhirClient
) -> None:
    """Our CarePlan lists its Tasks: read by id, they are never written twice, search or not."""
    server = stored_plan(to_fhir(suicide_plan(definitions), RECORDED))
    rec = record(
        observation("o9", "44260-8", RECENT, **answer(SEVERAL_DAYS)), bp_panel("bp1", 182, 100)
    )
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None
    resources = to_fhir(plan, RECORDED)
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement())
    )
    serve(server, [])
    post = respx.post(BASE).mock(return_value=transaction_response())
    assert ServerSink(client).write(plan, resources).outcome == "updated"
    [new] = of_type(sent(post), "Task")
    assert new["resource"]["code"]["coding"][-1]["code"] == "severe-hypertension"


@respx.mock
def test_without_task_search_a_clinicians_plan_gets_no_task_it_may_hold_already(
    definitions: Definitions, client: FhirClient
) -> None:
    """The clinician's CarePlan lists no Task and none can be searched for: writing one would
    write it again on every run. It is reported instead."""
    plan = suicide_plan(definitions)
    resources = to_fhir(plan, RECORDED)
    server = stored_plan(resources)
    server["CarePlan/cp1"]["status"] = "active"
    server["CarePlan/cp1"]["activity"] = server["CarePlan/cp1"]["activity"][1:]
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement())
    )
    serve(server, [])
    post = respx.post(BASE)
    outcome = ServerSink(client).write(plan, resources)
    assert outcome.outcome == "skipped-edited" and not post.called
    assert "1 urgent Tasks not written" in (outcome.detail or "")


@respx.mock
def test_a_task_the_careplan_lists_but_someone_deleted_is_written_again(
    definitions: Definitions, client: FhirClient
) -> None:
    old = stored_plan(to_fhir(suicide_plan(definitions), RECORDED))
    rec = record(
        observation("o9", "44260-8", RECENT, **answer(SEVERAL_DAYS)), bp_panel("bp1", 182, 100)
    )
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement())
    )
    serve({k: v for k, v in old.items() if k != "Task/t0"}, [])
    respx.get(f"{BASE}/Task/t0").mock(return_value=httpx.Response(410))
    post = respx.post(BASE).mock(return_value=transaction_response())
    assert ServerSink(client).write(plan, to_fhir(plan, RECORDED)).outcome == "updated"
    assert len(of_type(sent(post), "Task")) == 2


# -- CDS Hooks, the SMART page, the report ------------------------------------------------------


def card(definitions: Definitions, rec: PatientRecord) -> dict[str, Any]:
    profile, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None
    cards = CarePlanCards(definitions, "https://app.example/launch")
    nothing_stored = propose(to_fhir(plan, RECORDED), Stored((), (), {}))
    return cards.card(profile, plan, nothing_stored, uuid.UUID(int=1))


def test_cds_card_is_critical_and_names_the_finding_first(definitions: Definitions) -> None:
    rec = record(
        bp_panel("bp1", 184, 100),
        observation("o9", "44260-8", RECENT, **answer(SEVERAL_DAYS)),
        name=[{"given": ["Quinn"], "family": "Zebulon"}],
    )
    found = card(definitions, rec)
    assert found["indicator"] == "critical"
    assert found["summary"].startswith("URGENT (asap): Positive suicide risk screen (+1 more)")
    assert len(found["summary"]) <= SUMMARY_LIMIT < 140
    assert "Zebulon" not in found["summary"] and "Quinn" not in found["summary"]
    detail = found["detail"]
    assert detail.startswith("**Urgent** (2 findings):\n\n1. **ASAP: Positive suicide risk")
    actions = found["suggestions"][0]["actions"]
    tasks = [a for a in actions if a["resource"]["resourceType"] == "Task"]
    assert [a["description"] for a in tasks] == [
        "Create asap task: Positive suicide risk screen",
        "Create urgent task: Severe blood pressure elevation (180/120 or above)",
    ]
    careplan = actions[-1]["resource"]  # listed after the Tasks it references
    assert careplan["activity"][0] == {
        "reference": {"reference": f"Task/{tasks[0]['resource']['id']}"}
    }


def test_cds_card_without_urgent_findings_keeps_its_need_indicator(
    definitions: Definitions,
) -> None:
    found = card(definitions, record(bp_panel("bp1", 150, 92)))
    assert found["indicator"] != "critical" and not found["summary"].startswith("URGENT")


def test_smart_page_shows_urgent_findings_at_the_top(definitions: Definitions) -> None:
    rec = record(bp_panel("bp1", 150, 124))
    profile, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None
    labels = {name: d.label for name, d in definitions.rules.dimensions.items()}
    page = plan_page(
        PageView(rec.patient, profile, labels, [], plan, "https://fhir.example", "token")
    )
    assert page.index('id="urgent"') < page.index('id="needs"') < page.index('id="plan"')
    assert "Severe blood pressure elevation" in page and "Observation/bp1" in page


def test_report_counts_urgent_findings_by_rule_id() -> None:
    report = RunReport()
    report.urgent_findings("Patient/a", ("suicide-risk", "severe-hypertension"))
    report.urgent_findings("Patient/b", ("severe-hypertension",))
    report.urgent_findings("Patient/c", ())
    for pid in "abc":
        report.add(PatientOutcome(f"Patient/{pid}", "created"))
    data = report.to_dict()
    assert data["urgent"] == {"severe-hypertension": 2, "suicide-risk": 1}
    by_patient = {p["patient"]: p.get("urgent") for p in data["patients"]}
    assert by_patient == {
        "Patient/a": ["suicide-risk", "severe-hypertension"],
        "Patient/b": ["severe-hypertension"],
        "Patient/c": None,
    }
    assert report.summary().endswith("; 3 urgent findings (severe-hypertension 2, suicide-risk 1)")
    assert "urgent" not in RunReport().summary()


# -- fixture patients ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_urgent(definitions: Definitions) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for rec in file_source(FIXTURES).records(lambda _: None):
        _, plan = profile_and_plan(rec, definitions, AS_OF)
        found[rec.patient_id] = {f.rule for f in plan.urgent} if plan else set()
    return found


URGENT_FIXTURES = {
    "ft-32": {"suicide-risk", "severe-depression"},
    "ft-33": {"suicide-risk-high"},
    "ft-34": {"severe-hypertension", "very-high-hba1c"},
    "ft-35": {"egfr-below-30-no-nephrology"},
    "ft-37": {"severe-range-bp-pregnancy"},
}


@pytest.mark.parametrize(("patient", "rules"), sorted(URGENT_FIXTURES.items()))
def test_fixture_patients_32_to_35_give_their_urgent_findings(
    fixture_urgent: dict[str, set[str]], patient: str, rules: set[str]
) -> None:
    assert fixture_urgent[patient] == rules


def test_every_urgent_rule_fires_on_some_fixture_patient(
    definitions: Definitions, fixture_urgent: dict[str, set[str]]
) -> None:
    fired = set().union(*fixture_urgent.values())
    assert {r.id for r in definitions.catalog.urgent} <= fired


def test_a_file_run_reports_the_urgent_counts_of_the_fixtures(tmp_path: Path) -> None:
    report = tmp_path / "run.json"
    result = CliRunner().invoke(
        main,
        [
            "--as-of",
            AS_OF.isoformat(),
            "sync",
            "--input",
            str(FIXTURES),
            "--out",
            str(tmp_path / "out"),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.stderr
    counts = json.loads(report.read_text())["urgent"]
    for rules in URGENT_FIXTURES.values():
        for rule in rules:
            assert counts[rule] >= 1
    assert "urgent findings (" in result.stderr
    bundle = json.loads((tmp_path / "out" / "ft-33.json").read_text())
    [task] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task"]
    assert task["priority"] == "stat"


# -- FHIRPath: the ServiceRequest reading agrees with Python -------------------------------------


def test_nephrology_care_translates_to_fhirpath_that_agrees(definitions: Definitions) -> None:
    """A feature read from ServiceRequests is a new rule construct: its FHIRPath translation
    must say what the Python evaluation says, on both sides of each of its conditions."""
    index = definitions.rules.index
    members = {
        canonical: {
            (c.system, normalize_code(c.system, c.code))
            for c in (index.library.find(canonical).concepts or ())  # type: ignore[union-attr]
        }
        for feature, _ in index.features.values()
        for rule in feature.rules
        for canonical in rule.valuesets
    }

    def member_of(inputs: list[Any], canonical: str) -> list[bool]:
        return [
            isinstance(c, dict)
            and (c.get("system"), normalize_code(str(c.get("system")), str(c.get("code"))))
            in members[canonical]
            for c in inputs
        ]

    rules = [FeatureRule(feature="nephrology_care"), definitions.catalog.urgent[-1].when]
    translator = Translator(definitions.rules)
    cases = [
        [egfr(24), referral("sr1")],
        [egfr(24), referral("sr1", status="draft")],
        [egfr(24), referral("sr1", when="2025-10-01")],
        [egfr(24), referral("sr1", intent="proposal")],
        [egfr(24), condition("c1", ICD10, "Z99.2")],
        [egfr(31), referral("sr1", status="revoked")],
        [egfr(24)],
    ]
    options = {"userInvocationTable": {"memberOf": {"fn": member_of, "arity": {1: ["String"]}}}}
    for rule in rules:
        compiled = compile_fhirpath(translator.expression(rule), models["r4"], options)
        for resources in cases:
            rec = record(*resources)
            bundle = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": r} for r in (rec.patient, *rec.resources)],
            }
            python = rule.evaluate(build_profile(rec, definitions.rules, AS_OF)).holds
            assert compiled(bundle, {"asOf": AS_OF.isoformat()}) == [python], resources
