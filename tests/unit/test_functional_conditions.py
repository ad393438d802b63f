"""Functional findings from Conditions and instruments, and their place on the plan.

Falls, limited mobility, dependence on a walking aid or wheelchair, visual and hearing
impairment, incontinence and dependence in daily activities: each is recognised from its ICD-10-CM
billable subcodes and SNOMED CT findings, and from the standard instruments records carry (the ACS
disability questions item by item, the Barthel Index total); a neighbouring code of another meaning
or a resolved Condition gives nothing. A patient whose only problem is one of these findings
(onset years ago, no recent data) gets a module with a goal that addresses the Condition.

Expected readings are written out by hand from the ICD-10-CM tabular list FY2026, the SNOMED CT
fully specified names, the LOINC answer codes (LA33-6 Yes, LA32-8 No) and the Barthel Index
dependency bands of Shah, Vanclay and Cooper 1989 (100 independent, 91-99 slight, 61-90 moderate,
21-60 severe, 0-20 total), never read back from ``profiles/``.
"""

from __future__ import annotations

from typing import Any

import pytest
from builders import (
    AS_OF,
    ICD10,
    SNOMED,
    answer,
    condition,
    finding_of,
    observation,
    plan_of,
    profile_of,
    reading,
    record,
)

from fhir_tailor.definitions import Definitions
from fhir_tailor.plan import Plan

YES, NO = "LA33-6", "LA32-8"

#: (system, code, feature, severity)
RECOGNISED: list[tuple[str, str, str, str]] = [
    # -- falls ---------------------------------------------------------------------------------
    (ICD10, "Z91.81", "fall_history", "moderate"),  # history of falling
    (ICD10, "R29.6", "fall_history", "high"),  # repeated falls
    (SNOMED, "428942009", "fall_history", "moderate"),  # history of fall
    (SNOMED, "161898004", "fall_history", "moderate"),  # falls
    (SNOMED, "298344006", "fall_history", "moderate"),  # elderly fall
    (SNOMED, "279992002", "fall_history", "high"),  # recurrent falls
    (SNOMED, "404911003", "fall_history", "high"),  # unexplained recurrent falls
    # -- mobility ------------------------------------------------------------------------------
    (ICD10, "Z74.09", "mobility_limitation", "moderate"),  # other reduced mobility
    (ICD10, "R26.2", "mobility_limitation", "moderate"),  # difficulty in walking NEC
    (ICD10, "Z74.01", "mobility_limitation", "high"),  # bed confinement status
    (SNOMED, "8510008", "mobility_limitation", "moderate"),  # reduced mobility
    (SNOMED, "160692006", "mobility_limitation", "moderate"),  # mobility very poor
    (SNOMED, "160685001", "mobility_limitation", "high"),  # bed-ridden
    # -- walking aid or wheelchair ---------------------------------------------------------------
    (ICD10, "Z99.3", "assistive_device", "moderate"),  # dependence on wheelchair
    (SNOMED, "105503008", "assistive_device", "moderate"),  # dependence on wheelchair
    (SNOMED, "105504002", "assistive_device", "moderate"),  # dependence on walking stick
    (SNOMED, "160683008", "assistive_device", "moderate"),  # needs walking aid in home
    # -- vision --------------------------------------------------------------------------------
    (SNOMED, "397540003", "vision_impairment", "moderate"),  # visual impairment (parent)
    (ICD10, "H54.7", "vision_impairment", "moderate"),  # unspecified visual loss
    (ICD10, "H54.0X33", "vision_impairment", "moderate"),  # blindness, both eyes, category 3
    (ICD10, "H54.8", "vision_impairment", "moderate"),  # legal blindness, as defined in USA
    (ICD10, "H54.62", "vision_impairment", "moderate"),  # unqualified visual loss, left eye
    # -- hearing -------------------------------------------------------------------------------
    (SNOMED, "15188001", "hearing_impairment", "moderate"),  # hearing loss (parent)
    (ICD10, "H90.3", "hearing_impairment", "moderate"),  # sensorineural, bilateral
    (ICD10, "H91.10", "hearing_impairment", "moderate"),  # presbycusis, unspecified ear
    (ICD10, "H90.A21", "hearing_impairment", "moderate"),  # sensorineural, restricted contralateral
    (ICD10, "H91.93", "hearing_impairment", "moderate"),  # unspecified hearing loss, bilateral
    # -- incontinence --------------------------------------------------------------------------
    (SNOMED, "165232002", "incontinence", "moderate"),  # urinary incontinence (parent)
    (SNOMED, "72042002", "incontinence", "moderate"),  # incontinence of feces
    (ICD10, "R32", "incontinence", "moderate"),  # unspecified urinary incontinence
    (ICD10, "N39.3", "incontinence", "moderate"),  # stress incontinence
    (ICD10, "N39.41", "incontinence", "moderate"),  # urge incontinence
    (ICD10, "N39.46", "incontinence", "moderate"),  # mixed incontinence
    (ICD10, "R15.9", "incontinence", "moderate"),  # full incontinence of feces
    # -- daily living --------------------------------------------------------------------------
    (ICD10, "Z74.1", "adl_dependence", "moderate"),  # need for assistance with personal care
    # Z74.2 is no household member able to give care, not an IADL dependence
    (ICD10, "Z74.2", "no_household_caregiver", "moderate"),
]


