"""The Meta-Rewarding iteration driver (docs/design.md#one-iteration): stage files, chunks, resume, the run loop.

One iteration t turns model M_t into M_{t+1}; the stages are the pure functions of stages.py, and
this module gives each one its file and runs them in order:

  prompts      iter_t/prompts.jsonl       actor_pairs  iter_t/actor_pairs.jsonl
  actor        iter_t/actor.jsonl         meta_judge   iter_t/meta_judge.jsonl
  judge        iter_t/judge.jsonl         judge_pairs  iter_t/judge_pairs.jsonl
  dpo          iter_t/dpo.jsonl, iter_t/model/ (reference log-probs once, then DPO)
  evaluate     iter_t/metrics.json, metrics.jsonl (the 4.3 metrics)

Every artifact is written atomically (`artifacts.py`); the generation stages are written in chunks of
`pipeline.chunk_size` prompts, so a killed run loses at most one chunk. Rerunning the same command
skips finished stages and chunks; seeds derive from (config.seed, iteration, stage, chunk), so the
resumed run produces exactly what an uninterrupted run would. The side effects all live here: the
policy's calls (generate, train, save, load), files, chunking, resume, timings, multi-host
agreement (`distributed.py`); everything the stages compute is in stages.py.

Each stage file and chunk has a completion marker `<file>.done.json` (record count, size, sha256),
written after it; a file that disagrees with its marker is refused by name, one without a marker is
made again, and an iteration's model/ is used only when complete (config.json and the weights).
Chunk files are named by the item range they hold, so a changed chunk_size re-chunks without
duplicates. Timing fields go to iter_t/timings.json and timings.jsonl, never into the artifacts or
metrics, which are therefore byte-identical between a resumed run and an uninterrupted one. `run`
starts by removing the temp files a killed run left behind (`artifacts.sweep_temp`).

Self-Rewarding is the same loop with `meta_judge.enabled = False` (no meta_judge / judge_pairs).
The Self-Taught Evaluator (`recipe = "ste"`) is another list of stages (ste.py) on the same driver:
the same prompts stage, chunking, markers, resume, timings, held-out hooks and metrics writers;
its files are listed at `_run_ste_iteration`.
With `sft.data` set, stage 0 makes M_0 by SFT before iteration 1 (iter_0/; see `_run_stage0`).
This module imports neither jax nor flax: the policy brings the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from absl import logging

from meta_rewarding import (artifacts, chunk_store, distributed, metrics as metrics_lib,
                            model_files, stages, ste)
from meta_rewarding.recipe_types import Generation, PipelineError, Policy, fitting


# Timing fields are not results: they differ between two runs of the same command. They go to
# iter_<t>/timings.json and workdir/timings.jsonl, never to metrics.json / metrics.jsonl or the stage
# files, which are therefore byte-identical between an interrupted-and-resumed run and an
# uninterrupted one.
STEP_TIMING_KEYS = ("tokens_per_second",)  # in the step records policy.train_dpo / train_sft return
TIMING_KEYS = ("wall_seconds", "dpo/tokens_per_second", "dpo/final_tokens_per_second",
               "sft/tokens_per_second", "sft/final_tokens_per_second")
TIMINGS_FILE = "timings.jsonl"

# Where the driver is (for the one-line message of an interrupted run, see `interrupted_message`).
_progress: dict[str, Any] = {"iteration": None, "stage": None}


def _at(iteration: int | None, stage: str | None):
  _progress.update(iteration=iteration, stage=stage)


def interrupted_message() -> str:
  """The line to print when a run is stopped by SIGINT / SIGTERM (see main.py)."""
  if _progress["iteration"] is None:
    return "interrupted; rerun the same command to resume"
  return (f"interrupted at iteration {_progress['iteration']}, stage {_progress['stage']}; "
          "rerun the same command to resume")


def _missing_model_files(policy: Policy, path: str) -> list[str]:
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


def _check_model(policy: Policy, path: str, *, full: bool):
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


def _verify_finished_iteration(it: "_Iteration", *, full: bool):
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
  _check_model(it.policy, it.path("model"), full=full)


def _read_timings(it_dir: str) -> dict:
  """iter_<t>/timings.json, or {} (timings are not results: a missing or unreadable file is no
  reason to stop a run)."""
  path = artifacts.join(it_dir, "timings.json")
  try:
    return dict(artifacts.read_json(path)) if artifacts.exists(path) else {}
  except (artifacts.ArtifactError, OSError, TypeError, ValueError):
    return {}


def _write_timings(it_dir: str, timings: Mapping) -> None:
  if distributed.is_main_process():
    artifacts.write_json(artifacts.join(it_dir, "timings.json"), dict(timings))


def _split_step_timings(steps: Sequence[Mapping], kind: str = "dpo") -> tuple[list[dict], dict]:
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


def _pop_timings(metrics: dict, timings: dict) -> dict:
  """Moves timing fields out of `metrics` (e.g. a metrics.json or dpo.jsonl written before they had
  their own file) into `timings`, where they do not override what is there; returns `metrics`."""
  for key in TIMING_KEYS:
    if key in metrics:
      timings.setdefault(key, metrics.pop(key))
  return metrics


def check_config(workdir: str, config_json: str, allow_change: bool):
  """Records the resolved config; refuses a resumed run whose config differs (unless allowed)."""
  path = artifacts.join(workdir, "config.json")
  current = json.loads(config_json)
  if artifacts.exists(path):
    previous = artifacts.read_json(path)
    if previous != current:
      diff = sorted(_diff_keys(previous, current))
      if not allow_change:
        raise PipelineError(
            f"{workdir} holds a run with a different config (changed: {', '.join(diff[:8])}"
            f"{' ...' if len(diff) > 8 else ''}). Use a new --workdir, or pass "
            "--config.allow_config_change=True to resume with the new config.")
      logging.warning("resuming %s with a changed config: %s", workdir, diff)
  artifacts.write_json(path, current)


def _diff_keys(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    for k in set(a) | set(b):
      yield from _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
  elif a != b:
    yield prefix.rstrip(".")


# --------------------------------------------------------------------------------------------------
# One iteration: a call per stage, each giving a stages.py function its files, chunks and policy.

@dataclasses.dataclass(frozen=True)
class _Iteration:
  """What every stage of one iteration needs: the config, the policy, where the files go, and the
  stage seeds, which derive from (config.seed, iteration, stage, chunk)."""
  config: Any
  iteration: int
  policy: Policy
  dir: str
  verify_full: bool = False  # main --verify=full: finished iterations' files by sha256

  def path(self, name: str) -> str:
    return artifacts.join(self.dir, name)

  def seed(self, stage: str, chunk: int = 0) -> int:
    return stages.stage_seed(self.config.seed, self.iteration, stage, chunk)

  def at(self, stage: str):
    _at(self.iteration, stage)


def run_iteration(config, workdir: str, iteration: int, policy: Policy, pool: Sequence[str],
                  evaluate_extra: Callable[[Mapping[str, list]], dict] | None = None) -> dict:
  """Runs (or resumes) iteration `iteration` (1-based); returns its metrics."""
  return _run_iteration(config, workdir, iteration, policy, pool, evaluate_extra)[0]


def _begin_iteration(config, workdir: str, iteration: int, policy: Policy, verify_full: bool):
  """(the iteration, its (metrics, timings) if it is finished else None, whether an earlier
  process started it, the timings it recorded so far) -- what both recipes' iterations start
  with. `resumed`: its wall_seconds then covers only the part this process ran, and says so."""
  it = _Iteration(config, iteration, policy, artifacts.join(workdir, f"iter_{iteration}"),
                  verify_full)
  artifacts.makedirs(it.dir)
  it.at("load")
  finished = _load_finished_iteration(it)
  resumed = chunk_store.exists(it.path("prompts.jsonl"))
  timings = _read_timings(it.dir) if distributed.is_main_process() and finished is None else {}
  timings.pop("wall_seconds", None)
  timings.pop("resumed", None)
  return it, finished, resumed, timings


def _run_iteration(config, workdir: str, iteration: int, policy: Policy, pool: Sequence[str],
                   evaluate_extra: Callable[[Mapping[str, list]], dict] | None = None,
                   verify_full: bool = False) -> tuple[dict, dict]:
  """`run_iteration`, also returning the iteration's timings (process 0's; {} on the others).

  An iteration is finished when metrics.json (written last) is there and its model directory is
  complete; a finished iteration is loaded with the timings it was run with."""
  start = time.time()
  it, finished, resumed, timings = _begin_iteration(config, workdir, iteration, policy,
                                                      verify_full)
  if finished is not None:
    return finished
  p = config.pipeline
  skipped = {"long_prompts": 0, "long_judge_prompts": 0, "long_meta_judge_prompts": 0}

  prompt_records = _prompts_stage(it, pool)
  actor = _actor_stage(it, prompt_records)
  skipped["long_prompts"] = len(prompt_records) - len(actor)  # the actor stage keeps those that fit
  judge = _judge_stage(it, actor)
  skipped["long_judge_prompts"] = sum(j["too_long"] for j in judge)
  rho = float(stages.per_iteration(p.rho, iteration, "pipeline.rho"))
  it.at("actor_pairs")
  a_pairs = chunk_store.stage(it.path("actor_pairs.jsonl"),
                   lambda: stages.actor_pairs(actor, judge, rho, p.length_unit))
  use = stages.scheduled_pairs(p.train_pairs, iteration)
  meta = j_pairs = position_w = None
  identical_dropped = 0
  if stages.runs_meta_judge(config.meta_judge, use):
    meta = _meta_judge_stage(it, actor, judge)
    skipped["long_meta_judge_prompts"] = sum(b["too_long"] for m in meta for b in m["battles"])
    j_pairs, position_w, identical_dropped = _judge_pairs_stage(it, meta)
  dpo_steps = _dpo_stage(it, stages.training_pairs(use, a_pairs, j_pairs), timings)

  it.at("evaluate")
  result = stages.iteration_metrics(iteration, prompt_records, actor, judge, a_pairs, meta,
                                    j_pairs, dpo_steps, position_w, skipped, identical_dropped)
  result["pairs/trained_on"] = use
  result["rho"] = rho
  if evaluate_extra is not None:
    result.update(evaluate_extra({"prompts": prompt_records, "actor": actor, "judge": judge,
                                  "meta_judge": meta or [], "actor_pairs": a_pairs,
                                  "judge_pairs": j_pairs or []}))
  _pop_timings(result, timings)  # dpo/tokens_per_second of a dpo.jsonl from before timings.json
  timings["wall_seconds"] = round(time.time() - start, 2)
  if resumed:
    timings["resumed"] = True
  _finish_iteration(it, result, timings)
  return result, timings


def _load_finished_iteration(it: _Iteration) -> tuple[dict, dict] | None:
  """(metrics, timings) of a finished iteration, with its model loaded into the policy; else None.
  Its files are checked against their markers first (`_verify_finished_iteration`)."""
  model_dir = it.path("model")
  metrics = chunk_store.finished_json(it.path("metrics.json"))
  if metrics is None or _missing_model_files(it.policy, model_dir):
    return None
  _verify_finished_iteration(it, full=it.verify_full)
  it.policy.load(model_dir)  # JaxPolicy: checkpoints.load_hf checks every sha256 first
  timings = _read_timings(it.dir) if distributed.is_main_process() else {}
  return _pop_timings(metrics, timings), timings


def _finish_iteration(it: _Iteration, result: Mapping, timings: Mapping):
  """Writes the timings, then metrics.json, which marks the iteration finished."""
  _write_timings(it.dir, timings)
  chunk_store.write_json_marked(it.path("metrics.json"), result)


def _generate_where_fits(policy: Policy, prompts: Sequence[str], **kwargs
                         ) -> tuple[list[bool], list[list[Generation]]]:
  """Which prompts fit the context, and the policy's generations for those that do (in order).
  The policy tokenizes each prompt once and reports the ones that do not fit (recipe_types.TOO_LONG)."""
  return fitting(policy.generate(list(prompts), **kwargs) if prompts else [])


def _prompts_stage(it: _Iteration, pool: Sequence[str]) -> list:
  """The iteration's prompt records (prompts.jsonl)."""
  config = it.config
  it.at("prompts")
  return chunk_store.stage(it.path("prompts.jsonl"), lambda: stages.prompt_records(
      pool, config.pipeline.prompts_per_iteration, it.iteration, config.seed))


