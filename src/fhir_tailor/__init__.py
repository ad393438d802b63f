"""fhir-tailor: standardized, personalized care plans from FHIR R4 data."""

__version__ = "0.1.0"
