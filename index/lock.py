"""One writer per index directory: ``INDEX_DIR/writer.lock``, held with ``fcntl.flock`` while a build runs.

Why ``flock`` (and not a lock file created with ``O_CREAT|O_EXCL``):

- the kernel releases the lock when the holder's last descriptor closes, which includes a process killed with
  SIGKILL, so a stale lock needs no guessing from pids (which a reboot or pid reuse can make wrong) and no
  removal of another process's file;
- taking over a stale lock is the same atomic ``flock(LOCK_EX | LOCK_NB)`` call as taking a free one: of any
  number of processes trying at once, exactly one wins.

The lock file also records the holder (pid, host, start time, command line) as one JSON line, so a second
build fails at once with a message that names the build already running, and a build that takes over a lock
left by a killed process logs whose it was.

The holder removes the file before it closes its descriptor. A process that opened the old file just before
it was removed can still lock that (now nameless) file; :func:`_acquire` therefore checks that the locked file
is the one the path names (same inode) and otherwise tries again, so two writers never hold "the" lock.

The descriptor is not inherited by programs a build starts (Python opens files non-inheritable) and the
build's worker processes are spawned, not forked, so only the build process itself holds the lock. ``flock``
is local to one machine: on a network file system two hosts may not see each other's locks.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import inspect
import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from data.errors import SingrecError

log = logging.getLogger(__name__)

LOCK_NAME = "writer.lock"
HOLDER_WAIT = 1.0  # seconds to wait for the holder's line while it is being written (it is one write call)


def holder_info() -> dict:
    """What this process records in the lock file."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python",
                                 *sys.argv[1:]])}


def describe(holder: dict | None) -> str:
    """``pid 123 on host h, started 2025-01-01T00:00:00+00:00 (singrec index cat --out idx)``."""
    if not holder:
        return "a process that has not recorded itself yet"
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
    return text + (f" ({holder['command']})" if holder.get("command") else "")


def _read_holder(fd: int) -> dict | None:
    try:
        raw = os.pread(fd, 65536, 0)
        return json.loads(raw.decode()) if raw.strip() else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _dead(holder: dict) -> bool:
    """Whether a record names a process of this host that no longer runs (a killed build's record)."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, OverflowError):
        return False
    return False


def _read_holder_waiting(fd: int) -> dict | None:
    """The holder's record; waits up to HOLDER_WAIT seconds while the file is empty or still names a dead build,
    as it does for a moment after a holder has taken the lock and before it has written its own record."""
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        holder = _read_holder(fd)
        if (holder is not None and not _dead(holder)) or time.monotonic() >= deadline:
            return holder
        time.sleep(0.02)


def _acquire(path: Path) -> tuple[int, dict | None]:
    """Lock ``path`` (created if missing); returns the descriptor and a dead holder's record, if one was left.

    Raises SingrecError naming the holder if another process holds the lock.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise SingrecError(f"cannot lock {path.name}: {exc.strerror}", path.parent) from None
            holder = _read_holder_waiting(fd)
            os.close(fd)
            raise SingrecError(f"another build is writing this index: {describe(holder)}; wait for it to finish "
                               f"or stop it (a killed build's lock is taken over automatically)",
                               path.parent) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, _read_holder(fd)
        os.close(fd)  # the holder removed this file as it released it: lock the current one


def _release(fd: int, path: Path) -> None:
    try:
        path.unlink(missing_ok=True)  # first, while still locked (see the module docstring)
    finally:
        os.close(fd)


@contextmanager
def index_lock(index_dir: str | Path) -> Iterator[Path]:
    """Hold the write lock of ``index_dir`` (created if missing) for the ``with`` block; yields the lock path.

    Raises
    ------
    SingrecError : another process holds the lock; the message names it (pid, host, start time, command).
    """
    index_dir = Path(index_dir)
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SingrecError(f"cannot create the index directory: {exc.strerror}", index_dir) from None
    path = index_dir / LOCK_NAME
    fd, stale = _acquire(path)
    try:
        if stale is not None:
            log.warning("taking over the lock of %s in %s: that build is no longer running", describe(stale),
                        index_dir)
        me = json.dumps(holder_info()).encode() + b"\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)  # one write; a reader that finds it empty or cut short reads again
        log.debug("locked %s", path)
        yield path
    finally:
        _release(fd, path)


def holds_index_lock(arg: str) -> Callable:
    """Decorator: run the function while holding :func:`index_lock` on its argument named ``arg``."""
    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            with index_lock(sig.bind(*args, **kwargs).arguments[arg]):
                return fn(*args, **kwargs)
        return locked
    return wrap
