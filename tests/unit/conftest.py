from __future__ import annotations

from datetime import date

import pytest

from fhir_tailor.definitions import Definitions, bundled_path, load_definitions

AS_OF = date(2026, 11, 15)


@pytest.fixture(scope="session")
def definitions() -> Definitions:
    return load_definitions(bundled_path("profiles"))
