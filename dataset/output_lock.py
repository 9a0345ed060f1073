"""One writer at a time per build output: an OS advisory lock on DATA/.longseq.lock.

`longseq build`, `validate` and `publish` each hold the lock of their `--data` directory
while they run; a second process asking for it fails at once, naming the holder:

    with output_lock(out, "build", log=print) as locked:
        ...

- The lock is `fcntl.flock` on DATA/.longseq.lock, so the kernel releases it when its
  process ends, however it ends (`kill -9` included): a lock left behind is never a
  guess about whether its holder is still alive. The file itself stays; what it holds
  (pid, host, command, start time) only names the holder in the error, and is cleared
  when the lock is released.
- Re-entrant within a process: code already holding the lock (the CLI's `publish`,
  a pipeline that builds, validates and publishes) can call functions that take it
  again. That makes it a per-process lock, not a per-thread one.
- flock is local to a machine's kernel; on NFS, Linux maps it to NFS byte-range locks,
  which hold across clients only if the server supports them.
- Non-local outputs (hdfs://, s3a://, gs://): no OS lock exists there, and a marker file
  could not be told apart from one left by a killed process without guessing. So no lock
  is taken: the first use of such an output in a process logs a warning, and whoever
  schedules the jobs (one Airflow DAG run at a time) must keep them apart. file:// URIs
  are local paths and are locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator
from urllib.parse import urlparse

from longseq.schemas.errors import LongseqError

LOCK_NAME = ".longseq.lock"


class OutputLockedError(LongseqError):
    """Another process holds the build output's lock."""


@dataclass
class _Hold:
    fd: int
    pid: int  # a forked child inherits the registry but must not count as the holder
    depth: int = 1


_held: dict[str, _Hold] = {}
_registry = threading.Lock()
_warned: set[str] = set()


def lock_path(out: str) -> str | None:
    """DATA/.longseq.lock for a local output (a plain path or file://), else None."""
    u = urlparse(str(out))
    if u.scheme not in ("", "file"):
        return None
    root = u.path if u.scheme == "file" else str(out)
    return os.path.join(os.path.realpath(root), LOCK_NAME)


def holder_info(operation: str) -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "operation": operation,
        "command": shlex.join([os.path.basename(sys.argv[0]) or "python", *sys.argv[1:]]) if sys.argv else "",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def describe_holder(text: str) -> str:
    """The holder as the error names it, from the lock file's text."""
    try:
        h = json.loads(text)
        return (f"pid {h['pid']} on {h['host']} ({h['operation']}: `{h['command']}`), "
                f"since {h['started']}")
    except (ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet"


def _read_holder(fd: int) -> str:
    # the holder writes its info right after taking the lock: give it a moment
    for _ in range(20):
        text = os.pread(fd, 65536, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return ""


def _acquire(path: str, operation: str) -> int:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = describe_holder(_read_holder(fd))
        os.close(fd)
        raise OutputLockedError(
            f"{os.path.dirname(path)} is in use by {holder}: wait for it to finish, or stop it "
            f"(lock {path}; it is freed when that process exits)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder_info(operation)).encode(), 0)
    return fd


def _release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)  # the next reader must not name a holder that has gone
    finally:
        os.close(fd)  # closing the last descriptor drops the flock


@contextmanager
def output_lock(out: str, operation: str, log: Callable[[str], None] = print) -> Iterator[bool]:
    """Hold the lock of build output `out` for `operation` (build, validate, publish).

    Yields True while the lock is held, False for a non-local output, which is not locked
    (a warning is logged once per output and process). Raises OutputLockedError at once,
    naming the holder, when another process holds it.
    """
    path = lock_path(out)
    if path is None:
        if out not in _warned:
            _warned.add(out)
            log(f"warning: {out} is not a local path, so no lock keeps two builds, validations or publishes "
                f"of it apart: run one at a time (e.g. one Airflow DAG run at a time)")
        yield False
        return
    with _registry:
        hold = _held.get(path)
        if hold is not None and hold.pid == os.getpid():
            hold.depth += 1
        else:
            hold = _held[path] = _Hold(_acquire(path, operation), os.getpid())
    try:
        yield True
    finally:
        with _registry:
            hold.depth -= 1
            if hold.depth == 0:
                del _held[path]
                _release(hold.fd)
