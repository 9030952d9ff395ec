"""What every recipe's iteration is made of: stage files, training, model checks, timings.

A recipe (recipes/) is a list of stages; each stage is a pure function of stages.py or ste.py
given its file, chunks and policy here:

  `Iteration`            the config, the policy, iter_<t>/ and the stage seeds of one iteration
  `begin` / `finish`     load a finished iteration (its model into the policy) or start one;
                         write its timings and then metrics.json, which marks it finished
  `prompts_stage`        the iteration's prompts from the pool (prompts.jsonl)
  `generate_where_fits`  the policy's generations of the prompts that fit the context
  `train_stage`          the training stage ("dpo" | "sft"): train, or load the saved model;
                         the step records (<kind>.jsonl), iter_<t>/model/
  `check_model`, `missing_model_files`
                         a model directory against its marker, and what it lacks

Stage files and chunks go through chunk_store.py (markers, resume). Timing fields go to
iter_<t>/timings.json, never into the artifacts or metrics (`pop_timings`). This module imports
neither jax nor flax: the policy brings the model.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from absl import logging

from meta_rewarding import artifacts, chunk_store, data, distributed, model_files, stages
from meta_rewarding.recipe_types import Generation, PipelineError, Policy, fitting


# Timing fields are not results: they differ between two runs of the same command. They go to
# iter_<t>/timings.json and workdir/timings.jsonl, never to metrics.json / metrics.jsonl or the stage
# files, which are therefore byte-identical between an interrupted-and-resumed run and an
# uninterrupted one.
STEP_TIMING_KEYS = ("tokens_per_second",)  # in the step records policy.train_dpo / train_sft return
TIMING_KEYS = ("wall_seconds", "dpo/tokens_per_second", "dpo/final_tokens_per_second",
               "sft/tokens_per_second", "sft/final_tokens_per_second")

# Where the driver is (for the line an interrupted run prints, `pipeline.interrupted_message`).
progress: dict[str, Any] = {"iteration": None, "stage": None}


def at(iteration: int | None, stage: str | None):
  progress.update(iteration=iteration, stage=stage)


def missing_model_files(policy: Policy, path: str) -> list[str]:
  """What the model directory `path` lacks ([] when complete), as process 0 sees it.

  A policy may say what a complete directory holds (`JaxPolicy.missing_model_files`: config.json and
  the weights); for one that does not, the directory's presence is enough."""
  misplaced = None
  if distributed.is_main_process() and not artifacts.is_remote(path):
    if os.path.islink(path):
      misplaced = (f"{path}: is a symbolic link (to {os.readlink(path)}); the run saves and removes "
                   "model directories in place, so it does not follow links: remove the link")
    elif os.path.exists(path) and not os.path.isdir(path):
      misplaced = f"{path}: is a file where a model directory belongs; move it away or remove it"
  misplaced = chunk_store.decide(misplaced)
  if misplaced:  # found before the training that would fail to save there
    raise PipelineError(misplaced)
  check = getattr(policy, "missing_model_files", None)
  if check is not None:
    missing = check(path) if distributed.is_main_process() else []
  else:
    missing = [] if artifacts.exists(path) else ["the directory"]
  return list(chunk_store.decide(missing))


def check_model(policy: Policy, path: str, *, full: bool):
  """Stops the run (PipelineError, one line) when the model directory `path` disagrees with its
  marker (`model_files.problems`: sizes, and with `full` every sha256). Files the policy can make
  again byte for byte (`restore_model_files`: the tokenizer files of JaxPolicy) are restored first,
  with a warning, and checked with the rest."""
  main = distributed.is_main_process()
  restore = getattr(policy, "restore_model_files", None)
  lost = list(chunk_store.decide(
      model_files.lost_files(path) if main and restore is not None else []))
  if lost:
    restored = restore(path, lost)  # every process takes part (process 0 writes)
    if restored:
      logging.warning("%s had lost %s: restored from the tokenizer's source", path,
                      ", ".join(restored))
  found = list(chunk_store.decide(model_files.problems(path, full=full) if main else []))
  if found:
    raise PipelineError(model_files.describe(found, path))