@pytest.mark.parametrize(("system", "code", "feature", "severity"), RECOGNISED)
def test_code_gives_the_feature(
    definitions: Definitions, system: str, code: str, feature: str, severity: str
) -> None:
    found = finding_of(definitions, feature, condition("c1", system, code))
    assert reading(found) == ("present", severity), f"{system}|{code}"
    assert found is not None and found.sources == ("Condition/c1",)


NOT_RECOGNISED: list[tuple[str, str, str]] = [
    (SNOMED, "1912002", "fall_history"),  # fall (event): an injury encounter code
    (ICD10, "W19.XXXA", "fall_history"),  # unspecified fall, initial encounter
    (ICD10, "R26.81", "fall_history"),  # unsteadiness on feet
    (ICD10, "Z74.1", "mobility_limitation"),  # personal care, not mobility
    (ICD10, "R26.81", "mobility_limitation"),
    (ICD10, "Z99.89", "assistive_device"),  # other enabling machines (CPAP and others)
    (ICD10, "Z99.81", "assistive_device"),  # supplemental oxygen
    (ICD10, "H52.4", "vision_impairment"),  # presbyopia
    (ICD10, "H53.10", "vision_impairment"),  # subjective visual disturbance
    (ICD10, "H93.11", "hearing_impairment"),  # tinnitus, right ear
    (ICD10, "H61.21", "hearing_impairment"),  # impacted cerumen, right ear
    (ICD10, "N39.0", "incontinence"),  # urinary tract infection
    (ICD10, "R33.9", "incontinence"),  # retention of urine
    (ICD10, "Z74.09", "adl_dependence"),  # reduced mobility is not ADL dependence
]


@pytest.mark.parametrize(("system", "code", "feature"), NOT_RECOGNISED)
def test_near_miss_gives_nothing(
    definitions: Definitions, system: str, code: str, feature: str
) -> None:
    assert finding_of(definitions, feature, condition("c1", system, code)) is None


@pytest.mark.parametrize(
    ("system", "code", "feature"),
    [
        (ICD10, "Z91.81", "fall_history"),
        (SNOMED, "8510008", "mobility_limitation"),
        (ICD10, "Z99.3", "assistive_device"),
        (ICD10, "H54.7", "vision_impairment"),
        (SNOMED, "15188001", "hearing_impairment"),
        (ICD10, "N39.41", "incontinence"),
    ],
)
def test_resolved_condition_gives_nothing(
    definitions: Definitions, system: str, code: str, feature: str
) -> None:
    resolved = condition("c1", system, code, clinical="resolved")
    assert finding_of(definitions, feature, resolved) is None


def test_bed_confinement_outranks_reduced_mobility_in_snomed(definitions: Definitions) -> None:
    found = finding_of(
        definitions,
        "mobility_limitation",
        condition("c1", SNOMED, "8510008"),
        condition("c2", SNOMED, "160685001"),
    )
    assert reading(found) == ("present", "high")


# -- instruments -------------------------------------------------------------------------------

ACS_ITEMS: list[tuple[str, str]] = [
    # (LOINC question, the feature it asks about besides `disability`)
    ("69856-3", "hearing_impairment"),  # deaf or serious difficulty hearing
    ("69857-1", "vision_impairment"),  # blind or serious difficulty seeing
    ("69859-7", "mobility_limitation"),  # serious difficulty walking or climbing stairs
    ("69860-5", "adl_dependence"),  # difficulty dressing or bathing
    ("69861-3", "iadl_dependence"),  # difficulty doing errands alone
]


@pytest.mark.parametrize(("question", "feature"), ACS_ITEMS)
def test_acs_item_answers(definitions: Definitions, question: str, feature: str) -> None:
    yes = profile_of(definitions, record(observation("o1", question, **answer(YES))))
    assert reading(yes.finding(feature)) == ("present", "moderate")
    assert reading(yes.finding("disability")) == ("present", "moderate")
    no = profile_of(definitions, record(observation("o1", question, **answer(NO))))
    assert reading(no.finding(feature)) == ("absent", None)


