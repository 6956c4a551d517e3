"""The recorder's journal: every queued row also in a memory-mapped file, so a killed process loses none.

A row waits in the recorder's in-memory queue for up to a batch window before
it is written; a process killed outright (SIGKILL, the OOM killer, a container
eviction) used to lose those rows: hundreds, at 20 concurrent calls. So each row
is also appended, on the call path, to a **journal**: segment files of a few
megabytes, mapped into memory with ``MAP_SHARED``. Writing a row is a copy into
that memory, with no system call: the pages belong to the kernel's page cache,
which keeps them, and writes them to the file, when the process dies however it
dies. Only a crash of the machine itself (power loss, a kernel panic) loses what
the kernel had not written yet (a few seconds: there is no ``fsync`` per row).

Measured before choosing (``benchmarks/bench_journal.py``, 2 busy shared
cores): a ``write()`` per row to a file opened ``O_APPEND`` added 4 µs of CPU
per row, and each such system call releases the GIL, handing it to the
recorder's writer thread (see ``accounting/_events.py``): at 25,000 rows/s the
event loop woke up to 157 ms late. Buffering rows in user space and writing
them once per turn of the loop costs as much as the map and dies with the
process. A copy into mapped memory holds the GIL and added 2.5 µs (1.9 µs of
it the encoding) where flattening the event costs 1.4 µs.

The writer thread trims the journal as batches are stored (or spooled, which is
fsynced): it writes the count of stored rows into the segment's header and
deletes segments whose rows are all stored, so the journal stays about one
segment long while the database keeps up. The writer also prepares the next
segment ahead of time, so the call path rarely makes a system call even then.

A process holds an exclusive ``flock`` on each of its segment files; the kernel
drops it when the process dies. A recorder replays, like an orphaned spool file,
every journal segment of its database whose lock it can take: those of dead
processes only (also when a new process has the dead one's pid, as in a
container). Rows a segment's header counts as stored are skipped, and the rest
are inserted-or-ignored by event id, so a row both journaled and stored is
never counted twice.

Format of a segment ``<sink digest>-<pid>-<token>-<n>.journal``: a 64-byte
header (magic, then the journal's number of the first row not yet stored,
little-endian u64), then records of ``u32 length, u32 crc32, u64 row number,
payload`` with the payload a :mod:`marshal` dump of
the row (times as POSIX timestamps, dates as ordinals: marshal takes only
built-in types, and is five times faster than pickle on a row with a
datetime). A row is a list of the fields by position: a row of the layout
before ``cache_write_1h_tokens`` (a journal an older version left) is read
with that field None. The file is preallocated, so the end is the first zero length; the
header is written after the payload, and the CRC rejects a record torn by a
crash of the machine, or damaged on disk: that record is skipped (said in the
log), and its length leads on to the records after it, which are read.

Rows are made when a call ends, so the journal alone leaves nothing of a call
still running when the process dies: neither the attempts that already ended
(a 429 waiting for its retry, an answer that validation re-asks) nor the one
in flight (its request sent, and billed). The **in-flight table**
(:class:`InFlightTable`) fills that gap: a slot per attempt, from its start
(a provisional row: ``cancelled``, tokens estimated) through its end (its real
row) to the moment its call's rows are in the journal. A dead process's table
is replayed after its journal, so a final row always wins over a provisional
one of the same event id.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import marshal
import mmap
import os
import sys
import threading
import time
import weakref
import zlib
from collections import deque
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from struct import Struct
from typing import Final

from .._threads import hand_over_gil
from ._events import ROW_FIELDS, ROW_FIELDS_BEFORE_1H, UsageRow

try:
    import fcntl
except ImportError:  # Windows: no flock, no journal (rows wait in memory, as before)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SEGMENT_BYTES",
    "InFlightTable",
    "Journal",
    "JournalFormatError",
    "journal_supported",
    "orphaned_in_flight",
    "orphaned_journals",
    "read_in_flight",
    "read_journal",
]

logger = logging.getLogger("autogen_reliability")

SEGMENT_BYTES: Final = 4 << 20
"""A segment's size: about 15,000 rows without captured content."""

