"""Web apps served by fhir-tailor: the SMART on FHIR app and the CDS Hooks service."""
