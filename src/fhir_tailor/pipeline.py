"""The pipeline: source -> patient record -> profile -> segments -> plan -> FHIR resources -> sink.

One patient at a time, so memory stays flat however large the population. A failure for one
patient (bad data we did not foresee, a server error on write) is recorded in the report and
the run goes on with the next patient.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime

from .definitions import Definitions
from .errors import FhirTailorError
from .plan import Plan, plan_for
from .profile import Profile, build_profile
from .record import PatientRecord
from .report import PatientOutcome, RunReport
from .resources import InvalidOutputError, PlanResources, to_fhir
from .segments import SegmentMatch, segment
from .sinks import Sink
from .sources import Source
from .state import RunState

log = logging.getLogger("fhir_tailor.pipeline")


def assess(
    record: PatientRecord, definitions: Definitions, as_of: date, report: RunReport | None = None
) -> tuple[Profile, list[SegmentMatch], Plan | None]:
    """One patient's profile, segments and personalized plan (``None`` if no module applies)."""
    on_issue = report.data_issue if report is not None else None
    profile = build_profile(record, definitions.rules, as_of, on_issue)
    matches = segment(profile, definitions.segments)
    return profile, matches, plan_for(profile, matches, definitions.catalog)


def profile_and_plan(
    record: PatientRecord, definitions: Definitions, as_of: date, report: RunReport | None = None
) -> tuple[Profile, Plan | None]:
    """The profile of one patient and its personalized plan (``None`` if no module applies)."""
    profile, _, plan = assess(record, definitions, as_of, report)
    return profile, plan


def run(
    source: Source,
    sink: Sink,
    definitions: Definitions,
    *,
    as_of: date,
    recorded: datetime,
    report: RunReport,
    progress: Callable[[], None] = lambda: None,
    state: RunState | None = None,
) -> RunReport:
    """Run every patient of ``source`` through the pipeline into ``sink``.

    With a ``state``, patients an earlier attempt of the same run finished are not redone,
    each finished patient is journaled, and a run without failures is marked complete.
    """
    for record in source.records(report.read_issue):
        if state is not None and record.patient_id in state.done:
            report.add(PatientOutcome(f"Patient/{record.patient_id}", "done-earlier"))
        else:
            outcome = _one_patient(record, sink, definitions, as_of, recorded, report)
            report.add(outcome)
            if state is not None and outcome.outcome != "failed":
                state.mark_done(record.patient_id)
        progress()
    if state is not None and not report.failed:
        state.complete()
    report.finish()
    log.info("run finished: %s", report.summary())
    return report


def _one_patient(
    record: PatientRecord,
    sink: Sink,
    definitions: Definitions,
    as_of: date,
    recorded: datetime,
    report: RunReport,
) -> PatientOutcome:
    patient = f"Patient/{record.patient_id}"
    try:
        _, plan = profile_and_plan(record, definitions, as_of, report)
        if plan is None:
            return PatientOutcome(patient, "no-plan")
        resources: PlanResources = to_fhir(plan, recorded)
        return sink.write(plan, resources)
    except InvalidOutputError as exc:
        log.error("BUG: invalid output for %s: %s", patient, exc)
        return PatientOutcome(patient, "failed", f"invalid output (a bug): {exc}")
    except FhirTailorError as exc:
        log.warning("%s failed: %s", patient, exc)
        return PatientOutcome(patient, "failed", str(exc))
    except Exception as exc:  # one unforeseen failure must not abort the whole run
        log.error("%s failed unexpectedly: %s", patient, type(exc).__name__)
        return PatientOutcome(patient, "failed", f"unexpected {type(exc).__name__}: {exc}")