_MAGIC: Final = b"ARJOURN1"
_HEADER_BYTES: Final = 64
_STORED: Final = Struct("<Q")  # at offset 8: rows numbered below it are stored (or spooled)
_RECORD: Final = Struct("<IIQ")  # length, crc32 of the payload, the row's number in the journal
_RECORD_BYTES: Final = _RECORD.size
_pack_record: Final = _RECORD.pack_into
_dumps: Final = marshal.dumps
_crc32: Final = zlib.crc32
_STARTED: Final = ROW_FIELDS.index("started_at")
_PRICE_DATE: Final = ROW_FIELDS.index("price_date")
_RETRY_AFTER_FAILURE: Final = 5.0  # seconds before the call path tries again to make a segment
_SUFFIX: Final = ".journal"
# A half-made file (".new") whose lock is free and that is older than this has no maker: one locks its file
# microseconds after making it, and holds the lock until it is renamed or deleted.
_HALF_MADE_SECONDS: Final = 600.0
# madvise(MADV_POPULATE_WRITE): the kernel's constant (the mmap module names it from Python 3.13 on).
_MADV_POPULATE_WRITE: Final = getattr(mmap, "MADV_POPULATE_WRITE", 23) if sys.platform == "linux" else None
_POPULATE_SLICE: Final = 64 << 10  # 16 pages: well under a millisecond holding the GIL

IN_FLIGHT_SLOTS: Final = 1024
"""Slots per in-flight table file: attempts in flight at once before another file is made (4 MiB each)."""

_IN_FLIGHT_MAGIC: Final = b"ARINFLT1"
_IN_FLIGHT_SUFFIX: Final = ".inflight"
_SLOT_BYTES: Final = 4096  # a page: two halves, written in turn, so an overwrite is never torn
_HALF_BYTES: Final = _SLOT_BYTES // 2
_SLOT: Final = Struct("<IIQ")  # length, crc32 of the payload (started from the version), version
_SLOT_HEADER: Final = _SLOT.size
_SLOT_PAYLOAD: Final = _HALF_BYTES - _SLOT_HEADER
_pack_slot: Final = _SLOT.pack_into
_FREE: Final = bytes(4)
_CONTENT: Final = (ROW_FIELDS.index("request_content"), ROW_FIELDS.index("response_content"))
_ERROR_MESSAGE: Final = ROW_FIELDS.index("error_message")
_TAGS: Final = ROW_FIELDS.index("tags")
# A row an older version journaled lacks cache_write_1h_tokens: it is read with None there (not reported).
_OLD_LENGTH: Final = len(ROW_FIELDS_BEFORE_1H)
_CACHE_WRITE_1H: Final = ROW_FIELDS.index("cache_write_1h_tokens")
_SHORT_MESSAGE: Final = 200

_live: weakref.WeakSet[Journal] = weakref.WeakSet()
_live_tables: weakref.WeakSet[InFlightTable] = weakref.WeakSet()
_journals = itertools.count()


class JournalFormatError(ValueError):
    """A file named like a journal segment or in-flight table is not one this version reads.

    Another format version (a newer release that wrote it, then was rolled back), or a header damaged on disk:
    its rows may still be read by what wrote it, or recovered by hand, so the file is left in place.
    """


def journal_supported() -> bool:
    """Whether this platform has what the journal needs (``flock`` and shared memory maps)."""
    return fcntl is not None and hasattr(os, "posix_fallocate")


class _Segment:
    """One mapped, locked, preallocated segment file."""

    __slots__ = ("end", "fd", "map", "path", "size", "start")

    def __init__(self, path: Path, size: int, magic: bytes = _MAGIC) -> None:
        self.path = path
        self.size = size
        self.start = 0  # the journal's row number of the segment's first row
        self.end: int | None = None  # one past its last row, once the journal moved on to the next segment
        # Made under a name replayers do not look at, and renamed once locked: else a replayer could take the
        # lock of a file just made, find it empty and delete it while its process writes into it.
        making = path.with_name(path.name + ".new")
        self.fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Real blocks, not a sparse file: writing a page of a map that the disk cannot hold is a SIGBUS.
            os.posix_fallocate(self.fd, 0, size)
            os.pwrite(self.fd, magic, 0)
            self.map = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            os.rename(making, path)
        except BaseException:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                making.unlink()
            raise

    def close(self, *, delete: bool) -> None:
        # Unlinked before the lock is released, so no replayer can take a file that is still being trimmed.
        if delete:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.map.close()
        os.close(self.fd)