def _actor_stage(it: _Iteration, prompts: Sequence[Mapping]) -> list:
  """Actor records of the prompts that fit the context (the others are an error unless
  data.skip_long_prompts; then they are left out, and counted by the caller)."""
  actor = it.config.actor

  def run_chunk(chunk, c):
    fits, generations = _generate_where_fits(
        it.policy, [r["prompt"] for r in chunk], n=actor.num_responses,
        max_new_tokens=actor.max_new_tokens, seed=it.seed("actor", c), share_prefix=False,
        desc=f"iter {it.iteration} actor [{c}]")
    usable, _ = stages.usable_prompts(chunk, fits, skip_long=it.config.data.skip_long_prompts,
                                      iteration=it.iteration)
    return stages.actor_records(usable, generations)
  it.at("actor")
  return chunk_store.run_chunked(it.path("actor.jsonl"), prompts, it.config.pipeline.chunk_size,
                                 run_chunk)


def _judge_stage(it: _Iteration, actor_records: Sequence[Mapping]) -> list:
  judge = it.config.judge

  def run_chunk(chunk, c):
    fits, generations = _generate_where_fits(
        it.policy, stages.judge_prompts(judge.template, chunk), n=judge.num_judgments,
        max_new_tokens=judge.max_new_tokens, seed=it.seed("judge", c), share_prefix=True,
        desc=f"iter {it.iteration} judge [{c}]")
    return stages.judge_records(chunk, fits, generations)
  it.at("judge")
  # Chunked over responses, in groups of chunk_size prompts' worth.
  chunk_size = it.config.pipeline.chunk_size * max(1, it.config.actor.num_responses)
  return chunk_store.run_chunked(it.path("judge.jsonl"), stages.judge_items(actor_records),
                                 chunk_size, run_chunk)


