from __future__ import annotations

import pytest

from fhir_tailor.definitions import Definitions, bundled_path, load_definitions


@pytest.fixture(scope="session")
def definitions() -> Definitions:
    return load_definitions(bundled_path("profiles"))
