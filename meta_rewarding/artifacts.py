"""Workdir file I/O, local or remote (gs://, s3://): atomic JSONL/JSON artifacts and file helpers.

This module is the one place the pipeline touches files in its workdir, so a workdir such as
`gs://bucket/run` works wherever a local directory does. Every helper takes a `str` or `os.PathLike`:

* Local paths use plain `os` / `tempfile` (fast). A write goes to a temporary file in the same
  directory, is flushed and fsynced, then renamed over the destination (atomic on POSIX): a file is
  either absent or complete, never half-written. The file ends with the mode any other tool's
  output gets (0666 & ~umask; `mkdtemp` gives directories 0777 & ~umask), not the 0600 / 0700
  that `tempfile` uses, so a team sharing a workdir can read it.
* Remote paths (`scheme://...`, see `is_remote`) go through `etils.epath` (gcsfs / s3fs underneath;
  install `etils[epath-gcs]` / `etils[epath-s3]`). A write renders the whole content in memory and
  uploads it as one object: an object upload is atomic (the object appears complete or not at all),
  whereas an object-store "rename" is a copy plus a delete, so temp-file-then-rename would be neither
  atomic nor cheap there. There are no directories on an object store: `makedirs` is a no-op there
  and a "directory" exists once an object under it does, so callers mark completeness with a file
  written last (e.g. `config.json` of a checkpoint, `metrics.json` of an iteration).

`localize` copies remote files into a local cache directory for code that needs real local files
(safetensors readers, tokenizer libraries). Readers report the file and line of anything malformed
(invalid JSON, text that is not UTF-8) as `ArtifactError`.

Completion markers. `write_jsonl_marked` writes a JSONL file and then `<file>.done.json`, which
records its record count, byte size and sha256; `check_jsonl_marked` reads the file back only when it
agrees with its marker and raises `IntegrityError` (naming the file, with a hint) when it does not, so
a file cut at a line boundary, emptied or edited after it was finished is never used.

Leftovers. A process killed mid-write leaves its temp file (`<name>.<8 random>.tmp`, from
`_mkstemp`) or temp directory (`<name>.tmp-<8 random>`, from `mkdtemp` as `checkpoints.save_hf` names
it) behind; `sweep_temp(workdir)` removes exactly those names.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import stat as stat_lib
import tempfile
from typing import Any, Callable, Iterable, Iterator, TextIO

from meta_rewarding.errors import UserError

PathLike = str | os.PathLike

# Where `localize` keeps local copies of remote files (default: <tempdir>/meta_rewarding_cache).
CACHE_ENV = "META_REWARDING_CACHE_DIR"
_MANIFEST = ".manifest.json"
_COPY_CHUNK = 16 * 2**20
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class ArtifactError(UserError, ValueError):
  """An artifact file that cannot be read back."""


class IntegrityError(ArtifactError):
  """A finished file that disagrees with its completion marker (cut, emptied or edited)."""


# ------------------------------------------------------------------------------------------------
# Paths.

def is_remote(path: PathLike) -> bool:
  """True for a URL-like path (`gs://...`, `s3://...`), which goes through `etils.epath`."""
  return bool(_SCHEME.match(os.fspath(path)))


def _epath(path: PathLike):
  from etils import epath  # imported lazily: local-only runs never need it
  return epath.Path(os.fspath(path))


def join(path: PathLike, *parts: str) -> str:
  """`os.path.join` for local paths, `/`-joined for remote ones; always a `str`."""
  path = os.fspath(path)
  return posixpath.join(path, *parts) if is_remote(path) else os.path.join(path, *parts)


def basename(path: PathLike) -> str:
  return posixpath.basename(os.fspath(path).rstrip("/"))


def exists(path: PathLike) -> bool:
  return _epath(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: PathLike) -> bool:
  return _epath(path).is_dir() if is_remote(path) else os.path.isdir(path)


def makedirs(path: PathLike):
  """Creates `path` and its parents if missing (a no-op on object stores in practice)."""
  if is_remote(path):
    _epath(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)


def file_stat(path: PathLike) -> tuple[int, int] | None:
  """(size in bytes, modification time in ns) of the file `path`, None when there is no such file.
  Remote stores give the mtime at their own resolution."""
  if is_remote(path):
    p = _epath(path)
    if not p.exists() or p.is_dir():
      return None
    stat = p.stat()
    return int(stat.length or 0), int((stat.mtime or 0) * 10**9)
  try:
    st = os.stat(path)
  except FileNotFoundError:
    return None
  return (st.st_size, st.st_mtime_ns) if stat_lib.S_ISREG(st.st_mode) else None


def listdir(path: PathLike) -> list[str]:
  """Sorted names (not paths) of the entries directly under `path`."""
  if is_remote(path):
    return sorted(p.name for p in _epath(path).iterdir())
  return sorted(os.listdir(path))


def remove(path: PathLike, missing_ok: bool = True):
  if is_remote(path):
    _epath(path).unlink(missing_ok=missing_ok)
  elif not missing_ok or os.path.exists(path):
    os.remove(path)


def rmtree(path: PathLike, ignore_errors: bool = False):
  """Removes a directory tree (for a remote path: every object under the prefix)."""
  if not is_remote(path):
    shutil.rmtree(path, ignore_errors=ignore_errors)
    return
  try:
    p = _epath(path)
    if p.exists():
      p.rmtree()
  except Exception:  # pylint: disable=broad-except
    if not ignore_errors:
      raise


def open_file(path: PathLike, mode: str = "r"):
  """`open` for local paths, `epath.Path(path).open` for remote ones (read modes; writes should go
  through the atomic writers below)."""
  if is_remote(path):
    return _epath(path).open(mode)
  return open(path, mode, encoding=None if "b" in mode else "utf-8")


# ------------------------------------------------------------------------------------------------
# Permissions.

def umask() -> int:
  """The process's umask, read without changing it where Linux reports it (`os.umask` sets it,
  and another thread could create a file in between, e.g. an async checkpoint save)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def file_mode() -> int:
  """The mode `open` gives a new file: 0666 & ~umask."""
  return 0o666 & ~umask()


