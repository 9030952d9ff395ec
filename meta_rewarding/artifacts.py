"""Atomic JSONL artifacts: a file is either absent or complete, never half-written.

Every write goes to a temporary file in the same directory, is flushed and fsynced, then renamed
over the destination (atomic on POSIX). Readers report the file and line of anything malformed.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Iterable, Iterator, TextIO


class ArtifactError(ValueError):
  """An artifact file that cannot be read back."""


def _atomic_write(path: str, write: Callable[[TextIO], None]):
  """Runs `write(file)` on a temp file beside `path`, fsyncs it, then renames it over `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_jsonl(path: str, records: Iterable[Any]):
  def write(f):
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
  _atomic_write(path, write)


def write_json(path: str, record: Any):
  def write(f):
    json.dump(record, f, ensure_ascii=False, sort_keys=True, indent=2)
    f.write("\n")
  _atomic_write(path, write)


def iter_jsonl(path: str) -> Iterator[Any]:
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield json.loads(line)
      except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}:{line_number}: invalid JSON ({e.msg})") from e


def read_jsonl(path: str) -> list[Any]:
  return list(iter_jsonl(path))


def read_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ArtifactError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
