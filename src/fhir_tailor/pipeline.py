"""The pipeline: source -> patient record -> profile -> segments -> plan -> FHIR resources -> sink.

One patient at a time, so memory stays flat however large the population. A failure for one
patient (bad data we did not foresee, a server error on write) is recorded in the report and
the run goes on with the next patient. A patient the record says has died gets no plan: the
sink is asked to withdraw what an earlier run wrote for them instead
(:mod:`fhir_tailor.withdrawal`), and the outcome is ``skipped-deceased``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from datetime import date, datetime
from functools import partial
from typing import NamedTuple, TypeVar, cast

from .concurrency import done, in_order
from .definitions import Definitions
from .errors import FhirTailorError
from .plan import Plan, plan_for
from .profile import bears_on, build_profile
from .profile_model import Profile
from .record import PatientRecord, relevant_only
from .report import PatientOutcome, RunReport
from .resources import PlanResources, to_fhir
from .segments import SegmentMatch, segment
from .sinks import Sink, concurrent_writer
from .sinks.files import Render, Rendered, Rendering
from .sources import Source
from .state import RunState
from .validation import InvalidOutputError
from .withdrawal import Withdrawal
from .workers import Prepared, worker_pool

log = logging.getLogger("fhir_tailor.pipeline")
T = TypeVar("T")


def assess(
    record: PatientRecord, definitions: Definitions, as_of: date, report: RunReport | None = None
) -> tuple[Profile, list[SegmentMatch], Plan | None]:
    """One patient's profile, segments and personalized plan (``None`` if no module applies).

    The plan names the types the record lacks (:meth:`Plan.decided_without`): every path that
    makes a plan (sync, the SMART page, the CDS Hooks service, the CLI) comes through here, so
    every CarePlan made from such a record says so.
    """
    on_issue = report.data_issue if report is not None else None
    profile = build_profile(record, definitions.rules, as_of, on_issue)
    matches = segment(profile, definitions.segments)
    plan = plan_for(profile, matches, definitions.catalog)
    return profile, matches, plan.decided_without(record.unread_types) if plan else None


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
    concurrency: int = 1,
    requester: str | None = None,
    workers: int = 1,
) -> RunReport:
    """Run every patient of ``source`` through the pipeline into ``sink``.

    With a ``state``, patients an earlier attempt of the same run finished are not redone,
    each finished patient is journaled, and a complete run (no failed patient, no input left
    unread: :attr:`RunReport.failed`) moves the watermark. A record lacking a type the server
    cannot give does not hold it: no later run could read more.
    ``concurrency`` patients are profiled and written at a time (results in source order).
    ``requester`` (``Organization/<id>`` or ``PractitionerRole/<id>``) requests the referrals.
    ``workers`` processes profile, plan and render the patients of a file or Bulk Data input
    (:mod:`fhir_tailor.workers`); output, report and journal are those of one.
    """
    submit = concurrent_writer(sink) if concurrency > 1 else None
    rendering = sink if isinstance(sink, Rendering) else None
    process = partial(
        _process,
        definitions=definitions,
        as_of=as_of,
        recorded=recorded,
        requester=requester,
        render=rendering.renderer() if rendering is not None else None,
    )

    def start(record: PatientRecord) -> Future[_Result]:
        """Profile and plan now (a worker did it already for a :class:`Prepared` record);
        start the write too when the sink takes concurrent writes."""
        patient = f"Patient/{record.patient_id}"
        if state is not None and record.patient_id in state.done:
            return done(PatientOutcome(patient, "done-earlier"))
        prepared: _Result
        if isinstance(record, Prepared):
            prepared = cast(_Result, record.replay(report))
        else:
            prepared = _process(record, report, definitions, as_of, recorded, requester)
        if isinstance(prepared, _Pending) and submit is not None:
            return cast("Future[_Result]", submit(*prepared))
        return done(prepared)

    skip = frozenset(state.done) if state is not None else frozenset()
    # Records grouped from files leave out what cannot change a profile (before workers start,
    # so that they do too): the same plans and report, without parsing again the Observations
    # no rule reads.
    relevant = partial(bears_on, index=definitions.rules.index)
    with relevant_only(relevant), worker_pool(workers, process, skip):
        records = source.records(report.read_issue)
        window = 2 * concurrency if submit is not None else 1
        for record, future in in_order(start, records, window):
            patient_id = record.patient_id
            result = _guarded(f"Patient/{patient_id}", future.result)
            # Sinks that share handles are written here, one patient at a time, in source order;
            # so are the (few) withdrawals for patients who have died.
            if isinstance(result, _Pending):
                outcome = _guarded(f"Patient/{patient_id}", partial(sink.write, *result))
            elif isinstance(result, Rendered) and rendering is not None:
                outcome = _guarded(f"Patient/{patient_id}", partial(rendering.put, result))
            elif isinstance(result, Withdrawal):
                outcome = _guarded(f"Patient/{patient_id}", partial(sink.withdraw, result))
            else:
                assert isinstance(result, PatientOutcome)
                outcome = result
            report.add(outcome)
            if outcome.outcome not in ("failed", "skipped-deceased"):  # decided without them
                report.unread_types(outcome.patient, record.unread_types)
            log.debug(
                "%s: %s",
                outcome.patient,
                outcome.outcome,
                extra={"patient": outcome.patient, "outcome": outcome.outcome},
            )
            if state is not None and outcome.outcome not in ("failed", "done-earlier"):
                state.mark_done(patient_id)
            progress()
    if state is not None and not report.failed:
        state.complete()
    report.finish()
    totals = report.to_dict()
    log.info(
        "run finished: %s",
        report.summary(),
        extra={
            "counts": totals["counts"],
            "patients_total": totals["patients_total"],
            "read_issues": len(report.read_issues),
            "data_issues": len(report.data_issues),
            "duration_seconds": totals["duration_seconds"],
        },
    )
    return report


class _Pending(NamedTuple):
    """A plan ready to be written."""

    plan: Plan
    resources: PlanResources


#: What a patient's processing gives: an outcome already (no plan, failed), a plan to write
#: (or its text, made by a worker process), or a withdrawal.
_Result = PatientOutcome | _Pending | Rendered | Withdrawal


def _process(
    record: PatientRecord,
    report: RunReport,
    definitions: Definitions,
    as_of: date,
    recorded: datetime,
    requester: str | None,
    render: Render | None = None,
) -> _Result:
    """One patient's profile and plan, and with ``render`` its text (made in a worker process);
    a failure is the patient's outcome."""
    patient = f"Patient/{record.patient_id}"
    prepared = _guarded(
        patient, lambda: _prepare(record, definitions, as_of, recorded, report, requester)
    )
    if render is not None and isinstance(prepared, _Pending):
        return _guarded(patient, partial(render, *prepared))
    return prepared