def test_acs_concentration_item_is_disability_only(definitions: Definitions) -> None:
    yes = profile_of(definitions, record(observation("o1", "69858-9", **answer(YES))))
    assert {f.feature for _, f in yes.findings()} == {"disability"}


BARTHEL: list[tuple[float, str, str | None]] = [
    (100, "absent", None),  # independent
    (99, "present", "low"),  # slight dependency 91-99
    (91, "present", "low"),
    (90, "present", "moderate"),  # moderate 61-90
    (61, "present", "moderate"),
    (60, "present", "high"),  # severe 21-60
    (21, "present", "high"),
    (20, "present", "high"),  # total 0-20
    (0, "present", "high"),
]


@pytest.mark.parametrize(("total", "status", "severity"), BARTHEL)
def test_barthel_total_bands(
    definitions: Definitions, total: float, status: str, severity: str | None
) -> None:
    barthel = observation("o1", "96761-2", valueQuantity={"value": total})
    assert reading(finding_of(definitions, "adl_dependence", barthel)) == (status, severity)


def test_barthel_in_a_questionnaire_response(definitions: Definitions) -> None:
    response = {
        "resourceType": "QuestionnaireResponse",
        "id": "q1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": "2026-09-01T10:00:00Z",
        "item": [{"linkId": "/96761-2", "answer": [{"valueInteger": 55}]}],
    }
    assert reading(finding_of(definitions, "adl_dependence", response)) == ("present", "high")


# -- the plan ----------------------------------------------------------------------------------

ON_THE_PLAN: list[tuple[str, str, str, str]] = [
    # (system, code, module, goal id)
    (ICD10, "Z91.81", "fall-prevention", "no-falls-6-months"),
    (SNOMED, "161898004", "fall-prevention", "no-falls-6-months"),
    (ICD10, "Z74.09", "fall-prevention", "no-falls-6-months"),
    (SNOMED, "8510008", "fall-prevention", "no-falls-6-months"),
    (ICD10, "Z99.3", "fall-prevention", "no-falls-6-months"),
    (SNOMED, "105504002", "fall-prevention", "no-falls-6-months"),
    (ICD10, "H54.7", "vision-impairment-support", "vision-rehabilitation-assessed"),
    (SNOMED, "397540003", "vision-impairment-support", "vision-rehabilitation-assessed"),
    (ICD10, "H91.10", "hearing-impairment-support", "amplification-offered"),
    (SNOMED, "15188001", "hearing-impairment-support", "amplification-offered"),
    (ICD10, "N39.41", "continence-care", "continence-plan-agreed"),
    (SNOMED, "165232002", "continence-care", "continence-plan-agreed"),
    (ICD10, "Z74.1", "daily-living-support", "daily-needs-covered"),
]


def plan_for_resources(definitions: Definitions, *resources: dict[str, Any]) -> Plan:
    return plan_of(definitions, record(*resources))


@pytest.mark.parametrize(("system", "code", "module", "goal"), ON_THE_PLAN)
def test_an_old_finding_is_on_the_plan(
    definitions: Definitions, system: str, code: str, module: str, goal: str
) -> None:
    old = condition("c1", system, code, onsetDateTime="2011-05-01")
    plan = plan_for_resources(definitions, old)
    assert module in [m.id for m in plan.modules]
    assert "Condition/c1" in plan.addresses
    planned = next(g for g in plan.goals if g.key == f"{module}.{goal}")
    assert planned.addresses == ("Condition/c1",)
    assert planned.due_date is None or planned.due_date > AS_OF


def test_an_acs_yes_puts_the_sense_on_the_plan(definitions: Definitions) -> None:
    seeing = observation("o1", "69857-1", when="2026-08-01", **answer(YES))
    plan = plan_for_resources(definitions, seeing)
    assert "vision-impairment-support" in [m.id for m in plan.modules]
    assert "Observation/o1" in plan.supporting_info


def test_a_barthel_dependency_gives_daily_living_support(definitions: Definitions) -> None:
    barthel = observation("o1", "96761-2", when="2026-08-01", valueQuantity={"value": 70})
    plan = plan_for_resources(definitions, barthel)
    assert "daily-living-support" in [m.id for m in plan.modules]
    referral = next(
        a for a in plan.activities if a.key == "daily-living-support.functional-assessment"
    )
    assert referral.standard_code is not None and referral.standard_code.code == "306166004"