def _meta_judge_stage(it: _Iteration, actor_records: Sequence[Mapping],
                      judge_records: Sequence[Mapping]) -> list:
  meta_judge = it.config.meta_judge

  def run_chunk(chunk, c):
    fits, generations = _generate_where_fits(
        it.policy, stages.meta_judge_prompts(meta_judge.template, chunk), n=1,
        max_new_tokens=meta_judge.max_new_tokens, seed=it.seed("meta_judge", c),
        share_prefix=True, desc=f"iter {it.iteration} meta-judge [{c}]")
    return stages.meta_judge_records(chunk, fits, generations)
  requests = stages.meta_judge_requests(actor_records, judge_records, meta_judge.skip_same_score)
  it.at("meta_judge")
  return chunk_store.run_chunked(it.path("meta_judge.jsonl"), requests,
                                 it.config.pipeline.chunk_size, run_chunk)


def _judge_pairs_stage(it: _Iteration, meta: Sequence[Mapping]
                       ) -> tuple[list, tuple[float, float], int]:
  """(judge pairs as written, position weights, identical pairs dropped). The weights and the
  count are recomputed from the meta-judge records on every run, also when the file exists."""
  it.at("judge_pairs")
  c = it.config
  pairs, position_w, identical_dropped = stages.judge_pairs(
      meta, c.judge.template, c.meta_judge.max_chosen_chars, c.meta_judge.elo_l2)
  return (chunk_store.stage(it.path("judge_pairs.jsonl"), lambda: pairs), position_w,
          identical_dropped)


