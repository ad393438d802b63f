"""SDOH domains of the SDOH Clinical Care IG (Gravity), and how a social finding names its own.

Goal.category and ServiceRequest.category take a code of the IG's value set
SDOHCC-ValueSetSDOHCategory (STU 2.3.0, binding *required*), from the code system
SDOHCC-CodeSystemTemporaryCodes. The domain follows the evidence, not the feature: a feature
groups what one module addresses (``housing_instability`` holds homelessness and housing
instability, ``interpersonal_safety`` partner violence and elder abuse), while the IG files
them under different domains. So each mapping rule, or each answer of a rule's answer table,
may state the domain its matches belong to (``sdoh_category`` in ``profiles/features``), and a
Condition matched by its SDOH category *is* in that domain; :func:`decisive_category` picks
the domain of a finding from the evidence that decided it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, cast, get_args

#: The code system of SDOHCC-ValueSetSDOHCategory (SDOH Clinical Care IG STU 2.3.0).
SDOH_CATEGORY_SYSTEM = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
)

SdohCategory = Literal[
    "sdoh-category-unspecified",
    "food-insecurity",
    "housing-instability",
    "homelessness",
    "inadequate-housing",
    "transportation-insecurity",
    "financial-insecurity",
    "material-hardship",
    "educational-attainment",
    "employment-status",
    "veteran-status",
    "stress",
    "social-connection",
    "intimate-partner-violence",
    "elder-abuse",
    "personal-health-literacy",
    "health-insurance-coverage-status",
    "medical-cost-burden",
    "digital-literacy",
    "digital-access",
    "utility-insecurity",
    "incarceration-status",
    "language-access",
]
"""SDOHCC-ValueSetSDOHCategory, STU 2.3.0 (input/fsh/valuesets/SDOHCCValueSetSDOHCategory.fsh)."""

SDOH_CATEGORIES: frozenset[str] = frozenset(get_args(SdohCategory))
#: For domains the IG has no code for, or evidence that names no domain (IG STU 2.3.0,
#: SDOHCC Goal and SDOHCC ServiceRequest, Usage).
UNSPECIFIED: SdohCategory = "sdoh-category-unspecified"

#: The code system's displays, as the IG's examples write them (e.g. SDOHCC Goal Food Security
#: Example: ``food-insecurity "Food Insecurity"``).
CATEGORY_DISPLAY: dict[str, str] = {
    "sdoh-category-unspecified": "SDOH Category Unspecified",
    "food-insecurity": "Food Insecurity",
    "housing-instability": "Housing Instability",
    "homelessness": "Homelessness",
    "inadequate-housing": "Inadequate Housing",
    "transportation-insecurity": "Transportation Insecurity",
    "financial-insecurity": "Financial Insecurity",
    "material-hardship": "Material Hardship",
    "educational-attainment": "Educational Attainment",
    "employment-status": "Employment Status",
    "veteran-status": "Veteran Status",
    "stress": "Stress",
    "social-connection": "Social Connection",
    "intimate-partner-violence": "Intimate Partner Violence",
    "elder-abuse": "Elder Abuse",
    "personal-health-literacy": "Personal Health Literacy",
    "health-insurance-coverage-status": "Health Insurance Coverage Status",
    "medical-cost-burden": "Medical Cost Burden",
    "digital-literacy": "Digital Literacy",
    "digital-access": "Digital Access",
    "utility-insecurity": "Utility Insecurity",
    "incarceration-status": "Incarceration Status",
    "language-access": "Language Access",
}


def category_code(system: str, code: str) -> SdohCategory | None:
    """The domain a coding names when it is itself an SDOH category code, else ``None``."""
    if system == SDOH_CATEGORY_SYSTEM and code in SDOH_CATEGORIES:
        return cast(SdohCategory, code)
    return None


def decisive_category(
    candidates: Iterable[tuple[SdohCategory | None, int]],
) -> SdohCategory | None:
    """The domain of a finding from its decisive evidence, given as ``(category, severity rank)``.

    A named domain beats ``sdoh-category-unspecified``; among named ones the gravest evidence
    decides (homelessness, high, over housing instability, moderate), then the code's name, so
    the choice never depends on the order resources arrive in.
    """
    ranked = sorted(
        (category == UNSPECIFIED, -rank, category)
        for category, rank in candidates
        if category is not None
    )
    return ranked[0][2] if ranked else None
