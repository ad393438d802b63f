"""The standardized four-dimension patient profile, built from a patient record.

Each resource is matched by code or category (:class:`~fhir_tailor.mapping.CodeIndex`) into
*evidence* for a feature: Conditions, Observations (with their components; panel members take the
panel's date when they have none), answered QuestionnaireResponse items, finished Encounters,
active MedicationRequests for a medicine in a rule's value sets, and the count of active
MedicationRequests. The evidence for a feature is merged into one
:class:`Finding`:

- an active Condition makes the feature present (a clinician put it on the problem list);
- otherwise the most recent Observation with a readable result decides (a newer negative
  screening overrides an older positive one);
- a finding older than its feature's ``current_for_days`` is kept but marked stale, and stale
  findings do not count toward needs or rules;
- a measurement of a feature with ``confirmed_after_days`` counts only once it has persisted
  that long (each rule on its own); until then it is pending and the finding unknown.

A dimension's need level is the highest severity among its current present findings, raised
one level when many findings are present (``escalate_at_count`` in ``profiles/dimensions.yaml``).
Missing standard screenings become data gaps (``profiles/data_gaps.yaml``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from typing import NamedTuple

from pydantic import Field

from . import statement
from .fhirdata import (
    UCUM,
    Resource,
    as_list,
    codings,
    effective_date,
    has_coding,
    is_language_tag,
    numeric_value,
    parse_date,
    quantity_unit,
    reference_id,
    resource_ref,
)
from .life_state import is_deceased
from .mapping import (
    DIMENSIONS,
    SEVERITY_RANK,
    CodeIndex,
    Dimension,
    Feature,
    Match,
    Severity,
    Status,
    Strict,
)
from .profile_model import (
    NEED_RANK,
    Coding,
    DataGap,
    DimensionProfile,
    Finding,
    NeedLevel,
    PatientFacts,
    Profile,
)
from .questionnaire import answered_items
from .record import PatientRecord
from .rules import RuleExpr
from .sdoh import SdohCategory, category_code, decisive_category
from .shape import ADMINISTRATIVE_GENDER, has_shape_problems, shape_problems
from .terminology.units import express

#: Condition clinical statuses that mean "the problem holds now".
ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
#: Verification statuses that mean "this was never true".
VOID_VERIFICATION = frozenset({"refuted", "entered-in-error"})
#: Observation statuses whose result must not be used.
VOID_OBSERVATION = frozenset({"cancelled", "entered-in-error", "preliminary", "registered"})
#: Observation interpretations that make a presence reading absent.
NEGATIVE_INTERPRETATION = frozenset({"N", "NEG", "ND"})


# -- definitions (profiles/dimensions.yaml, profiles/data_gaps.yaml) ---------------------------


class DimensionDefinition(Strict):
    label: str
    description: str
    escalate_at_count: int | None = Field(default=None, ge=2)


class DimensionsFile(Strict):
    version: str
    changelog: list[str] = Field(min_length=1)
    dimensions: dict[Dimension, DimensionDefinition]


class GapDefinition(Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    features: list[str] = Field(min_length=1)
    within_days: int = Field(gt=0)
    when: RuleExpr | None = None
    #: A screening done counts even when its result cannot be read (an answer outside the rule's
    #: table, a free-text result): the gap is about the screening, and the unread result stays
    #: unknown in the profile, reported as a data issue.
    any_result_closes: bool = False
    #: The guideline (year, section) that sets the screening and its interval.
    source: str | None = None


class GapsFile(Strict):
    version: str
    changelog: list[str] = Field(min_length=1)
    gaps: list[GapDefinition]


@dataclass(frozen=True, slots=True)
class ProfileRules:
    """Everything needed to build profiles: the code index, dimension policy and data gaps."""

    index: CodeIndex
    dimensions: dict[Dimension, DimensionDefinition]
    gaps: tuple[GapDefinition, ...]


# -- building --------------------------------------------------------------------------------

DataIssueHandler = Callable[[str, str], None]
"""Called with ``(resource reference, problem naming the field)`` for unreadable data."""


class _Evidence(NamedTuple):
    """One reading of a feature. A named tuple, not a frozen dataclass: a record makes one per
    matched resource, and a frozen dataclass takes four times as long to make."""

    match: Match
    status: Status
    severity: Severity | None
    effective: date | None
    sources: tuple[str, ...]
    from_condition: bool
    value: float | None = None
    unit: str | None = None
    answer: str | None = None
    label: str | None = None
    #: What the value's band means (its ``meaning``), for the finding's statement.
    meaning: str | None = None
    #: The SDOH domain the answer read names, when narrower than its rule's.
    sdoh_category: SdohCategory | None = None
    #: A present reading not yet confirmed by its feature's ``confirmed_after_days``: the
    #: finding it decides is unknown.
    pending: bool = False

    @property
    def category(self) -> SdohCategory | None:
        """The SDOH domain of this evidence: a matched SDOH category code is its own domain,
        else the answer's, else the rule's."""
        code = self.match.code
        return (
            category_code(code.system, code.code) if self.match.rule.match == "category" else None
        ) or (self.sdoh_category or self.match.rule.sdoh_category)


def build_profile(
    record: PatientRecord,
    rules: ProfileRules,
    as_of: date,
    on_issue: DataIssueHandler | None = None,
) -> Profile:
    """Map a patient record to its profile as of a date (age, staleness and gaps depend on it)."""
    report = on_issue or (lambda _ref, _problem: None)
    facts = _facts(record.patient, as_of, partial(report, f"Patient/{record.patient_id}"))
    evidence: defaultdict[str, list[_Evidence]] = defaultdict(list)
    panel_dates = _panel_dates(record.resources)
    for resource in (record.patient, *record.resources):
        for problem in shape_problems(resource):
            report(resource_ref(resource), problem)
    for resource in record.resources:
        for item in _read_resource(resource, rules.index, report, panel_dates, facts):
            evidence[item.match.feature.id].append(item)
    for item in _medication_counts(record.resources, rules.index):
        evidence[item.match.feature.id].append(item)
    ignored = _set_aside_inapplicable(evidence, facts)

    by_dimension: dict[Dimension, list[Finding]] = {name: [] for name in DIMENSIONS}
    for feature_id in sorted(evidence.keys() | ignored.keys()):
        feature, dimension = rules.index.features[feature_id]
        by_dimension[dimension].append(
            _merge(evidence[feature_id], feature, as_of)
            if evidence.get(feature_id)
            else _not_assessed(feature, ignored[feature_id])
        )

    dimensions = {
        name: DimensionProfile(
            need=_need(findings, rules.dimensions.get(name)), findings=tuple(findings)
        )
        for name, findings in by_dimension.items()
    }
    profile = Profile(
        patient=f"Patient/{record.patient_id}",
        as_of=as_of,
        facts=facts,
        data_gaps=(),
        **dimensions,
    )
    gaps = tuple(
        DataGap(id=gap.id, label=gap.label)
        for gap in rules.gaps
        if (gap.when is None or gap.when.evaluate(profile).holds)
        and not _screened(evidence, ignored, gap, as_of)
    )
    return profile.model_copy(update={"data_gaps": gaps})


def _set_aside_inapplicable(
    evidence: dict[str, list[_Evidence]], facts: PatientFacts
) -> dict[str, list[_Evidence]]:
    """Take out of ``evidence`` what rules that do not apply to the patient read (their
    ``applies_to`` excludes the patient's age or sex), and return it by feature."""
    ignored: dict[str, list[_Evidence]] = {}
    for feature_id in list(evidence):
        items = evidence[feature_id]
        kept = [e for e in items if _applies(e.match, facts)]
        if len(kept) == len(items):
            continue
        ignored[feature_id] = [e for e in items if not _applies(e.match, facts)]
        if kept:
            evidence[feature_id] = kept
        else:
            del evidence[feature_id]
    return ignored


def _heard(report: DataIssueHandler, match: Match, facts: PatientFacts) -> DataIssueHandler:
    """``report``, silenced for a rule that does not apply to the patient: its reading is set
    aside, so a problem with it (the adult BMI rule's unit on a child's BMI) is no problem of
    the record's."""
    return report if _applies(match, facts) else _ignore_issue


def _ignore_issue(_ref: str, _problem: str) -> None:
    return None


def _applies(match: Match, facts: PatientFacts) -> bool:
    scope = match.rule.applies_to
    return scope is None or scope.admits(facts.age, facts.gender)


def _not_assessed(feature: Feature, ignored: list[_Evidence]) -> Finding:
    """The finding of a feature whose only evidence was read by rules that do not apply to the
    patient (a child's BMI under the adult cut points): unknown, labelled "not assessed" with
    whom those rules are for, never absent."""
    scopes = sorted(
        {
            f"{e.match.rule.id} applies to {e.match.rule.applies_to.describe()}"
            for e in ignored
            if e.match.rule.applies_to is not None
        }
    )
    newest = max(ignored, key=_day)
    code = newest.match.code
    return Finding(
        feature=feature.id,
        label=f"{feature.label}: not assessed ({'; '.join(scopes)})",
        statement=statement.not_assessed(
            newest.match,
            newest.value,
            newest.answer,
            [e.match.rule.applies_to for e in ignored if e.match.rule.applies_to is not None],
        ),
        status="unknown",
        effective=max((e.effective for e in ignored if e.effective), default=None),
        code=Coding(system=code.system, code=code.code, display=code.display),
        rule=newest.match.rule.id,
        sources=tuple(sorted({s for e in ignored for s in e.sources})),
    )


def _read_resource(
    resource: Resource,
    index: CodeIndex,
    report: DataIssueHandler,
    panel_dates: dict[str, date],
    facts: PatientFacts,
) -> Iterator[_Evidence]:
    rtype = resource.get("resourceType")
    ref = resource_ref(resource)
    if rtype == "Condition":
        yield from _read_condition(resource, ref, index, report)
    elif rtype == "Observation":
        if str(resource.get("status")) in VOID_OBSERVATION:
            return
        matched = _observation_matches(resource, index)
        if not matched:  # most of a record: readings no feature maps; no date to work out
            return
        when = effective_date(resource) or panel_dates.get(str(resource.get("id")))
        for match, element, path in matched:
            yield _read_observation(match, element, when, ref, path, _heard(report, match, facts))
    elif rtype == "QuestionnaireResponse":
        when = parse_date(resource.get("authored"))
        for path, element in answered_items(resource):
            for system, code, _ in codings(element.get("code")):
                for match in index.lookup(system, code, "Observation"):
                    yield _read_observation(
                        match, element, when, ref, path, _heard(report, match, facts)
                    )
    elif rtype == "Encounter":
        yield from _read_encounter(resource, ref, index)
    elif rtype == "MedicationRequest" and index.reads_medicines:
        yield from _read_medication(resource, ref, index, report)
    elif rtype == "ServiceRequest":
        yield from _read_service_request(resource, ref, index)


def _observation_matches(
    observation: Resource, index: CodeIndex
) -> list[tuple[Match, Resource, str]]:
    """What rules match an Observation: each with the element it reads (the Observation, a
    component, or for a category rule the Observation) and that element's path."""
    # A panel that only groups its members (``hasMember``, no value) has nothing to read.
    grouping = bool(observation.get("hasMember")) and not any(
        key.startswith("value") for key in observation
    )
    parts: list[tuple[Resource, str]] = [] if grouping else [(observation, "")]
    for n, component in enumerate(as_list(observation.get("component"))):
        if isinstance(component, dict):
            parts.append((component, f"component[{n}]."))
    matched = [
        (match, element, path)
        for element, path in parts
        for system, code, _ in codings(element.get("code"))
        for match in index.lookup(system, code, "Observation")
    ]
    if "Observation" in index.category_types:
        matched += [
            (match, observation, "")
            for concept in _categories(observation)
            for system, code, _ in codings(concept)
            for match in index.lookup(system, code, "Observation", on="category")
        ]
    return matched


def bears_on(resource: Resource, index: CodeIndex) -> bool:
    """Whether ``resource`` can change a profile built with ``index``, or what building it
    reports. Most of a record cannot: the routine Observations no rule maps (temperature,
    heart rate, a lab no feature reads). A source may leave those out of a record
    (:data:`fhir_tailor.record.RELEVANT`) without parsing them for it, and the profile, its
    data issues and the plan are the same.

    Only Observations are told apart, as :func:`build_profile` reads them: one bears on a
    profile if a rule matches it (:func:`_observation_matches`) and its status does not void
    it, if it is a panel (``hasMember``: its members take its date), or if its shape has a
    problem to report (:func:`~fhir_tailor.shape.shape_problems`). Every other resource bears
    on it: Conditions and MedicationRequests are read whatever their codes (a contradiction
    is reported, every active medicine is counted), and the others are few.
    """
    if resource.get("resourceType") != "Observation" or "hasMember" in resource:
        return True
    if str(resource.get("status")) not in VOID_OBSERVATION and _matched(resource, index):
        return True
    return has_shape_problems(resource)


def _matched(observation: Resource, index: CodeIndex) -> bool:
    """Whether :func:`_observation_matches` finds a rule for an Observation that is no panel:
    asked of every Observation read from files, so it stops at the first."""
    for system, code, _ in codings(observation.get("code")):
        if index.lookup(system, code, "Observation"):
            return True
    for component in as_list(observation.get("component")):
        if isinstance(component, dict):
            for system, code, _ in codings(component.get("code")):
                if index.lookup(system, code, "Observation"):
                    return True
    if "Observation" in index.category_types:
        for concept in _categories(observation):
            for system, code, _ in codings(concept):
                if index.lookup(system, code, "Observation", on="category"):
                    return True
    return False


def _read_condition(
    condition: Resource, ref: str, index: CodeIndex, report: DataIssueHandler
) -> Iterator[_Evidence]:
    contradiction = _condition_contradiction(condition)
    if contradiction is not None:
        report(ref, contradiction)
    if not _condition_holds(condition):
        return
    when = effective_date(condition)
    matches = [
        match
        for system, code, _ in codings(condition.get("code"))
        for match in index.lookup(system, code, "Condition")
    ]
    matches += [
        match
        for concept in _categories(condition)
        for system, code, _ in codings(concept)
        for match in index.lookup(system, code, "Condition", on="category")
    ]
    if not has_coding(condition.get("code")) and not matches:
        report(ref, "field code: missing or without coding; not mapped")
    for match in matches:
        yield _Evidence(match, "present", match.rule.severity, when, (ref,), True)


def _read_encounter(encounter: Resource, ref: str, index: CodeIndex) -> Iterator[_Evidence]:
    """A finished encounter, dated by its end (a discharge), matched by class and type."""
    if encounter.get("status") != "finished":
        return
    period = encounter.get("period")
    period = period if isinstance(period, dict) else {}
    when = parse_date(period.get("end")) or parse_date(period.get("start"))
    concepts: list[object] = [{"coding": [encounter.get("class")]}]
    concepts += as_list(encounter.get("type"))
    for concept in concepts:
        for system, code, _ in codings(concept):
            for match in index.lookup(system, code, "Encounter"):
                yield _Evidence(match, "present", match.rule.severity, when, (ref,), False)


#: ServiceRequest statuses that say a clinician's request stands: in force, or carried out.
STANDING_REQUEST = frozenset({"active", "completed"})


def _read_service_request(request: Resource, ref: str, index: CodeIndex) -> Iterator[_Evidence]:
    """A clinician's request that stands (a referral, say): ``active`` or ``completed``, intent
    not ``proposal``, matched by ``code`` and dated by ``authoredOn``. A draft (fhir-tailor's
    own referrals are drafts until approved), on-hold, revoked or entered-in-error request
    arranges nothing, and is not read."""
    if request.get("status") not in STANDING_REQUEST or request.get("intent") == "proposal":
        return
    when = parse_date(request.get("authoredOn"))
    for system, code, _ in codings(request.get("code")):
        for match in index.lookup(system, code, "ServiceRequest"):
            yield _Evidence(match, "present", match.rule.severity, when, (ref,), False)


def _read_medication(
    request: Resource, ref: str, index: CodeIndex, report: DataIssueHandler
) -> Iterator[_Evidence]:
    """An active request (``status: active``, intent not ``proposal``) for a medicine in the value
    sets of a presence rule, dated by ``authoredOn``.

    The medicine is the request's ``medicationCodeableConcept``, else the code of the Medication
    it carries as a contained resource (a local ``#`` reference reads every contained
    Medication, normally the one). A Medication elsewhere is not in a patient record (records
    hold the resources that name the patient), so such a request is reported, not guessed at.
    """
    if request.get("status") != "active" or request.get("intent") == "proposal":
        return
    concepts = [request.get("medicationCodeableConcept")]
    if concepts == [None]:
        reference = request.get("medicationReference")
        target = reference.get("reference") if isinstance(reference, dict) else None
        if isinstance(target, str) and target.startswith("#"):
            concepts = [
                medication.get("code")
                for medication in as_list(request.get("contained"))
                if isinstance(medication, dict) and medication.get("resourceType") == "Medication"
            ]
        elif reference is not None:
            report(
                ref,
                "field medicationReference: the Medication is not contained in the "
                "request; its medicine is not read",
            )
            return
    when = parse_date(request.get("authoredOn"))
    for concept in concepts:
        for system, code, _ in codings(concept):
            for match in index.lookup(system, code, "MedicationRequest"):
                yield _Evidence(match, "present", match.rule.severity, when, (ref,), False)


def _medication_counts(resources: Iterable[Resource], index: CodeIndex) -> Iterator[_Evidence]:
    """Polypharmacy: the number of distinct active medications, read through value bands.

    Nothing is said when the record holds no MedicationRequest at all (medications unknown).
    """
    requests = [r for r in resources if r.get("resourceType") == "MedicationRequest"]
    if not requests or not index.medication_counts:
        return
    active = [r for r in requests if r.get("status") == "active" and r.get("intent") != "proposal"]
    medicines = {_medicine(r) for r in active}
    when = max((d for r in active if (d := parse_date(r.get("authoredOn")))), default=None)
    sources = tuple(sorted(resource_ref(r) for r in active))
    for match in index.medication_counts:
        assert match.rule.value is not None
        count = float(len(medicines))
        band = next(b for b in match.rule.value.bands if b.min is None or count >= b.min)
        yield _Evidence(
            match,
            band.status,
            band.severity,
            when,
            sources or tuple(sorted(resource_ref(r) for r in requests)),
            False,
            value=count,
            unit=match.rule.value.unit,
            label=band.label,
            meaning=band.meaning or band.label,
        )


def _medicine(request: Resource) -> str:
    """What a MedicationRequest prescribes: its first coded medication, else its reference."""
    for system, code, _ in codings(request.get("medicationCodeableConcept")):
        return f"{system}|{code}"
    medication = reference_id(request.get("medicationReference"), "Medication")
    return f"Medication/{medication}" if medication else resource_ref(request)


def _categories(resource: Resource) -> list[object]:
    return as_list(resource.get("category"))


def _panel_dates(resources: Iterable[Resource]) -> dict[str, date]:
    """Observation id -> the date of a panel listing it in ``hasMember``."""
    dates: dict[str, date] = {}
    for resource in resources:
        # Few Observations are panels: members first, the date only for those that have some.
        members = resource.get("hasMember")
        if not isinstance(members, list) or resource.get("resourceType") != "Observation":
            continue
        when = effective_date(resource)
        if when is None:
            continue
        for member in members:
            member_id = reference_id(member, "Observation")
            if member_id:
                dates.setdefault(member_id, when)
    return dates


def _condition_contradiction(condition: Resource) -> str | None:
    """The problem when a Condition's status codings contradict each other, else ``None``."""
    clinical = {c for _, c, _ in codings(condition.get("clinicalStatus"))}
    verification = {c for _, c, _ in codings(condition.get("verificationStatus"))}
    if clinical & ACTIVE_CLINICAL and clinical - ACTIVE_CLINICAL:
        codes = ", ".join(sorted(clinical))
        return f"field clinicalStatus: codings disagree ({codes}); read as active"
    if clinical & ACTIVE_CLINICAL and verification & VOID_VERIFICATION:
        void = ", ".join(sorted(verification & VOID_VERIFICATION))
        return f"field verificationStatus: {void} while clinicalStatus is active; not counted"
    if clinical & ACTIVE_CLINICAL and _abated(condition):
        return "field abatement[x]: present while clinicalStatus is active (con-4); read as active"
    return None


def _abated(condition: Resource) -> bool:
    """Whether the Condition says when it ended (``abatement[x]``)."""
    return any(key.startswith("abatement") and condition[key] is not None for key in condition)


def _condition_holds(condition: Resource) -> bool:
    clinical = {c for _, c, _ in codings(condition.get("clinicalStatus"))}
    verification = {c for _, c, _ in codings(condition.get("verificationStatus"))}
    if verification & VOID_VERIFICATION:
        return False
    if not clinical:  # no status: active, unless it says when it ended
        return not _abated(condition)
    return bool(clinical & ACTIVE_CLINICAL)


def _read_observation(
    match: Match,
    element: Resource,
    when: date | None,
    ref: str,
    path: str,
    report: DataIssueHandler,
) -> _Evidence:
    rule = match.rule

    def unknown(problem: str) -> _Evidence:
        report(ref, f"field {path}{problem}; {match.feature.id} unknown")
        return _Evidence(match, "unknown", None, when, (ref,), False)

    if rule.value is not None:
        number, unit = numeric_value(element)
        if number is None:
            return unknown("value[x]: missing or not a number")
        quantity = element.get("valueQuantity")
        if isinstance(quantity, dict) and (seen := quantity_unit(quantity)) is not None:
            field, unit = seen
            coded = field == "code" and quantity.get("system") == UCUM
            reading = express(number, unit, rule.value, coded=coded)
            if reading is None:
                wanted = rule.value.unit
                return unknown(f"valueQuantity.{field}: unit {unit!r} cannot be read as {wanted!r}")
            if reading.note:
                report(
                    ref, f"field {path}valueQuantity.{field}: {reading.note} ({match.feature.id})"
                )
            number = reading.value
        band = next(b for b in rule.value.bands if b.min is None or number >= b.min)
        return _Evidence(
            match,
            band.status,
            band.severity,
            when,
            (ref,),
            False,
            value=number,
            unit=rule.value.unit or unit,
            label=band.label,
            meaning=band.meaning or band.label,
        )
    if rule.answers is not None:
        given = [
            (answer, display or code)
            for system, code, display in codings(element.get("valueCodeableConcept"))
            for answer in rule.answers
            if answer.code == code and answer.system in (None, system)
        ]
        if len({(answer.status, answer.severity) for answer, _ in given}) > 1:
            return unknown("valueCodeableConcept: codings give different answers")
        if given:
            answer, text = given[0]
            return _Evidence(
                match,
                answer.status,
                answer.severity,
                when,
                (ref,),
                False,
                answer=answer.display or text,
                sdoh_category=answer.sdoh_category,
            )
        if "valueCodeableConcept" not in element:
            return unknown("valueCodeableConcept: missing")
        return unknown("valueCodeableConcept: no known answer code")
    interpretations = {
        code
        for concept in as_list(element.get("interpretation"))
        for _, code, _ in codings(concept)
    }
    if element.get("valueBoolean") is False or interpretations & NEGATIVE_INTERPRETATION:
        return _Evidence(match, "absent", None, when, (ref,), False)
    return _Evidence(match, "present", rule.severity, when, (ref,), False)


_STATUS_RANK = {"unknown": 0, "absent": 1, "present": 2}
_PENDING_RANK = 1.5


def _merge(items: list[_Evidence], feature: Feature, as_of: date) -> Finding:
    current_for_days = feature.current_for_days
    if feature.confirmed_after_days is not None:
        items = _unconfirmed_pending(items, feature.confirmed_after_days)
    observed = [e for e in items if not e.from_condition]
    latest: list[_Evidence] = []
    stale = False
    if observed:
        # A confirmed feature's rules are criteria of their own: each rule's newest reading
        # decides for it, and the gravest current one for the feature.
        groups: dict[str, list[_Evidence]] = {"": observed}
        if feature.confirmed_after_days is not None:
            groups = defaultdict(list)
            for e in observed:
                groups[e.match.rule.id].append(e)
        tops = [_newest(group, current_for_days, as_of) for group in groups.values()]
        latest, stale = max(tops, key=lambda top: (not top[1], _gravity(top[0][-1])))
    conditions = sorted(
        (e for e in items if e.from_condition), key=lambda e: (SEVERITY_RANK[e.severity], _day(e))
    )
    expired = False
    if feature.conditions_current_for_days is not None:
        # A state that ends by itself (pregnancy): a diagnosis older than it can last no longer
        # decides. An undated one stays current (nothing says it ended); with nothing but
        # expired diagnoses the finding is shown, stale.
        window = timedelta(days=feature.conditions_current_for_days)
        current = [e for e in conditions if e.effective is None or as_of - e.effective <= window]
        expired = bool(conditions) and not current and not observed
        conditions = conditions if expired else current
    if conditions:
        # A diagnosis makes the feature present; a current measurement may grade it higher
        # (an obesity diagnosis with a BMI of 45 is severe obesity).
        top = conditions[-1]
        graver = (
            latest
            and not stale
            and latest[-1].status == "present"
            and SEVERITY_RANK[latest[-1].severity] > SEVERITY_RANK[top.severity]
        )
        decisive = [*conditions, *latest] if graver else conditions
        stale = expired
    else:
        decisive = latest
    top = decisive[-1]
    feature, code = top.match.feature, top.match.code
    if top.pending and feature.confirmed_after_days is not None:
        said = statement.unconfirmed(
            top.match, top.value, top.meaning, feature.confirmed_after_days
        )
    else:
        said = statement.statement(
            top.match, top.status, value=top.value, answer=top.answer, meaning=top.meaning
        )
    return Finding(
        feature=feature.id,
        label=top.label or feature.label,
        statement=said,
        status=top.status,
        severity=top.severity if top.status == "present" else None,
        value=top.value,
        unit=top.unit,
        answer=top.answer,
        effective=max((e.effective for e in decisive if e.effective), default=None),
        stale=stale,
        code=Coding(system=code.system, code=code.code, display=code.display),
        rule=top.match.rule.id,
        sources=tuple(sorted({s for e in decisive for s in e.sources})),
        sdoh_category=decisive_category((e.category, SEVERITY_RANK[e.severity]) for e in decisive)
        if top.status == "present"
        else None,
    )


def _newest(
    observed: list[_Evidence], current_for_days: int | None, as_of: date
) -> tuple[list[_Evidence], bool]:
    """The newest readings (ties: the gravest) and whether they are stale. Unreadable readings
    count only when there is nothing else."""
    known = [e for e in observed if e.status != "unknown" or e.pending] or observed
    newest = max(_day(e) for e in known)
    latest = sorted((e for e in known if _day(e) == newest), key=_gravity)
    top = latest[-1]
    stale = current_for_days is not None and (
        top.effective is None or as_of - top.effective > timedelta(days=current_for_days)
    )
    return [e for e in latest if _gravity(e) == _gravity(top)], stale


def _day(item: _Evidence) -> date:
    return item.effective or date.min


def _gravity(item: _Evidence) -> tuple[float, int]:
    """How grave a reading is, for ties on a day: present, then pending (a present reading not
    yet confirmed), then absent, then unknown; then by severity."""
    rank = _PENDING_RANK if item.pending else _STATUS_RANK[item.status]
    return rank, SEVERITY_RANK[item.severity]


def _unconfirmed_pending(items: list[_Evidence], days: int) -> list[_Evidence]:
    """Present Observation readings that have not persisted for ``days`` made pending.

    Per rule: after the newest absent reading, the earliest present one must be at least
    ``days`` older than the rule's newest reading (which is then present: no absent one follows
    it). Otherwise every present reading of the rule is pending: the finding it decides is
    unknown, labelled so, and never present.
    """
    readings: defaultdict[str, list[_Evidence]] = defaultdict(list)
    for item in items:
        observed = not item.from_condition and item.match.rule.resource == "Observation"
        if observed and item.status != "unknown":
            readings[item.match.rule.id].append(item)
    unconfirmed = {
        rule_id for rule_id, rule_readings in readings.items() if not _persists(rule_readings, days)
    }
    return [
        item._replace(
            status="unknown",
            severity=None,
            pending=True,
            label=f"{item.label or item.match.feature.label}: not confirmed (no earlier result "
            f"in this range at least {days} days before, without a normal one since)",
        )
        if item.match.rule.id in unconfirmed and item.status == "present"
        else item
        for item in items
    ]


def _persists(readings: list[_Evidence], days: int) -> bool:
    absent = [_day(e) for e in readings if e.status == "absent"]
    last_absent = max(absent, default=None)
    present = [
        _day(e)
        for e in readings
        if e.status == "present" and (last_absent is None or _day(e) > last_absent)
    ]
    if not present:
        return False
    try:
        return min(present) + timedelta(days=days) <= max(_day(e) for e in readings)
    except OverflowError:  # a first reading near the end of the calendar cannot have persisted
        return False


def _need(findings: Iterable[Finding], definition: DimensionDefinition | None) -> NeedLevel:
    current = [f for f in findings if f.current_present]
    rank = max((SEVERITY_RANK[f.severity] for f in current), default=0)
    escalate = definition.escalate_at_count if definition else None
    many = sum(1 for f in current if SEVERITY_RANK[f.severity] >= SEVERITY_RANK["moderate"])
    if escalate is not None and many >= escalate:
        rank = min(rank + 1, NEED_RANK["high"])
    levels: tuple[NeedLevel, ...] = ("none", "low", "moderate", "high")
    return levels[rank]


def _screened(
    evidence: dict[str, list[_Evidence]],
    ignored: dict[str, list[_Evidence]],
    gap: GapDefinition,
    as_of: date,
) -> bool:
    """Whether any Observation with a readable result for the gap's features is recent enough.
    For a gap that any result closes, so does a result read by a rule that does not apply to the
    patient (a child's blood pressure, which adult cut points do not classify): the measurement
    was taken."""
    window = timedelta(days=gap.within_days)
    readings = [e for feature in gap.features for e in evidence.get(feature, ())]
    if gap.any_result_closes:
        readings += [e for feature in gap.features for e in ignored.get(feature, ())]
    return any(
        not e.from_condition
        and (e.status != "unknown" or gap.any_result_closes)
        and e.effective is not None
        and as_of - e.effective <= window
        for e in readings
    )


def _facts(patient: Resource, as_of: date, report: Callable[[str], None]) -> PatientFacts:
    birth = parse_date(patient.get("birthDate"))
    age = None
    if birth is not None and birth <= as_of:
        age = as_of.year - birth.year - ((as_of.month, as_of.day) < (birth.month, birth.day))
    gender = patient.get("gender")
    return PatientFacts(
        age=age,
        gender=gender if isinstance(gender, str) and gender in ADMINISTRATIVE_GENDER else None,
        preferred_language=_preferred_language(patient),
        contact_preference=_contact_preference(patient),
        deceased=is_deceased(patient, as_of, report),
    )


def _contact_preference(patient: Resource) -> str | None:
    """The ``system`` (phone, sms, email, ...) of the telecom the patient ranked first.

    Only an explicit ``rank`` counts: the order of a list says nothing about preference.
    """
    ranked = [
        (t["rank"], t["system"])
        for t in as_list(patient.get("telecom"))
        if isinstance(t, dict)
        and isinstance(t.get("rank"), int)
        and isinstance(t.get("system"), str)
    ]
    return min(ranked)[1] if ranked else None


def _preferred_language(patient: Resource) -> str | None:
    """``Patient.communication``: the one marked preferred, else the first listed."""
    entries = [c for c in as_list(patient.get("communication")) if isinstance(c, dict)]
    entries.sort(key=lambda c: c.get("preferred") is not True)
    for entry in entries:
        for _, code, _ in codings(entry.get("language")):
            if is_language_tag(code):
                return code
    return None
