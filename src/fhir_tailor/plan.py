"""Personalized plans: standard modules chosen for a profile, adapted by warranted variants.

:func:`plan_for` is a pure function of the profile, segments and catalog: the same inputs give
the same plan, byte for byte (modules in id order, activities in module order, variants in
catalog order, references sorted). Every activity carries the reasons it is there (the module's
applicability evidence) and every variation applied to it (variant id, stated reason, and the
findings with their source resources). The plan *addresses* the Conditions behind its modules and
variations, and is *supported by* the Observations of every current finding. A variant that
withholds (a statin in pregnancy, a text reminder a violent partner may read) leaves its
activities in the plan marked withheld and moves its goals to ``withheld_goals``, each with the
variation, so a reader sees what is not to be done and why.

Social needs follow the SDOH Clinical Care IG workflow (screening, assessment or Condition, Goal,
referral): a social-need goal addresses what decided each finding behind it, the Condition, or
the screening Observations where a need was found by screening alone; goals and referrals take
the SDOH domain their evidence names (homelessness, elder abuse), else their template's; and a
referral the patient must not be contacted about makes every referral of the plan so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, Field

from .catalog import (
    ActivityKind,
    ActivityTemplate,
    Catalog,
    GoalCategory,
    GoalTarget,
    Module,
    Variant,
)
from .mapping import Code
from .profile_model import Profile
from .requester import parse_requester
from .rules import Evidence
from .sdoh import SdohCategory
from .segments import SegmentMatch
from .urgent import UrgentFinding, urgent_findings


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EvidenceRef(Model):
    kind: str
    id: str
    label: str
    sources: tuple[str, ...]

    @classmethod
    def of(cls, evidence: Evidence) -> EvidenceRef:
        return cls(
            kind=evidence.kind, id=evidence.id, label=evidence.label, sources=evidence.sources
        )


class Variation(Model):
    variant: str
    label: str
    reason: str
    evidence: tuple[EvidenceRef, ...]


class PlannedModule(Model):
    id: str
    version: str
    title: str
    url: str
    evidence: tuple[EvidenceRef, ...]

    @property
    def canonical(self) -> str:
        return f"{self.url}|{self.version}"


class PlannedGoal(Model):
    key: str
    module: str
    description: str
    #: The description's standard code (``Goal.description.coding``), when the catalog has one.
    code: Code | None = None
    category: GoalCategory | None = None
    sdoh_category: SdohCategory | None = None
    target: GoalTarget
    due_date: date | None
    addresses: tuple[str, ...]
    variations: tuple[Variation, ...] = ()
    tags: tuple[str, ...] = ()
    #: The variants (among ``variations``) that withheld the goal: see ``Plan.withheld_goals``.
    withheld_by: tuple[str, ...] = ()


class PlannedActivity(Model):
    """An activity; ``code`` names it in the catalog, ``standard_code`` in a standard system."""

    key: str
    module: str | None
    kind: ActivityKind
    code: Code
    standard_code: Code | None = None
    sdoh_category: SdohCategory | None = None
    description: str
    tags: tuple[str, ...]
    reasons: tuple[EvidenceRef, ...]
    variations: tuple[Variation, ...] = ()
    #: The performer must not contact the patient about this referral (SDOHCC ServiceRequest
    #: orderDetail contacting-subject-prohibited); contact is arranged through the care team.
    contact_prohibited: bool = False
    #: The variants (among ``variations``) that withheld the activity: it stays in the plan,
    #: marked not to be done (``CarePlan.activity.detail.doNotPerform``), with their reasons.
    withheld_by: tuple[str, ...] = ()

    @property
    def withheld(self) -> bool:
        return bool(self.withheld_by)

    @property
    def is_referral(self) -> bool:
        """A social-care referral: written as its own ServiceRequest, not as a CarePlan detail.
        A withheld one is not sent anywhere: it stays an inline detail marked not to be done."""
        return (
            self.kind == "ServiceRequest" and self.sdoh_category is not None and not self.withheld
        )


class Plan(Model):
    patient: str
    as_of: date
    catalog: str
    catalog_version: str
    segments: tuple[str, ...]
    modules: tuple[PlannedModule, ...]
    goals: tuple[PlannedGoal, ...]
    activities: tuple[PlannedActivity, ...]
    addresses: tuple[str, ...]
    supporting_info: tuple[str, ...]
    #: Who requests the plan's referrals (``Organization/<id>`` or ``PractitionerRole/<id>``),
    #: a setting of the deployment rather than of the profile: see :meth:`requested_by`.
    requester: str | None = None
    #: Goals a variant withheld (unsafe or wrong for the patient), kept to say so and why.
    withheld_goals: tuple[PlannedGoal, ...] = ()
    #: Findings that cannot wait for the plan's review (:mod:`fhir_tailor.urgent`), most
    #: pressing first; each becomes a request of its own. A plan may hold nothing else.
    urgent: tuple[UrgentFinding, ...] = ()
    #: Resource types the patient's record lacks because its source had no way to read them
    #: (:attr:`~fhir_tailor.record.PatientRecord.unread_types`): the plan was decided without
    #: them and says so to whoever reviews it (see :meth:`decided_without`).
    #: Left out of the plan's JSON when empty, so that the JSON and the :meth:`fingerprint` of
    #: a plan from a whole record are what they were before the field existed: no draft written
    #: earlier looks changed.
    unread_types: tuple[str, ...] = Field(default=(), exclude_if=lambda types: not types)

    def fingerprint(self) -> str:
        """A digest of the plan's content; equal plans have equal fingerprints."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def without_activities(self, keys: set[str]) -> Plan:
        """The plan with the activities named by ``keys`` left out, as a clinician decided.

        Unknown keys are refused: a key that matches nothing means the plan changed under the
        person deciding, and silently keeping the activity would approve what they dropped.
        """
        unknown = keys - {activity.key for activity in self.activities}
        if unknown:
            raise ValueError(f"no such activity in the plan: {', '.join(sorted(unknown))}")
        withheld = sorted(a.key for a in self.activities if a.key in keys and a.withheld)
        if withheld:  # a "do not" is not a proposal to decline: it stays with its reason
            raise ValueError(f"withheld activities cannot be dropped: {', '.join(withheld)}")
        kept = tuple(a for a in self.activities if a.key not in keys)
        return self.model_copy(update={"activities": kept})

    def requested_by(self, requester: str | None) -> Plan:
        """The plan with its referrals requested by ``requester`` (checked: an Organization or
        PractitionerRole reference), or by no one named when ``None``.

        It is part of the plan, and so of its fingerprint, so that a draft written without a
        requester is rewritten once one is given.
        """
        checked = parse_requester(requester) if requester is not None else None
        return self.model_copy(update={"requester": checked})

    def decided_without(self, types: tuple[str, ...]) -> Plan:
        """The plan, made from a record lacking ``types`` (resource types its source could not
        read), marked so: its CarePlan then says which in a note and its narrative.

        Part of the fingerprint, so that a draft written without a type is rewritten once the
        type can be read, even if nothing read changes the plan.
        """
        return self.model_copy(update={"unread_types": types}) if types else self


