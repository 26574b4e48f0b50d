"""Writing a partition of ``events`` to ``<folder>/<partition>.jsonl.gz`` for prune.

The folder is trusted only when no one else can plant or swap files in it: it must
belong to us (or root) and, if group or others may write into it, carry the sticky bit
(as ``/tmp`` does); :meth:`ArchiveFolder.open` refuses it otherwise, before anything is
dropped. Each file is created new (``O_EXCL|O_NOFOLLOW``, mode 0600) under a random
temporary name, relative to the folder opened once, and renamed over the final name only
once durable: no link is followed and no file someone else made is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import secrets
import stat
from pathlib import Path

import attrs
import psycopg
from psycopg import sql as pgsql
from psycopg.rows import DictRow

from wis2l_core.errors import ValidationError

__all__ = ["ArchiveFolder", "archive_partition"]

log = logging.getLogger("wis2l_core.db.retention")

_Conn = psycopg.AsyncConnection[DictRow]


async def archive_partition(conn: _Conn, name: str, folder: ArchiveFolder) -> tuple[Path, int]:
    """Write the partition to ``<folder>/<name>.jsonl.gz``: new temp file, fsync, rename.

    ``row_to_json`` renders one line per row, columns in table order (JSON escapes every
    control character), so the COPY text format's only escape left in a line is the
    doubled backslash.
    """
    out = await asyncio.to_thread(_ArchiveFile, folder, name)
    query = pgsql.SQL("COPY (SELECT row_to_json(e) FROM {} e) TO STDOUT").format(
        pgsql.Identifier(name)
    )
    try:
        buffer = bytearray()
        async with conn.cursor().copy(query) as copy:
            async for block in copy:
                buffer += block
                if len(buffer) >= _CHUNK:  # whole rows only: never half an escape
                    cut = buffer.rfind(b"\n") + 1
                    await asyncio.to_thread(out.write, bytes(buffer[:cut]))
                    del buffer[:cut]
        if buffer and not buffer.endswith(b"\n"):  # pragma: no cover - COPY ends rows so
            raise OSError(f"archive of {name}: the last row was cut short")
        await asyncio.to_thread(out.write, bytes(buffer))
        path = await asyncio.to_thread(out.commit)
    except BaseException:
        await asyncio.shield(asyncio.to_thread(out.abort))
        raise
    log.info("archived %s: %d rows to %s", name, out.rows, path, extra={"partition": name})
    return path, out.rows


_CHUNK = 1 << 20
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


@attrs.define
class ArchiveFolder:
    """The archive folder, opened once: every file is made relative to this descriptor,
    so swapping the path for a link after the check changes nothing."""

    path: Path
    fd: int

    @classmethod
    def open(cls, path: Path, *, create: bool) -> ArchiveFolder | None:
        """Open ``path`` (made 0700 when missing and ``create``; else ``None`` when
        missing) and check it is safe.

        Raises:
            ValidationError: it belongs to someone else, or others may write into it and
                it has no sticky bit (see the module's docstring).
            OSError: it cannot be made or opened (e.g. a file is in the way).
        """
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif not os.path.lexists(path):
            return None
        ours = (os.geteuid(), 0)
        link = os.lstat(path)
        if stat.S_ISLNK(link.st_mode) and link.st_uid not in ours:
            raise _unsafe(path, f"is a symbolic link made by uid {link.st_uid}, not by you")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if st.st_uid not in ours:
                raise _unsafe(path, f"belongs to uid {st.st_uid}, not to you")
            if st.st_mode & _OTHERS_WRITE and not st.st_mode & stat.S_ISVTX:
                raise _unsafe(
                    path,
                    f"may be written by other users (mode {stat.S_IMODE(st.st_mode):04o}) "
                    "and has no sticky bit",
                )
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self.fd)


def _unsafe(path: Path, why: str) -> ValidationError:
    return ValidationError(
        f"archive folder {path} {why}: another user could plant or swap the archive; "
        "use a folder only you can write into (chmod go-w, or +t), nothing was pruned",
        field="archive_dir",
    )


class _ArchiveFile:
    """A gzip JSON Lines file written under a new temporary name, renamed once durable."""

    def __init__(self, folder: ArchiveFolder, name: str) -> None:
        self.folder = folder
        self.final = f"{name}.jsonl.gz"
        self.temp = f".{name}.jsonl.gz.{secrets.token_hex(8)}.tmp"
        self.rows = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self._raw = os.fdopen(os.open(self.temp, flags, 0o600, dir_fd=folder.fd), "wb")
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=6)

    def write(self, data: bytes) -> None:
        """Append whole rows of COPY text output (one JSON object per line)."""
        self.rows += data.count(b"\n")
        self._gzip.write(data.replace(b"\\\\", b"\\"))

    def commit(self) -> Path:
        self._gzip.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        fd = self.folder.fd
        os.replace(self.temp, self.final, src_dir_fd=fd, dst_dir_fd=fd)  # a link is replaced
        os.fsync(fd)
        return self.folder.path / self.final

    def abort(self) -> None:
        self._gzip.close()
        self._raw.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp, dir_fd=self.folder.fd)
