"""What the command line tells its user: every environment variable in --help and the README,
--quiet, and progress with a total on a terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from fhir_tailor.cli import main

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "fhir_tailor"


def commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of every command under ``group``, the group itself first."""
    found = [path]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def envvars_in_help() -> dict[str, tuple[str, ...]]:
    """Each environment variable an option reads, with the command whose --help shows it."""
    shown: dict[str, tuple[str, ...]] = {}
    for path in commands(main):
        text = " ".join(CliRunner().invoke(main, [*path, "--help"]).stdout.split())
        for name in re.findall(r"env var: (FHIR_TAILOR_[A-Z_]+)", text):
            shown.setdefault(name, path)
    return shown


def envvars_read() -> set[str]:
    """Each environment variable the command tree's options read."""
    names: set[str] = set()
    pending: list[click.Command] = [main]
    while pending:
        command = pending.pop()
        names |= {p.envvar for p in command.params if isinstance(p.envvar, str)}
        if isinstance(command, click.Group):
            pending += command.commands.values()
    return names


def test_every_environment_variable_is_shown_in_help_and_in_the_readme() -> None:
    in_source = {
        name
        for path in SRC.rglob("*.py")
        for name in re.findall(r"FHIR_TAILOR_[A-Z][A-Z_]*", path.read_text(encoding="utf-8"))
    }
    read = envvars_read()
    assert in_source <= read, "read outside the options, so --help cannot show them"
    assert set(envvars_in_help()) == read
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert sorted(name for name in read if name not in readme) == []


def test_quiet_leaves_stderr_to_errors() -> None:
    result = CliRunner().invoke(main, ["sync", "--quiet"])
    assert result.exit_code == 0 and result.stdout and result.stderr == ""
    result = CliRunner().invoke(
        main, ["-q", "sync", "--server", "http://127.0.0.1:9/fhir", "--all", "--retry-budget", "0"]
    )
    assert result.exit_code == 3 and result.stderr.startswith("error: cannot use server")


def run_on_a_terminal(*args: str) -> tuple[int, str]:
    """Run fhir-tailor with stderr on a pseudo-terminal; its exit code and what it showed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", "from fhir_tailor.cli import main; main()", *args],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "COLUMNS": "120"},
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return process.wait(timeout=60), shown.decode(errors="replace")


def test_progress_on_a_terminal_shows_done_out_of_the_total() -> None:
    patients = ("--patient", "ft-01", "--patient", "ft-02", "--patient", "ft-03")
    code, shown = run_on_a_terminal("sync", "--out", "-", *patients)
    assert code == 0, shown
    assert "patients  [" in shown and "3/3" in shown and "100%" in shown
    code, shown = run_on_a_terminal("sync", "--out", "-", "--quiet", *patients)
    assert code == 0 and shown == ""
