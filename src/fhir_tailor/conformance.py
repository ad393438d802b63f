"""The FHIR profiles fhir-tailor's output claims, and the codes those profiles fix.

We follow US Core 7.0.0 and the SDOH Clinical Care IG STU 2.3.0, the SDOH release built on US
Core 7.0.0 (its Goal and ServiceRequest profiles derive from US Core's), so one pair of versions
holds for everything we write. A resource claims a profile in ``meta.profile`` (versioned
canonical) only when every constraint of that profile holds for it:

- CarePlan: US Core CarePlan, always (narrative, status, intent, ``assess-plan``, subject).
- Goal: US Core Goal, always; SDOHCC Goal too when the goal has an SDOH category.
- ServiceRequest (a social-care referral): US Core ServiceRequest and SDOHCC ServiceRequest when
  its code is from US Core Procedure Codes, which SDOHCC binds as *required*. A referral coded
  only in the catalog's own system is still written, but claims no profile.

What we cannot check offline, and trust the catalog for: that a SNOMED CT activity code is a
procedure (US Core Procedure Codes takes SNOMED CT descendants of 71388002 only), and that it is
in the Gravity value set (VSAC) the IG's additional bindings name for the SDOH category. Goal
descriptions are free text, which the extensible description bindings allow when no code fits.

``tests/unit/test_conformance.py`` checks each must-support element against system and code
values written out in the test, not read from this module.
"""

from __future__ import annotations

from .plan import PlannedActivity, PlannedGoal
from .sdoh import SDOH_CATEGORY_SYSTEM

US_CORE_VERSION = "7.0.0"
SDOHCC_VERSION = "2.3.0"
_US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
_SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition"
US_CORE_CAREPLAN = f"{_US_CORE}/us-core-careplan|{US_CORE_VERSION}"
US_CORE_GOAL = f"{_US_CORE}/us-core-goal|{US_CORE_VERSION}"
US_CORE_SERVICEREQUEST = f"{_US_CORE}/us-core-servicerequest|{US_CORE_VERSION}"
SDOHCC_GOAL = f"{_SDOHCC}/SDOHCC-Goal|{SDOHCC_VERSION}"
SDOHCC_SERVICEREQUEST = f"{_SDOHCC}/SDOHCC-ServiceRequest|{SDOHCC_VERSION}"

CAREPLAN_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"
GOAL_CATEGORY = "http://terminology.hl7.org/CodeSystem/goal-category"
#: The code system of SDOHCC-ValueSetSDOHCategory (Goal.category and ServiceRequest.category).
SDOH_CATEGORY = SDOH_CATEGORY_SYSTEM
#: SDOHCC ServiceRequest ``orderDetail[SubjectContactDetail]`` (STU 2.3.0): the subject is not
#: to be contacted about the request, "e.g., in domestic violence cases where contact may place
#: subject at risk"; alternate arrangements are made for contact.
CONTACTING_SUBJECT_PROHIBITED = {
    "system": SDOH_CATEGORY_SYSTEM,
    "code": "contacting-subject-prohibited",
    "display": "Contacting Subject Prohibited",
}
#: From US Core ServiceRequest Category Codes: what every social-care referral is.
SOCIAL_SERVICE_PROCEDURE = {
    "system": "http://snomed.info/sct",
    "code": "410606002",
    "display": "Social service procedure",
}
#: The core extension SDOHCC ServiceRequest uses to point at the SDOHCC Goals it serves.
PERTAINS_TO_GOAL = "http://hl7.org/fhir/StructureDefinition/resource-pertainsToGoal"
#: The code systems of US Core Procedure Codes.
PROCEDURE_CODE_SYSTEMS = frozenset(
    {
        "http://snomed.info/sct",
        "http://www.ama-assn.org/go/cpt",
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "http://www.cms.gov/Medicare/Coding/ICD10",
        "http://www.ada.org/cdt",
        "http://loinc.org",
    }
)


def goal_profiles(goal: PlannedGoal) -> list[str]:
    """US Core Goal always; SDOHCC Goal (a US Core Goal with an SDOH category) when it has one."""
    return [US_CORE_GOAL, SDOHCC_GOAL] if goal.sdoh_category else [US_CORE_GOAL]


def referral_profiles(activity: PlannedActivity) -> list[str]:
    """The ServiceRequest profiles a referral meets: none without a US Core procedure code."""
    code = activity.standard_code
    if code is None or code.system not in PROCEDURE_CODE_SYSTEMS:
        return []
    return [US_CORE_SERVICEREQUEST, SDOHCC_SERVICEREQUEST]
