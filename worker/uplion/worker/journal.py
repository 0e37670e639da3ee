"""The crash journal: the attempts a worker process is running, on disk, so that the process that
starts after it died can report them (`TASK_ERROR_KIND_WORKER_CRASHED`).

Pulsar does not count a redelivery after the consumer died (4.0.7: the redelivered message says
`redelivery_count` 0; the counter lives in the broker's memory and is reset when the consumer
disconnects), so a task that kills every worker that takes it would be retried until its deadline.
The worker counts such deaths itself: before the backend runs an attempt, a small record (task id,
reply topic, attempt id, worker id, deadline) is written to a slot file (one per attempt running at
once, kept open and reused: one `pwrite` to begin and one to end an attempt, about 5 µs, where
creating and removing a file per attempt cost 70 µs), and blanked when the attempt ends in any way
the process lives through (answered, failed, retried, cancelled, drained). A record still there
belongs to an attempt that died with its process: the
supervisor of a multi-process pod reports it as soon as it sees the child die (processes.py), and a
process reports what is left when it starts (a container restarted in its pod, or a report the
supervisor could not send). The gateway counts the reports per task (docs/request-lifecycle.md).

The files are written without fsync: they must outlive the process, not the machine (a node that
goes down takes the pod's emptyDir with it). Writing one is best effort: a journal that cannot be
written is logged once and the task runs anyway (its crash would just not be counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from uplion.core.pulsar import SEND_ERRORS
from uplion.v1 import task_pb2

from .attempt import Producer

log = logging.getLogger("uplion.worker")

SUFFIX = ".attempt"
REPORT_TIMEOUT_S = 5.0  # for all the reports of one dead process


def crash_report(record: JournalRecord) -> task_pb2.TaskEvent:
    """What the gateway is told about an attempt that died with its process: a retryable error
    (the broker redelivers the task) that it counts per attempt."""
    err = task_pb2.TaskError(
        kind=task_pb2.TASK_ERROR_KIND_WORKER_CRASHED, retryable=True,
        message=f"the worker process running this attempt died ({record.worker_id})",
    )  # fmt: skip
    return task_pb2.TaskEvent(
        task_id=record.task_id, attempt_id=record.attempt_id, worker_id=record.worker_id, error=err
    )


@dataclass(frozen=True)
class JournalRecord:
    task_id: str
    reply_topic: str
    attempt_id: str
    worker_id: str
    deadline: float  # unix seconds: a report for a task past it is not worth sending

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> JournalRecord:
        """The record `encode` wrote; ValueError for anything else (a file cut short by the crash)."""
        try:
            data = json.loads(raw)
            record = cls(
                task_id=str(data["task_id"]), reply_topic=str(data["reply_topic"]),
                attempt_id=str(data["attempt_id"]), worker_id=str(data["worker_id"]),
                deadline=float(data["deadline"]),
            )  # fmt: skip
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"not a journal record: {e}") from None
        if not (record.task_id and record.reply_topic and record.attempt_id):
            raise ValueError("not a journal record: an id is empty")
        return record


RECORD_BYTES = 1024  # a slot's record is padded with spaces to this (JSON ignores them); blank: none


@dataclass
class Slot:
    """An open slot file; its record is the attempt running in it, or blank."""

    fd: int
    path: Path


class Journal:
    """One folder per worker process (the supervisor gives each child its own)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._warned = False
        self._free: list[Slot] = []
        self._slots: list[Slot] = []
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            self._warn(e)

    def _warn(self, e: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("crash journal not writable: a crash of this process is not counted",
                        extra={"journal": str(self.directory), "error": e.strerror})  # fmt: skip

    def begin(self, record: JournalRecord) -> Slot | None:
        """Write the record of an attempt about to run; its slot (for `end`), or None if not written."""
        try:
            slot = self._free.pop() if self._free else self._open_slot()
        except OSError as e:
            self._warn(e)
            return None
        raw = record.encode()
        try:
            os.pwrite(slot.fd, raw.ljust(RECORD_BYTES), 0)
            if len(raw) > RECORD_BYTES:  # a longer record than the slot held before: no old tail
                os.ftruncate(slot.fd, len(raw))
        except OSError as e:
            self._warn(e)
            self._free.append(slot)
            return None
        return slot

    def _open_slot(self) -> Slot:
        path = self.directory / f"slot-{uuid.uuid4().hex}{SUFFIX}"
        slot = Slot(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), path)
        self._slots.append(slot)
        return slot

    def end(self, slot: Slot | None) -> None:
        """The attempt ended with this process alive: blank its record, free its slot."""
        if slot is None:
            return
        with contextlib.suppress(OSError):
            os.pwrite(slot.fd, b" " * RECORD_BYTES, 0)
            os.ftruncate(slot.fd, RECORD_BYTES)
        self._free.append(slot)

    def leftovers(self) -> list[tuple[Path, JournalRecord | None]]:
        """The records a dead predecessor left (None for a file that is not a whole record); its
        blank slots are removed. Call it on a dead process's folder, or before `begin` on one's own."""
        try:
            paths = sorted(self.directory.glob(f"*{SUFFIX}"))
        except OSError:
            return []
        found: list[tuple[Path, JournalRecord | None]] = []
        for path in paths:
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            if not raw.strip():
                forget(path)
                continue
            try:
                found.append((path, JournalRecord.decode(raw)))
            except ValueError:
                found.append((path, None))
        return found

    def close(self) -> None:
        """A clean exit: the slot files and, if nothing else is left in it, the folder go (the
        default one is per worker id)."""
        for slot in self._slots:
            with contextlib.suppress(OSError):
                os.close(slot.fd)
            forget(slot.path)
        self._slots, self._free = [], []
        with contextlib.suppress(OSError):
            self.directory.rmdir()


def forget(path: Path) -> None:
    """Remove a dead process's record (reported, past its deadline, or unreadable)."""
    with contextlib.suppress(OSError):
        path.unlink()


async def report_crashes(
    journal: Journal, producer_for: Callable[[str], Awaitable[Producer]], *, keep_unsent: bool
) -> int:
    """Send the crash report of each record left in `journal` to its reply topic and remove the
    record; the number sent. A record past its task's deadline, or unreadable, is just removed. A
    report not sent within REPORT_TIMEOUT_S is logged, and its record kept when `keep_unsent` (the
    supervisor's: the restarted process tries again) or removed (a process starting: one count less,
    never a reason not to start)."""
    sent = 0
    try:
        async with asyncio.timeout(REPORT_TIMEOUT_S):
            for path, record in journal.leftovers():
                if record is not None and record.deadline > time.time():
                    producer = await producer_for(record.reply_topic)
                    await producer.send(crash_report(record).SerializeToString())
                    sent += 1
                    log.warning("an attempt died with its worker process; reported",
                                extra={"task_id": record.task_id, "attempt_id": record.attempt_id,
                                       "worker_id": record.worker_id})  # fmt: skip
                elif record is None:
                    log.warning("unreadable crash journal record dropped", extra={"path": str(path)})
                forget(path)
    except SEND_ERRORS as e:
        log.warning("crash reports not all sent", extra={"sent": sent, "error": type(e).__name__})
        if not keep_unsent:
            for path, _ in journal.leftovers():
                forget(path)
    return sent
