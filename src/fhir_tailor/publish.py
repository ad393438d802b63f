"""The catalog as FHIR definitions: the ValueSets the feature rules name, a PlanDefinition per
module with a CQL Library of its conditions, an ActivityDefinition per activity, and one
PlanDefinition (and Library) for the personalization variants, published idempotently.

CarePlans name the modules they instantiate by ``url|version`` (``instantiatesCanonical``);
publishing makes those canonicals resolve on the server, so a reader of a CarePlan can see the
standard it follows: when the module applies (an ``applicability`` condition), its goals and
its activities.

Each condition is stated in two equivalent languages. Its ``expression`` names a define of a CQL
``Library`` published per module (and one for the variants), listed in ``PlanDefinition.library``
(language ``text/cql-identifier``, :mod:`fhir_tailor.cql`): that is what a clinical reasoning
engine executes (HAPI FHIR's ``$apply``, cqf-fhir-cr, reading the patient's record from its own
server, as the CPG computable PlanDefinition expects), and a library is compiled once where an
inline expression is compiled on every call. The FHIRPath (:mod:`fhir_tailor.fhirpath`) goes
beside it in the ``cqf-alternativeExpression`` extension of that Expression, for an engine given
the record as a Bundle. Both must stay in the one condition: every condition of an action must
hold, so a FHIRPath condition of its own would fail on an engine that cannot evaluate it (HAPI
compiles FHIRPath conditions as CQL, where ``memberOf`` and ``%context`` mean other things).

The FHIRPath conditions test codings with ``memberOf('<value set canonical>')`` (the CQL ones
with ``in System.ValueSet``), so the value sets are published with their expansions
(an engine such as HAPI's ``$apply`` tests membership against ValueSets it holds), and each
PlanDefinition lists the ones its conditions use as ``relatedArtifact`` of type ``depends-on``
(R4 RelatedArtifact, hl7.org/fhir/R4/metadatatypes.html#RelatedArtifact), the FHIR way of
saying which artifacts are needed to evaluate it.

A definition is identified by ``url`` and ``version``. Publishing looks each one up and

- creates it when missing;
- leaves it alone when the stored content is the same (a digest of everything but ``id``,
  ``meta`` and ``text``; numbers compared by value, as servers may rewrite ``7.0`` as ``7``),
  so a re-run writes nothing and no new versions appear;
- updates it, with ``If-Match`` on the version read, when the content differs under the same
  ``url|version``: the module changed without a version bump, which is reported as a warning.

Servers differ in what they let us search: where the CapabilityStatement declares the ``url`` and
``version`` search parameters for the type, each definition is searched for (and created
conditionally on them); otherwise (sekmet declares neither type) the type is listed once and
matched here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

from . import cql
from .catalog import ActivityTemplate, Catalog, GoalTemplate, Module, Variant
from .client import FhirClient
from .conformance import GOAL_CATEGORY, SDOH_CATEGORY
from .definitions import Definitions
from .errors import FhirTailorError
from .fhirdata import Resource
from .fhirpath import LANGUAGE, NOT_DECEASED, Translator
from .mapping import Code
from .resources import GENERATED_TAG, UCUM, numbers_as_floats
from .rules import RuleExpr
from .terminology.valuesets import ValueSet
from .validation import validate

PLAN_DEFINITION_TYPE = "http://terminology.hl7.org/CodeSystem/plan-definition-type"
LIBRARY_TYPE = "http://terminology.hl7.org/CodeSystem/library-type"
#: FHIR Extensions Pack, ``cqf-alternativeExpression`` (trial use, CDS WG; context Expression):
#: "an alternative, equivalent expression in another formal language".
ALTERNATIVE_EXPRESSION = "http://hl7.org/fhir/StructureDefinition/cqf-alternativeExpression"
#: ``Expression.language`` of a condition naming a define of the plan's library.
CQL_IDENTIFIER = "text/cql-identifier"
#: The defines of a module's library: its rule, and that the patient is alive.
APPLIES, ALIVE = "Applies", "Alive"
#: What the applicability expressions are evaluated against (see :mod:`fhir_tailor.fhirpath`).
EVALUATION_CONTEXT = (
    "Evaluated against a collection Bundle of the patient's record (the Patient and its "
    "Conditions, Observations, QuestionnaireResponses, Encounters and MedicationRequests), "
    "with %asOf the date the plan is made for."
)
PERSONALIZATION = "personalization"
#: ``memberOf('<canonical>')`` in a translated condition; the string literal as
#: :mod:`fhir_tailor.fhirpath` writes it (``\\`` and ``\'`` escaped).
_MEMBER_OF = re.compile(r"memberOf\('((?:[^'\\]|\\.)*)'\)")
_ESCAPED = re.compile(r"\\(.)")
#: What a server sets in ``meta`` and a copy published elsewhere must not carry over.
_SERVER_META = ("versionId", "lastUpdated")

Outcome = Literal["created", "unchanged", "updated", "would-create", "would-update", "failed"]


class PublishError(FhirTailorError):
    """The catalog cannot be published as it is: two definitions claim one ``url|version``, or a
    value set has no version."""


@dataclass(frozen=True, slots=True)
class Definition:
    """A definitional resource to publish."""

    resource: Resource

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])

    @property
    def url(self) -> str:
        return str(self.resource["url"])

    @property
    def version(self) -> str:
        return str(self.resource["version"])

    @property
    def canonical(self) -> str:
        return f"{self.url}|{self.version}"

    @property
    def file_name(self) -> str:
        return f"{self.resource_type}-{self.url.rsplit('/', 1)[-1]}-{self.version}.json"


# -- building ----------------------------------------------------------------------------------


def catalog_definitions(definitions: Definitions) -> list[Definition]:
    """The ValueSets the rules name, ActivityDefinitions, then a PlanDefinition per module, then
    the personalization one (what a definition depends on comes before it); each validated with
    the R4B models."""
    catalog = definitions.catalog
    translator = _Translators(Translator(definitions.rules), cql.Translator(definitions.rules))
    valuesets = definitions.rules.index.valuesets()
    titles = {canonical: vs.title for vs in valuesets for canonical in (vs.canonical, vs.url)}
    activities = [
        _activity_definition(catalog, activity, module.version)
        for module in catalog.modules
        for activity in module.activities
    ]
    activities += [
        _activity_definition(catalog, variant.add_activity, catalog.info.version)
        for variant in catalog.variants
        if variant.add_activity is not None
    ]
    libraries = [_module_library(catalog, module, translator) for module in catalog.modules]
    libraries.append(_personalization_library(catalog, translator))
    plans = [_module_plan(catalog, module, translator) for module in catalog.modules]
    plans.append(_personalization_plan(catalog, translator))
    plans = [_with_dependencies(plan, titles) for plan in plans]
    result = _distinct([*(_valueset(v) for v in valuesets), *activities, *libraries, *plans])
    for definition in result:
        validate(definition.resource)
    return result


def _distinct(definitions: list[Definition]) -> list[Definition]:
    """One definition per ``url|version``: an activity shared by modules of one version is
    published once, but two different contents under one canonical are an error."""
    seen: dict[str, Definition] = {}
    for definition in definitions:
        earlier = seen.get(definition.canonical)
        if earlier is None:
            seen[definition.canonical] = definition
        elif digest(earlier.resource) != digest(definition.resource):
            raise PublishError(
                f"two different {definition.resource_type}s would share {definition.canonical}:"
                " give the activities distinct ids or their modules distinct versions"
            )
    return list(seen.values())


#: Status of every published definition: the catalog's content is a draft that awaits local
#: clinical validation before use, and says so where a reader (or a CDS engine) looks first.
AWAITING_VALIDATION = {
    "status": "draft",
    "experimental": True,
    "usage": (
        "Draft content for clinicians to review: not clinically validated; validate locally "
        "before use. Every goal and step names its source in the catalog."
    ),
}


def _valueset(valueset: ValueSet) -> Definition:
    """A ValueSet as shipped (or as the terminology server expanded it), with its expansion:
    without its ``id``, which the server assigns, or the server-owned ``meta.versionId`` and
    ``meta.lastUpdated`` of wherever it came from; tagged as written by fhir-tailor."""
    if valueset.version is None:
        raise PublishError(
            f"value set {valueset.url} has no version: a definition is published, and found "
            "again, by url|version"
        )
    resource = {k: v for k, v in valueset.resource.items() if k != "id"}
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in _SERVER_META}
    tags = [tag for tag in meta.get("tag") or () if tag != GENERATED_TAG]
    resource["meta"] = {**meta, "tag": [*tags, GENERATED_TAG]}
    return Definition(resource)


def _with_dependencies(plan: Definition, titles: dict[str, str]) -> Definition:
    """The plan with a ``depends-on`` related artifact per value set its conditions test with
    ``memberOf``, in first-use order, placed before ``goal`` and ``action`` as R4 orders them.

    Read from the FHIRPath text itself, so the list is exactly what an engine evaluating the
    conditions will look up."""
    used = dict.fromkeys(
        _ESCAPED.sub(r"\1", literal)
        for expression in _conditions(plan.resource.get("action") or [])
        for literal in _MEMBER_OF.findall(expression)
    )
    if not used:
        return plan
    artifacts = [
        {"type": "depends-on", "display": f"Value set {titles[c]}", "resource": c} for c in used
    ]
    resource: Resource = {}
    for key, value in plan.resource.items():
        if key in ("goal", "action") and "relatedArtifact" not in resource:
            resource["relatedArtifact"] = artifacts
        resource[key] = value
    return Definition(resource)


def _conditions(actions: list[Resource]) -> Iterator[str]:
    """The FHIRPath of every condition (the alternative beside the CQL define it names)."""
    for action in actions:
        for condition in action.get("condition") or ():
            for extension in condition["expression"].get("extension") or ():
                if extension["url"] == ALTERNATIVE_EXPRESSION:
                    yield extension["valueExpression"]["expression"]
        yield from _conditions(action.get("action") or [])


def _pascal(identifier: str) -> str:
    """A computable ``name`` (``[A-Z][A-Za-z0-9_]*``) from a kebab-case id."""
    return "".join(part[:1].upper() + part[1:] for part in identifier.split("-"))


def _coding(code: Code) -> Resource:
    return {
        "system": code.system,
        "code": code.code,
        **({"display": code.display} if code.display else {}),
    }


def _activity_url(catalog: Catalog, activity_id: str) -> str:
    return f"{catalog.base}/ActivityDefinition/{activity_id}"


def _activity_definition(catalog: Catalog, activity: ActivityTemplate, version: str) -> Definition:
    code = activity.code or catalog.activity_code(activity.id)
    return Definition(
        {
            "resourceType": "ActivityDefinition",
            "meta": {"tag": [GENERATED_TAG]},
            "url": _activity_url(catalog, activity.id),
            "version": version,
            "name": _pascal(activity.id),
            **AWAITING_VALIDATION,
            "publisher": catalog.info.publisher,
            "description": activity.description,
            "kind": activity.kind,
            "code": {"coding": [_coding(code)]},
        }
    )


@dataclass(frozen=True, slots=True)
class _Translators:
    """A rule's two statements: FHIRPath over a record Bundle, CQL in Patient context."""

    fhirpath: Translator
    cql: cql.Translator


