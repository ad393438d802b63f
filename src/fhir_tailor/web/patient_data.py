"""Reading the launched patient's record with the user's token.

Kept to one narrow function over :class:`~fhir_tailor.sources.server.ServerSource`, so the app
shares the CLI's reading rules (which searches, which resources are usable) and switching to
another client later touches only this module.
"""

from __future__ import annotations

from ..auth import BearerTokenAuth
from ..client import FhirClient
from ..errors import FhirTailorError
from ..record import PatientRecord, ReadIssue
from ..sources.server import PatientSelection, ServerSource


class RecordUnavailableError(FhirTailorError):
    """The patient in context could not be read."""


def fhir_client(iss: str, access_token: str) -> FhirClient:
    """A FHIR client for ``iss`` that sends the user's bearer token (and nothing else)."""
    return FhirClient(iss, auth=BearerTokenAuth(access_token))


def read_record(client: FhirClient, patient_id: str) -> tuple[PatientRecord, list[ReadIssue]]:
    """The patient's record and the resources that could not be used (shown as a count)."""
    issues: list[ReadIssue] = []
    source = ServerSource(client, PatientSelection(ids=(patient_id,)))
    records = list(source.records(issues.append))
    if not records:
        reasons = "; ".join(issue.reason for issue in issues) or "not found"
        raise RecordUnavailableError(f"Patient/{patient_id} could not be read: {reasons}")
    return records[0], issues
