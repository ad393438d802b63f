"""Mistakes a new user makes on the command line get a usage error (exit 2) naming what is
wrong, before anything is read or written; no traceback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path

BUNDLES = str(bundled_path("fixtures") / "bundles")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--as-of", "2026-11-15", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.stdout, result.stderr


# -- --report and --out (defect 8) -------------------------------------------------------------


def test_report_into_a_folder_that_does_not_exist_is_written(tmp_path: Path) -> None:
    """The README's production example writes to /var/log/fhir-tailor/run-DATE.json."""
    report = tmp_path / "log" / "fhir-tailor" / "run.json"
    code, _, err = invoke(
        "sync", "--input", BUNDLES, "--out", str(tmp_path / "out"), "--report", str(report)
    )
    assert code == 0, err
    assert (
        json.loads(report.read_text())["patients_total"]
        == len(list((tmp_path / "out").glob("*.json"))) + 3
    )


def test_a_report_that_cannot_be_written_stops_the_command_before_any_plan(tmp_path: Path) -> None:
    out = tmp_path / "out"
    blocker = tmp_path / "file"
    blocker.write_text("")
    report = blocker / "run.json"  # its folder cannot be made: a file is in the way
    code, _, err = invoke("sync", "--input", BUNDLES, "--out", str(out), "--report", str(report))
    assert code == 2 and f"cannot make the folder {blocker}" in err
    assert not out.exists() or not list(out.iterdir())


def test_out_naming_a_file_is_a_usage_error(tmp_path: Path) -> None:
    existing = tmp_path / "plans.json"
    existing.write_text("keep me")
    code, _, err = invoke("sync", "--input", BUNDLES, "--out", str(existing))
    assert code == 2 and f"{existing} is a file" in err and "Traceback" not in err
    assert existing.read_text() == "keep me"


def test_population_report_into_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "population.json"
    code, _, err = invoke("report", "--input", BUNDLES, "--format", "json", "--out", str(out))
    assert code == 0, err
    assert json.loads(out.read_text())


# -- --server, --timeout (defect 10) -----------------------------------------------------------


@pytest.mark.parametrize("url", ["127.0.0.1:8080/fhir", "localhost:8080/fhir", "ftp://h/fhir"])
def test_a_server_url_without_http_scheme_is_a_usage_error(url: str) -> None:
    code, _, err = invoke("sync", "--server", url, "--all")
    assert code == 2 and repr(url) in err and "http://127.0.0.1:8080/fhir" in err


def test_a_terminology_url_without_scheme_is_a_usage_error() -> None:
    code, _, err = invoke("sync", "--terminology", "tx.example.org/fhir")
    assert code == 2 and "'tx.example.org/fhir' is not an http(s) URL" in err


@pytest.mark.parametrize("timeout", ["0", "-1"])
def test_the_timeout_must_be_positive(timeout: str) -> None:
    code, _, err = invoke(
        "sync", "--server", "http://127.0.0.1:9/fhir", "--all", "--timeout", timeout
    )
    assert code == 2 and "--timeout" in err


class WebSite(BaseHTTPRequestHandler):
    """A web server that is not a FHIR server: a page at /site/metadata, 404 pages elsewhere."""

    PAGE = b"<!DOCTYPE html><html><head><title>Welcome</title></head><body>It works</body></html>"

    def do_GET(self) -> None:
        status = 200 if self.path == "/site/metadata" else 404
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.PAGE)))
        self.end_headers()
        self.wfile.write(self.PAGE)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def website() -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", 0), WebSite)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("path", ["/site", "/no-fhir-here"])
def test_a_web_page_at_the_url_says_to_check_the_base_url(website: str, path: str) -> None:
    base = website + path
    code, _, err = invoke("sync", "--server", base, "--all", "--retry-budget", "0")
    assert code == 3
    assert f"check that {base} is the server's FHIR base URL" in err
    assert "<html" not in err.lower() and "Traceback" not in err