def plan_for(profile: Profile, segments: list[SegmentMatch], catalog: Catalog) -> Plan | None:
    """The personalized plan for a profile, or ``None`` when no module applies and no urgent
    finding holds (an urgent finding alone makes a plan, of the findings alone).

    A patient the record says has died gets no plan, whatever applies
    (:mod:`fhir_tailor.life_state`); callers tell the two apart by ``profile.facts.deceased``.
    """
    if profile.facts.deceased:
        return None
    modules: list[PlannedModule] = []
    goals: list[PlannedGoal] = []
    activities: list[PlannedActivity] = []
    for module in sorted(catalog.modules, key=lambda m: m.id):
        verdict = module.applies_when.evaluate(profile)
        if not verdict.holds:
            continue
        evidence = tuple(EvidenceRef.of(e) for e in verdict.evidence)
        modules.append(
            PlannedModule(
                id=module.id,
                version=module.version,
                title=module.title,
                url=catalog.module_url(module),
                evidence=evidence,
            )
        )
        goals.extend(_goals(module, evidence, profile))
        activities.extend(_activity(module.id, a, catalog, evidence) for a in module.activities)
    urgent = urgent_findings(profile, catalog.urgent)
    if not modules and not urgent:
        return None
    withheld_goals: list[PlannedGoal] = []
    if modules:  # variants adapt modules: an urgent-only plan has none to adapt
        for variant in catalog.variants:
            verdict = variant.when.evaluate(profile)
            if verdict.holds:
                if variant.adjust_goal is not None:
                    goals = _adjust(variant, verdict.evidence, goals)
                elif variant.withhold is not None:
                    goals, activities, withheld = _withhold(
                        variant, verdict.evidence, goals, activities
                    )
                    withheld_goals.extend(withheld)
                else:
                    activities = _apply(variant, verdict.evidence, activities, catalog)
        activities = _social_referrals(activities, profile)
    sources = {s for module in modules for e in module.evidence for s in e.sources}
    for activity in activities:
        for ref in (*activity.reasons, *(e for v in activity.variations for e in v.evidence)):
            sources.update(ref.sources)
    for goal in (*goals, *withheld_goals):
        sources.update(s for v in goal.variations for e in v.evidence for s in e.sources)
    sources.update(s for finding in urgent for s in finding.sources)
    observed = {s for _, f in profile.findings() if not f.stale for s in f.sources}
    return Plan(
        patient=profile.patient,
        as_of=profile.as_of,
        catalog=catalog.info.id,
        catalog_version=catalog.info.version,
        segments=tuple(match.id for match in segments),
        modules=tuple(modules),
        goals=tuple(goals),
        activities=tuple(activities),
        addresses=tuple(sorted(s for s in sources if s.startswith("Condition/"))),
        supporting_info=tuple(
            sorted(s for s in sources | observed if s.startswith("Observation/"))
        ),
        withheld_goals=tuple(withheld_goals),
        urgent=urgent,
    )


