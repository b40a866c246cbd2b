"""The spool: the events a worker's writer holds, mirrored on disk until Postgres has them.

The writer flushes once a second under steady traffic (sooner when traffic pauses). What it
holds meanwhile would be lost if the worker were killed outright (SIGKILL, the OOM killer, a
crash); a normal stop drains it. So every event the writer takes is also appended to this
worker's spool file, in the journal's format, as it is taken: one `write` per batch of events
taken, into the page cache (no fsync: this guards against a dead process, not a dead machine),
a few µs. When a flush starts, the file is sealed and a new one takes the events that arrive
meanwhile; a sealed file is removed once its events are committed to Postgres or kept in the
journal.

A worker holds an exclusive `flock` on its spool for as long as it lives, from before the file
has its final name. Whoever can take the lock of a spool that is not its own knows the owner is
gone, and turns the file into a journal file (`adopt_orphans`). The writer replays journal files
with `ON CONFLICT DO NOTHING` and every event carries its id from the moment it is taken, so
the events a dying worker had already committed are not written twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from pathlib import Path

log = logging.getLogger("lectr.spool")


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path: Path | None = None
        self._fd: int | None = None
        self._size = 0
        self._sealed: list[tuple[Path, int]] = []  # files whose events are being written

    def open(self) -> None:
        """Create and lock a new spool file for this worker (blocking; a few µs)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"spool-{os.getpid()}-{uuid.uuid4().hex}"
        tmp = self.folder / f".{name}.tmp"  # not a `spool-*` name until it is locked
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = self.folder / f"{name}.jsonl"
            os.rename(tmp, path)
        except OSError:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        self._fd, self.path, self._size = fd, path, 0

    @property
    def active(self) -> bool:
        return self._fd is not None

    def append(self, data: bytes) -> None:
        """Append complete journal lines. A spool that cannot be written is given up (with a
        warning): events are then held in memory only, as they would be without a spool."""
        fd = self._fd
        if fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            log.warning("cannot write the event spool %s (%s); held events are in memory only", self.path, exc)
            self._give_up()
            return
        self._size += len(data)

    def _give_up(self) -> None:
        """Stop writing to the open file. It stays locked (its events are held) until they are
        committed, like a sealed one: nobody adopts the events of a live worker."""
        if self._fd is not None and self.path is not None:
            self._sealed.append((self.path, self._fd))
        self._fd, self.path, self._size = None, None, 0

    def seal(self) -> None:
        """A flush starts with everything appended so far: later events go to a new file."""
        if self._fd is None or self._size == 0:
            return
        self._give_up()
        try:
            self.open()
        except OSError as exc:
            log.warning("cannot open a new event spool in %s (%s); held events are in memory only", self.folder, exc)

    def release_sealed(self) -> None:
        """The sealed files' events are committed (or journaled): remove the files."""
        sealed, self._sealed = self._sealed, []
        for path, fd in sealed:
            path.unlink(missing_ok=True)
            os.close(fd)

    def abandon_sealed(self) -> None:
        """The sealed files' events could not be kept anywhere else: unlock the files and leave
        them for adoption (by a sibling, or by this worker at its next look)."""
        for _, fd in self._sealed:
            os.close(fd)
        self._sealed = []

    def close(self, *, settled: bool = False) -> None:
        """Let go of the spool. `settled`: every event in it is committed or journaled (a drained
        stop), so its files go; otherwise a file that holds events is left, unlocked, for adoption."""
        if settled:
            self.release_sealed()
        else:
            self.abandon_sealed()
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if (settled or self._size == 0) and self.path is not None:
            self.path.unlink(missing_ok=True)
        os.close(fd)

    def adopt_orphans(self) -> int:
        """Turn the spools of workers that are gone into journal files; returns how many."""
        adopted = 0
        if not self.folder.is_dir():
            return 0
        for path in self.folder.glob(".spool-*.tmp"):  # created, never named: its worker died at once
            self._remove_if_unlocked(path)
        for path in self.folder.glob("spool-*.jsonl"):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # adopted by another worker meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its worker is alive
                data = os.pread(fd, os.fstat(fd).st_size, 0)
                whole = data.rfind(b"\n") + 1  # a line cut short by the kill was never a whole event
                if whole == 0:
                    path.unlink(missing_ok=True)
                    continue
                if whole < len(data):
                    os.ftruncate(fd, whole)
                try:
                    path.rename(self.folder / f"events-{path.stem.removeprefix('spool-')}.jsonl")
                except FileNotFoundError:
                    continue
                adopted += 1
                log.warning("adopted the event spool of a worker that is gone: %s", path.name)
            finally:
                os.close(fd)
        return adopted

    @staticmethod
    def _remove_if_unlocked(path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
        except BlockingIOError:
            pass  # a worker is naming it right now
        finally:
            os.close(fd)


__all__ = ["Spool"]
