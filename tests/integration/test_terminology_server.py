"""ValueSet/$expand against a real terminology server: HAPI FHIR, which expands a stored
ValueSet's ``compose`` (sekmet has no $expand).

The value set is one of ours, stored without its expansion: what HAPI expands from the compose
must be the codes we ship, and fhir-tailor's expander must take HAPI's answer (which names no
``ValueSet.version``) as the version it asked for, and cache it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import running_server

from fhir_tailor.definitions import bundled_path
from fhir_tailor.terminology.expand import ExpansionCache, ExpansionError, ServerExpander

#: Two code systems (ICD-10-CM and SNOMED CT), concepts listed in the compose.
VALUESET = bundled_path("profiles") / "valuesets" / "osteoporosis-localized.json"


@pytest.fixture(scope="module")
def terminology_server() -> Iterator[str]:
    with running_server("hapi") as url:
        yield url


@pytest.fixture(scope="module")
def shipped(terminology_server: str) -> dict[str, Any]:
    """Our value set as published, and stored on the server with its compose only."""
    resource: dict[str, Any] = json.loads(VALUESET.read_text())
    stored = {k: v for k, v in resource.items() if k != "expansion"}
    httpx.post(
        f"{terminology_server}/ValueSet",
        json=stored,
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    ).raise_for_status()
    return resource


def pairs(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in resource["expansion"]["contains"]}


def test_the_server_expands_our_compose_to_the_codes_we_ship(
    terminology_server: str, shipped: dict[str, Any], tmp_path: Path
) -> None:
    canonical = f"{shipped['url']}|{shipped['version']}"
    expander = ServerExpander(terminology_server, ExpansionCache(tmp_path))
    [expanded] = expander([canonical])
    assert pairs(expanded) == pairs(shipped)
    assert expanded["version"] == shipped["version"]
    # cached under url|version: a second expander (a later run) asks the server nothing
    offline = ServerExpander("http://127.0.0.1:9/unreachable", ExpansionCache(tmp_path))
    assert offline([canonical]) == [expanded]


def test_an_unknown_value_set_is_a_clear_error(terminology_server: str, tmp_path: Path) -> None:
    expander = ServerExpander(terminology_server, ExpansionCache(tmp_path))
    missing = "https://fhir-tailor.dev/fhir/ValueSet/does-not-exist|1.0.0"
    with pytest.raises(ExpansionError, match=r"does-not-exist\|1.0.0.*HTTP 4\d\d"):
        expander([missing])
