"""What a saved model directory holds, and whether it still holds what was saved.

`checkpoints.save_hf` writes a Hugging Face directory (config.json, safetensors, tokenizer files,
generation_config.json) and then, last, its marker `model.done.json`: every file's size and sha256,
taken while the bytes streamed out (reading an 8B checkpoint back from gs:// to hash it would cost
minutes). Its presence says the save finished; its digests say what each file must still hold.

Two checks against the marker:
  cheap (`full=False`)  each listed file is there with its recorded size: a listing, no reads;
  full  (`full=True`)   also each file's sha256 (reads every byte).
`checkpoints.load_hf` runs the full check on every directory with a marker before loading it; the
pipeline runs the cheap one on every finished iteration's model when it resumes, and the full one
under `main --verify=full`. A directory without a marker (a downloaded Hugging Face checkpoint) has
nothing to be checked against and passes; the pipeline requires the marker of the directories it
wrote itself (`missing_files(..., require_marker=True)`).

This module imports neither jax nor flax (the pipeline driver uses it).
"""

from __future__ import annotations

import hashlib
from typing import Callable

from meta_rewarding import artifacts
from meta_rewarding.errors import UserError

MODEL_MARKER = "model.done.json"  # {"files": {name: {"bytes": n, "sha256": hex}}}, written last
_HASH_CHUNK = 16 * 2**20


class ModelDirError(UserError, ValueError):
  """A saved model directory that disagrees with its marker, or whose marker is unreadable."""


def missing_files(path: str, *, require_marker: bool = False) -> list[str]:
  """What the saved model directory `path` (local or remote) lacks; [] when it is complete.

  Complete means config.json and the weights: model.safetensors, or model.safetensors.index.json and
  every shard it names; with `require_marker`, also the marker (a directory this project saved:
  `save_hf` renames a local directory into place whole and uploads a remote one with config.json
  and then the marker last, so a directory without it is a stopped remote save, one saved before
  markers existed, or one damaged by hand; it is never loaded)."""
  if not artifacts.isdir(path) and not artifacts.exists(artifacts.join(path, "config.json")):
    return ["the directory"]
  missing = [] if artifacts.exists(artifacts.join(path, "config.json")) else ["config.json"]
  if require_marker and not artifacts.exists(artifacts.join(path, MODEL_MARKER)):
    missing.append(MODEL_MARKER)
  if artifacts.exists(artifacts.join(path, "model.safetensors")):
    return missing
  index = artifacts.join(path, "model.safetensors.index.json")
  if not artifacts.exists(index):
    return missing + ["model.safetensors (or model.safetensors.index.json and its shards)"]
  try:
    shards = sorted(set(artifacts.read_json(index)["weight_map"].values()))
  except (artifacts.ArtifactError, OSError, KeyError, TypeError, AttributeError):
    return missing + ["a readable model.safetensors.index.json"]
  return missing + [s for s in shards if not artifacts.exists(artifacts.join(path, s))]


def read_marker(path: str) -> dict | None:
  """The marker of model directory `path` ({file name: {"bytes", "sha256"}}), None without one.
  A marker that is not one raises ModelDirError."""
  marker_path = artifacts.join(path, MODEL_MARKER)
  if not artifacts.exists(marker_path):
    return None
  try:
    files = artifacts.read_json(marker_path)["files"]
    if not all(isinstance(d, dict) and {"bytes", "sha256"} <= set(d) for d in files.values()):
      raise TypeError("a file entry without bytes and sha256")
  except (artifacts.ArtifactError, KeyError, TypeError, AttributeError) as e:
    raise ModelDirError(f"{marker_path}: not a model marker ({e}); restore it, or delete {path} to "
                        "have the model made again") from e
  return files


def file_sha256(path: str) -> str:
  """sha256 of a local or remote file, read in chunks."""
  h = hashlib.sha256()
  with artifacts.open_file(path, "rb") as f:
    while chunk := f.read(_HASH_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def problems(path: str, *, full: bool, include: Callable[[str], bool] | None = None) -> list[str]:
  """What is wrong with model directory `path` against its marker, one line per file; [] when it
  agrees or has no marker. `include(name)` limits the check to some files (e.g. those a remote load
  copied)."""
  marker = read_marker(path)
  if marker is None:
    return []
  out = []
  for name, want in sorted(marker.items()):
    if include is not None and not include(name):
      continue
    file = artifacts.join(path, name)
    stat = artifacts.file_stat(file)
    if stat is None:
      out.append(f"{file}: missing (the model marker {MODEL_MARKER} lists it)")
    elif stat[0] != want["bytes"]:
      out.append(f"{file}: {stat[0]} bytes, the model marker {MODEL_MARKER} recorded {want['bytes']}")
    elif full and (actual := file_sha256(file)) != want["sha256"]:
      out.append(f"{file}: sha256 {actual[:12]}..., the model marker {MODEL_MARKER} recorded "
                 f"{want['sha256'][:12]}... (same size: changed in place)")
  return out


def lost_files(path: str) -> list[str]:
  """The files the marker of `path` lists that are gone ([] without a marker)."""
  marker = read_marker(path) or {}
  return [n for n in sorted(marker) if artifacts.file_stat(artifacts.join(path, n)) is None]


def describe(found: list[str], path: str) -> str:
  """One line for the `problems` of `path`: the first, how many more, and what to do."""
  more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
  return (f"{found[0]}{more}: the model was changed after it was saved. Restore it, or delete "
          f"{path} to have it made again")


def verify(path: str, *, full: bool = True, include: Callable[[str], bool] | None = None,
           name_as: str | None = None):
  """Raises ModelDirError (one line: the file, what was expected, what to do) when model directory
  `path` disagrees with its marker; a directory without a marker passes. `name_as`: the directory
  to name in the message (a remote checkpoint rather than its local copy)."""
  found = problems(path, full=full, include=include)
  if found:
    if name_as is not None:
      found, path = [p.replace(path, name_as) for p in found], name_as
    raise ModelDirError(describe(found, path))
