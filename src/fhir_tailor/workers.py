"""Worker processes: a run over file or Bulk Data inputs on every core (``sync --workers``).

Patients are independent of one another, so a run over an input of more than one grouping
bucket (:data:`~fhir_tailor.sources.files.BUCKET_BYTES`) is shared by worker processes, in the
two passes a run in one process makes (:func:`~fhir_tailor.record.group_by_patient`):

1. the input is cut into pieces (NDJSON files between lines, Bundle files whole), and each
   worker attributes a piece's resources to their patients, spilling them to bucket files of
   its own (:func:`~fhir_tailor.record.spill`);
2. each bucket (the bucket's file of every piece, read in piece order, so a patient's resources
   keep their input order) is grouped, profiled, planned and rendered by one worker, which
   writes each patient's result to a file as it goes: the output already made (for file and
   stdout sinks, the text to write), the report's entries and the log lines.

The run's own process takes the pieces' issues and the buckets' results in input and bucket
order, patient by patient, writes the output and keeps the report, the ``--state`` journal and
the progress, so all of them are those of a run in one process, byte for byte. No process holds
more than one bucket, or one bucket's output, at a time (memory stays flat whatever the
population size), and a bounded number of buckets is in flight.
One patient's failure is that patient's outcome, as in one process; a worker that dies (killed,
out of memory) stops the run with :class:`WorkerError`, never a hang.

Workers start as copies of the run's process where that is safe (:func:`start_method`), else
from a fork server, and get the run's settings once, when they start.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .concurrency import in_order
from .errors import FhirTailorError
from .fhirdata import Resource
from .record import (
    RELEVANT,
    IssueHandler,
    PatientRecord,
    ReadIssue,
    bucket_paths,
    group_bucket,
    spill,
)
from .report import RunReport
from .sources.files import GROUPER, Part, Tally, pieces

#: One patient's work in a worker: its record and a report to note data issues and urgent
#: findings in, to its result (what the pipeline does next with it). Pickled to each worker
#: once, so a module-level function (a ``functools.partial`` of one).
Processor = Callable[[PatientRecord, RunReport], object]
#: Pieces per worker in the first pass: a few, so a slow piece does not hold the others up.
PIECES_PER_WORKER = 4
#: The smallest piece worth a task of its own.
MIN_PIECE_BYTES = 1024 * 1024
PICKLE = pickle.HIGHEST_PROTOCOL


class WorkerError(FhirTailorError):
    """A worker process died (killed, out of memory): the run cannot be complete."""


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity, where the system has one)."""
    count = getattr(os, "process_cpu_count", None)  # Python 3.13
    if count is not None:
        return int(count() or 1)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Processed:
    """One patient's result from a worker, with what its processing noted in the report and
    logged, to be told in the run's process when the patient's turn comes."""

    result: object
    data_issues: list[tuple[str, str]] = field(default_factory=list)
    urgent: dict[str, tuple[str, ...]] = field(default_factory=dict)
    logs: list[logging.LogRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Prepared(PatientRecord):
    """A record a worker has processed: the patient as a reference (the data stayed in the
    worker) and the result. ``processed`` is ``None`` for a patient the run skips (finished by
    an earlier attempt, or not asked for)."""

    processed: Processed | None = None

    def replay(self, report: RunReport) -> object:
        """Note the patient's data issues, urgent findings and log lines here, in the order a
        run in one process notes them, and give its result."""
        processed = self.processed
        if processed is None:
            raise ValueError(f"Patient/{self.patient_id} was skipped by the workers")
        for reference, problem in processed.data_issues:
            report.data_issue(reference, problem)
        for patient, rules in processed.urgent.items():
            report.urgent_findings(patient, rules)
        for log_record in processed.logs:
            logging.getLogger(log_record.name).handle(log_record)
        return processed.result


@contextmanager
def worker_pool(
    workers: int, processor: Processor, skip: frozenset[str] = frozenset()
) -> Iterator[None]:
    """For the ``with`` block, file sources read inputs of more than one bucket with
    ``workers`` processes running ``processor`` on each patient not in ``skip`` (their records
    come out as :class:`Prepared`). One worker: nothing changes, no process is started."""
    if workers <= 1:
        yield
        return
    pool = _Pool(workers, processor, skip)
    token = GROUPER.set(pool.records)
    try:
        yield
    finally:
        GROUPER.reset(token)
        pool.close()


class _Pool:
    """The processes of one run, started when an input first needs them."""

    def __init__(self, workers: int, processor: Processor, skip: frozenset[str]) -> None:
        self.workers = workers
        self._initargs = (
            processor,
            skip,
            logging.getLogger("fhir_tailor").getEffectiveLevel(),
            gc.get_threshold(),
            RELEVANT.get(),  # the run's grouping leaves out what cannot change a profile
        )
        self._executor: ProcessPoolExecutor | None = None

    def _started(self) -> ProcessPoolExecutor:
        if self._executor is None:
            method = start_method()
            context = multiprocessing.get_context(method)
            if method == "forkserver":
                # Imported once in the fork server, not once per worker.
                context.set_forkserver_preload(["fhir_tailor.pipeline", "fhir_tailor.workers"])
            else:  # what is buffered now would be written again by each copy of this process
                sys.stdout.flush()
                sys.stderr.flush()
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_start, initargs=self._initargs
            )
        return self._executor

    def close(self) -> None:
        """Stop the processes: work not started is dropped, work running is waited for (a
        bucket at most per worker)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def records(
        self, parts: list[Part], on_issue: IssueHandler, buckets: int, only: frozenset[str]
    ) -> Iterator[PatientRecord]:
        """The records of ``parts`` in ``buckets`` buckets, processed (those of ``only``, if
        given): what :func:`~fhir_tailor.sources.files.grouped` gives in one process, in the
        same order, with the same issues."""
        try:
            yield from self._records(parts, on_issue, buckets, only)
        except BrokenProcessPool:  # from a result, or from the next submit
            raise WorkerError(
                "a worker process ended abruptly (killed, or out of memory?)"
            ) from None

    def _records(
        self, parts: list[Part], on_issue: IssueHandler, buckets: int, only: frozenset[str]
    ) -> Iterator[PatientRecord]:
        executor = self._started()
        total = sum(_size(part.path) for part in parts)
        size = max(MIN_PIECE_BYTES, -(-total // (self.workers * PIECES_PER_WORKER)))
        with tempfile.TemporaryDirectory(prefix="fhir-tailor-") as tmp:
            spilled: list[tuple[tuple[Part, ...], Future[list[tuple[list[ReadIssue], Tally]]]]]
            spilled = [
                (piece, executor.submit(_spill, piece, bucket_paths(Path(tmp, str(n)), buckets)))
                for n, piece in enumerate(pieces(parts, size))
            ]
            tally = Tally()
            for piece, future in spilled:
                read: list[tuple[list[ReadIssue], Tally]] = future.result()
                for part, (issues, part_tally) in zip(piece, read, strict=True):
                    for issue in issues:
                        on_issue(issue)
                    tally.add(part_tally)
                    if part.last:
                        judged = part.judged(tally)
                        if judged is not None:
                            on_issue(judged)
                        tally = Tally()

            def start(bucket: int) -> Future[list[ReadIssue]]:
                paths = [Path(tmp, str(n), f"bucket-{bucket}.ndjson") for n in range(len(spilled))]
                return executor.submit(_bucket, paths, Path(tmp, f"done-{bucket}.pickle"), only)

            for bucket, grouped in in_order(start, range(buckets), 2 * self.workers):
                for issue in grouped.result():
                    on_issue(issue)
                yield from _done(Path(tmp, f"done-{bucket}.pickle"))


def start_method() -> str:
    """How workers start: as copies of this process (``fork``: nothing to import or send
    again) on Linux when no other thread runs here, since a copy of a thread's half-done work
    (a lock held by the HTTP client's thread) would be a copy of a hazard; else from a fork
    server (a fresh process beside this one), else ``spawn`` (where a worker imports the main
    module again: a script starting a run needs ``if __name__ == "__main__"``)."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform == "linux" and threading.active_count() == 1 and "fork" in methods:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # reported when the part is read
        return 0


# What runs in the workers. Each worker's settings, from _start.
_processor: Processor | None = None
_skip: frozenset[str] = frozenset()
_logged: list[logging.LogRecord] = []


class _Capture(logging.Handler):
    """Keeps a worker's log records, made picklable, for the run's process to emit."""

    def emit(self, record: logging.LogRecord) -> None:
        record.msg = record.getMessage()
        record.args = None
        record.exc_info = None
        record.exc_text = None
        _logged.append(record)


def _start(
    processor: Processor,
    skip: frozenset[str],
    level: int,
    thresholds: tuple[int, ...],
    relevant: Callable[[Resource], bool] | None,
) -> None:
    """A worker's start: the run's settings, logs kept for the run's process, and ``Ctrl-C``
    left to the run's process (which stops the workers when it stops)."""
    global _processor, _skip
    _processor, _skip = processor, skip
    RELEVANT.set(relevant)  # for this process's main thread, where its tasks run
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.set_threshold(*thresholds)
    gc.freeze()  # what the worker starts with (the definitions) lives to its end: never scanned
    logger = logging.getLogger("fhir_tailor")
    logger.handlers = [_Capture()]
    logger.setLevel(level)
    logger.propagate = False


def _spill(piece: tuple[Part, ...], paths: list[Path]) -> list[tuple[list[ReadIssue], Tally]]:
    """Spill ``piece`` to the bucket files ``paths``; each part's issues and tally."""
    issues: list[ReadIssue] = []
    ends: list[int] = []
    tallies: list[Tally] = []

    def items() -> Iterator[Any]:
        for part in piece:
            tally = Tally()
            yield from part.items(issues.append, tally)
            # Every issue of the part's resources is noted before the next part is read.
            ends.append(len(issues))
            tallies.append(tally)

    paths[0].parent.mkdir()
    spill(items(), issues.append, paths)
    starts = [0, *ends[:-1]]
    return [(issues[a:b], tally) for a, b, tally in zip(starts, ends, tallies, strict=True)]


def _bucket(paths: list[Path], done: Path, only: frozenset[str]) -> list[ReadIssue]:
    """Group one bucket and process its patients (those of ``only``, if given) into file
    ``done``, one pickled :class:`Prepared` record after another (neither this process nor the
    run's holds a bucket's output at once); the bucket's issues."""
    assert _processor is not None, "a worker runs _start first"
    issues: list[ReadIssue] = []
    with done.open("wb") as out:
        for record in group_bucket(paths, issues.append):
            processed = None
            if record.patient_id not in _skip and (not only or record.patient_id in only):
                report = RunReport()
                result = _processor(record, report)
                processed = Processed(result, report.data_issues, report.urgent, _logged[:])
            _logged.clear()
            stub = {"resourceType": "Patient", "id": record.patient_id}
            pickle.dump(Prepared(stub, (), record.unread_types, processed), out, PICKLE)
    for path in paths:
        path.unlink()
    return issues


def _done(path: Path) -> Iterator[Prepared]:
    """The records a worker processed into ``path`` (in the run's own private temporary
    folder), each read when its turn comes; the file goes once read."""
    with path.open("rb") as handle:
        while True:
            try:
                yield pickle.load(handle)
            except EOFError:
                break
    path.unlink()
