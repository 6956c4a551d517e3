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
recorder's writer thread (see ``accounting/events.py``): at 25,000 rows/s the
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
datetime). The file is preallocated, so the end is the first zero length; the
header is written after the payload, and the CRC rejects a record torn by a
crash of the machine.
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
from .events import ROW_FIELDS, UsageRow

try:
    import fcntl
except ImportError:  # Windows: no flock, no journal (rows wait in memory, as before)
    fcntl = None  # type: ignore[assignment]

__all__ = ["SEGMENT_BYTES", "Journal", "journal_supported", "orphaned_journals", "read_journal"]

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
# madvise(MADV_POPULATE_WRITE): the kernel's constant (the mmap module names it from Python 3.13 on).
_MADV_POPULATE_WRITE: Final = getattr(mmap, "MADV_POPULATE_WRITE", 23) if sys.platform == "linux" else None
_POPULATE_SLICE: Final = 64 << 10  # 16 pages: well under a millisecond holding the GIL

_live: weakref.WeakSet[Journal] = weakref.WeakSet()
_journals = itertools.count()


def journal_supported() -> bool:
    """Whether this platform has what the journal needs (``flock`` and shared memory maps)."""
    return fcntl is not None and hasattr(os, "posix_fallocate")


class _Segment:
    """One mapped, locked, preallocated segment file."""

    __slots__ = ("end", "fd", "map", "path", "size", "start")

    def __init__(self, path: Path, size: int) -> None:
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
            os.pwrite(self.fd, _MAGIC, 0)
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
        self._token = f"{os.getpid()}-{time.time_ns():x}{next(_journals):x}"  # a dead process's pid may be reused
        self._numbers = itertools.count()
        self._segment_bytes = segment_bytes
        self._segments: deque[_Segment] = deque()  # in row order; the last one is being appended to
        self._current: _Segment | None = None
        self._offset = 0
        self._spare: _Segment | None = None
        self._appended = 0  # rows handed to append(), journaled or not
        self._stored = 0
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
                    return
                offset = _HEADER_BYTES
                end = offset + _RECORD_BYTES + size
            data = segment.map
            data[offset + _RECORD_BYTES : end] = payload
            # The record's header last: a record is whole or absent (the CRC catches a torn page after a crash).
            _pack_record(data, offset, size, _crc32(payload), number)
            self._offset = end
        except Exception as error:  # the journal must never break a model call; the row is still queued
            self._failed(error)

    def _next_segment(self, number: int, needed: int) -> _Segment | None:
        """Moves on to a new segment for row ``number`` and on; None while segments cannot be made."""
        previous = self._current
        if previous is not None:
            previous.end = number  # every row it holds comes before this one
            self._current = None
        segment = self._spare
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
        name = f"{self._prefix}-{self._token}-{next(self._numbers):06d}{_SUFFIX}"
        segment = _Segment(self.directory / name, size)
        if not self._healthy:
            logger.warning("usage journal in %s writable again", self.directory)
            self._healthy = True
        return segment

    # -- the writer thread ------------------------------------------------------------

    def prepare(self) -> None:
        """Makes the next segment ahead of time, and faults its pages in, so the call path need not.

        Only once the current segment is half full: a process that records little keeps one segment.
        """
        current = self._current
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
    if not journal_supported() or not directory.is_dir():
        return
    for path in sorted(directory.glob(f"{prefix}-*{_SUFFIX}*")):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # locked: its process is alive (ours included)
            os.close(fd)
            continue
        if not path.name.endswith(_SUFFIX):  # a process died making it, before any row: nothing to replay
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
            continue
        if not path.exists():  # trimmed by its process between our open and our lock
            os.close(fd)
            continue
        yield path, fd


def read_journal(fd: int, path: Path) -> Iterator[UsageRow]:
    """The rows of a segment that its header does not count as stored; stops at the end or a torn record."""
    size = os.fstat(fd).st_size
    if size < _HEADER_BYTES:
        return
    with mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as data:
        if data[: len(_MAGIC)] != _MAGIC:
            logger.warning("skipping %s: not a usage journal", path)
            return
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
                logger.warning("usage journal %s ends in a torn record at byte %d", path, offset)
                return
            offset = end
            if number < stored:
                continue
            row = _row(payload)
            if row is None:
                logger.warning("skipping an unreadable record at byte %d of usage journal %s", start, path)
                continue
            yield row


def _row(payload: bytes) -> UsageRow | None:
    try:
        fields = marshal.loads(payload)  # noqa: S302 - our own file, and its CRC matched
        if not isinstance(fields, list) or len(fields) != len(ROW_FIELDS):
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

    os.register_at_fork(after_in_child=_forget_in_child)