def dir_mode() -> int:
  """The mode `os.makedirs` gives a new directory: 0777 & ~umask."""
  return 0o777 & ~umask()


def _mkstemp(path: str) -> tuple[int, str]:
  """A temp file next to `path` for an atomic write, with the mode `path` would get from `open`
  (mkstemp makes it 0600, and the rename would keep that)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
  try:
    os.fchmod(fd, file_mode())
  except BaseException:
    os.close(fd)
    os.unlink(tmp)
    raise
  return fd, tmp


def mkdtemp(prefix: str, dir: str | None = None) -> str:  # pylint: disable=redefined-builtin
  """`tempfile.mkdtemp` with the mode `os.makedirs` would give (mkdtemp makes it 0700): for a
  directory built in place and then renamed into the workdir (a model save)."""
  path = tempfile.mkdtemp(prefix=prefix, dir=dir)
  os.chmod(path, dir_mode())
  return path


# ------------------------------------------------------------------------------------------------
# Atomic writes.

def _replace_local(path: PathLike, mode: str, write: Callable[[Any], Any]):
  """Local atomic write: `write(file)` into a temp file in the same directory, fsync, rename."""
  path = os.fspath(path)
  fd, tmp = _mkstemp(path)
  try:
    with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _atomic_write(path: PathLike, write: Callable[[TextIO], None]):
  """Runs `write(file)` and makes the result appear at `path` all at once (see module doc)."""
  if is_remote(path):
    buffer = io.StringIO()
    write(buffer)  # rendered fully before anything is uploaded: a failure leaves no object
    write_bytes(path, buffer.getvalue().encode("utf-8"))
    return
  _replace_local(path, "w", write)


def write_bytes(path: PathLike, data: bytes):
  """Writes `data` atomically: temp file + rename locally, one object upload remotely."""
  if is_remote(path):
    with _epath(path).open("wb") as f:
      f.write(data)
    return
  _replace_local(path, "wb", lambda f: f.write(data))


def write_text(path: PathLike, text: str):
  write_bytes(path, text.encode("utf-8"))


def read_bytes(path: PathLike) -> bytes:
  with open_file(path, "rb") as f:
    return f.read()


def read_text(path: PathLike) -> str:
  return read_bytes(path).decode("utf-8")


def write_jsonl(path: PathLike, records: Iterable[Any]):
  def write(f):
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
  _atomic_write(path, write)


def write_json(path: PathLike, record: Any):
  def write(f):
    json.dump(record, f, ensure_ascii=False, sort_keys=True, indent=2)
    f.write("\n")
  _atomic_write(path, write)


def _not_utf8(path: PathLike, line_number: int, e: UnicodeDecodeError) -> ArtifactError:
  return ArtifactError(f"{path}:{line_number}: not UTF-8 text (byte 0x{e.object[e.start]:02x}): "
                       "the file is damaged; restore or delete it")


def _jsonl_records(path: PathLike, lines: Iterable[bytes]) -> Iterator[Any]:
  # Lines are decoded one by one, so text that is not UTF-8 is reported with its line number (a
  # text-mode reader only knows the byte offset of its read buffer).
  for line_number, raw in enumerate(lines, 1):
    try:
      line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise _not_utf8(path, line_number, e) from e
    if not line.strip():
      continue
    try:
      yield json.loads(line)
    except json.JSONDecodeError as e:
      raise ArtifactError(f"{path}:{line_number}: invalid JSON ({e.msg})") from e


def iter_jsonl(path: PathLike) -> Iterator[Any]:
  with open_file(path, "rb") as f:
    yield from _jsonl_records(path, f)


def read_jsonl(path: PathLike) -> list[Any]:
  return list(iter_jsonl(path))


def read_json(path: PathLike) -> Any:
  data = read_bytes(path)
  try:
    return json.loads(data.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise _not_utf8(path, data[:e.start].count(b"\n") + 1, e) from e
  except json.JSONDecodeError as e:
    raise ArtifactError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e


# ------------------------------------------------------------------------------------------------
# Completion markers.

MARKER_SUFFIX = ".done.json"


def marker_path(path: PathLike) -> str:
  """Where the completion marker of `path` lives: `<path>.done.json`."""
  return os.fspath(path) + MARKER_SUFFIX


def jsonl_bytes(records: Iterable[Any]) -> bytes:
  """The exact bytes `write_jsonl` writes for `records`."""
  return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                 for r in records).encode("utf-8")


def _describe(data: bytes, records: int) -> dict:
  return {"records": records, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_jsonl_marked(path: PathLike, records: Iterable[Any]) -> dict:
  """Writes `records` to `path` atomically, then its completion marker; returns the marker.

  The old marker goes first, so that a file being rewritten is never vouched for by the marker of
  its previous content; a process killed between the file and its marker leaves a file without a
  marker, which `check_jsonl_marked` reports as unfinished.
  """
  records = list(records)
  data = jsonl_bytes(records)
  marker = _describe(data, len(records))
  remove(marker_path(path))
  write_bytes(path, data)
  write_json(marker_path(path), marker)
  return marker


def _parse_jsonl(path: PathLike, data: bytes) -> list[Any]:
  return list(_jsonl_records(path, data.splitlines()))


def check_jsonl_marked(path: PathLike) -> tuple[str, list[Any] | None]:
  """The state of a marked JSONL file, and its records when it is complete.

  Returns ("complete", records) when the file and its marker agree (record count, size, sha256);
  ("missing", None) when there is no file (a marker left without its file is stale: the user
  deleted the file to have it made again); ("unmarked", None) when the file has no marker (its
  writer was stopped before the marker, or it predates markers). Raises `IntegrityError` naming the
  file when it disagrees with its marker.
  """
  marker_file = marker_path(path)
  if not exists(path):
    return "missing", None
  _refuse_directory(path)
  if not exists(marker_file):
    return "unmarked", None
  marker = read_json(marker_file)
  data = read_bytes(path)
  hint = ("it was cut, emptied or edited after it was finished. Delete it to have it made again "
          "(the stage or chunk is redone), or restore the original")
  if not isinstance(marker, dict) or not {"records", "bytes", "sha256"} <= set(marker):
    raise IntegrityError(f"{marker_file}: not a completion marker; delete {basename(path)} and its "
                         "marker to have the file made again")
  actual = hashlib.sha256(data).hexdigest()
  if len(data) != marker["bytes"] or actual != marker["sha256"]:
    raise IntegrityError(
        f"{path}: does not match its completion marker {basename(marker_file)} ({len(data)} bytes, "
        f"sha256 {actual[:12]}..., recorded {marker['bytes']} bytes, sha256 "
        f"{str(marker['sha256'])[:12]}...): {hint}")
  records = _parse_jsonl(path, data)
  if len(records) != marker["records"]:
    raise IntegrityError(f"{path}: holds {len(records)} records, its completion marker "
                         f"{basename(marker_file)} recorded {marker['records']}: {hint}")
  return "complete", records


def _refuse_directory(path: PathLike):
  if isdir(path):
    raise IntegrityError(f"{path}: is a directory where this file belongs; move it away or remove "
                         "it, and rerun")


def json_bytes(record: Any) -> bytes:
  """The exact bytes `write_json` writes for `record`."""
  buffer = io.StringIO()
  json.dump(record, buffer, ensure_ascii=False, indent=2, sort_keys=True)
  buffer.write("\n")
  return buffer.getvalue().encode("utf-8")


def write_json_marked(path: PathLike, record: Any) -> dict:
  """`write_json` of `record`, then its completion marker (as `write_jsonl_marked`); returns the
  marker. The bytes are those `write_json` writes, so only the marker file is new."""
  data = json_bytes(record)
  marker = _describe(data, 1)
  remove(marker_path(path))
  write_bytes(path, data)
  write_json(marker_path(path), marker)
  return marker


def _read_marker(path: PathLike) -> dict:
  marker_file = marker_path(path)
  marker = read_json(marker_file)
  if not isinstance(marker, dict) or not {"records", "bytes", "sha256"} <= set(marker):
    raise IntegrityError(f"{marker_file}: not a completion marker; delete {basename(path)} and its "
                         "marker to have the file made again")
  return marker


def check_json_marked(path: PathLike) -> tuple[str, Any]:
  """The state of a marked JSON file ("complete", "missing", "unmarked", as `check_jsonl_marked`)
  and its content when complete; raises `IntegrityError` naming the file when it disagrees with its
  marker (edited, cut, emptied)."""
  if not exists(path):
    return "missing", None
  _refuse_directory(path)
  if not exists(marker_path(path)):
    return "unmarked", None
  marker = _read_marker(path)
  data = read_bytes(path)
  actual = hashlib.sha256(data).hexdigest()
  if len(data) != marker["bytes"] or actual != marker["sha256"]:
    raise IntegrityError(
        f"{path}: does not match its completion marker {basename(marker_path(path))} ({len(data)} "
        f"bytes, sha256 {actual[:12]}..., recorded {marker['bytes']} bytes, sha256 "
        f"{str(marker['sha256'])[:12]}...): it was edited after it was written. Restore it, or "
        "delete it to have it made again")
  try:
    return "complete", json.loads(data.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise IntegrityError(f"{path}: matches its marker but is not JSON ({e})") from e


def marked_file_problem(path: PathLike, *, full: bool) -> str | None:
  """What is wrong with the file `path` whose completion marker exists: missing, another size, or
  (`full`) another sha256; None when it agrees. The cheap check (`full=False`) reads only the
  marker and the file's size."""
  marker = _read_marker(path)
  stat = file_stat(path)
  if stat is None:
    return f"{path}: missing (its completion marker {basename(marker_path(path))} is there)"
  if stat[0] != marker["bytes"]:
    return (f"{path}: {stat[0]} bytes, its completion marker {basename(marker_path(path))} "
            f"recorded {marker['bytes']}")
  if full:
    actual = hashlib.sha256(read_bytes(path)).hexdigest()
    if actual != marker["sha256"]:
      return (f"{path}: sha256 {actual[:12]}..., its completion marker "
              f"{basename(marker_path(path))} recorded {str(marker['sha256'])[:12]}... (same size: "
              "edited in place)")
  return None


