"""The pipeline on Apache Spark: Bulk NDJSON in, plans out, partitioned by patient.

Spark only moves lines: each line is keyed by its patient with the attribution rules of the
single-process source (:func:`~fhir_tailor.record.check_resource`), hash-partitioned by patient
id and sorted within its partition by (patient, file, line), so each patient's lines arrive
together and in source order. Each partition then runs the ordinary
:func:`~fhir_tailor.pipeline.run` over its patients, grouped by
:func:`~fhir_tailor.record.group_by_patient`, so duplicates, a missing Patient and one patient's
failure are handled exactly as ``fhir-tailor sync`` handles them, and the output is the same.

Lines travel through the shuffle as text, not parsed JSON: a deeply nested resource that JSON
reads could still overflow pickle's recursion and fail the task. Input may be any URL Spark's
Hadoop layer reads (``s3a://``, ``abfss://``, ``gs://``); output is written by the executors
themselves, so it must be a folder every executor and the driver see (local in local mode, a
shared or mounted path on a cluster).

Writing back to a FHIR server (:class:`~fhir_tailor.access.ServerAccess` as ``out``) is
throttled by the partitioning itself: the lines are hash-partitioned into exactly ``writers``
partitions, and each runs the pipeline into its own :class:`~fhir_tailor.sinks.server.ServerSink`
over a client of ``concurrency`` connections. A stage of ``writers`` partitions never has more
than ``writers`` tasks running (a retried task runs after the failed attempt ended; speculative
copies, off by default, would break this), so at most ``writers * concurrency`` requests reach
the server at once, however many executors the cluster has. Planning runs in the same tasks,
overlapping the writes: the server, not the CPU, is what bounds a write-back. The decisions are
those of ``sync --server`` (conditional create, ``If-Match`` updates, clinician edits left
alone, one transaction per patient), so a retried task redoes nothing its failed attempt wrote.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from .access import ServerAccess
from .definitions import Definitions
from .errors import FhirTailorError
from .fhirdata import load_json
from .pipeline import run
from .plan import Plan
from .record import (
    IssueHandler,
    Located,
    PatientRecord,
    ReadIssue,
    check_resource,
    group_by_patient,
)
from .report import PatientOutcome, RunReport
from .resources import PlanResources
from .sinks.files import FileFormat, FolderSink
from .sinks.server import ServerSink
from .sources.files import read_line
from .withdrawal import Withdrawal

if TYPE_CHECKING:
    from pyspark import RDD, Broadcast, SparkContext

log = logging.getLogger("fhir_tailor.spark")

#: ``(0, "", file, line)`` for a line no patient can be found for, ``(1, patient id, file, line)``
#: for a line about a patient: sorting puts each patient's lines together, in source order.
Key = tuple[int, str, int, int]
#: A line to read (``(location, text)``) or an issue found when parsing it.
Value = tuple[str, bytes] | ReadIssue
PART_GLOB = "*.part-*.ndjson"


class SparkUnavailableError(FhirTailorError):
    """pyspark or the Java runtime Spark needs is not installed."""


def require_spark() -> None:
    """Fail early, with what to install, when Spark cannot start here."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailableError(
            "Spark runs need the spark extra: pip install 'fhir-tailor[spark]'"
        ) from None
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise SparkUnavailableError(
            "Spark needs a Java runtime (17 recommended): install a JDK or set JAVA_HOME"
        )


@contextmanager
def spark_context(master: str | None = None) -> Iterator[SparkContext]:
    """The running Spark application's context (a notebook, ``spark-submit``), or a new one.

    A context created here is stopped on exit; one that was already running is left running.
    ``master`` (``local[2]``, ``yarn``, ``spark://host:7077``) applies to a new context only.
    """
    require_spark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active.sparkContext
        return
    from pyspark import SparkConf

    if (master or SparkConf().get("spark.master", "local[*]")).startswith("local"):
        # Local workers run this interpreter (its venv has fhir-tailor), not python3 on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("fhir-tailor").config(
        "spark.ui.showConsoleProgress", "false"
    )
    if master:
        builder = builder.master(master)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    try:
        yield session.sparkContext
    finally:
        session.stop()


@dataclass(frozen=True, slots=True)
class Job:
    """What every partition needs: shipped to the executors once (a broadcast)."""

    definitions: Definitions
    as_of: date
    recorded: datetime
    out: Path | ServerAccess
    out_format: FileFormat
    requester: str | None = None


