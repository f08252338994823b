"""Leases: at most one live process trains a run, whichever driver, executor or host started it.

A worker takes its run's lease, a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local
filesystems and NFSv3+), before it trains, and removes it when the run is recorded or interrupted. The
file names its holder: host, pid, the pid namespace and the process's start time (to tell a reused pid
from the holder), when it was taken, and a token unique to this lease. While it trains, the holder
touches the file every ``HEARTBEAT_S`` seconds.

Another process that finds the file decides whether its holder is still alive:

- on the same machine (same host name and pid namespace) by the process itself: a pid that no longer
  exists, or that belongs to a process started at another time, is dead; where the start time cannot be
  read (macOS) a live pid counts as the holder while it heartbeats;
- on another machine (Slurm nodes, Ray workers) by the heartbeat: a lease whose file has not been
  touched for ``timeout_s()`` seconds (``HARNESS_LEASE_TIMEOUT_S``, default 300: ten missed
  heartbeats) is stale. The hosts' clocks must agree to well within that.

A stale lease is taken over: the taker removes it under a short-lived ``.break`` lock, re-reading it
there so that a lease someone else took meanwhile is never removed, then creates its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import UsageError

#: Seconds between two touches of a held lease.
HEARTBEAT_S = 30.0
#: The environment variable that sets how old an untouched lease of another machine must be to be stale.
TIMEOUT_ENV = "HARNESS_LEASE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0
#: Seconds after which a ``.break`` lock (held for a few file operations) was left by a dead process.
BREAK_STALE_S = 60.0
#: Attempts to take a lease before giving up to its last holder (``RETRY_S`` apart while another breaks it).
ATTEMPTS = 100
RETRY_S = 0.05


def timeout_s() -> float:
    """Seconds after which an untouched lease held on another machine is stale (``HARNESS_LEASE_TIMEOUT_S``)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    if not text.strip():
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise UsageError(
            f"{TIMEOUT_ENV}={text!r}: expected a number of seconds > 0 after which an untouched lease "
            f"of another machine is stale (default {DEFAULT_TIMEOUT_S:g}; leases heartbeat every {HEARTBEAT_S:g} s)"
        )
    return value


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None where unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), or "" where that is unknown."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def _pid_alive(pid: int) -> bool:
    """Whether a process (not a zombie) with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    fields = _stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))


def _pid_namespace() -> str:
    with contextlib.suppress(OSError):
        return os.readlink("/proc/self/ns/pid")
    return ""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lease (from its file; ``host`` is "" when the file could not be read)."""

    host: str
    pid: int
    pid_namespace: str = ""
    process_start: str = ""
    since: str = ""
    token: str = ""

    @classmethod
    def this_process(cls) -> Holder:
        """A new holder record for this process."""
        pid = os.getpid()
        return cls(
            host=socket.gethostname(),
            pid=pid,
            pid_namespace=_pid_namespace(),
            process_start=process_start(pid),
            since=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            token=uuid.uuid4().hex,
        )

    def describe(self) -> str:
        """``host:pid (since TIME)``, or what is known of an unreadable lease."""
        if not self.host:
            return "an unreadable lease file"
        return f"{self.host}:{self.pid} (since {self.since})"

    def on_this_machine(self) -> bool:
        return self.host == socket.gethostname() and self.pid_namespace == _pid_namespace()

    def alive(self, age_s: float, timeout: float) -> bool:
        """Whether the holder still trains, given the seconds since its lease file was last touched."""
        if self.on_this_machine():
            if not _pid_alive(self.pid):
                return False
            start = process_start(self.pid)
            if start and self.process_start:
                return start == self.process_start
        return age_s < timeout


def _read(path: Path) -> tuple[Holder, float, bytes, int] | None:
    """The lease at ``path``: its holder, age in seconds, raw content and inode; None when there is none."""
    try:
        with path.open("rb") as stream:
            content = stream.read()
            stat = os.fstat(stream.fileno())
    except FileNotFoundError:
        return None
    try:
        fields = json.loads(content)
        holder = Holder(**{field.name: fields[field.name] for field in dataclasses.fields(Holder)})
    except (ValueError, TypeError, KeyError):  # being written, or damaged: judged by its age alone
        holder = Holder(host="", pid=0)
    return holder, time.time() - stat.st_mtime, content, stat.st_ino


class Lease:
    """A lease this process holds: heartbeats until released; a context manager that releases it."""

    def __init__(self, path: Path, holder: Holder, heartbeat_s: float) -> None:
        self.path = path
        self.holder = holder
        self.lost = False  # set by the heartbeat when it finds the lease taken over
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat_s,), name="lease-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(OSError):  # unreachable for a moment: the next beat tries again
                if not self.held():  # taken over (this process stalled past the timeout): never touch theirs
                    self.lost = True
                    return
                os.utime(self.path)

    def held(self) -> bool:
        """Whether the lease file is still this lease's (False once another process took it over)."""
        current = _read(self.path)
        return current is not None and current[0].token == self.holder.token

    def release(self) -> None:
        """Stop the heartbeat and remove the lease file, if it is still this lease's."""
        self._stop.set()
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _create(path: Path, holder: Holder) -> bool:
    """Create the lease file for ``holder``; False when one exists."""
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(handle, json.dumps(dataclasses.asdict(holder)).encode())
        os.fsync(handle)
    finally:
        os.close(handle)
    return True


def _break(path: Path, content: bytes, inode: int) -> bool:
    """Remove the stale lease at ``path`` if it is still the one read (``content``, ``inode``).

    Under ``<path>.break``, created exclusively, so that two takers cannot both remove a lease and the
    second remove the one the first just created. False when another process holds ``.break``; one older
    than ``BREAK_STALE_S`` was left by a process that died within these few lines and is removed.
    """
    breaker = path.with_name(path.name + ".break")
    try:
        handle = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - breaker.stat().st_mtime > BREAK_STALE_S:
                breaker.unlink()
        return False
    try:
        current = _read(path)
        if current is not None and current[2] == content and current[3] == inode:
            path.unlink(missing_ok=True)
    finally:
        os.close(handle)
        breaker.unlink(missing_ok=True)
    return True


def take(path: Path, *, heartbeat_s: float = HEARTBEAT_S) -> Lease | Holder:
    """Take the lease at ``path`` (a stale one is taken over); or return the live holder that has it.

    After ``ATTEMPTS`` tries against other takers that keep replacing the file, the last holder seen.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    timeout = timeout_s()
    holder = Holder.this_process()
    found: Holder | None = None
    for _ in range(ATTEMPTS):
        if _create(path, holder):
            return Lease(path, holder, heartbeat_s)
        current = _read(path)
        if current is None:  # released between the two calls
            continue
        found, age, content, inode = current
        if found.alive(age, timeout):
            return found
        if not _break(path, content, inode):
            time.sleep(RETRY_S)
    return found or Holder(host="", pid=0)
