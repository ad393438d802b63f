"""The ``fhir-tailor`` command line: the group of :mod:`.group` with one module per command
group, so each is read on its own.

Exit codes (:mod:`.exits`): 0 every patient succeeded; 1 at least one patient failed (see the
report); 2 usage error; 3 the run could not start (bad definitions, server unreachable or not
R4; or a --patient not in the source, named once, the others done: :mod:`.not_found`); 4 the
run stopped part-way (reading the patient list failed after some patients were done,
or standard output was closed; --state resumes it).
"""

from __future__ import annotations

import click

from .catalog import catalog
from .exits import EXIT_CANNOT_START, EXIT_PARTIAL_FAILURE, EXIT_STOPPED
from .group import main
from .patient import plan, profile
from .population import population_report, segments
from .serve import serve
from .spark import spark_sync_command
from .sync import sync
from .validate import validate_profiles

for _command in (
    sync,
    profile,
    plan,
    segments,
    population_report,
    serve,
    spark_sync_command,
    validate_profiles,
    catalog,
):
    main.add_command(_command)


def _show_envvars(command: click.Command) -> None:
    """Make ``--help`` name the environment variable of every option that reads one, here in
    one place, so an option added later cannot forget it."""
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar:
            param.show_envvar = True
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            _show_envvars(subcommand)


_show_envvars(main)

__all__ = ["EXIT_CANNOT_START", "EXIT_PARTIAL_FAILURE", "EXIT_STOPPED", "main"]
