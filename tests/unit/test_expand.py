"""Value set expansion on a respx-mocked terminology server, through the on-disk cache."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner

from fhir_tailor.auth import BearerTokenAuth
from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path
from fhir_tailor.terminology import expand
from fhir_tailor.terminology.expand import (
    ExpansionCache,
    ExpansionError,
    ServerExpander,
    default_cache_dir,
)

BASE = "http://tx.test/r4"
VS = "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.464.1003.103.12.1001"
SNOMED = "http://snomed.info/sct"
#: What a server might quote back in an OperationOutcome: it must never reach a message or log.
DIAGNOSTICS = "no value set matched the request of patient Jane Roe born 1950-01-01"


def concept(code: str, **more: Any) -> dict[str, Any]:
    return {"system": SNOMED, "code": code, "display": f"concept {code}", **more}


def valueset(
    contains: list[dict[str, Any]], *, version: str | None = "20240101", **expansion: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "ValueSet",
        "url": VS,
        "status": "active",
        "expansion": {"timestamp": "2024-05-01T00:00:00Z", "contains": contains, **expansion},
    }
    if version is not None:
        resource["version"] = version
    return resource


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def expander(tmp_path: Path, **kwargs: Any) -> ServerExpander:
    return ServerExpander(BASE, ExpansionCache(tmp_path / "cache"), **kwargs)


def codes(resource: dict[str, Any]) -> list[str]:
    return [entry["code"] for entry in resource["expansion"]["contains"]]


def test_expansion_is_fetched_once_then_read_from_the_cache(
    server: respx.MockRouter, tmp_path: Path
) -> None:
    route = server.get("/ValueSet/$expand").respond(
        json=valueset([concept("44054006"), concept("46635009")])
    )
    first = expander(tmp_path)([f"{VS}|20240101"])
    again = expander(tmp_path)([f"{VS}|20240101"])  # a new run: only the folder is shared

    assert route.call_count == 1
    params = route.calls[0].request.url.params
    assert (params["url"], params["valueSetVersion"]) == (VS, "20240101")
    assert codes(first[0]) == codes(again[0]) == ["44054006", "46635009"]
    assert first == again


def test_the_cache_file_is_named_by_url_and_version_and_is_a_plain_valueset(
    server: respx.MockRouter, tmp_path: Path
) -> None:
    server.get("/ValueSet/$expand").respond(json=valueset([concept("1")]))
    cache = ExpansionCache(tmp_path / "cache")
    ServerExpander(BASE, cache)([f"{VS}|20240101"])

    files = list(cache.folder.iterdir())
    assert files == [cache.path(VS, "20240101")]
    assert cache.path(VS, "20240101") != cache.path(VS, "20240102")
    written = json.loads(files[0].read_text())
    assert (written["resourceType"], written["url"], written["version"]) == (
        "ValueSet",
        VS,
        "20240101",
    )
    source = [e["valueString"] for e in written["extension"] if "expansion-source" in e["url"]]
    assert source == ["ValueSet/$expand on http://tx.test/r4 at 2024-05-01T00:00:00Z"]
    assert cache.get(VS, "20240101") == written


def test_paged_expansions_are_fetched_page_by_page(
    server: respx.MockRouter, tmp_path: Path
) -> None:
    every = [concept(str(n)) for n in range(5)]

    def page(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params.get("offset", "0"))
        count = int(request.url.params.get("count", "2"))
        part = every[offset : offset + count]
        return httpx.Response(200, json=valueset(part, total=5, offset=offset))

    route = server.get("/ValueSet/$expand").mock(side_effect=page)
    [result] = expander(tmp_path)([f"{VS}|20240101"])

    assert codes(result) == ["0", "1", "2", "3", "4"]
    asked = [
        (c.request.url.params.get("offset"), c.request.url.params.get("count")) for c in route.calls
    ]
    assert asked == [(None, None), ("2", "2"), ("4", "2")]
    assert "offset" not in result["expansion"]


def test_a_server_that_stops_paging_short_fails_naming_the_value_set(
    server: respx.MockRouter, tmp_path: Path
) -> None:
    first = valueset([concept("0"), concept("1")], total=5)
    server.get("/ValueSet/$expand").mock(
        side_effect=[
            httpx.Response(200, json=first),
            httpx.Response(200, json=valueset([], total=5)),
        ]
    )
    with pytest.raises(ExpansionError, match=r"stopped paging at 2 of 5") as caught:
        expander(tmp_path)([f"{VS}|20240101"])
    assert VS in str(caught.value)


def test_a_server_ignoring_the_offset_is_refused(server: respx.MockRouter, tmp_path: Path) -> None:
    server.get("/ValueSet/$expand").respond(
        json=valueset([concept("0"), concept("1")], total=4, offset=0)
    )
    with pytest.raises(ExpansionError, match="stopped paging"):
        expander(tmp_path)([f"{VS}|20240101"])


def test_a_server_repeating_its_first_page_is_refused(
    server: respx.MockRouter, tmp_path: Path
) -> None:
    route = server.get("/ValueSet/$expand").respond(
        json=valueset([concept("0"), concept("1")], total=4)
    )
    with pytest.raises(ExpansionError, match="stopped paging at 2 of 4"):
        expander(tmp_path)([f"{VS}|20240101"])
    assert route.call_count == 2


def test_nested_contains_are_flattened_parents_first(
    server: respx.MockRouter, tmp_path: Path
) -> None:
    tree = [
        concept(
            "a", abstract=True, contains=[concept("a1"), concept("a2", contains=[concept("a2x")])]
        ),
        concept("b"),
    ]
    server.get("/ValueSet/$expand").respond(json=valueset(tree, total=5))
    [result] = expander(tmp_path)([f"{VS}|20240101"])

    assert codes(result) == ["a", "a1", "a2", "a2x", "b"]
    assert all("contains" not in entry for entry in result["expansion"]["contains"])
    assert result["expansion"]["contains"][0]["abstract"] is True  # left for the index to judge


def test_the_answer_must_be_the_version_asked_for(server: respx.MockRouter, tmp_path: Path) -> None:
    server.get("/ValueSet/$expand").respond(json=valueset([concept("1")], version="20250101"))
    with pytest.raises(ExpansionError) as caught:
        expander(tmp_path)([f"{VS}|20240101"])
    assert f"{VS}|20240101" in str(caught.value)
    assert "'20250101'" in str(caught.value)
    assert not (tmp_path / "cache").exists()


def test_an_answer_naming_no_version_is_the_version_asked_for(
    server: respx.MockRouter, tmp_path: Path
) -> None:
    """HAPI FHIR answers $expand?valueSetVersion=V with a ValueSet that has no version."""
    route = server.get("/ValueSet/$expand").respond(json=valueset([concept("1")], version=None))
    [first] = expander(tmp_path)([f"{VS}|20240101"])
    [again] = expander(tmp_path)([f"{VS}|20240101"])
    assert route.call_count == 1, "cached under the version asked for"
    assert first["version"] == again["version"] == "20240101"
    source = next(e for e in first["extension"] if e["url"] == expand.EXPANSION_SOURCE)
    assert "named no version" in source["valueString"]


def test_the_answer_must_be_the_value_set_asked_for(
    server: respx.MockRouter, tmp_path: Path
) -> None:
    other = {**valueset([concept("1")]), "url": "http://example.org/ValueSet/other"}
    server.get("/ValueSet/$expand").respond(json=other)
    with pytest.raises(ExpansionError, match="is another value set"):
        expander(tmp_path)([f"{VS}|20240101"])


def test_an_answer_without_expansion_is_refused(server: respx.MockRouter, tmp_path: Path) -> None:
    definition = valueset([])
    del definition["expansion"]
    server.get("/ValueSet/$expand").respond(json=definition)
    with pytest.raises(ExpansionError) as caught:
        expander(tmp_path)([f"{VS}|20240101"])
    assert str(caught.value) == (
        f"value set {VS}|20240101: the terminology server's answer has no expansion"
    )


@pytest.mark.parametrize("status", [404, 422, 200])
def test_an_operation_outcome_names_the_value_set_and_codes_never_diagnostics(
    server: respx.MockRouter,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "not-found", "diagnostics": DIAGNOSTICS},
            {"severity": "warning", "code": "processing", "details": {"text": DIAGNOSTICS}},
        ],
    }
    server.get("/ValueSet/$expand").respond(status, json=outcome)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ExpansionError) as caught:
        expander(tmp_path)([f"{VS}|20240101"])

    message = str(caught.value)
    assert message.startswith(f"value set {VS}|20240101: the terminology server answered")
    assert "(error not-found; warning processing)" in message
    assert (f"HTTP {status}" in message) == (status != 200)
    assert caught.value.__cause__ is None  # the server's error, diagnostics and all, is not chained
    assert "Jane" not in message and "Jane" not in caplog.text


def test_an_unversioned_canonical_is_fetched_every_time_and_cached_under_its_version(
    server: respx.MockRouter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    route = server.get("/ValueSet/$expand").respond(json=valueset([concept("1")]))
    expander(tmp_path)([VS])
    [current] = expander(tmp_path)([VS])
    assert route.call_count == 2
    assert "valueSetVersion" not in route.calls[0].request.url.params
    assert current["version"] == "20240101"
    assert f"name {VS}|20240101 to pin it" in caplog.text

    [pinned] = expander(tmp_path)([f"{VS}|20240101"])  # the version it answered is cached
    assert route.call_count == 2
    assert codes(pinned) == ["1"]


def test_a_damaged_cache_file_is_fetched_again_and_replaced(
    server: respx.MockRouter, tmp_path: Path
) -> None:
    route = server.get("/ValueSet/$expand").respond(json=valueset([concept("1")]))
    cache = ExpansionCache(tmp_path / "cache")
    cache.folder.mkdir()
    cache.path(VS, "20240101").write_text('{"resourceType": "ValueSet", "url": ')
    [result] = ServerExpander(BASE, cache)([f"{VS}|20240101"])
    assert route.call_count == 1 and codes(result) == ["1"]
    assert cache.get(VS, "20240101") == result


def test_the_cache_is_written_by_renaming_a_complete_file(
    server: respx.MockRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.get("/ValueSet/$expand").respond(json=valueset([concept("1")]))
    cache = ExpansionCache(tmp_path / "cache")
    renames: list[tuple[Path, Path, str]] = []
    real_replace = expand.os.replace

    def replace(source: str, target: Path) -> None:
        renames.append((Path(source), Path(target), Path(source).read_text()))
        real_replace(source, target)

    monkeypatch.setattr(expand.os, "replace", replace)
    ServerExpander(BASE, cache)([f"{VS}|20240101"])

    [(source, target, text)] = renames
    assert source.parent == target.parent == cache.folder and source != target
    assert json.loads(text)["expansion"]["contains"][0]["code"] == "1"  # complete before the rename
    assert list(cache.folder.iterdir()) == [target]


def test_a_cache_that_cannot_be_written_leaves_no_partial_file_and_does_not_fail(
    server: respx.MockRouter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.get("/ValueSet/$expand").respond(json=valueset([concept("1")]))
    cache = ExpansionCache(tmp_path / "cache")

    def full_disk(source: str, target: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(expand.os, "replace", full_disk)
    [result] = ServerExpander(BASE, cache)([f"{VS}|20240101"])
    assert codes(result) == ["1"]
    assert list(cache.folder.iterdir()) == []
    assert "No space left on device" in caplog.text


def test_the_token_is_sent_and_never_cached_or_logged(
    server: respx.MockRouter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = "s3cret-terminology-token"
    route = server.get("/ValueSet/$expand").respond(json=valueset([concept("1")]))
    caplog.set_level(logging.DEBUG)
    expander(tmp_path, auth=BearerTokenAuth(token))([f"{VS}|20240101", VS])

    assert [c.request.headers["Authorization"] for c in route.calls] == [f"Bearer {token}"] * 2
    for path in (tmp_path / "cache").iterdir():
        assert token not in path.read_text()
    assert token not in caplog.text


def test_user_info_in_the_server_url_is_not_recorded(
    tmp_path: Path,
) -> None:
    with respx.mock(base_url="http://tx.test/r4") as router:
        router.get("/ValueSet/$expand").respond(json=valueset([concept("1")]))
        cache = ExpansionCache(tmp_path)
        ServerExpander("http://apikey:k3y@tx.test/r4", cache)([f"{VS}|20240101"])
    assert "k3y" not in cache.path(VS, "20240101").read_text()


def test_no_request_when_every_value_set_is_cached(tmp_path: Path) -> None:
    cache = ExpansionCache(tmp_path)
    resource = valueset([concept("1")])
    cache.put(resource)
    with respx.mock(assert_all_mocked=True) as router:  # any request would fail the test
        result = ServerExpander(BASE, cache)([f"{VS}|20240101", f"{VS}|20240101"])
        assert not router.calls
    assert result == [resource]  # one per value set, however often it is named


def test_default_cache_dir_follows_xdg_cache_home(tmp_path: Path) -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == (
        tmp_path / "fhir-tailor" / "valuesets"
    )
    home = Path.home() / ".cache" / "fhir-tailor" / "valuesets"
    assert default_cache_dir({}) == home
    assert default_cache_dir({"XDG_CACHE_HOME": "relative/cache"}) == home  # invalid per XDG


# -- the command line: --terminology expands what the profiles folder ships unexpanded ---------

SHIPPED = "asthma-icd10.json"


@pytest.fixture
def profiles(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of the bundled profiles whose asthma ICD-10-CM value set lost its expansion, and
    that value set as shipped (what the terminology server is made to answer)."""
    folder = tmp_path / "profiles"
    shutil.copytree(bundled_path("profiles"), folder)
    path = folder / "valuesets" / SHIPPED
    shipped = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in shipped.items() if k != "expansion"}))
    return folder, shipped


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_cli_expands_a_value_set_shipped_without_expansion(
    profiles: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, shipped = profiles
    canonical = f"{shipped['url']}|{shipped['version']}"
    cache = tmp_path / "cache"
    _, expected, _ = run_cli("validate-profiles")
    with respx.mock(base_url=BASE) as router:
        route = router.get("/ValueSet/$expand").respond(json=shipped)
        args = ["--profiles", str(folder), "--terminology", BASE, "--terminology-cache", str(cache)]
        code, out, err = run_cli(*args, "validate-profiles")
        assert code == 0, err
        assert out == expected  # the same features as with the expansion shipped
        assert route.call_count == 1
        assert route.calls[0].request.url.params["url"] == shipped["url"]
        code, out, err = run_cli(*args, "validate-profiles")  # the next run reads the cache
        assert (code, out) == (0, expected), err
        assert route.call_count == 1
    assert [p.name for p in cache.iterdir()] == [
        ExpansionCache(cache).path(*canonical.split("|")).name
    ]


def test_cli_terminology_options_come_from_the_environment(
    profiles: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, shipped = profiles
    env = {
        "FHIR_TAILOR_TERMINOLOGY": BASE,
        "FHIR_TAILOR_TERMINOLOGY_TOKEN": "tx-token-from-env",
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
    }
    with respx.mock(base_url=BASE) as router:
        route = router.get("/ValueSet/$expand").respond(json=shipped)
        code, out, err = run_cli("--profiles", str(folder), "validate-profiles", env=env)
    assert code == 0, err
    assert route.calls[0].request.headers["Authorization"] == "Bearer tx-token-from-env"
    assert len(list((tmp_path / "xdg" / "fhir-tailor" / "valuesets").iterdir())) == 1
    assert "tx-token-from-env" not in out + err


def test_cli_without_terminology_names_the_value_set_and_suggests_it(
    profiles: tuple[Path, dict[str, Any]],
) -> None:
    folder, shipped = profiles
    with respx.mock(assert_all_mocked=True) as router:  # and no request is made
        code, _, err = run_cli("--profiles", str(folder), "validate-profiles")
        assert not router.calls
    assert code == 3
    assert f"{shipped['url']}|{shipped['version']}" in err
    assert "--terminology" in err


def test_cli_terminology_failure_names_the_value_set_without_server_text(
    profiles: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, shipped = profiles
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-found", "diagnostics": DIAGNOSTICS}],
    }
    with respx.mock(base_url=BASE) as router:
        router.get("/ValueSet/$expand").respond(404, json=outcome)
        code, _, err = run_cli(
            "--profiles",
            str(folder),
            "--terminology",
            BASE,
            "--terminology-cache",
            str(tmp_path / "cache"),
            "validate-profiles",
        )
    assert code == 3
    assert f"value set {shipped['url']}|{shipped['version']}" in err
    assert "HTTP 404 (error not-found)" in err
    assert "Jane" not in err


def test_cli_refuses_ambiguous_terminology_auth(profiles: tuple[Path, dict[str, Any]]) -> None:
    folder, _ = profiles
    code, _, err = run_cli(
        "--profiles",
        str(folder),
        "--terminology",
        BASE,
        "--terminology-token",
        "t",
        "--terminology-username",
        "u",
        "validate-profiles",
    )
    assert code == 2
    assert "terminology server: give either a bearer token or a username" in err
