"""The durable store a run writes its records to: marked JSONL/JSON files, chunks, resume, sweep.

Both recipes' drivers (pipeline.py) and judge_eval's resumable judgments write through here:

  `stage(path, compute)`        a stage file: made once, then read back from disk
  `run_chunked(path, items, chunk_size, run_chunk)`
                                a generation stage in chunks of items, merged when all are done;
                                a killed run loses at most one chunk
  `finished` / `read_back`      a stage file's records when complete (None: to be made again)
  `finished_json` / `write_json_marked`
                                a JSON file with a completion marker (metrics.json, heldout.json)
  `sweep(root)`                 removes the temp files a killed run left behind

Integrity: every stage file and chunk is written with a completion marker `<file>.done.json`
(record count, size, sha256; `artifacts.write_jsonl_marked`), written after the file. On resume a
file is used only when it agrees with its marker; one that disagrees (cut at a line boundary,
emptied, edited) stops the run with its name and a hint (PipelineError), and one without a marker
is made again: its writer was stopped between the file and the marker. A file written before
markers existed cannot be told from one cut short at a line boundary, so it is made again too
(with a warning): the seeds derive from (seed, iteration, stage, chunk), so the redo writes what
an uninterrupted run would have, at the cost of recomputing that stage.

Multi-host: every process runs the driver and holds the same records; the state of a file is
decided by process 0, only process 0 writes, and the others wait for the write before reading
(the workdir must be shared by all hosts, e.g. a gs:// path or NFS). One process: plain file I/O.
This module imports neither jax nor flax.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from absl import logging

from meta_rewarding import artifacts, distributed
from meta_rewarding.recipe_types import PipelineError


def decide(value):
  """Process 0's JSON-serialisable `value` on every process (every process must call this)."""
  return distributed.allgather_objects(value)[0]


def exists(path: str) -> bool:
  return distributed.main_process_decides(artifacts.exists(path))


def write_jsonl(path: str, records: Sequence) -> None:
  """Writes a stage file or chunk and then its completion marker (process 0)."""
  if distributed.is_main_process():
    artifacts.write_jsonl_marked(path, records)
  distributed.sync("write:" + path)


def finished(path: str) -> list | None:
  """The records of a finished stage file or chunk; None when it is to be made (again).

  A file that disagrees with its completion marker raises PipelineError (never used, never silently
  replaced: the user decides whether to restore it or have it redone)."""
  try:
    state, records = artifacts.check_jsonl_marked(path)
    error = None
  except artifacts.ArtifactError as e:
    state, records, error = "damaged", None, str(e)
  state, error = decide([state, error])
  if state == "damaged":
    raise PipelineError(error)
  if state == "unmarked":
    logging.warning("%s has no completion marker (its writer stopped before finishing it, or it "
                    "was written before markers existed): it is made again", path)
  if state != "complete":
    return None
  return records if records is not None else artifacts.read_jsonl(path)


def read_back(path: str) -> list:
  """The records just written to `path`, as a resumed run would read them."""
  records = finished(path)
  if records is None:
    raise PipelineError(f"{path} was written but cannot be read back complete")
  return records


def stage(path: str, compute: Callable[[], list]) -> list:
  """A stage file: `compute()` written (with its marker) unless finished, then read back."""
  if finished(path) is None:
    write_jsonl(path, compute())
  return read_back(path)


_CHUNK_NAME = re.compile(r"^(\d+)-(\d+)\.jsonl$")


def _chunk_path(chunk_dir: str, start: int, end: int) -> str:
  return artifacts.join(chunk_dir, f"{start:06d}-{end:06d}.jsonl")


def run_chunked(path: str, items: Sequence, chunk_size: int,
                run_chunk: Callable[[Sequence, int], list]) -> list:
  """Runs `run_chunk(items_of_chunk, chunk_index)` for every chunk not yet on disk, then merges.

  A chunk file is named by the item range it holds, `<start>-<end>.jsonl` ([start, end) of
  `items`), so a resume with another `chunk_size` (allow_config_change) re-chunks without
  duplicating records: the items are covered left to right, a finished chunk starting where the
  cover stands is used whole, and new chunks of `chunk_size` items (cut short where the next
  finished chunk starts) fill the gaps. Finished chunks that do not fit the cover are not used (they
  are removed with the chunk directory after the merge). `chunk_index` (for the seed) is
  start // chunk_size: the index an uninterrupted run gives each chunk.
  """
  records = finished(path)
  chunk_dir = path + ".chunks"
  if records is not None:
    # A run stopped between the merge and the removal leaves the merged chunks behind.
    if distributed.is_main_process() and artifacts.isdir(chunk_dir):
      artifacts.rmtree(chunk_dir, ignore_errors=True)
    return records
  names = decide(artifacts.listdir(chunk_dir) if artifacts.isdir(chunk_dir) else [])
  starts: dict[int, int] = {}  # start -> end of the chunk files on disk, within the items
  for name in names:
    m = _CHUNK_NAME.match(name)
    if m and int(m.group(1)) < int(m.group(2)) <= len(items):
      starts[int(m.group(1))] = max(starts.get(int(m.group(1)), 0), int(m.group(2)))
  records = []
  position = 0
  while position < len(items):
    if position in starts:
      chunk = finished(_chunk_path(chunk_dir, position, starts[position]))
      if chunk is not None:
        records.extend(chunk)
        position = starts[position]
        continue
    end = min([position + chunk_size, len(items)] + [s for s in starts if s > position])
    chunk_path = _chunk_path(chunk_dir, position, end)
    write_jsonl(chunk_path, run_chunk(items[position:end], position // chunk_size))
    # Always continue from what is on disk, so resumed and uninterrupted runs see identical data.
    records.extend(read_back(chunk_path))
    position = end
  distributed.sync("read:" + chunk_dir)  # everyone has read the chunks before they are removed
  write_jsonl(path, records)
  if distributed.is_main_process():
    artifacts.rmtree(chunk_dir, ignore_errors=True)
  return read_back(path)


def finished_json(path: str) -> Any | None:
  """The content of a finished JSON file with a completion marker (metrics.json, heldout.json); None
  when it is to be made (again): missing, or without its marker (stopped before it, or written
  before markers existed). One that disagrees with its marker stops the run."""
  try:
    state, content = artifacts.check_json_marked(path)
    error = None
  except artifacts.ArtifactError as e:
    state, content, error = "damaged", None, str(e)
  state, content, error = decide([state, content, error])
  if state == "damaged":
    raise PipelineError(error)
  if state == "unmarked":
    logging.warning("%s has no completion marker (its writer stopped before finishing it, or it "
                    "was written before markers existed): it is made again", path)
  return content if state == "complete" else None


def write_json_marked(path: str, record) -> None:
  """Writes a JSON file and then its completion marker (process 0)."""
  if distributed.is_main_process():
    artifacts.write_json_marked(path, record)
  distributed.sync("write:" + path)


def sweep(root: str) -> None:
  """Creates `root` and removes the temp files and directories a killed run left in it
  (`artifacts.sweep_temp`, process 0; the others wait)."""
  artifacts.makedirs(root)
  if distributed.is_main_process():
    removed = artifacts.sweep_temp(root)
    if removed:
      logging.warning("removed %d temp file(s)/dir(s) a stopped run left in %s: %s", len(removed),
                      root, ", ".join(removed[:5]) + (" ..." if len(removed) > 5 else ""))
  distributed.sync("sweep:" + root)