def _dpo_stage(it: _Iteration, pairs: Sequence[Mapping], timings: dict) -> list:
  """DPO on `pairs` (or the saved model of an earlier run, loaded); returns the step records."""
  def train():
    if not pairs:
      logging.warning("iteration %d: no pairs to train on; the model is carried over unchanged",
                      it.iteration)
      return []
    return it.policy.train_dpo(pairs, checkpoint_dir=it.path("dpo_checkpoints"),
                               seed=it.seed("dpo"))
  return _train_stage(it, "dpo", train, timings)


def _train_stage(it: _Iteration, kind: str, train: Callable[[], list], timings: dict) -> list:
  """The training stage `kind` ("dpo" | "sft"): `train()` (which leaves M_{t} in the policy and
  returns the step records), or the saved model of an earlier run, loaded; returns the step records
  (`<kind>.jsonl`).

  The training timings replace those in `timings`, and are written before the model and the step
  file so that a resume keeps them."""
  it.at(kind)
  steps_path, model_dir = it.path(f"{kind}.jsonl"), it.path("model")
  done_steps = chunk_store.finished(steps_path)
  missing = _missing_model_files(it.policy, model_dir)
  if done_steps is not None and not missing:
    _check_model(it.policy, model_dir, full=it.verify_full)
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
  steps, step_timings = _split_step_timings(train(), kind)
  for key in [k for k in timings if k.startswith(f"{kind}/")]:
    del timings[key]
  timings.update(step_timings)
  _write_timings(it.dir, timings)
  it.policy.save(model_dir)
  chunk_store.write_jsonl(steps_path, steps)
  if distributed.is_main_process():
    artifacts.rmtree(it.path(f"{kind}_checkpoints"), ignore_errors=True)
  return chunk_store.read_back(steps_path)


# --------------------------------------------------------------------------------------------------
# Stage 0 (`sft.data` set; Meta-Rewarding / Self-Rewarding): SFT of the loaded checkpoint (or the
# random init) into M_0 before iteration 1 -- the Meta-Rewarding paper's iteration 1 starts from
# the seed fine-tuned on evaluation (EFT) data
# (docs/scale.md#3-the-eft-file-and-an-eft-trained-starting-model). Its files:
#
#   sft        iter_0/sft.jsonl (step records), iter_0/model/ (M_0, with its model marker)
#   evaluate   iter_0/metrics.json (sft/* metrics: iteration 0's record of metrics.jsonl)
#
# Resumed like an iteration: a finished stage 0 (metrics.json and a complete model/, checked
# against their markers) has its M_0 loaded, never trained again; a stage 0 killed during the
# SFT resumes from its train-state checkpoints (iter_0/sft_checkpoints). The SFT's seed derives
# from (config.seed, 0, "sft"). The held-out evaluation of M_0 (iter_0/heldout.json) runs after
# it, so it measures the SFT model.

def sft_data(config) -> str:
  """The stage-0 SFT file the config names; "" = no stage 0."""
  section = config.get("sft")
  return str(section.get("data", "") or "") if section is not None else ""


def load_sft_records(config) -> list[dict]:
  """Stage 0's {prompt, response} records from `sft.data` (prompt + `sft.response_field`, or
  chat `messages`; `data.load_sft`), a local or gs:// file; a `data.DataError` names the file
  and line of a bad one."""
  from meta_rewarding import data  # numpy only
  s = config.sft
  path = s.data if artifacts.is_remote(s.data) else os.path.expanduser(s.data)
  return data.load_sft(artifacts.localize(path),  # gs://: a local copy (cached)
                       response_field=s.get("response_field", "completion"))


