"""`UserError`: the base of every error a user causes and fixes (a config value, a file, a path).

The CLIs (main.py, train_dpo.py) print such an error's message as one `error:` line without a
traceback; anything else is a bug and keeps its traceback. Each subclass also keeps its old base
(mostly ValueError), so code that catches those still catches it. This module imports nothing of
the project's, so the light modules (pipeline, stages, artifacts) can depend on it.

`as_os_error` and `os_error_line`: the one line a CLI prints for an OSError (a full disk, a
read-only or missing path, a directory where a file belongs), also one that tensorstore (orbax's
checkpoints) reports as a ValueError: the environment, not a bug, so no traceback either.
"""

import errno
import os
import re


class UserError(Exception):
  """A problem in the user's input or environment; the message says what to change."""


# What to do, where the system's reason alone does not say it. A run stopped by an OSError has
# removed its temp files on the way out (atomic writes), so rerunning resumes where it stopped.
_HINTS = {
    errno.ENOSPC: "free some space, then rerun the same command to resume",
    errno.EDQUOT: "free some space, then rerun the same command to resume",
}


# tensorstore reports a failed local read or write as a ValueError such as 'RESOURCE_EXHAUSTED:
# Error writing "x" in OCDBT database at local file "D/": Failed writing: "D/d/9d85...": Failed to
# write 4771840 bytes to file 5: No space left on device [os_error_code='28']'. The last quoted
# path before the code is the file.
_TENSORSTORE_OS_ERROR = re.compile(r'"([^"]+)"[^"]*\[os_error_code=\'(\d+)\'\]')


def as_os_error(e: BaseException) -> OSError | None:
  """`e` if it is an OSError; an OSError with tensorstore's errno and file where `e` is
  tensorstore's report of one; else None (a bug, which keeps its traceback)."""
  if isinstance(e, OSError):
    return e
  if isinstance(e, ValueError):
    m = _TENSORSTORE_OS_ERROR.search(str(e))
    if m:
      code = int(m.group(2))
      return OSError(code, os.strerror(code), m.group(1))
  return None


def os_error_line(e: OSError) -> str:
  """"PATH: REASON" for `e`, e.g. "/w/config.json: No space left on device". The path is the one
  the OSError names; a write that failed while closing or flushing a file object names none (its
  `filename` is None), so then it is the innermost `path` argument (or `self.path`) of this
  package's functions on the traceback (the file being written). A failed rename names "SRC -> DST", or only DST where
  SRC is gone."""
  paths = [os.fsdecode(p) if isinstance(p, bytes) else str(p)
           for p in (e.filename, e.filename2) if p is not None]
  if len(paths) == 2 and not os.path.lexists(paths[0]):
    # A failed rename of a temp file the atomic writer has since removed: the destination is the
    # path the user can do something about (e.g. a directory where a file belongs).
    paths = paths[1:]
  if not paths:
    path = _path_in_traceback(e.__traceback__)
    paths = [path] if path else []
  reason = e.strerror or " ".join(str(e).split()) or type(e).__name__
  line = f"{' -> '.join(paths)}: {reason}" if paths else reason
  hint = _HINTS.get(e.errno)
  return f"{line}; {hint}" if hint else line


_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__)) + os.sep


def _path_in_traceback(tb) -> str | None:
  found = None
  while tb is not None:  # outermost first: the last match is the innermost
    frame = tb.tb_frame
    if os.path.realpath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
      # A function's `path` argument, or a method's object's (e.g. the workdir lock's file,
      # written through a descriptor that names no file).
      for value in (frame.f_locals.get("path"), getattr(frame.f_locals.get("self"), "path", None)):
        if isinstance(value, (str, os.PathLike)):
          found = os.fspath(value)
          break
    tb = tb.tb_next
  return found