def _verify_finished_iteration(it: "Iteration", *, full: bool):
  """Checks a finished iteration's files against their markers before the run builds on it: every
  marked file in iter_<t>/ (stage files, metrics.json, heldout.json) and its model/. The cheap check
  (sizes, marker presence) runs on every resume; `full` (`--verify=full`) also compares every
  sha256. A disagreement stops the run with one line."""
  problem = None
  if distributed.is_main_process():
    names = [n[:-len(artifacts.MARKER_SUFFIX)] for n in artifacts.listdir(it.dir)
             if n.endswith(artifacts.MARKER_SUFFIX)]
    for name in sorted(names):
      try:
        problem = artifacts.marked_file_problem(it.path(name), full=full)
      except artifacts.ArtifactError as e:
        problem = str(e)
      if problem:
        problem += (f". Iteration {it.iteration} is finished: restore the file, or delete it and "
                    f"{it.path('metrics.json')} to have the iteration make it again")
        break
  problem = chunk_store.decide(problem)
  if problem:
    raise PipelineError(problem)
  check_model(it.policy, it.path("model"), full=full)


def read_timings(it_dir: str) -> dict:
  """iter_<t>/timings.json, or {} (timings are not results: a missing or unreadable file is no
  reason to stop a run)."""
  path = artifacts.join(it_dir, "timings.json")
  try:
    return dict(artifacts.read_json(path)) if artifacts.exists(path) else {}
  except (artifacts.ArtifactError, OSError, TypeError, ValueError):
    return {}


def write_timings(it_dir: str, timings: Mapping) -> None:
  if distributed.is_main_process():
    artifacts.write_json(artifacts.join(it_dir, "timings.json"), dict(timings))


def split_step_timings(steps: Sequence[Mapping], kind: str = "dpo") -> tuple[list[dict], dict]:
  """Training step records without their timing fields, and the timings of the iteration's
  training (`kind`: "dpo" or "sft", the timing keys' prefix)."""
  clean = [{k: v for k, v in s.items() if k not in STEP_TIMING_KEYS} for s in steps]
  timings: dict[str, Any] = {}
  for key in STEP_TIMING_KEYS:
    values = [s.get(key) for s in steps]
    present = [v for v in values if v is not None]
    if present:
      timings[f"{kind}/{key}"] = float(np.mean(present))
      timings[f"{kind}/final_{key}"] = float(values[-1] if values[-1] is not None else present[-1])
      timings[f"{kind}/step_{key}"] = values
  return clean, timings


def pop_timings(metrics: dict, timings: dict) -> dict:
  """Moves timing fields out of `metrics` (e.g. a metrics.json or dpo.jsonl written before they had
  their own file) into `timings`, where they do not override what is there; returns `metrics`."""
  for key in TIMING_KEYS:
    if key in metrics:
      timings.setdefault(key, metrics.pop(key))
  return metrics


# --------------------------------------------------------------------------------------------------
# One iteration: a call per stage, each giving a stages.py function its files, chunks and policy.

@dataclasses.dataclass(frozen=True)
class Iteration:
  """What every stage of one iteration needs: the config, the policy, where the files go, and the
  stage seeds, which derive from (config.seed, iteration, stage, chunk)."""
  config: Any
  iteration: int
  policy: Policy
  dir: str
  verify_full: bool = False  # main --verify=full: finished iterations' files by sha256
  start: float = 0.0  # time.time() when it began (its wall_seconds)

  def path(self, name: str) -> str:
    return artifacts.join(self.dir, name)

  def seed(self, stage: str, chunk: int = 0) -> int:
    return stages.stage_seed(self.config.seed, self.iteration, stage, chunk)

  def at(self, stage: str):
    at(self.iteration, stage)


def begin(config, workdir: str, iteration: int, policy: Policy, verify_full: bool):
  """(the iteration, its (metrics, timings) if it is finished else None, whether an earlier
  process started it, the timings it recorded so far) -- what both recipes' iterations start
  with. `resumed`: its wall_seconds then covers only the part this process ran, and says so."""
  it = Iteration(config, iteration, policy, artifacts.join(workdir, f"iter_{iteration}"),
                 verify_full, start=time.time())
  artifacts.makedirs(it.dir)
  it.at("load")
  finished = _load_finished_iteration(it)
  resumed = chunk_store.exists(it.path("prompts.jsonl"))
  timings = read_timings(it.dir) if distributed.is_main_process() and finished is None else {}
  timings.pop("wall_seconds", None)
  timings.pop("resumed", None)
  return it, finished, resumed, timings