class Journal:
    """Appends rows to memory-mapped segment files of this process; trimmed as rows are stored.

    :meth:`append` runs on the call path (the recorder serialises it with its
    queue); :meth:`stored`, :meth:`prepare` and :meth:`close` run on the
    recorder's writer thread. Rows are stored in the order they were appended
    (the recorder's queue is first in, first out), so one count says which rows
    the journal no longer needs.
    """

    def __init__(self, directory: Path, prefix: str, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self._prefix = prefix
        self.token = f"{os.getpid()}-{time.time_ns():x}{next(_journals):x}"  # a dead process's pid may be reused
        self._numbers = itertools.count()
        self._segment_bytes = segment_bytes
        self._segments: deque[_Segment] = deque()  # in row order; the last one is being appended to
        self._current: _Segment | None = None
        self._offset = 0
        self._spare: _Segment | None = None
        self._appended = 0  # rows handed to append(), journaled or not
        self._stored = 0
        self._last_missed = -1  # the number of the last row that could not be journaled
        self._retry_at = 0.0
        self._healthy = True
        self._closed = False
        self._trim_lock = threading.Lock()  # the writer thread, and close() from another thread
        _live.add(self)

    # -- the call path ----------------------------------------------------------------

    def append(self, row: UsageRow) -> None:
        """Copies ``row`` into the current segment; never raises (a row it cannot journal is still queued)."""
        # Every name this touches is a local or a constant: it runs on the event loop once per attempt.
        number = self._appended
        self._appended = number + 1
        try:
            fields = list(row)
            fields[_STARTED] = fields[_STARTED].timestamp()
            if fields[_PRICE_DATE] is not None:
                fields[_PRICE_DATE] = fields[_PRICE_DATE].toordinal()
            payload = _dumps(fields)
            size = len(payload)
            segment, offset = self._current, self._offset
            end = offset + _RECORD_BYTES + size
            if segment is None or end > segment.size:
                segment = self._next_segment(number, _RECORD_BYTES + size)
                if segment is None:
                    self._last_missed = number
                    return
                offset = _HEADER_BYTES
                end = offset + _RECORD_BYTES + size
            data = segment.map
            data[offset + _RECORD_BYTES : end] = payload
            # The record's header last: a record is whole or absent (the CRC catches a torn page after a crash).
            _pack_record(data, offset, size, _crc32(payload), number)
            self._offset = end
        except Exception as error:  # the journal must never break a model call; the row is still queued
            self._last_missed = number
            self._failed(error)

    def _next_segment(self, number: int, needed: int) -> _Segment | None:
        """Moves on to a new segment for row ``number`` and on; None while segments cannot be made."""
        previous = self._current
        if previous is not None:
            previous.end = number  # every row it holds comes before this one
            self._current = None
        segment = self._spare
        if segment is not None and _deleted(segment):  # made before its directory was removed: unreplayable
            self._spare = None
            segment.close(delete=False)
            segment = None
        if segment is not None and segment.size >= _HEADER_BYTES + needed:
            self._spare = None
        else:
            if time.monotonic() < self._retry_at:
                return None  # the row is still queued, only not journaled
            try:
                segment = self._make(max(self._segment_bytes, _HEADER_BYTES + needed))
            except OSError as error:
                self._failed(error)
                return None
        segment.start = number
        self._segments.append(segment)
        self._current = segment
        self._offset = _HEADER_BYTES
        return segment

    def _failed(self, error: Exception) -> None:
        self._retry_at = time.monotonic() + _RETRY_AFTER_FAILURE
        if self._healthy:
            logger.error(
                "cannot write the usage journal in %s (%s: %s); rows recorded meanwhile are lost if the process "
                "is killed before they are stored",
                self.directory,
                type(error).__name__,
                error,
            )
        self._healthy = False

    def _make(self, size: int) -> _Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{self._prefix}-{self.token}-{next(self._numbers):06d}{_SUFFIX}"
        segment = _Segment(self.directory / name, size)
        if not self._healthy:
            logger.warning("usage journal in %s writable again", self.directory)
            self._healthy = True
        return segment

    def holds_unstored(self) -> bool:
        """Whether every row appended and not yet stored is in the journal (none was refused by the disk)."""
        return self._last_missed < self._stored

    # -- the writer thread ------------------------------------------------------------

    def prepare(self) -> None:
        """Makes the next segment ahead of time, and faults its pages in, so the call path need not.

        Only once the current segment is half full: a process that records little keeps one segment.
        Also moves the next row on to a new segment if the current one was deleted (its directory removed
        by hand or by a cleaner of old files): no later process could replay what is written there.
        """
        current = self._current
        if current is not None and self._offset < current.size and not self._closed and _deleted(current):
            self._offset = current.size  # the next append moves on (a row racing this one only delays it)
            logger.error(
                "usage journal %s was deleted while in use; the next rows go to a new segment (those recorded "
                "since are lost if the process is killed before they are stored)",
                current.path,
            )
        needed = current is None or self._offset > current.size // 2
        if needed and self._spare is None and self._healthy and not self._closed:
            try:
                spare = self._make(self._segment_bytes)
            except OSError as error:
                logger.debug("could not prepare a journal segment: %s", error)
                return
            _populate(spare)
            with self._trim_lock:
                if self._closed:
                    spare.close(delete=True)
                else:
                    self._spare = spare

    def stored(self, count: int) -> None:
        """The next ``count`` rows (in append order) are stored or spooled: trims what no longer needs keeping."""
        with self._trim_lock:
            self._stored += count
            stored = self._stored
            while self._segments:
                segment = self._segments[0]
                end = segment.end
                if end is None or end > stored:
                    break
                self._segments.popleft()
                segment.close(delete=True)
            if self._segments:
                _STORED.pack_into(self._segments[0].map, len(_MAGIC), stored)

    def close(self, *, keep: bool = False) -> None:
        """Deletes the segments if every row was stored (and not ``keep``); else leaves them for the next process."""
        with self._trim_lock:
            _live.discard(self)
            self._closed = True
            keep = keep or self._stored < self._appended
            self._current = None
            spare, self._spare = self._spare, None
            if spare is not None:
                spare.close(delete=True)
            while self._segments:
                self._segments.popleft().close(delete=not keep)
            self._appended = self._stored  # later rows are not journaled (they go straight to the spool)

    @property
    def paths(self) -> list[Path]:
        """The segment files that hold rows not yet stored (and the one being appended to)."""
        return [segment.path for segment in list(self._segments)]


class InFlightTable:
    """A row per provider attempt in flight, in fixed slots of memory-mapped files: what a killed process owed.

    Rows are made when a call ends; a process killed while calls are running would leave no trace of requests
    the provider received (and bills). So the accounting layer, when an attempt starts, puts a provisional
    row in a slot (``cancelled``, prompt tokens estimated), overwrites it with the attempt's real row when the
    attempt ends, and frees the slot once the call's rows are recorded (in the journal). Each slot is a page of
    two halves written in turn, each ``u32 length, u32 crc32, u64 version, payload`` (the payload a journal
    record's, without the captured content): a reader takes the valid half with the higher version, so a
    process killed half-way through an overwrite leaves the row before it. Files
    ``<sink digest>-<journal token>-i<n>.inflight``, locked like journal segments; a dead process's table is
    replayed once none of its journal segments is left, so its final rows are stored first and win (insert or
    ignore by event id) over the provisional ones.

    :meth:`hold`, :meth:`update` and :meth:`release` run on the call path, from any thread; they never raise.
    """

    def __init__(self, directory: Path, prefix: str, token: str, slots: int = IN_FLIGHT_SLOTS) -> None:
        self.directory = directory
        self._prefix = prefix
        self._token = token
        self._slots = slots
        self._files: list[_Segment] = []
        self._free: list[int] = []
        self._held = 0
        self._versions = itertools.count(1)
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._healthy = True
        self._too_big_said = False
        self._closed = False
        _live_tables.add(self)

    def hold(self, row: UsageRow) -> list[int] | None:
        """Puts ``row`` in a free slot; the slot (to :meth:`update` and :meth:`release`), or None if it cannot."""
        payload = self._encode(row)
        if payload is None:
            return None
        with self._lock:
            if self._closed:
                return None
            if not self._free and not self._grow():
                return None
            number = self._free.pop()
            self._held += 1
        slot = [number, 0]
        self._write(slot, payload)
        return slot

    def update(self, slot: list[int], row: UsageRow) -> None:
        """Replaces the slot's row: written into the other half, which then becomes the one read."""
        payload = self._encode(row)
        if payload is None:
            return  # the provisional row stays: better than none
        slot[1] ^= 1
        self._write(slot, payload)

    def release(self, slot: list[int]) -> None:
        """Frees the slot: its row is recorded (journaled) by now."""
        number = slot[0]
        try:
            data, offset = self._place(number)
            data[offset : offset + 4] = _FREE
            data[offset + _HALF_BYTES : offset + _HALF_BYTES + 4] = _FREE
        except Exception as error:  # a closed map (a forked child): the slot is gone with it
            logger.debug("could not free in-flight slot %d: %s", number, error)
        with self._lock:
            self._free.append(number)
            self._held -= 1
            if self._closed and not self._held:
                self._drop()

    def close(self) -> None:
        """Deletes the files once no slot is held: a call still running keeps them until it has recorded."""
        with self._lock:
            self._closed = True
            if not self._held:
                self._drop()

    @property
    def held(self) -> int:
        """Slots in use: attempts of calls that have not recorded their rows yet."""
        return self._held

    @property
    def paths(self) -> list[Path]:
        """The table's files."""
        return [file.path for file in self._files]

    def _encode(self, row: UsageRow) -> bytes | None:
        try:
            fields = list(row)
            fields[_STARTED] = fields[_STARTED].timestamp()
            if fields[_PRICE_DATE] is not None:
                fields[_PRICE_DATE] = fields[_PRICE_DATE].toordinal()
            for index in _CONTENT:  # the stored row has them; a slot has a page
                fields[index] = None
            payload = _dumps(fields)
            if len(payload) > _SLOT_PAYLOAD:
                message = fields[_ERROR_MESSAGE]
                if message is not None:
                    fields[_ERROR_MESSAGE] = message[:_SHORT_MESSAGE]
                    payload = _dumps(fields)
            if len(payload) > _SLOT_PAYLOAD:
                if not self._too_big_said:
                    self._too_big_said = True
                    logger.warning(
                        "a usage row of %d bytes does not fit an in-flight slot (%d); such attempts are recorded "
                        "only when their call ends",
                        len(payload),
                        _SLOT_PAYLOAD,
                    )
                return None
        except Exception:
            logger.exception("could not encode an in-flight usage row")
            return None
        return payload

    def _write(self, slot: list[int], payload: bytes) -> None:
        try:
            data, offset = self._place(slot[0])
            offset += slot[1] * _HALF_BYTES
            version = next(self._versions)
            data[offset + _SLOT_HEADER : offset + _SLOT_HEADER + len(payload)] = payload
            _pack_slot(data, offset, len(payload), _crc32(payload, version & 0xFFFFFFFF), version)
        except Exception as error:
            logger.debug("could not write in-flight slot %d: %s", slot[0], error)

    def _place(self, number: int) -> tuple[mmap.mmap, int]:
        file, index = divmod(number, self._slots)
        return self._files[file].map, _SLOT_BYTES * (index + 1)  # the first page holds the magic

    def _grow(self) -> bool:
        """Adds a file of slots (under the lock); False while files cannot be made (said once in the log)."""
        if time.monotonic() < self._retry_at:
            return False
        name = f"{self._prefix}-{self._token}-i{len(self._files)}{_IN_FLIGHT_SUFFIX}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            file = _Segment(self.directory / name, _SLOT_BYTES * (self._slots + 1), _IN_FLIGHT_MAGIC)
        except OSError as error:
            self._retry_at = time.monotonic() + _RETRY_AFTER_FAILURE
            if self._healthy:
                logger.error(
                    "cannot write the in-flight usage table in %s (%s: %s); attempts in flight are lost if the "
                    "process is killed",
                    self.directory,
                    type(error).__name__,
                    error,
                )
            self._healthy = False
            return False
        self._healthy = True
        first = len(self._files) * self._slots
        self._files.append(file)
        self._free.extend(range(first + self._slots - 1, first - 1, -1))  # the lowest number is popped first
        return True

    def _drop(self) -> None:
        _live_tables.discard(self)
        files, self._files = self._files, []
        self._free = []
        for file in files:
            file.close(delete=True)


def _deleted(segment: _Segment) -> bool:
    """Whether the segment's file is no longer in its directory (unlinked, or the directory removed)."""
    try:
        return os.fstat(segment.fd).st_nlink == 0
    except OSError:
        return False


def _populate(segment: _Segment) -> None:
    """Maps the segment's pages for writing now, on the writer thread, in slices that hand the GIL over.

    Else the call path takes a page fault every 15 or so rows, the first time it writes a page (0.3 µs a
    row measured here, a quarter of the journal's cost). Linux 5.14 and later; elsewhere a no-op.
    """
    if _MADV_POPULATE_WRITE is None:
        return
    try:
        for offset in range(0, segment.size, _POPULATE_SLICE):
            segment.map.madvise(_MADV_POPULATE_WRITE, offset, min(_POPULATE_SLICE, segment.size - offset))
            hand_over_gil()
    except (OSError, ValueError):
        pass  # an older kernel: the pages are faulted in as rows are written


def orphaned_journals(directory: Path, prefix: str) -> Iterator[tuple[Path, int]]:
    """Journal segments of ``prefix`` whose process is gone, each with a descriptor that holds its lock.

    The caller reads the segment and, when its rows are stored, deletes it, then closes the descriptor.
    """
    return _orphans(directory, prefix, _SUFFIX)


def orphaned_in_flight(directory: Path, prefix: str) -> Iterator[tuple[Path, int]]:
    """In-flight tables of dead processes whose journal is replayed (none of its segments left), locked.

    Their final rows are stored by then, so a provisional row never takes the place of a final one. The
    caller reads the table (:func:`read_in_flight`), deletes it once its rows are stored, then closes the
    descriptor.
    """
    for path, fd in _orphans(directory, prefix, _IN_FLIGHT_SUFFIX):
        token = path.name[len(prefix) + 1 : path.name.rindex("-")]
        if any(directory.glob(f"{prefix}-{token}-*{_SUFFIX}*")):
            os.close(fd)  # its journal first (a replay that failed, or another process replaying it now)
            continue
        yield path, fd


def _orphans(directory: Path, prefix: str, suffix: str) -> Iterator[tuple[Path, int]]:
    if not journal_supported() or not directory.is_dir():
        return
    for path in sorted(directory.glob(f"{prefix}-*{suffix}*")):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # locked: its process is alive (ours included)
            os.close(fd)
            continue
        if not path.name.endswith(suffix):  # a process died making it, before any row: nothing to replay
            # Unless its process lives, and has just not locked it yet (it opens, then locks). A process of its
            # pid that lives may be another, given the pid since (in a container, the next worker): a file that
            # old was not made by it.
            pid = path.name[len(prefix) + 1 :].split("-", 1)[0]
            if not _alive(pid) or time.time() - os.fstat(fd).st_mtime > _HALF_MADE_SECONDS:
                with contextlib.suppress(OSError):
                    path.unlink()
            os.close(fd)
            continue
        if not path.exists():  # trimmed by its process between our open and our lock
            os.close(fd)
            continue
        yield path, fd


def _alive(pid: str) -> bool:
    """Whether a process of this id runs (a reused id counts: a half-made file then waits for a later replay)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True  # another user's process; or not our name: leave it
    return True


def read_journal(fd: int, path: Path) -> Iterator[UsageRow]:
    """The rows of a segment that its header does not count as stored, but those whose CRC fails; to the end.

    Raises:
        JournalFormatError: The file does not start as a segment of this format does.
    """
    size = os.fstat(fd).st_size
    if size < _HEADER_BYTES:
        return
    with mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as data:
        if data[: len(_MAGIC)] != _MAGIC:
            raise JournalFormatError(f"not a usage journal this version reads (it starts {data[:8]!r})")
        (stored,) = _STORED.unpack_from(data, len(_MAGIC))
        offset = _HEADER_BYTES
        while offset + _RECORD.size <= size:
            length, crc, number = _RECORD.unpack_from(data, offset)
            start = offset + _RECORD.size
            end = start + length
            if length == 0 or end > size:
                return
            payload = data[start:end]
            if zlib.crc32(payload) != crc:
                # Torn by a crash of the machine (the last one, then zeros), or a block the disk damaged: its
                # length still leads to the next record, whose own CRC says whether it is whole.
                logger.warning("skipping a torn or damaged record at byte %d of usage journal %s", offset, path)
                offset = end
                continue
            offset = end
            if number < stored:
                continue
            row = _row(payload)
            if row is None:
                logger.warning("skipping an unreadable record at byte %d of usage journal %s", start, path)
                continue
            yield row


def read_in_flight(fd: int, path: Path) -> Iterator[UsageRow]:
    """The rows in the occupied slots of an in-flight table: of each, its valid half of the higher version.

    Raises:
        JournalFormatError: The file does not start as an in-flight table of this format does.
    """
    size = os.fstat(fd).st_size
    if size < _SLOT_BYTES:
        return
    with mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as data:
        if data[: len(_IN_FLIGHT_MAGIC)] != _IN_FLIGHT_MAGIC:
            raise JournalFormatError(f"not an in-flight usage table this version reads (it starts {data[:8]!r})")
        for offset in range(_SLOT_BYTES, size - _SLOT_BYTES + 1, _SLOT_BYTES):
            best: tuple[int, bytes] | None = None
            for half in (offset, offset + _HALF_BYTES):
                length, crc, version = _SLOT.unpack_from(data, half)
                if not 0 < length <= _SLOT_PAYLOAD:
                    continue
                payload = data[half + _SLOT_HEADER : half + _SLOT_HEADER + length]
                if zlib.crc32(payload, version & 0xFFFFFFFF) == crc and (best is None or version > best[0]):
                    best = (version, payload)
            if best is None:
                continue
            row = _row(best[1])
            if row is None:
                logger.warning("skipping an unreadable in-flight slot at byte %d of %s", offset, path)
                continue
            yield row


def _row(payload: bytes) -> UsageRow | None:
    try:
        fields = marshal.loads(payload)  # noqa: S302 - our own file, and its CRC matched
        if not isinstance(fields, list):
            return None
        if len(fields) == _OLD_LENGTH:
            fields.insert(_CACHE_WRITE_1H, None)
        if len(fields) != len(ROW_FIELDS):
            return None
        fields[_STARTED] = datetime.fromtimestamp(fields[_STARTED], UTC)
        if fields[_PRICE_DATE] is not None:
            fields[_PRICE_DATE] = date.fromordinal(fields[_PRICE_DATE])
    except (ValueError, TypeError, EOFError, OverflowError):
        return None
    return tuple(fields)


if hasattr(os, "register_at_fork"):

    def _forget_in_child() -> None:
        # A forked child shares its parent's maps, and its locks: writing into the maps would overwrite the
        # parent's rows, and holding the locks would keep the parent's journal from being replayed after it died.
        for journal in list(_live):
            segments = [*journal._segments, *([journal._spare] if journal._spare is not None else [])]
            journal._current = journal._spare = None
            journal._segments = deque()
            journal._retry_at = float("inf")
            for segment in segments:
                with contextlib.suppress(Exception):
                    segment.close(delete=False)
        _live.clear()
        for table in list(_live_tables):
            files, table._files = table._files, []
            table._free = []
            table._closed = True
            for file in files:
                with contextlib.suppress(Exception):
                    file.close(delete=False)
        _live_tables.clear()

    os.register_at_fork(after_in_child=_forget_in_child)
