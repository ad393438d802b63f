"""Who requests a plan's referrals: an ``Organization/<id>`` or ``PractitionerRole/<id>``.

A referral a community organization acts on needs someone accountable for it: the SDOH
Clinical Care IG's referral workflow starts from a requester (a provider or payer) and its
SDOHCC ServiceRequest (STU 2.3.0) restricts ``requester`` to a RelatedPerson, Device, SDOHCC
PractitionerRole, Practitioner, Patient or Organization. fhir-tailor drafts referrals for a care
organization or a clinician acting in a role, so it takes the two of those that say who answers
for a referral: the Organization, or the PractitionerRole (person *and* organization). A bare
Practitioner says nobody's behalf, and a relative reference is what every server resolves, so
absolute URLs, ``_history`` versions and other types are refused with the reason.

Without a requester the referrals are written without one (the element is optional in US Core
ServiceRequest 7.0.0 and in SDOHCC ServiceRequest); ``--requester`` or ``FHIR_TAILOR_REQUESTER``
names it.
"""

from __future__ import annotations

import re

from .errors import FhirTailorError

#: The resource types a requester may be (see the module docstring for why these two).
REQUESTER_TYPES = ("Organization", "PractitionerRole")
#: The FHIR R4 ``id`` datatype: 1 to 64 of ``A-Z a-z 0-9 - .``.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class RequesterError(FhirTailorError):
    """The requester is not a reference fhir-tailor can write; the message says why."""


def parse_requester(text: str) -> str:
    """``text`` checked as ``Organization/<id>`` or ``PractitionerRole/<id>``, surrounding
    whitespace dropped; a :class:`RequesterError` naming the problem otherwise."""
    value = text.strip()
    expected = " or ".join(f"{rtype}/<id>" for rtype in REQUESTER_TYPES)
    if "://" in value:
        raise RequesterError(f"the requester must be a relative reference ({expected}): {value!r}")
    rtype, slash, rid = value.partition("/")
    if not slash:
        raise RequesterError(f"the requester must name its type and id ({expected}): {value!r}")
    if rtype not in REQUESTER_TYPES:
        raise RequesterError(
            f"the requester must be an Organization or a PractitionerRole, not {rtype!r}: {value!r}"
        )
    if not _FHIR_ID.fullmatch(rid):
        raise RequesterError(
            f"{rid!r} is not a FHIR id (1 to 64 letters, digits, '-' or '.'; no version or "
            f"search): {value!r}"
        )
    return value
