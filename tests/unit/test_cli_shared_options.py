"""The options every command shares (--profiles, --as-of, -v, -q, --log-level, --log-format,
--terminology...) work before the command and after it; after it, they win."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner(env=env).invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def profile_as_of(*args: str, env: dict[str, str] | None = None) -> str:
    code, out, err = invoke(*args, env=env)
    assert code == 0, err
    as_of: str = json.loads(out)["as_of"]
    return as_of


PROFILE = ("profile", "--patient", "ft-01", "--json")


@pytest.mark.parametrize(
    "args",
    [
        ("--as-of", "2024-03-01", *PROFILE),
        (*PROFILE, "--as-of", "2024-03-01"),
    ],
    ids=["before", "after"],
)
def test_as_of_is_taken_in_either_place(args: tuple[str, ...]) -> None:
    assert profile_as_of(*args) == "2024-03-01"


def test_the_value_after_the_command_wins_over_the_one_before() -> None:
    assert profile_as_of("--as-of", "2020-01-01", *PROFILE, "--as-of", "2024-03-01") == "2024-03-01"


def test_the_environment_gives_way_to_either_place() -> None:
    env = {"FHIR_TAILOR_AS_OF": "2021-06-30"}
    assert profile_as_of(*PROFILE, env=env) == "2021-06-30"
    assert profile_as_of(*PROFILE, "--as-of", "2024-03-01", env=env) == "2024-03-01"
    assert profile_as_of("--as-of", "2024-03-01", *PROFILE, env=env) == "2024-03-01"


@pytest.mark.parametrize("args", [("-v", "sync"), ("sync", "-v")], ids=["before", "after"])
def test_verbose_in_either_place(args: tuple[str, ...]) -> None:
    code, _, err = invoke(*args)
    assert code == 0, err
    assert "INFO fhir_tailor.pipeline: run finished" in err


def test_log_format_after_the_command() -> None:
    code, _, err = invoke("sync", "--log-format", "json", "--log-level", "info")
    assert code == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("run finished") for line in lines)


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_validate_profiles_reads_the_profiles_named_in_either_place(
    tmp_path: Path, before: bool
) -> None:
    """The README's `fhir-tailor validate-profiles --profiles DIR`: an empty folder is refused
    naming it (so the folder given was the one read), the bundled one passes."""
    for folder, expected in ((tmp_path, 3), (bundled_path("profiles"), 0)):
        given = ["--profiles", str(folder)]
        args = [*given, "validate-profiles"] if before else ["validate-profiles", *given]
        code, out, err = invoke(*args)
        assert code == expected, err
        assert (str(tmp_path) in err) if expected else ("profiles OK" in out)


def test_catalog_subcommands_take_them_too(tmp_path: Path) -> None:
    code, _, err = invoke("catalog", "show", "--profiles", str(tmp_path))
    assert code == 3 and str(tmp_path) in err


def test_each_command_names_the_shared_options_in_its_help() -> None:
    code, out, _ = invoke("sync", "--help")
    assert code == 0
    shared = out.split("Shared options", 1)[1]
    for option in ("--profiles", "--as-of", "--verbose", "--quiet", "--log-level", "--terminology"):
        assert option in shared