def _run_stage0(config, workdir: str, policy: Policy, verify_full: bool
                ) -> tuple[dict, dict] | None:
  """Stage 0, run or resumed: (its metrics, its timings) with M_0 left in the policy; None when
  the config names no `sft.data`."""
  if not sft_data(config):
    return None
  if recipe(config) == "ste":
    raise PipelineError(f"sft.data={sft_data(config)!r}: stage 0 is for the Meta-Rewarding "
                        "recipe; the Self-Taught Evaluator's seed is its own starting point (set "
                        "model.checkpoint to an SFT model instead)")
  start = time.time()
  it, finished, _, timings = _begin_iteration(config, workdir, 0, policy, verify_full)
  if finished is not None:
    return finished
  resumed = (chunk_store.exists(it.path("sft.jsonl"))
             or chunk_store.exists(it.path("sft_checkpoints")))
  heldout = it.path("heldout.json")
  if chunk_store.exists(heldout):
    # Measured before this stage 0 finished (a run that gained sft.data): not of M_0. Removed, so
    # that M_0 is measured once trained.
    logging.warning("%s was measured before stage 0 trained M_0: removed, measured again", heldout)
    if distributed.is_main_process():
      artifacts.remove(artifacts.marker_path(heldout))
      artifacts.remove(heldout)
    distributed.sync("remove:" + heldout)
  s = config.sft
  records = load_sft_records(config)

  def train():
    steps = it.policy.train_sft(records, checkpoint_dir=it.path("sft_checkpoints"),
                                seed=it.seed("sft"), system_prompt=s.system_prompt,
                                train_config=s.train)
    if not steps:
      raise PipelineError(
          f"sft.data={s.data!r}: none of its {len(records)} records fits sft.train.max_length="
          f"{s.train.max_length} (sft.train.truncation={s.train.truncation!r}): stage 0 has "
          "nothing to train on; raise the length or set truncation='truncate_response'")
    return steps
  steps = _train_stage(it, "sft", train, timings)

  it.at("evaluate")
  result = {"iteration": 0, **stages.stage0_metrics(len(records), steps)}
  _pop_timings(result, timings)
  timings["wall_seconds"] = round(time.time() - start, 2)
  if resumed:
    timings["resumed"] = True
  _finish_iteration(it, result, timings)
  return chunk_store.finished_json(it.path("metrics.json")), timings  # what a resumed run reads


# --------------------------------------------------------------------------------------------------
# The Self-Taught Evaluator (config.recipe == "ste"): the same driver, another list of stages
# (ste.py), with the files
#
#   selection   (ste.categorize only; once, before iteration 1, with the seed M_0)
#               ste_selection/categorize.jsonl (chunked, resumable), ste_selection/selected.jsonl
#   prompts     iter_t/prompts.jsonl      judge     iter_t/judge.jsonl (both orders: 2 per pair)
#   actor       iter_t/actor.jsonl        sft_data  iter_t/sft_data.jsonl
#   worse       iter_t/worse.jsonl        sft       iter_t/sft.jsonl, iter_t/model/
#   evaluate    iter_t/metrics.json, metrics.jsonl
#
# The data of iteration t comes from M_{t-1} (the model the policy holds when the iteration
# starts); the SFT starts from the seed model every iteration, as the paper does:
# M_t = SFT(seed, data_t), data_t = iteration t's sft_data (ste.train_on = "iteration") or that of
# iterations 1..t (ste.train_on = "accumulated"). With no SFT data, M_t is the seed itself.
# With a selection, every iteration draws its prompts from selected.jsonl (`_ste_selection`).

SEED_MODEL_DIR = "seed_model"  # the seed, saved once when model.checkpoint names no directory


def seed_model_dir(config, workdir: str) -> str:
  """Where the STE loop reloads the seed from before each iteration's SFT."""
  return config.model.checkpoint or artifacts.join(workdir, SEED_MODEL_DIR)


def _keep_seed_model(config, workdir: str, policy: Policy) -> str:
  """The seed's directory: model.checkpoint, or (a randomly initialised seed) a copy the policy
  saves now, while it still holds the seed, unless an earlier run saved it."""
  path = seed_model_dir(config, workdir)
  if not config.model.checkpoint and _missing_model_files(policy, path):
    policy.save(path)
  return path


STE_SELECTION_DIR = "ste_selection"


