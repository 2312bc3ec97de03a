"""One exchange per SQLite file: the lock an exchange holds on its ledger while it serves.

``FILE.lock`` beside the ledger, held with ``flock`` (released when the process ends, however it
ends). Readers (``ledger``, ``audit``, the dashboard) never take it; a second exchange on the same
file is refused with one line instead of interleaving its rounds with the first one's.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from auctioneer.ledger.records import LedgerError

_SERVED_HERE: set[Path] = set()  # the lock files this process holds


@contextmanager
def serving(path: Path) -> Iterator[None]:
    """Hold the ledger at ``path`` for one exchange while it serves."""
    lock = lock_file(path)
    try:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LedgerError(f"cannot create the lock file {lock}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "?"
            raise LedgerError(
                f"another exchange (pid {holder}) is serving {path}: stop it first, or pass another --db"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
        _SERVED_HERE.add(lock)
        yield
    finally:
        _SERVED_HERE.discard(lock)
        os.close(descriptor)


def lock_file(path: Path) -> Path:
    """The lock an exchange serving the ledger at ``path`` holds (one whichever way the file is named:
    a symlink, ./market.db)."""
    real = path.resolve()
    return real.with_name(real.name + ".lock")


def served_elsewhere(path: Path) -> bool:
    """Whether another process holds the ledger at ``path`` for an exchange (see :func:`serving`)."""
    lock = lock_file(path)
    if lock in _SERVED_HERE:
        return False
    try:
        descriptor = os.open(lock, os.O_RDONLY)
    except OSError:  # no lock file (never served), or one this user cannot read: nothing to tell
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # closing releases the probe's own shared lock
    return False