def _goals(
    module: Module, evidence: tuple[EvidenceRef, ...], profile: Profile
) -> list[PlannedGoal]:
    """The module's goals. A goal addresses the Conditions behind the module; a social-need goal
    (one with an SDOH category) also the screening Observations that decided a finding with no
    Condition (the profile's finding sources are its Conditions when it has any), as the SDOH
    Clinical Care IG's SDOHCC Goal addresses SDOHCC Conditions or screening Observations."""
    domain = _domain(evidence, profile)
    goals = []
    for goal in module.goals:
        kinds = ("Condition/", "Observation/") if goal.sdoh_category else ("Condition/",)
        goals.append(
            PlannedGoal(
                key=f"{module.id}.{goal.id}",
                module=module.id,
                description=goal.description,
                code=goal.code,
                category=goal.category,
                sdoh_category=(domain or goal.sdoh_category) if goal.sdoh_category else None,
                tags=goal.tags,
                target=goal.target,
                due_date=(
                    profile.as_of + timedelta(days=goal.target.due_in_days)
                    if goal.target.due_in_days
                    else None
                ),
                addresses=tuple(
                    sorted({s for e in evidence for s in e.sources if s.startswith(kinds)})
                ),
            )
        )
    return goals


def _domain(evidence: Iterable[EvidenceRef], profile: Profile) -> SdohCategory | None:
    """The SDOH domain the findings among ``evidence`` name, if they name exactly one."""
    named = {
        finding.sdoh_category
        for e in evidence
        if e.kind == "finding"
        and (finding := profile.finding(e.id)) is not None
        and finding.sdoh_category is not None
    }
    return named.pop() if len(named) == 1 else None


def _social_referrals(activities: list[PlannedActivity], profile: Profile) -> list[PlannedActivity]:
    """Referrals in the SDOH domain of the findings that put them in the plan, and all of them
    marked not to contact the patient when one is: a call about a food referral reaches the same
    phone as one about a safety referral (SDOHCC ServiceRequest, orderDetail
    contacting-subject-prohibited). The mark adds no reason to the other referrals, so a
    community organization receiving one does not learn why."""
    guarded = any(a.contact_prohibited for a in activities if a.is_referral)
    social = []
    for activity in activities:
        if activity.is_referral:
            domain = _domain(activity.reasons, profile)
            activity = activity.model_copy(
                update={
                    "sdoh_category": domain or activity.sdoh_category,
                    "contact_prohibited": guarded,
                }
            )
        social.append(activity)
    return social