def _ste_selection(config, workdir: str, iteration: int, policy: Policy, pool: Sequence[str],
                   verify_full: bool = False) -> tuple[list, dict] | None:
  """The up-front instruction selection (`ste.categorize`), run or resumed: (the selected records,
  `ste.selection_metrics`); None without `ste.categorize`.

  It is made once, with the seed M_0: the first STE iteration calls this before any of its
  stages, while the policy still holds M_0; later iterations read the finished files. Should they
  be missing at iteration t > 1 (the run gained ste.categorize on a resume), the seed is loaded
  for it and M_{t-1} (iter_{t-1}/model) again after. Seeds: (config.seed, 0, "ste_categorize",
  chunk) for the categorisation, (config.seed, 0, "prompts") for the per-category cap."""
  s = config.ste
  if not s.categorize:
    return None
  it = _Iteration(config, 0, policy, artifacts.join(workdir, STE_SELECTION_DIR), verify_full)
  selected_path = it.path("selected.jsonl")
  artifacts.makedirs(it.dir)
  if chunk_store.finished(selected_path) is None:
    reload = None
    if iteration > 1 and chunk_store.finished(it.path("categorize.jsonl")) is None:
      reload = artifacts.join(workdir, f"iter_{iteration - 1}", "model")
      logging.warning("the instruction selection is not on disk at iteration %d: made now with "
                      "the seed model", iteration)
      policy.load(seed_model_dir(config, workdir))
    candidates = ste.selection_candidates(pool, s.selection_candidates, config.seed)
    categorized = _ste_stage(
        it, "categorize", candidates,
        lambda chunk: ste.category_prompts(s.category_template, chunk), ste.category_records,
        max_new_tokens=s.category_max_new_tokens)
    it.at("select")
    chunk_store.stage(selected_path, lambda: ste.select_instructions(
        categorized, s.categories, min_complexity=s.min_complexity,
        max_per_category=s.max_per_category, seed=it.seed("prompts")))
    if reload is not None:
      policy.load(reload)
  categorized = chunk_store.read_back(it.path("categorize.jsonl"))
  selected = chunk_store.read_back(selected_path)
  if len(selected) < config.pipeline.prompts_per_iteration:
    logging.warning("the instruction selection kept %d instructions, fewer than "
                    "pipeline.prompts_per_iteration=%d: each iteration uses all of them",
                    len(selected), config.pipeline.prompts_per_iteration)
  return selected, ste.selection_metrics(categorized, selected, s.categories, s.min_complexity)


def _ste_training_data(config, workdir: str, iteration: int, sft_data: Sequence[Mapping]
                       ) -> list:
  """What iteration `iteration`'s SFT trains on: its own sft_data (ste.train_on = "iteration"),
  or iterations 1..t's sft_data files concatenated in iteration order ("accumulated")."""
  if config.ste.get("train_on", "iteration") != "accumulated":
    return list(sft_data)
  records = []
  for t in range(1, iteration):
    path = artifacts.join(workdir, f"iter_{t}", "sft_data.jsonl")
    earlier = chunk_store.finished(path)
    if earlier is None:
      raise PipelineError(f"{path} is missing or incomplete: ste.train_on='accumulated' trains "
                          f"iteration {iteration} on the sft_data of every earlier iteration")
    records.extend(earlier)
  return records + list(sft_data)


def _run_ste_iteration(config, workdir: str, iteration: int, policy: Policy, pool: Sequence[str],
                       evaluate_extra: Callable[[Mapping[str, list]], dict] | None = None,
                       verify_full: bool = False) -> tuple[dict, dict]:
  """One STE iteration (see above), run or resumed; returns (metrics, timings) like
  `_run_iteration`."""
  start = time.time()
  it, finished, resumed, timings = _begin_iteration(config, workdir, iteration, policy,
                                                      verify_full)
  if finished is not None:
    return finished
  s = config.ste
  selection = _ste_selection(config, workdir, iteration, policy, pool, verify_full)
  if selection is None:
    prompt_records = _prompts_stage(it, pool)
  else:  # drawn from the up-front selection
    it.at("prompts")
    prompt_records = chunk_store.stage(it.path("prompts.jsonl"), lambda: ste.selected_prompt_records(
        selection[0], config.pipeline.prompts_per_iteration, iteration, config.seed))
  selected = prompt_records

  def actor_records(chunk, fits, rows):
    usable, _ = stages.usable_prompts(chunk, fits, skip_long=config.data.skip_long_prompts,
                                      iteration=iteration)
    return ste.actor_records(usable, rows)
  actor = _ste_stage(it, "actor", selected, lambda chunk: [r["prompt"] for r in chunk],
                     actor_records, max_new_tokens=config.actor.max_new_tokens)
  worse = _ste_stage(it, "worse", actor,
                     lambda chunk: ste.worse_prompts(s.worse_response_template, chunk),
                     ste.worse_records, max_new_tokens=s.worse_max_new_tokens)
  requests = ste.judge_requests(ste.usable_pairs(worse), s.pairwise_template,
                                it.seed("ste_order"), s.get("orders", "both"))
  judged = _ste_stage(it, "judge", requests,
                      lambda chunk: ste.judge_messages(chunk, s.system_prompt), ste.judge_records,
                      max_new_tokens=s.judge_max_new_tokens, n=s.num_judgments,
                      share_prefix=bool(s.system_prompt))
  it.at("sft_data")
  data_seed = it.seed("ste_sft_data")
  sft_data = chunk_store.stage(it.path("sft_data.jsonl"),
                    lambda: ste.sft_records(judged, data_seed, balance=s.balance_labels))
  seed_dir = seed_model_dir(config, workdir)
  train_data = _ste_training_data(config, workdir, iteration, sft_data)

  def train():
    it.policy.load(seed_dir)  # M_t = SFT(seed, data_t)
    if not train_data:
      statuses = [w["status"] for w in worse]
      logging.warning(
          "iteration %d: no STE example kept: %d responses, %d worse responses unparseable, %d "
          "judge requests (pairs x orders), %d with a judgment naming y_w (label balancing keeps "
          "min(#A, #B) of each); no SFT this iteration, M_%d is the seed model", iteration,
          len(actor), statuses.count("unparseable"), sum(not r["too_long"] for r in judged),
          sum(ste.rejection_sample(r, data_seed) is not None for r in judged if not r["too_long"]),
          iteration)
      return []
    return it.policy.train_sft(train_data, checkpoint_dir=it.path("sft_checkpoints"),
                               seed=it.seed("ste_sft"), system_prompt=s.system_prompt)
  sft_steps = _train_stage(it, "sft", train, timings)

  it.at("evaluate")
  result = ste.iteration_metrics(iteration, prompt_records,
                                 selection[1] if selection is not None else None, actor, worse,
                                 judged, sft_data, sft_steps, len(selected) - len(actor),
                                 data_seed, trained_on=len(train_data))
  if evaluate_extra is not None:
    result.update(evaluate_extra({"prompts": prompt_records,
                                  "selected": selection[0] if selection is not None else [],
                                  "actor": actor, "worse": worse, "judge": judged,
                                  "sft_data": sft_data}))
  _pop_timings(result, timings)
  timings["wall_seconds"] = round(time.time() - start, 2)
  if resumed:
    timings["resumed"] = True
  _finish_iteration(it, result, timings)
  return result, timings