def _load_finished_iteration(it: Iteration) -> tuple[dict, dict] | None:
  """(metrics, timings) of a finished iteration, with its model loaded into the policy; else None.
  Its files are checked against their markers first (`_verify_finished_iteration`)."""
  model_dir = it.path("model")
  metrics = chunk_store.finished_json(it.path("metrics.json"))
  if metrics is None or missing_model_files(it.policy, model_dir):
    return None
  _verify_finished_iteration(it, full=it.verify_full)
  it.policy.load(model_dir)  # JaxPolicy: checkpoints.load_hf checks every sha256 first
  timings = read_timings(it.dir) if distributed.is_main_process() else {}
  return pop_timings(metrics, timings), timings


def finish(it: Iteration, result: dict, timings: dict, resumed: bool):
  """Moves timing fields out of `result` (`pop_timings`), adds the iteration's wall_seconds (and
  "resumed": True when `resumed`), writes the timings, then metrics.json (`result`), which marks
  the iteration finished."""
  pop_timings(result, timings)
  timings["wall_seconds"] = round(time.time() - it.start, 2)
  if resumed:
    timings["resumed"] = True
  write_timings(it.dir, timings)
  chunk_store.write_json_marked(it.path("metrics.json"), result)


def generate_where_fits(policy: Policy, prompts: Sequence[str], **kwargs
                         ) -> tuple[list[bool], list[list[Generation]]]:
  """Which prompts fit the context, and the policy's generations for those that do (in order).
  The policy tokenizes each prompt once and reports the ones that do not fit
  (recipe_types.TOO_LONG)."""
  return fitting(policy.generate(list(prompts), **kwargs) if prompts else [])


def prompts_stage(it: Iteration, pool: Sequence[str]) -> list:
  """The iteration's prompt records (prompts.jsonl)."""
  config = it.config
  it.at("prompts")
  return chunk_store.stage(it.path("prompts.jsonl"), lambda: stages.prompt_records(
      pool, config.pipeline.prompts_per_iteration, it.iteration, config.seed))


def train_stage(it: Iteration, kind: str, train: Callable[[], list], timings: dict) -> list:
  """The training stage `kind` ("dpo" | "sft"): `train()` (which leaves M_{t} in the policy and
  returns the step records), or the saved model of an earlier run, loaded; returns the step records
  (`<kind>.jsonl`).

  The training timings replace those in `timings`, and are written before the model and the step
  file so that a resume keeps them."""
  it.at(kind)
  steps_path, model_dir = it.path(f"{kind}.jsonl"), it.path("model")
  done_steps = chunk_store.finished(steps_path)
  missing = missing_model_files(it.policy, model_dir)
  if done_steps is not None and not missing:
    check_model(it.policy, model_dir, full=it.verify_full)
    it.policy.load(model_dir)  # JaxPolicy: checkpoints.load_hf checks every sha256 first
    return done_steps
  if missing and chunk_store.exists(model_dir):
    # Never loaded: e.g. a remote save stopped before its config.json (uploaded last), or a
    # directory damaged by hand. Training is deterministic, so training again rebuilds it.
    logging.warning("%s is incomplete (missing %s): iteration %d's %s is run again", model_dir,
                    ", ".join(missing), it.iteration, kind.upper())
    if distributed.is_main_process():
      artifacts.rmtree(model_dir, ignore_errors=True)
    distributed.sync("remove:" + model_dir)
  steps, step_timings = split_step_timings(train(), kind)
  for key in [k for k in timings if k.startswith(f"{kind}/")]:
    del timings[key]
  timings.update(step_timings)
  write_timings(it.dir, timings)
  it.policy.save(model_dir)
  chunk_store.write_jsonl(steps_path, steps)
  if distributed.is_main_process():
    artifacts.rmtree(it.path(f"{kind}_checkpoints"), ignore_errors=True)
  return chunk_store.read_back(steps_path)


# --------------------------------------------------------------------------------------------------
# What stage 0 (`sft.data`, the Meta-Rewarding recipe's) trains on; run.py checks it before a run.

def sft_data(config) -> str:
  """The stage-0 SFT file the config names; "" = no stage 0."""
  section = config.get("sft")
  return str(section.get("data", "") or "") if section is not None else ""


def load_sft_records(config) -> list[dict]:
  """Stage 0's {prompt, response} records from `sft.data` (prompt + `sft.response_field`, or
  chat `messages`; `data.load_sft`), a local or gs:// file; a `data.DataError` names the file
  and line of a bad one."""
  s = config.sft
  path = s.data if artifacts.is_remote(s.data) else os.path.expanduser(s.data)
  return data.load_sft(artifacts.localize(path),  # gs://: a local copy (cached)
                       response_field=s.get("response_field", "completion"))