def _activity(
    module: str | None,
    template: ActivityTemplate,
    catalog: Catalog,
    reasons: tuple[EvidenceRef, ...],
    variations: tuple[Variation, ...] = (),
) -> PlannedActivity:
    key = f"{module}.{template.id}" if module else template.id
    return PlannedActivity(
        key=key,
        module=module,
        kind=template.kind,
        code=catalog.activity_code(template.id),
        standard_code=template.code,
        sdoh_category=template.sdoh_category,
        description=template.description,
        tags=tuple(template.tags),
        reasons=reasons,
        variations=variations,
        contact_prohibited=template.contact_prohibited,
    )


def _variation(variant: Variant, evidence: tuple[Evidence, ...]) -> Variation:
    return Variation(
        variant=variant.id,
        label=variant.label,
        reason=variant.reason,
        evidence=tuple(EvidenceRef.of(e) for e in evidence),
    )


def _adjust(
    variant: Variant, evidence: tuple[Evidence, ...], goals: list[PlannedGoal]
) -> list[PlannedGoal]:
    change = variant.adjust_goal
    assert change is not None
    variation = _variation(variant, evidence)

    def adjusted(target: GoalTarget) -> GoalTarget:
        # The unit stays: a later variant may set a value on the goal's own measure again.
        if change.text is not None:  # no number to aim at: a stated target, maybe on a new measure
            update = {"measure": change.measure or target.measure, "comparator": None}
            return target.model_copy(
                update={**update, "value": None, "answer": None, "text": change.text}
            )
        return target.model_copy(
            update={
                "comparator": change.comparator or target.comparator,
                "value": change.value,
                "answer": None,
                "text": None,
            }
        )

    return [
        goal.model_copy(
            update={
                "description": change.description,
                "target": adjusted(goal.target),
                "variations": (*goal.variations, variation),
            }
        )
        if goal.key in change.goals
        else goal
        for goal in goals
    ]


def _withhold(
    variant: Variant,
    evidence: tuple[Evidence, ...],
    goals: list[PlannedGoal],
    activities: list[PlannedActivity],
) -> tuple[list[PlannedGoal], list[PlannedActivity], list[PlannedGoal]]:
    """Goals and activities with the variant's withheld tags taken out of what is proposed:
    activities stay, marked withheld; goals move aside. Both record the variation."""
    change = variant.withhold
    assert change is not None
    variation = _variation(variant, evidence)

    def hit(tags: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
        return any(tag in wanted for tag in tags)

    kept, withheld = [], []
    for goal in goals:
        if hit(goal.tags, change.goal_tags):
            withheld.append(
                goal.model_copy(
                    update={
                        "variations": (*goal.variations, variation),
                        "withheld_by": (*goal.withheld_by, variant.id),
                    }
                )
            )
        else:
            kept.append(goal)
    marked = [
        activity.model_copy(
            update={
                "variations": (*activity.variations, variation),
                "withheld_by": (*activity.withheld_by, variant.id),
            }
        )
        if hit(activity.tags, change.activity_tags)
        else activity
        for activity in activities
    ]
    return kept, marked, withheld


def _apply(
    variant: Variant,
    evidence: tuple[Evidence, ...],
    activities: list[PlannedActivity],
    catalog: Catalog,
) -> list[PlannedActivity]:
    variation = _variation(variant, evidence)
    if variant.add_activity is not None:
        added = _activity(None, variant.add_activity, catalog, variation.evidence, (variation,))
        return [*activities, added]
    changed: list[PlannedActivity] = []
    for activity in activities:
        if activity.withheld:  # not to be done: nothing to adapt
            pass
        elif variant.replace is not None and variant.replace.tag in activity.tags:
            change = variant.replace
            activity = activity.model_copy(
                update={
                    "description": change.description.replace(
                        "{description}", activity.description
                    ),
                    "kind": change.kind or activity.kind,
                    "tags": tuple(dict.fromkeys((*activity.tags, *change.add_tags))),
                    "variations": (*activity.variations, variation),
                }
            )
        elif variant.annotate is not None and variant.annotate.tag in activity.tags:
            activity = activity.model_copy(
                update={
                    "description": f"{activity.description.rstrip('.')}. {variant.annotate.append}",
                    "variations": (*activity.variations, variation),
                }
            )
        changed.append(activity)
    return changed
