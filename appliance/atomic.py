"""Replacing a file so that a reader, or a power cut, sees the old content or the new, never a mix.

The new content goes to a temporary file beside the target, is flushed to the card (``fsync``),
renamed over the target, and the directory is flushed too: without that last step a power cut
within ext4's commit interval (``commit=600`` on the image's root) could bring the old file back.
"""
from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path | str, data: bytes | str, mode: int = 0o600, *, durable: bool = True,
                 owner_of: Path | str | None = None) -> None:
    """Replace ``path`` with ``data`` (text is UTF-8). ``durable`` False skips the two fsyncs (a file
    in RAM, or one rewritten so often that the card's writes matter more). ``owner_of``: give the
    new file that file's mode and owner (when run as root) instead of ``mode``. Raises ``OSError``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if owner_of is not None:
                st = os.stat(owner_of)
                os.fchmod(handle.fileno(), st.st_mode & 0o777)
                if os.geteuid() == 0:
                    os.fchown(handle.fileno(), st.st_uid, st.st_gid)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
