"""Shared by unit and integration tests."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from fhir_tailor.definitions import bundled_path


@pytest.fixture(autouse=True)
def _restore_fhir_tailor_logging() -> Iterator[None]:
    """Each command line run configures the ``fhir_tailor`` logger for the whole process;
    undo it after every test so one test's ``--log-level`` never hides another's records."""
    logger = logging.getLogger("fhir_tailor")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


@pytest.fixture(scope="session")
def phi() -> set[str]:
    """Every name part and birth date of the fixture patients (what logs must never hold)."""
    found: set[str] = set()
    for path in (bundled_path("fixtures") / "bundles").glob("*.json"):
        for entry in json.loads(path.read_text(encoding="utf-8")).get("entry", []):
            resource = entry.get("resource", {})
            if resource.get("resourceType") != "Patient":
                continue
            for name in resource.get("name", []):
                found.update(name.get("given", []))
                found.update(x for x in (name.get("family"), name.get("text")) if x)
            if resource.get("birthDate"):
                found.add(resource["birthDate"])
    return {value for value in found if len(value) >= 3}
