"""One writer per workdir: `run-local` (and `pool restore`) hold an exclusive lock on
`<workdir>/.adaptinf.lock` while they run.

Two runs on one workdir would race in MLflow's sqlite schema migration and clear each other's
in-flight stage outputs. The lock is a kernel `flock`: it goes away with its process, so the lock
of a process that died (SIGKILL, a lost terminal) is taken over by the next run without anyone
deleting a file. The file also names the holder (pid, host, start time) so that a refused run
can say who holds it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from adaptinf.spec import SpecError

log = logging.getLogger(__name__)

LOCK_NAME = ".adaptinf.lock"


class WorkdirLocked(SpecError):
    """Another live process holds the workdir."""


def _holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (it has not written its details yet)"
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {started} ({holder.get('command', '?')})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


@contextmanager
def workdir_lock(workdir: str | Path, command: str = "run-local") -> Iterator[None]:
    """Hold the workdir's lock for the block, or raise WorkdirLocked naming the holder."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirLocked(f"workdir {workdir} is in use by {describe(_holder(path))}; wait for it to "
                                f"finish, or use another --workdir") from None
        stale = _holder(path)
        if stale.get("pid") and stale.get("host") == socket.gethostname() and not _alive(int(stale["pid"])):
            log.warning("workdir %s: took over the lock of %s, which is no longer running", workdir, describe(stale))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            # Emptied, never unlinked: a process already waiting on this inode must not end up
            # holding a lock on a deleted file while a third one locks a new one.
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def held_by_other(workdir: str | Path) -> dict[str, Any] | None:
    """The holder's details if a live process holds the workdir's lock, else None (does not lock)."""
    path = Path(workdir) / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(path) or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
