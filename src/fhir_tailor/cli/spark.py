"""``fhir-tailor spark-sync``: sync over Bulk NDJSON on Apache Spark, to a folder or a server."""

from __future__ import annotations

import functools
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from ..access import PortableKey, ServerAccess
from ..errors import FhirTailorError
from ..smart import load_signing_key
from .connect import connect
from .exits import fail
from .finish import finish
from .group import command, pass_settings
from .options import (
    DEFAULT_CONCURRENCY,
    recorded_option,
    report_option,
    requester_option,
    server_options,
)
from .settings import Settings

#: --writers' default. With each writer's --concurrency defaulting to a share of sync's, the
#: cluster asks no more of the server than one sync does (2 x 4 = 8 requests in flight).
DEFAULT_WRITERS = 2


@command("spark-sync")
@functools.partial(server_options, concurrency=DEFAULT_CONCURRENCY // DEFAULT_WRITERS)
@click.option(
    "--input",
    "input_url",
    required=True,
    help="Folder of Bulk NDJSON files: a path, or a URL Spark reads (s3a://, abfss://, gs://).",
)
@click.option(
    "--out",
    help="Output folder every executor can write (local, shared or mounted); or give --server.",
)
@click.option(
    "--writers",
    type=click.IntRange(1),
    help="With --server: partitions writing at once, each with --concurrency connections "
    "(at most WRITERS x CONCURRENCY requests in flight). Default: 2.",
)
@click.option(
    "--out-format",
    type=click.Choice(["bundles", "ndjson"]),
    default="ndjson",
    show_default=True,
    help="With --out: one transaction Bundle per patient, or NDJSON per type and partition.",
)
@click.option(
    "--master",
    help="Spark master (local[2], yarn, k8s://..., spark://...). Default: spark-submit's.",
)
@click.option(
    "--partitions",
    type=click.IntRange(1),
    help="Patient partitions (hash of the patient id); with --server, --writers sets them. "
    "Default: Spark's default parallelism.",
)
@report_option
@recorded_option
@requester_option
@pass_settings
def spark_sync_command(
    settings: Settings,
    /,
    input_url: str,
    out: str | None,
    out_format: str,
    master: str | None,
    partitions: int | None,
    writers: int | None,
    report_path: Path | None,
    recorded: datetime | None,
    requester: str | None,
    **params: Any,
) -> None:
    """Run sync over Bulk NDJSON on Apache Spark, partitioned by patient: the same plans as
    'sync --input DIR --out OUT' (needs the spark extra: pip install 'fhir-tailor[spark]').

    With --server instead of --out, the executors write the plans back as 'sync --server'
    does, throttled to --writers partitions of --concurrency connections each.
    """
    from ..spark import spark_context, spark_sync  # pyspark itself is imported when a run starts

    target = _spark_target(out, partitions, writers, params)
    try:  # without pyspark or Java, spark_context fails saying what to install
        with spark_context(master) as sc:
            report = spark_sync(
                sc,
                input_url,
                target,
                settings.definitions,
                as_of=settings.as_of,
                recorded=recorded or datetime.now(UTC).replace(microsecond=0),
                out_format="ndjson" if out_format == "ndjson" else "bundles",
                partitions=partitions,
                requester=requester,
            )
    except FhirTailorError as exc:
        fail(str(exc))
    finish(report, report_path)


def _spark_target(
    out: str | None, partitions: int | None, writers: int | None, params: dict[str, Any]
) -> str | ServerAccess:
    """Where spark-sync writes: the --out folder, or --server, checked by connecting once here
    so bad credentials or an unreachable server stop the run before Spark starts any task.

    A server named only by FHIR_TAILOR_SERVER gives way to --out: the variable is ambient."""
    source = click.get_current_context().get_parameter_source("server")
    from_env = source is ParameterSource.ENVIRONMENT
    server: str | None = None if out is not None and from_env else params["server"]
    if (out is None) == (not server):
        raise click.UsageError("give exactly one of --out FOLDER and --server URL (write back)")
    if out is not None:
        if writers is not None:
            raise click.UsageError("--writers is for writing back with --server")
        return out
    if partitions is not None:
        raise click.UsageError("with --server, --writers is the number of partitions")
    with ExitStack() as stack:
        connect(stack, params)
    key_path: Path | None = params["private_key"]
    return ServerAccess(
        params["server"],
        writers=writers or DEFAULT_WRITERS,
        concurrency=params["concurrency"],
        timeout=params["timeout"],
        retry_budget=params["retry_budget"],
        show_server_diagnostics=params["show_server_diagnostics"],
        token=params["token"],
        username=params["username"],
        password=params["password"],
        client_id=params["client_id"],
        signing_key=PortableKey.of(load_signing_key(key_path, params["kid"])) if key_path else None,
        client_secret=params["client_secret"],
        token_url=params["token_url"],
        scope=params["scope"],
    )
