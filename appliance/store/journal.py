"""The redo journal: what the RAM working copy changed, appended to a file on the card.

Why not a SQLite commit every ``flush_seconds``: on the card, a WAL commit also dirties the
WAL index (``-shm``, 4-5 pages of 4 KiB for a dozen frames) and the frames land on a page
the previous commit left half full; ``write_bytes`` showed ~41 KiB per group commit, ~7 MB
a day at the reference load (``python -m bench sdwear``). A journal record is one
compressed block, ~3 KiB, starting on a 4 KiB boundary of a preallocated file: one page
written per group commit, no file growth, no metadata. The database gets everything in
one big commit every ``MATERIALIZE_EVERY`` flush periods (``flush``), after which the
journal starts again.

Format: records one after the other, each starting on a 4 KiB boundary: a header
(magic, epoch, sequence number, payload length, CRC-32 of the payload), then the payload
(zlib-compressed JSON). The database's ``meta`` names the current epoch; records of
another epoch (already in the database) and anything after the first bad record (a write
cut short by the power) are ignored. Because a record never shares a page with an older
one, a torn write cannot damage a record that was already on the card.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import mmap
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator

MAGIC = b"SGJ1"
HEADER = struct.Struct(">4sIQII")  # magic, epoch, sequence, payload length, crc32
PAGE = 4096
PREALLOCATE = 256 * 1024
"""The file grows in steps this size (a full step is ~80 records: ~7 hours at the default)."""


def encode(record: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(record, separators=(",", ":")).encode(), 9)


def decode(payload: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(payload))


class Journal:
    def __init__(self, path: Path):
        self.path = path

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time, across processes (an appended record and the commit that empties
        the journal must not interleave)."""
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o660)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES):
                raise
            fd = os.open(lock, os.O_RDONLY)  # a read-only file system: flock still works
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def records(self, epoch: int) -> Iterator[tuple[int, int, bytes]]:
        """``(offset, sequence, payload)`` of every valid record of ``epoch``, in order."""
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return
        with handle:
            offset = 0
            while True:
                handle.seek(offset)
                header = handle.read(HEADER.size)
                if len(header) < HEADER.size:
                    return
                magic, record_epoch, sequence, length, crc = HEADER.unpack(header)
                if magic != MAGIC or record_epoch != epoch:
                    return
                payload = handle.read(length)
                if len(payload) < length or zlib.crc32(payload) != crc:
                    return
                yield offset, sequence, payload
                offset += _pages(HEADER.size + length)

    def end(self, epoch: int) -> int:
        """Where the next record of ``epoch`` goes (read once, at start: afterwards the working copy
        keeps it). The pages just read leave the cache: a page that readahead brought in, in a
        large folio, would be written back whole."""
        end = 0
        for offset, _, payload in self.records(epoch):
            end = offset + _pages(HEADER.size + len(payload))
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        return end

    def append(self, epoch: int, sequence: int, payload: bytes, offset: int) -> int:
        """Write one record at ``offset`` and wait until it is on the card; returns where the next goes.

        Direct I/O where the file system has it: exactly the record's pages go to the card, whatever
        the page cache holds."""
        size = _pages(HEADER.size + len(payload))
        buffer = mmap.mmap(-1, size)  # page-aligned, as direct I/O wants; the rest stays zero
        buffer.write(HEADER.pack(MAGIC, epoch, sequence, len(payload), zlib.crc32(payload)) + payload)
        for direct in (True, False):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | (os.O_DIRECT if direct else 0), 0o660)
            except OSError as exc:
                if direct and exc.errno == errno.EINVAL:
                    continue
                raise
            try:
                length = os.fstat(fd).st_size
                if length < offset + size:  # zeros written once: no unwritten extents to convert later
                    grown = -(-(offset + size) // PREALLOCATE) * PREALLOCATE
                    zeros = mmap.mmap(-1, grown - length)
                    os.pwrite(fd, zeros, length)
                os.pwrite(fd, buffer, offset)
                os.fdatasync(fd)
                return offset + size
            except OSError as exc:
                if not (direct and exc.errno == errno.EINVAL):
                    raise
            finally:
                os.close(fd)
        raise AssertionError("unreachable")


def _pages(size: int) -> int:
    return -(-size // PAGE) * PAGE