def _ste_stage(it: _Iteration, name: str, records: Sequence, build_prompts: Callable,
               to_records: Callable, *, max_new_tokens: int, n: int = 1,
               share_prefix: bool = False) -> list:
  """An STE generation stage: `n` generations of each record's prompt (`build_prompts(chunk)`),
  turned into records by `to_records(chunk, fits, generations)`, in chunks of
  pipeline.chunk_size records (iter_t/<name>.jsonl)."""
  def run_chunk(chunk, c):
    fits, generations = _generate_where_fits(
        it.policy, build_prompts(chunk), n=int(n), max_new_tokens=int(max_new_tokens),
        seed=it.seed(f"ste_{name}", c), share_prefix=share_prefix,
        desc=f"iter {it.iteration} {name} [{c}]")
    return to_records(chunk, fits, generations)
  it.at(name)
  return chunk_store.run_chunked(it.path(f"{name}.jsonl"), records, it.config.pipeline.chunk_size,
                                 run_chunk)


RECIPES = ("meta_rewarding", "ste")


def recipe(config) -> str:
  """The config's recipe: "meta_rewarding" (also Self-Rewarding) or "ste"."""
  name = config.get("recipe", "meta_rewarding")
  if name not in RECIPES:
    raise PipelineError(f"recipe={name!r}; expected one of {', '.join(RECIPES)}")
  return name


def _evaluate_model(workdir: str, iteration: int, policy: Policy,
                    evaluate_model: Callable[[Policy, str], dict]) -> dict:
  """`evaluate_model` of the model the policy holds now (M_iteration), computed once: kept in
  iter_<t>/heldout.json (atomic), so a resumed run reads it instead of measuring again."""
  it_dir = artifacts.join(workdir, f"iter_{iteration}")
  path = artifacts.join(it_dir, "heldout.json")
  result = chunk_store.finished_json(path)
  if result is None:
    start = time.time()
    result = evaluate_model(policy, f"M_{iteration}")
    if distributed.is_main_process():
      artifacts.makedirs(it_dir)
    chunk_store.write_json_marked(path, result)
    logging.info("held-out evaluation of M_%d: %.1f s", iteration, time.time() - start)
    result = chunk_store.finished_json(path)  # what a resumed run reads
  return result


