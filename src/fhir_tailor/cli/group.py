"""The ``fhir-tailor`` group and the options every command shares (definitions, as-of date,
logging, terminology server).

The shared options are accepted before the command (``fhir-tailor --as-of D sync``) and after
it (``fhir-tailor sync --as-of D``), as users write both. A value given after the command wins
over one given before it, and either over the environment. So nothing can be settled when the
group runs, before the command's own options are parsed: :func:`pass_settings` settles them
when the command runs.
"""

from __future__ import annotations

import functools
import gc
import textwrap
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .. import __version__
from ..definitions import bundled_path, load_definitions
from ..errors import FhirTailorError
from ..logs import LEVELS, configure
from .connect import expander
from .exits import fail
from .options import apply, terminology_options
from .settings import Settings


class SharedOption(click.Option):
    """An option of every command, also accepted before the command (see the module doc)."""


class TailorCommand(click.Command):
    """A command whose help describes its own options and names the shared ones, which
    ``fhir-tailor --help`` describes (repeated in full, they would bury the command's own)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        own: list[tuple[str, str]] = []
        shared: list[str] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if isinstance(param, SharedOption):
                shared.append("/".join(param.opts))
            elif record is not None:
                own.append(record)
        with formatter.section("Options"):
            formatter.write_dl(own)
        if shared:
            with formatter.section(
                "Shared options (before or after the command; fhir-tailor --help)"
            ):
                width = max(formatter.width - formatter.current_indent, 40)
                lines = textwrap.wrap(", ".join(shared), width, break_on_hyphens=False)
                formatter.write_text("\b\n" + "\n".join(lines))  # \b: click keeps the lines


def command(name: str | None = None) -> Callable[[Callable[..., Any]], click.Command]:
    """``click.command`` for a command taking the shared options (with :func:`pass_settings`)."""
    return click.command(name, cls=TailorCommand)


def shared_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of the group, given to ``func`` as :class:`SharedOption`\\ s."""
    return apply(
        func,
        [
            click.option(
                "--profiles",
                "--catalog",
                "profiles_dir",
                cls=SharedOption,
                type=click.Path(file_okay=False, path_type=Path),
                envvar="FHIR_TAILOR_PROFILES",
                help="Definitions folder (mappings, segments, catalog). "
                "Default: the bundled profiles/.",
            ),
            click.option(
                "--as-of",
                cls=SharedOption,
                type=click.DateTime(formats=["%Y-%m-%d"]),
                envvar="FHIR_TAILOR_AS_OF",
                help="Date the profile is computed for (ages, recency, gaps). Default: today.",
            ),
            click.option(
                "-v",
                "--verbose",
                cls=SharedOption,
                count=True,
                help="More log output on stderr (-v info, -vv debug).",
            ),
            click.option(
                "-q",
                "--quiet",
                cls=SharedOption,
                is_flag=True,
                help="Errors only on stderr: no progress, no summary, no warnings.",
            ),
            click.option(
                "--log-level",
                cls=SharedOption,
                type=click.Choice(LEVELS, case_sensitive=False),
                envvar="FHIR_TAILOR_LOG_LEVEL",
                help="Log level on stderr (overrides -v and -q). Default: WARNING.",
            ),
            click.option(
                "--log-format",
                cls=SharedOption,
                type=click.Choice(["text", "json"]),
                default="text",
                envvar="FHIR_TAILOR_LOG_FORMAT",
                show_default=True,
                help="Logs on stderr as text, or as one JSON object per line "
                "(time, level, logger, ...).",
            ),
            functools.partial(terminology_options, cls=SharedOption),
        ],
    )


@click.group()
@click.version_option(__version__, prog_name="fhir-tailor")
@shared_options
def main(**_shared: Any) -> None:
    """Standardized, personalized care plans from FHIR R4 data.

    Every option but --version is accepted after the command too, where it wins."""


def pass_settings(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give the command the shared options and call ``func`` with the :class:`Settings` they
    settle to, in place of the options themselves (as ``click.pass_obj`` would pass ``obj``)."""

    @functools.wraps(func)
    def with_settings(*args: Any, **params: Any) -> Any:
        ctx = click.get_current_context()
        shared = [p.name for p in ctx.command.params if isinstance(p, SharedOption) and p.name]
        chosen = {name: _chosen(ctx, name, params.pop(name)) for name in shared}
        return func(_settle(chosen), *args, **params)

    return shared_options(with_settings)


def _chosen(ctx: click.Context, name: str, value: Any) -> Any:
    """The command's value of a shared option when given on its command line, else the group's
    (from its command line, the environment or the default)."""
    root = ctx.find_root()
    if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE or name not in root.params:
        return value
    return root.params[name]


def _settle(params: dict[str, Any]) -> Settings:
    """Logging set up, definitions loaded (a failure stops the command, exit 3)."""
    quiet: bool = params["quiet"]
    level: str | None = params["log_level"]
    verbosity = ("ERROR",) if quiet else ("WARNING", "INFO", "DEBUG")
    configure(
        level.upper() if level else verbosity[min(params["verbose"], len(verbosity) - 1)],
        params["log_format"],
        quiet=quiet,
    )
    try:
        definitions = load_definitions(
            params["profiles_dir"] or bundled_path("profiles"), expand=expander(params)
        )
    except FhirTailorError as exc:
        fail(str(exc))
    as_of: datetime | None = params["as_of"]
    _spare_the_garbage_collector()
    return Settings(
        definitions,
        as_of.date() if as_of else date.today(),
        as_of_given=as_of is not None,
        quiet=quiet,
    )


def _spare_the_garbage_collector() -> None:
    """Fewer cyclic-GC passes for a command's run (a process setting: the CLI's, not the API's).

    Parsed FHIR JSON is trees of dicts and lists without cycles, yet each container allocated
    counts towards the collector's next pass, which walks every object still alive: a population
    run parses millions. Collecting the young generation every 50,000 allocations instead of
    700 takes about 7% off a population run.
    """
    gc.set_threshold(50_000, 20, 100)
