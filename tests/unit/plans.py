"""Plans built in Python, independent of the bundled YAML: a clinical goal, a social goal and a
social-care referral (synthetic data only)."""

from __future__ import annotations

from datetime import date, timedelta

from fhir_tailor.catalog import GoalTarget
from fhir_tailor.mapping import Code
from fhir_tailor.plan import (
    EvidenceRef,
    Plan,
    PlannedActivity,
    PlannedGoal,
    PlannedModule,
    Variation,
)

AS_OF = date(2026, 11, 15)
BASE = "https://fhir-tailor.dev/fhir"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
FOOD_PANTRY = Code(
    system=SNOMED,
    code="467771000124109",
    display="Assistance with application for food pantry program",
)
REFERRAL_KEY = "social-needs-navigation.food-pantry-referral"

DIABETES = EvidenceRef(
    kind="feature", id="type2_diabetes", label="Type 2 diabetes", sources=("Condition/c1",)
)
FOOD = EvidenceRef(
    kind="need",
    id="social",
    label="Food insecurity",
    sources=("Condition/c2", "Observation/o2"),
)
TRANSPORT = Variation(
    variant="transport-barrier",
    label="Transportation barrier",
    reason="No reliable transportation: prefer a pantry that delivers",
    evidence=(
        EvidenceRef(
            kind="feature",
            id="transport_insecurity",
            label="Transportation insecurity",
            sources=("Condition/c3",),
        ),
    ),
)


def catalog_code(activity: str) -> Code:
    return Code(system=f"{BASE}/CodeSystem/activity", code=activity)


def module(module_id: str, title: str, evidence: EvidenceRef) -> PlannedModule:
    return PlannedModule(
        id=module_id,
        version="1.0.0",
        title=title,
        url=f"{BASE}/PlanDefinition/{module_id}",
        evidence=(evidence,),
    )


def referral(standard_code: Code | None = FOOD_PANTRY) -> PlannedActivity:
    return PlannedActivity(
        key=REFERRAL_KEY,
        module="social-needs-navigation",
        kind="ServiceRequest",
        code=catalog_code("food-pantry-referral"),
        standard_code=standard_code,
        sdoh_category="food-insecurity",
        description="Referral to a food pantry, with help applying",
        tags=("referral",),
        reasons=(FOOD,),
        variations=(TRANSPORT,),
    )


def food_plan(
    *,
    hba1c: float = 7.0,
    with_referral: bool = True,
    referral_code: Code | None = FOOD_PANTRY,
    patient: str = "Patient/p1",
) -> Plan:
    """Diabetes care (goal, lab test) and social care (goal, referral, follow-up call)."""
    activities = [
        PlannedActivity(
            key="diabetes-outpatient.hba1c-test",
            module="diabetes-outpatient",
            kind="ServiceRequest",
            code=catalog_code("hba1c-test"),
            standard_code=Code(system=LOINC, code="4548-4", display="Hemoglobin A1c"),
            description="HbA1c test every 3 months",
            tags=("lab",),
            reasons=(DIABETES,),
        ),
        *([referral(referral_code)] if with_referral else []),
        PlannedActivity(
            key="social-needs-navigation.navigator-follow-up",
            module="social-needs-navigation",
            kind="Task",
            code=catalog_code("navigator-follow-up"),
            description="Navigator follow-up call within 2 weeks",
            tags=("follow-up-call",),
            reasons=(FOOD,),
        ),
    ]
    return Plan(
        patient=patient,
        as_of=AS_OF,
        catalog="fhir-tailor-core",
        catalog_version="2026.11.0",
        segments=(),
        modules=(
            module("diabetes-outpatient", "Type 2 diabetes outpatient care", DIABETES),
            module("social-needs-navigation", "Social needs navigation", FOOD),
        ),
        goals=(
            PlannedGoal(
                key="diabetes-outpatient.hba1c-below-7",
                module="diabetes-outpatient",
                description=f"HbA1c below {hba1c:g}%",
                category="dietary",
                target=GoalTarget(
                    measure=Code(system=LOINC, code="4548-4", display="Hemoglobin A1c"),
                    comparator="<",
                    value=hba1c,
                    unit="%",
                    due_in_days=180,
                ),
                due_date=AS_OF + timedelta(days=180),
                addresses=("Condition/c1",),
            ),
            PlannedGoal(
                key="social-needs-navigation.food-security",
                module="social-needs-navigation",
                description="Reliable access to enough food",
                sdoh_category="food-insecurity",
                target=GoalTarget(
                    measure=Code(
                        system=LOINC, code="88124-3", display="Food insecurity risk [HVS]"
                    ),
                    text="No risk",
                    due_in_days=90,
                ),
                due_date=AS_OF + timedelta(days=90),
                addresses=("Condition/c2",),
            ),
        ),
        activities=tuple(activities),
        addresses=("Condition/c1", "Condition/c2", "Condition/c3"),
        supporting_info=("Observation/o2",),
    )