def spark_sync(
    sc: SparkContext,
    input_url: str,
    out: str | Path | ServerAccess,
    definitions: Definitions,
    *,
    as_of: date,
    recorded: datetime,
    out_format: FileFormat = "ndjson",
    partitions: int | None = None,
    requester: str | None = None,
) -> RunReport:
    """Run every patient of a Bulk NDJSON folder through the pipeline on Spark.

    A folder ``out`` gets ``<patient id>.json`` transaction Bundles, or NDJSON per resource
    type and partition (``CarePlan.part-00003.ndjson``; part files of an earlier run are removed
    first). A :class:`ServerAccess` gets the plans written back as ``sync --server`` writes
    them, in ``out.writers`` partitions (so ``partitions`` must not be given). The report has
    the shape of ``sync --report``, patients in id order. ``requester`` requests the referrals,
    as in :func:`fhir_tailor.pipeline.run`.
    """
    report = RunReport()
    target: Path | ServerAccess
    if isinstance(out, ServerAccess):
        if partitions is not None:
            raise ValueError("writing to a server, the partitions are the writers: no partitions")
        target, count = out, out.writers
    else:
        target = _local_folder(out)
        target.mkdir(parents=True, exist_ok=True)
        for stale in target.glob(PART_GLOB):
            stale.unlink()
        count = partitions or sc.defaultParallelism
    files = _input_files(sc, input_url)
    log.info("spark run: %d input files, %d partitions", len(files), count)
    if isinstance(target, ServerAccess):
        log.info(
            "writing back with at most %d requests in flight (%d writers, %d connections each)",
            target.writers * target.concurrency,
            target.writers,
            target.concurrency,
        )
    job = sc.broadcast(Job(definitions, as_of, recorded, target, out_format, requester))
    keyed = sc.union(
        [
            sc.textFile(url, 1, use_unicode=False).zipWithIndex().flatMap(partial(_keyed, i, name))
            for i, (url, name) in enumerate(files)
        ]
    )
    # pyspark's stubs do not know tuples are ordered, hence the ignore.
    grouped = keyed.repartitionAndSortWithinPartitions(count, _partition_of)  # type: ignore[call-overload]
    results: RDD[PartResult] = grouped.mapPartitionsWithIndex(partial(_run_partition, job=job))
    parts = results.collect()
    for part in parts:
        part.into(report)
    report.patients.sort(key=lambda outcome: outcome.patient)
    report.read_issues.sort(key=lambda issue: _source_order(issue.location))
    report.data_issues.sort()
    report.retries = sum(part.retries for part in parts)
    report.finish()
    job.destroy()
    return report


def _local_folder(out: str | Path) -> Path:
    text = str(out)
    if "://" not in text:
        return Path(text)
    parsed = urlparse(text)
    if parsed.scheme != "file":
        raise FhirTailorError(
            f"output {text}: executors write files themselves, so give a folder every executor "
            f"sees (a local path, or a shared or mounted one), not a {parsed.scheme}:// URL"
        )
    return Path(unquote(parsed.path))


def _input_files(sc: SparkContext, folder: str) -> list[tuple[str, str]]:
    """The folder's ``*.ndjson`` files as ``(url, name)``, in name order like ``NdjsonSource``.

    Listed through Hadoop's file system layer, so every URL Spark reads works.
    """
    hadoop = sc._jvm.org.apache.hadoop.fs  # type: ignore[union-attr]
    pattern = hadoop.Path(folder.rstrip("/") + "/*.ndjson")
    filesystem = pattern.getFileSystem(sc._jsc.hadoopConfiguration())
    statuses = filesystem.globStatus(pattern) or []
    found = [(s.getPath().toString(), s.getPath().getName()) for s in statuses if s.isFile()]
    if not found:
        raise FhirTailorError(f"input {folder}: no *.ndjson files (Bulk Data NDJSON expected)")
    return sorted(found, key=lambda item: item[1])


def _keyed(file_index: int, name: str, line: tuple[bytes, int]) -> Iterator[tuple[Key, Value]]:
    """One input line (bytes, index) keyed by its patient, parsed as ``NdjsonSource`` does."""
    raw, index = line
    read = read_line(raw, name, index + 1)
    nobody: Key = (0, "", file_index, index + 1)
    if read is None:
        return
    if isinstance(read, ReadIssue):
        yield nobody, read
        return
    _, patient_id, problem = check_resource(read.resource)
    if problem is not None:
        # group_by_patient reports it, with the same wording as a single-process run.
        yield nobody, (read.location, read.raw)
    elif patient_id is not None:
        yield (1, patient_id, file_index, index + 1), (read.location, read.raw)


