"""One run per workdir: an advisory lock file, `WORKDIR/workdir.lock`, taken before the run writes.

Two launches on one workdir would interleave their stage files, and the second one's start-up sweep
(`artifacts.sweep_temp`) would delete the first one's files in progress. So the run takes the lock
before its sweep and its first write (`hold`), and a second launch is refused with one line naming
the holder: host, PID and start time.

The lock file holds that record as JSON, plus a heartbeat (the time the holder last refreshed it)
and a random token. How the lock is kept and when it counts as stale depends on the workdir:

  local or NFS   `fcntl.flock` on the open lock file, held for the life of the process. The kernel
                 (the NFS server's lock manager for an NFS mount) releases it when the process
                 dies, however it dies, so a lock can never be left behind: a launch that finds the
                 file but gets the flock takes over, and says whose lock it was ("the process is
                 gone").
  gs://, s3://   an object store has no locks, and epath (how this project reaches it) offers no
                 write preconditions. The holder refreshes the heartbeat every `HEARTBEAT_SECONDS`
                 from a background thread; a lock whose heartbeat is older than `STALE_SECONDS` is
                 stale and taken over, with a message. Guarantee: two launches more than a few
                 seconds apart are told apart (GCS reads are strongly consistent after a write, and
                 each writer reads its token back); two started within the same second may both
                 run. The refresher checks its token each time and logs an error if another launch
                 has taken the lock over.

Multi-host runs: only process 0 takes the lock (the other processes write nothing of their own).
A clean exit, an error and Ctrl-C all remove the lock file (`release`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterator

from absl import logging

from meta_rewarding import artifacts
from meta_rewarding.errors import UserError

LOCK_FILE = "workdir.lock"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0   # ten missed heartbeats: the holder is gone, or cut off from the store
_READ_BACK_SECONDS = 1.0  # how long a remote writer waits before reading its token back


class WorkdirLockedError(UserError):
  """The workdir is in use by another run."""


def _describe(holder: dict) -> str:
  return (f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
          f"{holder.get('started', '?')}")


class WorkdirLock:
  """The lock of one workdir, held by this process between `acquire` and `release`."""

  def __init__(self, workdir: str, *, heartbeat_seconds: float = HEARTBEAT_SECONDS,
               stale_seconds: float = STALE_SECONDS, clock: Callable[[], float] = time.time):
    self.workdir = os.fspath(workdir)
    self.path = artifacts.join(self.workdir, LOCK_FILE)
    self.heartbeat_seconds = heartbeat_seconds
    self.stale_seconds = stale_seconds
    self.clock = clock
    self.remote = artifacts.is_remote(self.workdir)
    self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                   "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                   "token": uuid.uuid4().hex}
    self._fd: int | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  # --- acquire / release ---------------------------------------------------------------------------
  def acquire(self) -> str | None:
    """Takes the lock; returns a message when it took over a stale one (else None). Raises
    WorkdirLockedError naming the holder when the workdir is in use."""
    artifacts.makedirs(self.workdir)
    message = self._acquire_remote() if self.remote else self._acquire_local()
    self._thread = threading.Thread(target=self._refresh_loop, name="workdir-lock-heartbeat",
                                    daemon=True)
    self._thread.start()
    return message

  def release(self):
    """Stops the heartbeat and removes the lock file (only while it is still this process's)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
    try:
      if self.remote:
        if (self._read() or {}).get("token") == self.record["token"]:
          artifacts.remove(self.path)
      elif self._fd is not None:
        os.unlink(self.path)  # still holding the flock: nobody else can be using the file
    except OSError as e:  # a lock file that cannot be removed must not hide the run's own error
      logging.warning("could not remove the workdir lock %s: %s", self.path, e)
    finally:
      if self._fd is not None:
        os.close(self._fd)
        self._fd = None

  # --- local: flock ---------------------------------------------------------------------------------
  def _acquire_local(self) -> str | None:
    import fcntl  # POSIX only: a remote workdir's lock never needs it
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, artifacts.file_mode())
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = self._read_fd(fd)
        os.close(fd)
        raise WorkdirLockedError(
            f"{self.workdir} is in use by another run ({_describe(holder)}; lock {self.path}). "
            "Wait for it to finish or stop it, or use another --workdir") from None
      except OSError as e:
        os.close(fd)
        raise WorkdirLockedError(f"{self.path}: cannot lock the workdir ({e.strerror}); the "
                                 "filesystem must support flock") from e
      # The file may have been unlinked by its releasing holder between our open and our flock:
      # then this flock guards nothing, so start over on the path as it is now.
      try:
        same = os.path.samestat(os.fstat(fd), os.stat(self.path))
      except FileNotFoundError:
        same = False
      if not same:
        os.close(fd)
        continue
      previous = self._read_fd(fd)
      self._fd = fd
      self._write_local()
      if previous.get("token"):
        return (f"took over the workdir lock of {_describe(previous)}: the process is gone "
                "(it stopped without removing its lock)")
      return None

  def _read_fd(self, fd: int) -> dict:
    try:
      data = os.pread(fd, 1 << 16, 0)
      return json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
      return {}

  def _write_local(self):
    data = json.dumps({**self.record, "heartbeat": self.clock()}, sort_keys=True).encode() + b"\n"
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, data, 0)

  # --- remote: heartbeat ----------------------------------------------------------------------------
  def _read(self) -> dict | None:
    try:
      holder = artifacts.read_json(self.path) if artifacts.exists(self.path) else None
    except (artifacts.ArtifactError, OSError):
      return {}  # being written, or damaged: not ours; judged by its age below
    return holder if isinstance(holder, dict) or holder is None else {}

  def _write_remote(self):
    artifacts.write_json(self.path, {**self.record, "heartbeat": self.clock()})

  def _acquire_remote(self) -> str | None:
    message = None
    holder = self._read()
    if holder is not None:
      age = self.clock() - float(holder.get("heartbeat", 0) or 0)
      if age < self.stale_seconds:
        raise WorkdirLockedError(
            f"{self.workdir} is in use by another run ({_describe(holder)}; its heartbeat is "
            f"{age:.0f} s old; lock {self.path}). Wait for it to finish or stop it, or use another "
            f"--workdir; a lock not refreshed for {self.stale_seconds:.0f} s is taken over")
      message = (f"took over the workdir lock of {_describe(holder)}: no heartbeat for "
                 f"{age:.0f} s (more than {self.stale_seconds:.0f} s)")
    self._write_remote()
    time.sleep(_READ_BACK_SECONDS)
    now = self._read() or {}
    if now.get("token") != self.record["token"]:
      raise WorkdirLockedError(f"{self.workdir}: another run ({_describe(now)}) took the workdir "
                               f"lock {self.path} at the same time; use another --workdir")
    return message

  # --- heartbeat --------------------------------------------------------------------------------------
  def _refresh_loop(self):
    while not self._stop.wait(self.heartbeat_seconds):
      try:
        if self.remote:
          holder = self._read() or {}
          if holder.get("token") != self.record["token"]:
            logging.error("the workdir lock %s was taken over by %s: two runs may now write to %s",
                          self.path, _describe(holder), self.workdir)
            return
          self._write_remote()
        else:
          self._write_local()
      except OSError as e:  # a missed heartbeat is not worth stopping the run for
        logging.warning("could not refresh the workdir lock %s: %s", self.path, e)


_held: dict[str, WorkdirLock] = {}


@contextlib.contextmanager
def hold(workdir: str, *, enabled: bool = True) -> Iterator[None]:
  """Holds the lock of `workdir` for the duration (a no-op when this process holds it already, or
  when not `enabled`: the processes other than process 0 of a multi-host run)."""
  key = os.fspath(workdir) if artifacts.is_remote(workdir) else os.path.abspath(workdir)
  if not enabled or key in _held:
    yield
    return
  lock = WorkdirLock(workdir)
  message = lock.acquire()
  if message:
    logging.warning("%s", message)
  _held[key] = lock
  try:
    yield
  finally:
    del _held[key]
    lock.release()