#: Where the CQL defines are evaluated (see :mod:`fhir_tailor.cql`).
CQL_CONTEXT = (
    "The define is evaluated in Patient context, reading the patient's record from the server, "
    "with the parameter %asOf the date the plan is made for; the same test in FHIRPath is in "
    "the cqf-alternativeExpression extension."
)
_NOT_DECEASED_TEXT = (
    "The patient is not recorded as deceased (Patient.deceased[x] absent or false): no plan is "
    "proposed for a patient who has died."
)


def _library_url(catalog: Catalog, name: str) -> str:
    return f"{catalog.base}/Library/{name}"


def _condition(define: str, library: str, description: str, fhirpath: str) -> Resource:
    """An applicability condition naming ``define`` of ``library`` (a ``url|version``), with the
    equivalent FHIRPath as its alternative."""
    return {
        "kind": "applicability",
        "expression": {
            "extension": [
                {
                    "url": ALTERNATIVE_EXPRESSION,
                    "valueExpression": {
                        "description": f"{description} {EVALUATION_CONTEXT}",
                        "language": LANGUAGE,
                        "expression": fhirpath,
                    },
                }
            ],
            "description": f"{description} {CQL_CONTEXT}",
            "name": _define_name(define),
            "language": CQL_IDENTIFIER,
            "expression": define,
            "reference": library,
        },
    }


