"""Logs on stderr: text by default, one JSON object per line with ``--log-format json``."""

from __future__ import annotations

import io
import json
import logging

from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path
from fhir_tailor.logs import configure

FIXTURES = bundled_path("fixtures") / "bundles"


def json_lines(stderr: str) -> list[dict[str, object]]:
    """The lines of a run's stderr that are JSON objects."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_json_lines_carry_time_level_logger_message_and_extra_fields() -> None:
    stream = io.StringIO()
    configure("DEBUG", "json", stream)
    logging.getLogger("fhir_tailor.test").info("%d done", 3, extra={"patient": "Patient/p1"})
    entry = json.loads(stream.getvalue())
    assert entry["level"] == "INFO"
    assert entry["logger"] == "fhir_tailor.test"
    assert entry["message"] == "3 done"
    assert entry["patient"] == "Patient/p1"
    assert entry["time"].endswith("+00:00")


def test_an_exception_is_logged_by_type_only() -> None:
    stream = io.StringIO()
    configure("INFO", "json", stream)
    try:
        raise ValueError("birthDate 1960-05-20 of Jane")
    except ValueError:
        logging.getLogger("fhir_tailor.test").exception("failed")
    entry = json.loads(stream.getvalue())
    assert entry["exception"] == "ValueError"
    assert "1960" not in stream.getvalue()


def test_configure_again_replaces_its_handler_and_leaves_others_alone() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure("INFO", "text", first)
    configure("INFO", "text", second)
    logging.getLogger("fhir_tailor.test").warning("once")
    assert first.getvalue() == ""
    assert second.getvalue() == "WARNING fhir_tailor.test: once\n"


def test_third_party_loggers_stay_silent_even_at_debug() -> None:
    stream = io.StringIO()
    configure("DEBUG", "json", stream)
    logging.getLogger("httpx").info("HTTP Request: GET https://h/Patient?name=Jane")
    assert stream.getvalue() == ""


def test_sync_logs_json_with_counts_and_duration_and_a_json_summary() -> None:
    logging_options = ["--log-format", "json", "--log-level", "debug"]
    result = CliRunner().invoke(
        main,
        ["--as-of", "2026-11-15", *logging_options, "sync", "--input", str(FIXTURES), "--out", "-"],
    )
    assert result.exit_code == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    assert entries[-1]["level"] == "NOTICE"
    assert "patients (" in str(entries[-1]["message"])
    finished = next(e for e in entries if str(e["message"]).startswith("run finished"))
    assert finished["level"] == "INFO"
    assert finished["logger"] == "fhir_tailor.pipeline"
    assert isinstance(finished["counts"], dict)
    assert isinstance(finished["duration_seconds"], float)
    assert {"patient", "outcome"} <= {k for e in entries if e["level"] == "DEBUG" for k in e}


def test_text_stays_the_default_and_warning_the_default_level() -> None:
    args = ["--as-of", "2026-11-15", "sync", "--input", str(FIXTURES), "--out", "-"]
    quiet = CliRunner().invoke(main, args)
    assert "run finished" not in quiet.stderr
    verbose = CliRunner().invoke(main, ["--log-level", "INFO", *args])
    assert "INFO fhir_tailor.pipeline: run finished" in verbose.stderr
    assert not json_lines(verbose.stderr)