# ------------------------------------------------------------------------------------------------
# Leftovers of killed processes.

# tempfile's random part: 8 characters of [a-z0-9_].
_TEMP_FILE = re.compile(r"^.+\.[a-z0-9_]{8}\.tmp$")   # _mkstemp: <name>.<random>.tmp
_TEMP_DIR = re.compile(r"^.+\.tmp-[a-z0-9_]{8}$")       # mkdtemp(prefix=<name>.tmp-): save_hf


def is_temp_name(name: str, is_dir: bool) -> bool:
  """Whether `name` is one of this project's temp names (see `sweep_temp`)."""
  return bool((_TEMP_DIR if is_dir else _TEMP_FILE).match(name))


def sweep_temp(root: PathLike) -> list[str]:
  """Removes the temp files and directories that killed writers left under local `root` (this
  project's own temp names only: `<name>.<8 random>.tmp` files, `<name>.tmp-<8 random>`
  directories); returns their paths. A remote root has none: remote writes are single uploads, and
  a remote model save builds its temp directory on the local disk (the system temp dir).

  Only for a workdir no other process is writing to (a run resumes in it)."""
  root = os.fspath(root)
  if is_remote(root) or not os.path.isdir(root):
    return []
  removed = []
  for directory, dirs, files in os.walk(root):
    for name in list(dirs):
      path = os.path.join(directory, name)
      if is_temp_name(name, is_dir=True) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        dirs.remove(name)
    for name in files:
      if is_temp_name(name, is_dir=False):
        path = os.path.join(directory, name)
        try:
          os.remove(path)
          removed.append(path)
        except FileNotFoundError:
          pass
  return sorted(removed)