def run(config, workdir: str, policy: Policy, pool: Sequence[str], *,
        evaluate_extra: Callable[[Mapping[str, list]], dict] | None = None,
        evaluate_model: Callable[[Policy, str], dict] | None = None,
        is_main_process: bool = True, verify: str = "cheap") -> list[dict]:
  """Runs all `pipeline.num_iterations` iterations (resuming what is on disk); returns their metrics.

  With `evaluate_model` (e.g. the testbed's held-out evaluation), the model entering the run (M_0)
  is measured first, giving a record with "iteration": 0, and iteration t's record also holds the
  measurement of the model it trained (M_t) -- of every iteration, or with
  `evaluate.heldout_every_iteration=False` only of the last one (M_T: what a comparison of runs
  needs, at a fraction of the cost).

  With `sft.data` set, stage 0 first makes M_0 by SFT of the model the policy holds
  (`_run_stage0`); its sft/* metrics open the iteration-0 record, and M_0's measurement is of the
  SFT model.

  The metrics (returned, and in metrics.jsonl / iter_<t>/metrics.json) hold no timing fields; those
  (wall_seconds, dpo/tokens_per_second, ...) are in workdir/timings.jsonl, one line per iteration,
  with "resumed": true when the iteration's wall_seconds covers only the part after a resume.

  It starts by removing the temp files and directories a killed run left in the workdir
  (`artifacts.sweep_temp`). `interrupted_message` says where a stopped run was."""
  _at(None, None)
  chunk_store.sweep(workdir)
  kind = "sft" if recipe(config) == "ste" else "dpo"  # the training stage and its step file
  run_iteration_fn = _run_ste_iteration if kind == "sft" else _run_iteration
  if kind == "sft":
    _keep_seed_model(config, workdir, policy)  # before anything is trained: the policy holds M_0
  all_metrics, all_timings = [], []
  # Stage 0 (sft.data): M_0 = SFT(the loaded model), trained or loaded; None without sft.data.
  stage0 = _run_stage0(config, workdir, policy, verify == "full")
  if evaluate_model is not None or stage0 is not None:  # the policy holds M_0, also on resume
    record = dict(stage0[0]) if stage0 is not None else {"iteration": 0}
    if evaluate_model is not None:
      _at(0, "heldout evaluation")
      record.update(_evaluate_model(workdir, 0, policy, evaluate_model))
    all_metrics.append(record)
    if is_main_process:
      if stage0 is None:
        _log_iteration(workdir, 0, all_metrics, step_metrics=())
      else:
        _log_trained(workdir, 0, "sft", stage0[1], all_metrics, all_timings)
  for iteration in range(1, config.pipeline.num_iterations + 1):
    result, timings = run_iteration_fn(config, workdir, iteration, policy, pool, evaluate_extra,
                                       verify_full=verify == "full")
    last = iteration == config.pipeline.num_iterations
    if evaluate_model is not None and (last or config.evaluate.get("heldout_every_iteration",
                                                                   True)):
      # run_iteration leaves M_t in the policy (trained or loaded)
      _at(iteration, "heldout evaluation")
      result.update(_evaluate_model(workdir, iteration, policy, evaluate_model))
    all_metrics.append(result)
    if is_main_process:
      _log_trained(workdir, iteration, kind, timings, all_metrics, all_timings)
  _at(None, None)
  return all_metrics


def _log_trained(workdir: str, iteration: int, kind: str, timings: Mapping, all_metrics: list,
                 all_timings: list):
  """Process 0, after iteration `iteration` (0: stage 0) whose training stage is `kind`:
  timings.jsonl (a line more in `all_timings`), then `_log_iteration` with the step records of
  iter_<t>/<kind>.jsonl and their timing fields."""
  it_dir = artifacts.join(workdir, f"iter_{iteration}")
  step_key = f"{kind}/step_"
  all_timings.append({"iteration": iteration,
                      **{k: v for k, v in timings.items() if not k.startswith(step_key)}})
  artifacts.write_jsonl(artifacts.join(workdir, TIMINGS_FILE), all_timings)
  steps = artifacts.read_jsonl(artifacts.join(it_dir, f"{kind}.jsonl"))
  step_timings = {k[len(step_key):]: v for k, v in timings.items()
                  if k.startswith(step_key) and isinstance(v, list) and len(v) == len(steps)}
  steps = [{**s, **{k: v[i] for k, v in step_timings.items() if v[i] is not None}}
           for i, s in enumerate(steps)]
  _log_iteration(workdir, iteration, all_metrics, steps,
                 timings={k: v for k, v in timings.items() if not k.startswith(step_key)},
                 step_prefix=f"{kind}_steps")


def _log_iteration(workdir: str, iteration: int, all_metrics: Sequence[dict], step_metrics,
                   timings: Mapping[str, Any] | None = None, step_prefix: str = "dpo_steps"):
  """metrics.jsonl, TensorBoard (once per iteration, also across resumes), plots, the table.

  `timings` (not in metrics.jsonl) and the step records' timing fields go to TensorBoard only."""
  metrics_lib.write_jsonl(workdir, all_metrics)
  it_dir = artifacts.join(workdir, f"iter_{iteration}")
  marker = artifacts.join(it_dir, ".tensorboard_written")
  if not artifacts.exists(marker):  # a resumed run does not log an iteration twice
    metrics_lib.write_tensorboard(workdir, {**all_metrics[-1], **(timings or {})}, step_metrics,
                                  step_prefix=step_prefix)
    artifacts.write_text(marker, "")
  metrics_lib.write_plots(workdir, all_metrics)
  title = f"iteration {iteration}"
  if iteration == 0:
    title = "stage 0: the SFT model M_0" if "sft/steps" in all_metrics[-1] else "the seed model M_0"
  print(f"\n== {title} ==\n" + metrics_lib.format_table(all_metrics), flush=True)
