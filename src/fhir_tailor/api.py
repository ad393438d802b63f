"""The public API for embedding fhir-tailor in other Python programs (a SMART app, a notebook).

Each function is one step of the pipeline with the bookkeeping done for you: the bundled
definitions are loaded once and used unless you pass your own, ``as_of`` defaults to today, and
raw FHIR JSON (a Bundle, or a list of resources) is grouped into a patient record the same
tolerant way the CLI reads files::

    import fhir_tailor

    profile = fhir_tailor.build_profile(bundle)          # dict: Bundle or list of resources
    plan = fhir_tailor.plan_for(profile)                  # None when no care module applies
    if plan is not None:
        resources = fhir_tailor.to_fhir(plan)             # CarePlan, Goals, referrals, Provenance
        careplan = resources.careplan.resource            # plain FHIR JSON (a dict)

To write plans back, use :class:`FhirClient` with :class:`ServerSink` (idempotent, atomic per
patient, never over a clinician's edits), or the ``fhir-tailor sync`` command.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from functools import cache
from os import PathLike
from pathlib import Path
from typing import Any

from . import plan as plan_module
from . import profile as profile_module
from . import resources as resources_module
from .definitions import Definitions, bundled_path, load_definitions
from .errors import FhirTailorError
from .plan import Plan
from .profile_model import Profile
from .record import IssueHandler, Located, PatientRecord, ReadIssue, group_by_patient
from .resources import PlanResources
from .segments import segment


class NotOnePatientError(FhirTailorError):
    """The resources given to :func:`build_profile` hold no patient, or several."""


def definitions(profiles: str | PathLike[str] | None = None) -> Definitions:
    """The mapping, segment and catalog definitions in ``profiles`` (default: the bundled ones),
    a folder named by a ``Path`` or a plain string, as callers write either.

    The bundled definitions are loaded once per process; a bad file raises DefinitionError
    naming it, its line and the field.
    """
    return _bundled() if profiles is None else load_definitions(Path(profiles))


@cache
def _bundled() -> Definitions:
    return load_definitions(bundled_path("profiles"))


def patient_record(
    resources: dict[str, Any] | Iterable[object], on_issue: IssueHandler | None = None
) -> PatientRecord:
    """One patient's record from a Bundle or a list of resources holding exactly one Patient.

    Resources that cannot be used (no subject, wrong types, another patient) are passed to
    ``on_issue`` (a :class:`ReadIssue` names the resource and the field) and left out.
    """
    report = on_issue or (lambda _issue: None)
    if isinstance(resources, dict):
        entries = resources.get("entry") if resources.get("resourceType") == "Bundle" else None
        if not isinstance(entries, list):
            raise TypeError("give a FHIR Bundle (dict) or a list of resources")
        items = [e.get("resource") if isinstance(e, dict) else e for e in entries]
    else:
        items = list(resources)
    located = (Located(item, f"resource {n}") for n, item in enumerate(items))
    records = list(group_by_patient(located, report))
    if len(records) != 1:
        raise NotOnePatientError(f"expected resources of one patient, found {len(records)}")
    return records[0]


def build_profile(
    resources: dict[str, Any] | Iterable[object] | PatientRecord,
    *,
    as_of: date | None = None,
    definitions: Definitions | None = None,
    on_issue: IssueHandler | None = None,
) -> Profile:
    """The four-dimension profile of one patient, as of ``as_of`` (default: today).

    ``resources`` is a Bundle, a list of resources or a :class:`PatientRecord`. Every finding
    keeps references to the resources it came from. Data problems (an unreadable value, a
    contradiction) go to ``on_issue`` and never stop the profile.
    """
    found = definitions or _bundled()
    record = (
        resources if isinstance(resources, PatientRecord) else patient_record(resources, on_issue)
    )

    def data_issue(reference: str, problem: str) -> None:
        if on_issue is not None:
            on_issue(ReadIssue(reference, problem))

    return profile_module.build_profile(record, found.rules, as_of or date.today(), data_issue)


def plan_for(profile: Profile, *, definitions: Definitions | None = None) -> Plan | None:
    """The personalized plan for a profile: the catalog modules that apply, adapted to the
    person, each variation with its reason; ``None`` when no module applies."""
    found = definitions or _bundled()
    return plan_module.plan_for(profile, segment(profile, found.segments), found.catalog)


def to_fhir(plan: Plan, *, recorded: datetime | None = None) -> PlanResources:
    """The plan as validated FHIR resources (US Core CarePlan and Goals, SDOH referrals, a
    Provenance recorded at ``recorded``, default now); each ``.resource`` is plain JSON."""
    return resources_module.to_fhir(plan, recorded or datetime.now(UTC))