# ------------------------------------------------------------------------------------------------
# Copies between the local disk and a remote store.

def copy_file(src: PathLike, dst: PathLike):
  """Streams `src` to `dst`, either side local or remote. A local `dst` is written atomically
  (temp file + rename); a remote one is a single object upload."""
  if not is_remote(dst):
    dst = os.fspath(dst)
    fd, tmp = _mkstemp(dst)
    try:
      with open_file(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        shutil.copyfileobj(fin, fout, _COPY_CHUNK)
      os.replace(tmp, dst)
    except BaseException:
      if os.path.exists(tmp):
        os.unlink(tmp)
      raise
    return
  with open_file(src, "rb") as fin, _epath(dst).open("wb") as fout:
    shutil.copyfileobj(fin, fout, _COPY_CHUNK)


def upload_dir(local_dir: str, remote_dir: PathLike, *, last: Iterable[str] = ()) -> list[str]:
  """Copies the files directly under `local_dir` to `remote_dir`, those named in `last` after all
  the others (in that order), so their presence marks a complete upload. Returns the names in
  upload order."""
  last = [n for n in last if os.path.isfile(os.path.join(local_dir, n))]
  names = [n for n in sorted(os.listdir(local_dir))
           if os.path.isfile(os.path.join(local_dir, n)) and n not in last] + last
  for name in names:
    copy_file(os.path.join(local_dir, name), join(remote_dir, name))
  return names


def cache_dir() -> str:
  return os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "meta_rewarding_cache")