def _prepare(
    record: PatientRecord,
    definitions: Definitions,
    as_of: date,
    recorded: datetime,
    report: RunReport,
    requester: str | None = None,
) -> PatientOutcome | _Pending | Withdrawal:
    profile, plan = profile_and_plan(record, definitions, as_of, report)
    if profile.facts.deceased:
        return Withdrawal(profile.patient, recorded)
    if plan is None:
        return PatientOutcome(f"Patient/{record.patient_id}", "no-plan")
    report.urgent_findings(plan.patient, tuple(finding.rule for finding in plan.urgent))
    plan = plan.requested_by(requester)
    return _Pending(plan, to_fhir(plan, recorded))


def _guarded(patient: str, step: Callable[[], T]) -> T | PatientOutcome:
    """Run one patient's step; any failure becomes that patient's outcome, never the run's."""
    try:
        return step()
    except InvalidOutputError as exc:
        log.error("BUG: invalid output for %s: %s", patient, exc, extra={"patient": patient})
        return PatientOutcome(patient, "failed", f"invalid output (a bug): {exc}")
    except FhirTailorError as exc:
        log.warning("%s failed: %s", patient, exc, extra={"patient": patient})
        return PatientOutcome(patient, "failed", str(exc))
    except Exception as exc:  # one unforeseen failure must not abort the whole run
        log.error(
            "%s failed unexpectedly: %s", patient, type(exc).__name__, extra={"patient": patient}
        )
        return PatientOutcome(patient, "failed", f"unexpected {type(exc).__name__}: {exc}")