def _partition_of(key: Key) -> int:
    """A patient's partition: a stable hash of its id (Python's ``hash`` is salted per process).
    Lines of no patient are spread by line number."""
    attributed, patient_id, _, number = key
    return zlib.crc32(patient_id.encode()) if attributed else number


@dataclass(frozen=True, slots=True)
class PartitionSource:
    """One partition's sorted lines as patient records: a :class:`~fhir_tailor.sources.Source`."""

    items: Iterable[tuple[Key, Value]]

    def records(self, on_issue: IssueHandler) -> Iterator[PatientRecord]:
        for _, lines in groupby(self.items, key=lambda item: item[0][:2]):
            located = []
            for _, value in lines:
                if isinstance(value, ReadIssue):
                    on_issue(value)
                else:
                    located.append(Located(load_json(value[1]), value[0], value[1]))
            yield from group_by_patient(located, on_issue)


@dataclass(slots=True)
class PartFiles:
    """A :class:`FolderSink` writing NDJSON into a staging folder, whose files become the
    partition's ``<type>.part-NNNNN.ndjson`` once every patient is written: a task Spark retries
    replaces them whole, never appends."""

    out: Path
    index: int
    staging: Path = field(init=False)
    sink: FolderSink = field(init=False)

    def __post_init__(self) -> None:
        self.staging = self.out / f".staging-{self.index:05d}-{uuid.uuid4().hex}"
        self.sink = FolderSink(self.staging, "ndjson")

    def write(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        return replace(self.sink.write(plan, resources), careplan=str(self.out))

    def withdraw(self, withdrawal: Withdrawal) -> PatientOutcome:
        return self.sink.withdraw(withdrawal)

    def commit(self) -> None:
        self.sink.close()
        for path in sorted(self.staging.glob("*.ndjson")):
            os.replace(path, self.out / f"{path.stem}.part-{self.index:05d}.ndjson")
        self.staging.rmdir()

    def close(self) -> None:
        self.sink.close()
        shutil.rmtree(self.staging, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class PartResult:
    """What one partition sends back to the driver: outcomes and issues, ids only, no PHI."""

    patients: list[PatientOutcome]
    read_issues: list[ReadIssue]
    data_issues: list[tuple[str, str]]
    retries: int = 0
    #: Patient -> the rule ids of their urgent findings (:attr:`RunReport.urgent`).
    urgent: dict[str, tuple[str, ...]] | None = None

    def into(self, report: RunReport) -> None:
        report.patients.extend(self.patients)
        report.read_issues.extend(self.read_issues)
        report.data_issues.extend(self.data_issues)
        report.urgent.update(self.urgent or {})


def _run_partition(
    index: int, items: Iterable[tuple[Key, Value]], *, job: Broadcast[Job]
) -> Iterator[PartResult]:
    settings = job.value
    report = RunReport()
    source = PartitionSource(items)
    target = settings.out
    if isinstance(target, ServerAccess):
        # This task's own client: its pool is this writer's share of the throttle.
        with target.client() as client:
            _run(settings, source, ServerSink(client), report, target.concurrency)
            report.retries = client.retries
        yield PartResult(
            report.patients, report.read_issues, report.data_issues, report.retries, report.urgent
        )
        return
    sink: PartFiles | FolderSink = (
        PartFiles(target, index)
        if settings.out_format == "ndjson"
        else FolderSink(target, "bundles")
    )
    try:
        _run(settings, source, sink, report, 1)
        if isinstance(sink, PartFiles):
            sink.commit()
    finally:
        sink.close()
    yield PartResult(report.patients, report.read_issues, report.data_issues, 0, report.urgent)


def _run(
    settings: Job,
    source: PartitionSource,
    sink: PartFiles | FolderSink | ServerSink,
    report: RunReport,
    concurrency: int,
) -> None:
    run(
        source,
        sink,
        settings.definitions,
        as_of=settings.as_of,
        recorded=settings.recorded,
        report=report,
        concurrency=concurrency,
        requester=settings.requester,
    )


def _source_order(location: str) -> tuple[str, int]:
    """``Condition.ndjson:12`` as ``("Condition.ndjson", 12)``: issues sort in file, line order."""
    name, _, number = location.rpartition(":")
    return (name, int(number)) if number.isdigit() else (location, 0)