def _define_name(define: str) -> str:
    """``Expression.name`` (an ``id``: letters, digits, ``-`` and ``.``, up to 64)."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", define)[:64]


def _stated(rule: RuleExpr) -> str:
    stated = json.dumps(rule.model_dump(by_alias=True, exclude_none=True), separators=(",", ":"))
    return f"fhir-tailor rule {stated}."


def _library(
    catalog: Catalog, name: str, version: str, description: str, defines: list[tuple[str, str]]
) -> Definition:
    """A logic Library holding ``defines`` as CQL text, with its one parameter, ``%asOf``."""
    text = cql.library(name, version, defines)
    return Definition(
        {
            "resourceType": "Library",
            "meta": {"tag": [GENERATED_TAG]},
            "url": _library_url(catalog, name),
            "version": version,
            "name": name,
            **AWAITING_VALIDATION,
            "type": {"coding": [{"system": LIBRARY_TYPE, "code": "logic-library"}]},
            "publisher": catalog.info.publisher,
            "description": description,
            "parameter": [{"name": cql.AS_OF, "use": "in", "min": 1, "max": "1", "type": "date"}],
            "content": [
                {"contentType": "text/cql", "data": base64.b64encode(text.encode()).decode()}
            ],
        }
    )


def _module_library(catalog: Catalog, module: Module, translator: _Translators) -> Definition:
    defines = [*translator.cql.defines([(APPLIES, module.applies_when)]), (ALIVE, cql.NOT_DECEASED)]
    description = f"When the module {module.title!r} applies, in CQL."
    return _library(catalog, _pascal(module.id), module.version, description, defines)


def _personalization_library(catalog: Catalog, translator: _Translators) -> Definition:
    defines = translator.cql.defines([(v.id, v.when) for v in catalog.variants])
    description = "When each personalization variant applies, in CQL."
    return _library(catalog, _pascal(PERSONALIZATION), catalog.info.version, description, defines)


def _goal(goal: GoalTemplate) -> Resource:
    target = goal.target
    element: Resource = {"measure": {"coding": [_coding(target.measure)]}}
    if target.value is not None:
        quantity: Resource = {
            "value": target.value,
            "unit": target.unit,
            "system": UCUM,
            "code": target.unit,
        }
        if target.comparator:
            quantity["comparator"] = target.comparator
        element["detailQuantity"] = quantity
    elif target.answer is not None:
        element["detailCodeableConcept"] = {"coding": [_coding(target.answer)]}
    else:
        # R4 PlanDefinition.goal.target.detail[x] has no string: the text goes in a concept
        element["detailCodeableConcept"] = {"text": target.text}
    if target.due_in_days:
        element["due"] = {"value": target.due_in_days, "unit": "days", "system": UCUM, "code": "d"}
    resource: Resource = {"id": goal.id}
    if goal.category:
        resource["category"] = {"coding": [{"system": GOAL_CATEGORY, "code": goal.category}]}
    resource["description"] = {"text": goal.description}
    if goal.sdoh_category:
        resource["addresses"] = [
            {"coding": [{"system": SDOH_CATEGORY, "code": goal.sdoh_category}]}
        ]
    resource["target"] = [element]
    return resource


def _module_plan(catalog: Catalog, module: Module, translator: _Translators) -> Definition:
    goal_ids = [goal.id for goal in module.goals]
    steps = [
        {
            "id": activity.id,
            "description": activity.description,
            **({"goalId": goal_ids} if goal_ids else {}),
            "definitionCanonical": f"{_activity_url(catalog, activity.id)}|{module.version}",
        }
        for activity in module.activities
    ]
    resource: Resource = {
        "resourceType": "PlanDefinition",
        "meta": {"tag": [GENERATED_TAG]},
        "url": catalog.module_url(module),
        "version": module.version,
        "name": _pascal(module.id),
        "title": module.title,
        "type": {"coding": [{"system": PLAN_DEFINITION_TYPE, "code": "clinical-protocol"}]},
        **AWAITING_VALIDATION,
        "publisher": catalog.info.publisher,
        "description": module.description,
        "library": [f"{_library_url(catalog, _pascal(module.id))}|{module.version}"],
    }
    if module.goals:
        resource["goal"] = [_goal(goal) for goal in module.goals]
    library = f"{_library_url(catalog, _pascal(module.id))}|{module.version}"
    rule = module.applies_when
    resource["action"] = [
        {
            "title": module.title,
            "condition": [
                _condition(APPLIES, library, _stated(rule), translator.fhirpath.expression(rule)),
                _condition(ALIVE, library, _NOT_DECEASED_TEXT, NOT_DECEASED),
            ],
            "action": steps,
        }
    ]
    return Definition(resource)


def _variant_action(catalog: Catalog, variant: Variant, translator: _Translators) -> Resource:
    library = f"{_library_url(catalog, _pascal(PERSONALIZATION))}|{catalog.info.version}"
    fhirpath = translator.fhirpath.expression(variant.when)
    action: Resource = {
        "id": variant.id,
        "title": variant.label,
        "description": f"{variant.label}: {variant.reason}",
        "textEquivalent": _change(variant),
        "condition": [_condition(variant.id, library, _stated(variant.when), fhirpath)],
    }
    if variant.add_activity is not None:
        url = _activity_url(catalog, variant.add_activity.id)
        action["definitionCanonical"] = f"{url}|{catalog.info.version}"
    return action


def _change(variant: Variant) -> str:
    """What the variant does to a plan, in words."""
    if variant.replace is not None:
        change = variant.replace
        kind = f", as a {change.kind}" if change.kind else ""
        return f"Activities tagged {change.tag!r} become: {change.description}{kind}"
    if variant.annotate is not None:
        return f"Activities tagged {variant.annotate.tag!r} add: {variant.annotate.append}"
    if variant.add_activity is not None:
        return f"Adds the activity: {variant.add_activity.description}"
    if variant.withhold is not None:
        held = variant.withhold
        named = [f"activities tagged {t!r}" for t in held.activity_tags]
        named += [f"goals tagged {t!r}" for t in held.goal_tags]
        return (
            f"Withholds {', '.join(named)}: withheld activities stay in the plan marked not to be "
            "done (doNotPerform) and withheld goals are listed in a note, each with the reason"
        )
    assert variant.adjust_goal is not None
    goal = variant.adjust_goal
    target = goal.text or " ".join(p for p in (goal.comparator, f"{goal.value:g}") if p)
    return f"Goal {', '.join(goal.goals)} becomes: {goal.description} (target {target})"


def _personalization_plan(catalog: Catalog, translator: _Translators) -> Definition:
    return Definition(
        {
            "resourceType": "PlanDefinition",
            "meta": {"tag": [GENERATED_TAG]},
            "url": f"{catalog.base}/PlanDefinition/{PERSONALIZATION}",
            "version": catalog.info.version,
            "name": _pascal(PERSONALIZATION),
            "title": f"{catalog.info.title}: personalization variants",
            "type": {"coding": [{"system": PLAN_DEFINITION_TYPE, "code": "eca-rule"}]},
            **AWAITING_VALIDATION,
            "publisher": catalog.info.publisher,
            "description": (
                "Warranted variations of the standard modules, applied in this order: each "
                "applies when its condition holds and is recorded, with its reason and evidence, "
                "on every activity or goal it changes or adds."
            ),
            "library": [
                f"{_library_url(catalog, _pascal(PERSONALIZATION))}|{catalog.info.version}"
            ],
            "action": [_variant_action(catalog, v, translator) for v in catalog.variants],
        }
    )


# -- comparing ---------------------------------------------------------------------------------


def digest(resource: Resource) -> str:
    """A digest of the definitional content: all but ``id``, ``meta`` and ``text``, which the
    server owns or derives; numbers by value."""
    content = {k: v for k, v in resource.items() if k not in ("id", "meta", "text")}
    canonical = json.dumps(numbers_as_floats(content), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- writing -----------------------------------------------------------------------------------


@dataclass(slots=True)
class PublishReport:
    """What happened to each definition, in publishing order, with a detail (the resource, or
    why it failed)."""

    outcomes: list[tuple[Definition, Outcome, str | None]] = field(default_factory=list)

    def add(self, definition: Definition, outcome: Outcome, detail: str | None = None) -> None:
        self.outcomes.append((definition, outcome, detail))

    @property
    def counts(self) -> Counter[str]:
        return Counter(outcome for _, outcome, _ in self.outcomes)

    @property
    def failed(self) -> bool:
        return self.counts["failed"] > 0

    def summary(self) -> str:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.counts.items()))
        return f"catalog publish: {len(self.outcomes)} definitions ({counts or 'none'})"


def write_files(definitions: Sequence[Definition], folder: Path) -> list[Path]:
    """One pretty JSON file per definition, named by type, id and version."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for definition in definitions:
        path = folder / definition.file_name
        path.write_text(json.dumps(definition.resource, indent=2, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


@dataclass(slots=True)
class Publisher:
    """Writes definitions to a server, creating what is missing and updating what changed."""

    client: FhirClient
    dry_run: bool = False
    warn: Callable[[str], None] = print
    _listed: dict[str, dict[str, list[Resource]]] = field(default_factory=dict)

    def publish(self, definitions: Sequence[Definition]) -> PublishReport:
        report = PublishReport()
        for definition in definitions:
            try:
                outcome, detail = self._one(definition)
            except FhirTailorError as exc:
                outcome, detail = "failed", str(exc)
            report.add(definition, outcome, detail)
        return report

    def _one(self, definition: Definition) -> tuple[Outcome, str | None]:
        stored = self._find(definition)
        if len(stored) > 1:
            ids = ", ".join(f"{definition.resource_type}/{r.get('id')}" for r in stored)
            return "failed", f"several resources share {definition.canonical}: {ids}"
        if not stored:
            if self.dry_run:
                return "would-create", None
            created = self.client.create(
                definition.resource, if_none_exist=self._condition(definition)
            )
            return "created", f"{definition.resource_type}/{created.get('id')}"
        current = stored[0]
        reference = f"{definition.resource_type}/{current.get('id')}"
        if digest(current) == digest(definition.resource):
            return "unchanged", reference
        self.warn(
            f"warning: {reference} ({definition.canonical}) differs from the catalog under the "
            "same version; updating it in place. A changed module needs a new version (the "
            "variants: a new catalog version)"
        )
        if self.dry_run:
            return "would-update", reference
        version = (current.get("meta") or {}).get("versionId")
        self.client.update({**definition.resource, "id": current["id"]}, if_match=version)
        return "updated", reference

    def _searchable(self, resource_type: str) -> bool:
        return all(self.client.supports_search(resource_type, p) for p in ("url", "version"))

    def _find(self, definition: Definition) -> list[Resource]:
        rtype = definition.resource_type
        if self._searchable(rtype):
            found = self.client.search(
                rtype, {"url": definition.url, "version": definition.version}
            )
            return [r for r in found if r.get("resourceType") == rtype]
        if rtype not in self._listed:
            self._listed[rtype] = _by_canonical(self.client.search(rtype, count=100), rtype)
        return self._listed[rtype].get(definition.canonical, [])

    def _condition(self, definition: Definition) -> str | None:
        """The ``If-None-Exist`` query, where the server declares both the conditional create
        and the search it needs; elsewhere the search made before creating has to do."""
        rtype = definition.resource_type
        if not (self._searchable(rtype) and self._creates_conditionally(rtype)):
            return None
        return urlencode({"url": definition.url, "version": definition.version})

    def _creates_conditionally(self, resource_type: str) -> bool:
        for rest in self.client.capabilities().get("rest") or ():
            for resource in rest.get("resource") or ():
                if resource.get("type") == resource_type:
                    return resource.get("conditionalCreate") is True
        return False


def _by_canonical(resources: Iterator[Resource], resource_type: str) -> dict[str, list[Resource]]:
    found: dict[str, list[Resource]] = {}
    for resource in resources:
        if resource.get("resourceType") == resource_type:
            key = f"{resource.get('url')}|{resource.get('version')}"
            found.setdefault(key, []).append(resource)
    return found
