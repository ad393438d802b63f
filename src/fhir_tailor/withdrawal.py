"""Withdrawing fhir-tailor's draft plans for a patient the record now says has died.

A deceased patient gets no plan (:mod:`fhir_tailor.life_state`). A draft CarePlan an earlier
run wrote for them while they were alive would stay on their record as a proposal to act on, so
the server sink withdraws it: the CarePlan ``revoked`` (FHIR R4 RequestStatus: ended before its
actions were done, nothing more to be done under it) with its inline activities ``cancelled``
and a note saying why, its proposed Goals ``cancelled`` and its draft referrals ``revoked`` (the
statuses a changed plan already gives what it drops), and a Provenance recording why.

Every CarePlan of ours for the patient is withdrawn, whatever catalog version wrote it: they are
found by patient and known as ours by their identifier, which begins with the patient's id. Only
what is still ours is withdrawn: a CarePlan a clinician approved or edited is theirs to close.

The withdrawn CarePlan loses its plan fingerprint, so should the death turn out to have been
recorded in error, the next run finds no unchanged plan and restores the draft.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .fhirdata import Resource
from .resources import (
    CAREPLAN_ID_SYSTEM,
    GENERATED_TAG,
    PLAN_FINGERPRINT_URL,
    careplan_identifier_prefix,
    software_agent,
    with_digest,
)
from .validation import validate

#: Why the plan was withdrawn, on the CarePlan (a note) and its Provenance (the reason).
REASON = (
    "Withdrawn by fhir-tailor: the patient is recorded as deceased (Patient.deceased[x]); "
    "this draft plan was never approved."
)
#: ``Provenance.activity``: the resources were revised (HL7 v3 DataOperation, in FHIR R4's
#: Provenance activity type value set).
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A patient recorded as deceased (``Patient/<id>``): no plan; our draft CarePlans for them,
    whatever catalog version wrote them, withdrawn as of ``recorded``."""

    patient: str
    recorded: datetime

    def identifier(self, careplan: Resource) -> str | None:
        """The CarePlan's identifier in fhir-tailor's system if it is one of ours for this
        patient (:func:`~fhir_tailor.resources.careplan_identifier`), else ``None``."""
        prefix = careplan_identifier_prefix(self.patient)
        for identifier in careplan.get("identifier") or ():
            if not isinstance(identifier, dict) or identifier.get("system") != CAREPLAN_ID_SYSTEM:
                continue
            value = identifier.get("value")
            if isinstance(value, str) and value.startswith(prefix):
                return value
        return None


def withdrawn_careplan(careplan: Resource, recorded: datetime) -> Resource:
    """A stored draft CarePlan of ours, revoked: inline activities cancelled, a note saying
    why, no plan fingerprint, content digest recomputed."""
    activities = [
        {**activity, "detail": {**activity["detail"], "status": "cancelled"}}
        if isinstance(activity, dict) and isinstance(activity.get("detail"), dict)
        else activity
        for activity in careplan.get("activity") or ()
    ]
    extensions = [
        e
        for e in careplan.get("extension") or ()
        if not (isinstance(e, dict) and e.get("url") == PLAN_FINGERPRINT_URL)
    ]
    note = {"time": recorded.isoformat(), "text": REASON}
    revoked = {**careplan, "status": "revoked", "extension": extensions}
    if activities:
        revoked["activity"] = activities
    revoked["note"] = [*(careplan.get("note") or ()), note]
    return with_digest(revoked)


def withdrawal_provenance(withdrawal: Withdrawal, targets: list[str]) -> Resource:
    """The Provenance of a withdrawal: what was withdrawn, by fhir-tailor, why, and the Patient
    whose ``deceased[x]`` was the reason (validated: a bad one is a bug)."""
    provenance: Resource = {
        "resourceType": "Provenance",
        "meta": {"tag": [GENERATED_TAG]},
        "target": [{"reference": target} for target in targets],
        "recorded": withdrawal.recorded.isoformat(),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "UPDATE"}]},
        "reason": [{"text": REASON}],
        "agent": [software_agent()],
        "entity": [{"role": "source", "what": {"reference": withdrawal.patient}}],
    }
    validate(provenance)
    return provenance
