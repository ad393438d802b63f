"""fhir-tailor: standardized, personalized care plans from FHIR R4 data.

The public API (see :mod:`fhir_tailor.api` and the README's "Embedding" section) is what this
package exports; everything else may change between versions.
"""

from .api import (
    NotOnePatientError,
    build_profile,
    definitions,
    patient_record,
    plan_for,
    to_fhir,
)
from .client import AsyncFhirClient, FhirClient
from .definitions import Definitions
from .plan import Plan
from .profile_model import Profile
from .record import PatientRecord, ReadIssue
from .resources import PlanResources
from .sinks.server import ServerSink
from .version import __version__

__all__ = [
    "AsyncFhirClient",
    "Definitions",
    "FhirClient",
    "NotOnePatientError",
    "PatientRecord",
    "Plan",
    "PlanResources",
    "Profile",
    "ReadIssue",
    "ServerSink",
    "__version__",
    "build_profile",
    "definitions",
    "patient_record",
    "plan_for",
    "to_fhir",
]