def local_cache_path(path: PathLike, cache: str | None = None) -> str:
  """The local directory `localize` uses for remote `path`: <cache>/<name>-<hash of the path>."""
  path = os.fspath(path).rstrip("/")
  digest = hashlib.sha256(path.encode()).hexdigest()[:16]
  name = re.sub(r"[^A-Za-z0-9._-]", "_", basename(path))[:64] or "root"
  return os.path.join(cache or cache_dir(), f"{name}-{digest}")


def localize(path: PathLike, include: Callable[[str], bool] | None = None, *,
             cache: str | None = None) -> str:
  """A local path holding the content of `path`: `path` itself when it is local; for a remote file,
  a local copy of it; for a remote directory, a local directory with copies of the files directly
  under it for which `include(name)` holds (all when `include` is None).

  Copies live under `cache` (default: $META_REWARDING_CACHE_DIR, else <tempdir>/meta_rewarding_cache),
  in a directory keyed by the remote path. A file already there is reused when the remote file's
  size and modification time still match the ones recorded when it was copied (a manifest written
  after every copy); otherwise it is copied again. Each copy lands by an atomic rename, so processes
  sharing the cache never see a partial file.
  """
  if not is_remote(path):
    return os.fspath(path)
  if not exists(path):
    raise FileNotFoundError(f"{path} does not exist")
  local_dir = local_cache_path(path, cache)
  if isdir(path):
    names = [n for n in listdir(path) if (include is None or include(n)) and not isdir(join(path, n))]
    target = local_dir
  else:
    names = [basename(path)]
    path = posixpath.dirname(os.fspath(path).rstrip("/"))
    target = os.path.join(local_dir, names[0])
  os.makedirs(local_dir, exist_ok=True)
  manifest_path = os.path.join(local_dir, _MANIFEST)
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except (OSError, json.JSONDecodeError):
    manifest = {}
  for name in names:
    stat = _epath(join(path, name)).stat()
    key = [int(stat.length or 0), int(stat.mtime or 0)]
    local = os.path.join(local_dir, name)
    if manifest.get(name) == key and os.path.exists(local) and os.path.getsize(local) == key[0]:
      continue
    copy_file(join(path, name), local)
    manifest[name] = key
    _atomic_write(manifest_path, lambda f: json.dump(manifest, f, sort_keys=True))
  return target
