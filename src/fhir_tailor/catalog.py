"""The catalog of standardized care modules and personalization variants.

A *module* (``profiles/modules/*.yaml``) is a standard part: when it applies (a rule over the
profile), the goals it sets (measurable targets) and the activities it schedules. A *variant*
(``profiles/variants.yaml``) is a warranted variation: when its rule holds, it replaces,
annotates or adds activities, adjusts a goal's target, or withholds activities and goals unsafe
for the patient, and the plan records the variant with the evidence that made it hold. The
catalog as a whole carries a version; CarePlans name the modules they instantiate by canonical
URL and version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, HttpUrl, model_validator

from .mapping import Code, Dimension, Strict
from .rules import RuleExpr
from .sdoh import SdohCategory
from .urgent import UrgentRule

_KEBAB = r"^[a-z][a-z0-9-]*$"

ActivityKind = Literal[
    "Appointment",
    "CommunicationRequest",
    "DeviceRequest",
    "MedicationRequest",
    "NutritionOrder",
    "ServiceRequest",
    "Task",
]


CarePath = Literal[
    "chronic-care",
    "post-discharge",
    "screening",
    "behavioral-health",
    "social-care",
    "functional-support",
]
#: Goal.category codes (http://terminology.hl7.org/CodeSystem/goal-category).
GoalCategory = Literal["dietary", "safety", "behavioral", "nursing", "physiotherapy"]
#: What a variant adapts the plan to: one of the four dimensions, or a stated preference.
VariantScope = Literal["medical", "cognitive_behavioral", "social", "functional", "preference"]


class CatalogInfo(Strict):
    id: str = Field(pattern=_KEBAB)
    version: str
    title: str
    publisher: str
    canonical_base: HttpUrl


class CatalogFile(Strict):
    catalog: CatalogInfo
    changelog: list[str] = Field(min_length=1)


class GoalTarget(Strict):
    """A measurable target: a coded measure and a quantity (with comparator), a coded answer
    (``Goal.target.detailCodeableConcept``, as the SDOH Clinical Care IG's example goal targets
    LOINC 88124-3 with the answer LA19983-8 "No risk") or, where neither fits, a text."""

    measure: Code
    comparator: Literal["<", "<=", ">=", ">"] | None = None
    value: float | None = None
    unit: str | None = None
    answer: Code | None = None
    text: str | None = None
    #: Days from the plan date to the target's due date. Optional: a due date needs a source
    #: like every other number, and where no guideline gives a time the goal has none (its
    #: review is the plan's).
    due_in_days: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _quantity_answer_or_text(self) -> GoalTarget:
        if sum(x is not None for x in (self.value, self.answer, self.text)) != 1:
            raise ValueError("a target has one of 'value' (with 'unit'), 'answer' or 'text'")
        if self.value is not None and self.unit is None:
            raise ValueError("a target 'value' needs a UCUM 'unit'")
        if self.comparator is not None and self.value is None:
            raise ValueError("a 'comparator' compares a 'value'")
        return self


class GoalTemplate(Strict):
    """A goal; ``sdoh_category`` (an SDOH Clinical Care IG domain code) marks a social-need goal,
    and is the domain it takes unless the evidence names a narrower one (:mod:`fhir_tailor.sdoh`).
    ``code`` codes the description (``Goal.description.coding``, e.g. SNOMED CT 1078229009
    |Food security| in the IG's example goal)."""

    id: str = Field(pattern=_KEBAB)
    description: str
    code: Code | None = None
    category: GoalCategory | None = None
    sdoh_category: SdohCategory | None = None
    target: GoalTarget
    #: Kinds of goal a variant can name (``weight-loss``): see :class:`Withhold`.
    tags: tuple[str, ...] = ()
    #: The guideline (year, section) the goal and its target come from.
    source: str | None = None


class ActivityTemplate(Strict):
    """An activity. ``code`` is its standard code (e.g. SNOMED CT procedure), when one exists;
    a ``ServiceRequest`` with an ``sdoh_category`` is a social-care referral.

    ``contact_prohibited`` marks a referral whose performer must not contact the patient
    (SDOHCC ServiceRequest ``orderDetail`` contacting-subject-prohibited, "e.g., in domestic
    violence cases where contact may place subject at risk"): contact is arranged through the
    care team. A plan with one such referral marks every referral it holds so (see
    :func:`fhir_tailor.plan.plan_for`)."""

    id: str = Field(pattern=_KEBAB)
    kind: ActivityKind
    description: str
    code: Code | None = None
    sdoh_category: SdohCategory | None = None
    contact_prohibited: bool = False
    tags: tuple[str, ...] = ()
    #: The guideline (year, section) the step comes from.
    source: str | None = None

    @model_validator(mode="after")
    def _referral_contact(self) -> ActivityTemplate:
        if self.contact_prohibited and (self.kind != "ServiceRequest" or not self.sdoh_category):
            raise ValueError(
                "'contact_prohibited' is for referrals (a ServiceRequest with an sdoh_category)"
            )
        return self


class Module(Strict):
    id: str = Field(pattern=_KEBAB)
    version: str
    changelog: list[str] = Field(min_length=1)
    title: str
    description: str
    care_path: CarePath
    dimensions: tuple[Dimension, ...] = Field(min_length=1)
    applies_when: RuleExpr
    goals: tuple[GoalTemplate, ...] = ()
    activities: list[ActivityTemplate] = Field(min_length=1)
    #: The guidelines (year, section) the module follows, and why it applies when it does.
    source: str | None = None


class Replace(Strict):
    """Replace the description (``{description}`` stands for the old one) of tagged activities."""

    tag: str
    description: str
    kind: ActivityKind | None = None
    add_tags: tuple[str, ...] = ()


class Annotate(Strict):
    """Append an instruction to the description of tagged activities."""

    tag: str
    append: str


GoalKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*$")]


class AdjustGoal(Strict):
    """Change a goal's target (``goal`` is ``<module id>.<goal id>``, or a list of them when one
    guideline sets the same target in several modules), e.g. a less tight HbA1c target for an
    older adult with frailty. The new target is a ``value`` (the goal's measure and unit kept),
    or a ``text`` where the guideline sets no number to aim at (ADA: in very complex or poor
    health, avoid reliance on HbA1c), optionally on another ``measure``."""

    goal: GoalKey | list[GoalKey]
    description: str
    comparator: Literal["<", "<=", ">=", ">"] | None = None
    value: float | None = None
    text: str | None = None
    measure: Code | None = None

    @model_validator(mode="after")
    def _value_or_text(self) -> AdjustGoal:
        if (self.value is None) == (self.text is None):
            raise ValueError("an adjusted target has either 'value' or 'text'")
        if self.text is not None and self.comparator is not None:
            raise ValueError("a 'comparator' compares a 'value'")
        if self.measure is not None and self.text is None:
            raise ValueError("a new 'measure' goes with a 'text' target (a value keeps its unit)")
        return self

    @property
    def goals(self) -> tuple[str, ...]:
        """The keys of the goals changed."""
        return (self.goal,) if isinstance(self.goal, str) else tuple(self.goal)


class Withhold(Strict):
    """Withhold the activities and goals carrying one of the tags, because they are unsafe or
    wrong for this patient (a statin in pregnancy, a text message a partner may read). Nothing
    disappears silently: a withheld activity stays in the plan marked not to be done, a withheld
    goal leaves the plan's goals but is listed as withheld, each with the variant's reason and
    evidence (:mod:`fhir_tailor.plan`, rendered by :mod:`fhir_tailor.resources`)."""

    activity_tags: tuple[str, ...] = ()
    goal_tags: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _something(self) -> Withhold:
        if not (self.activity_tags or self.goal_tags):
            raise ValueError("'withhold' needs activity_tags or goal_tags")
        return self


class Variant(Strict):
    id: str = Field(pattern=_KEBAB)
    label: str
    reason: str
    scope: VariantScope
    when: RuleExpr
    #: The guideline (year, section) that warrants the variation.
    source: str | None = None
    replace: Replace | None = None
    annotate: Annotate | None = None
    add_activity: ActivityTemplate | None = None
    adjust_goal: AdjustGoal | None = None
    withhold: Withhold | None = None

    @model_validator(mode="after")
    def _one_change(self) -> Variant:
        changes = [self.replace, self.annotate, self.add_activity, self.adjust_goal, self.withhold]
        if sum(change is not None for change in changes) != 1:
            raise ValueError(
                "a variant makes exactly one of: replace, annotate, add_activity, adjust_goal, "
                "withhold"
            )
        return self


class VariantsFile(Strict):
    version: str
    changelog: list[str] = Field(min_length=1)
    variants: list[Variant]


@dataclass(frozen=True, slots=True)
class Catalog:
    info: CatalogInfo
    modules: tuple[Module, ...]
    variants: tuple[Variant, ...]
    #: The urgent findings (``profiles/urgent.yaml``): what a plan carries besides its modules.
    urgent: tuple[UrgentRule, ...] = ()

    @property
    def base(self) -> str:
        return str(self.info.canonical_base).rstrip("/")

    def module_url(self, module: Module) -> str:
        return f"{self.base}/PlanDefinition/{module.id}"

    def activity_code(self, activity_id: str) -> Code:
        """Activities are coded in the catalog's own code system, one code per activity."""
        return Code(system=f"{self.base}/CodeSystem/activity", code=activity_id)
