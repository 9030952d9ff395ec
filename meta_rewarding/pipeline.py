"""The run loop (docs/design.md#one-iteration): a recipe's iterations in order, resumed, logged.

`run` follows the config's recipe (`recipes.for_config`: Meta-Rewarding / Self-Rewarding, or the
Self-Taught Evaluator), each a list of pure stages (stages.py, ste.py) given their files by
stage_runner.py and chunk_store.py:

  stage 0      `recipe.prepare`: Meta-Rewarding with `sft.data` makes M_0 by SFT (iter_0/)
  iteration t  `recipe.run_iteration`: its stage files in iter_t/, its model iter_t/model/, its
               metrics iter_t/metrics.json (recipes/meta_rewarding.py and
               recipes/self_taught_evaluator.py list their files)
  hooks        `evaluate_model` (held-out measurement of M_0 ... M_T, iter_t/heldout.json) and
               `evaluate_extra` (oracle numbers from the stage records), chosen by run.py
  logs         metrics.jsonl, timings.jsonl, TensorBoard, plots, the table

Every artifact is written atomically (`artifacts.py`); the generation stages are written in chunks of
`pipeline.chunk_size` prompts, so a killed run loses at most one chunk. Rerunning the same command
skips finished stages and chunks; seeds derive from (config.seed, iteration, stage, chunk), so the
resumed run produces exactly what an uninterrupted run would. The side effects all live in the
driver (this module, stage_runner.py, chunk_store.py): the policy's calls (generate, train, save,
load), files, chunking, resume, timings, multi-host agreement (`distributed.py`).

Each stage file and chunk has a completion marker `<file>.done.json` (record count, size, sha256),
written after it; a file that disagrees with its marker is refused by name, one without a marker is
made again, and an iteration's model/ is used only when complete (config.json and the weights).
Chunk files are named by the item range they hold, so a changed chunk_size re-chunks without
duplicates. Timing fields go to iter_t/timings.json and timings.jsonl, never into the artifacts or
metrics, which are therefore byte-identical between a resumed run and an uninterrupted one. `run`
starts by removing the temp files a killed run left behind (`chunk_store.sweep`).
This module imports neither jax nor flax: the policy brings the model.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging

from meta_rewarding import artifacts, chunk_store, distributed, metrics as metrics_lib, recipes
from meta_rewarding import stage_runner
from meta_rewarding.recipe_types import PipelineError, Policy

TIMINGS_FILE = "timings.jsonl"


def interrupted_message() -> str:
  """The line to print when a run is stopped by SIGINT / SIGTERM (see main.py)."""
  progress = stage_runner.progress
  if progress["iteration"] is None:
    return "interrupted; rerun the same command to resume"
  return (f"interrupted at iteration {progress['iteration']}, stage {progress['stage']}; "
          "rerun the same command to resume")


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
  (`recipe.prepare`); its sft/* metrics open the iteration-0 record, and M_0's measurement is of the
  SFT model.

  The metrics (returned, and in metrics.jsonl / iter_<t>/metrics.json) hold no timing fields; those
  (wall_seconds, dpo/tokens_per_second, ...) are in workdir/timings.jsonl, one line per iteration,
  with "resumed": true when the iteration's wall_seconds covers only the part after a resume.

  It starts by removing the temp files and directories a killed run left in the workdir
  (`artifacts.sweep_temp`). `interrupted_message` says where a stopped run was."""
  stage_runner.at(None, None)
  chunk_store.sweep(workdir)
  recipe = recipes.for_config(config)
  all_metrics, all_timings = [], []
  # Before anything is trained (the policy holds M_0). Stage 0 (sft.data, Meta-Rewarding):
  # M_0 = SFT(the loaded model), trained or loaded; None without it.
  stage0 = recipe.prepare(config, workdir, policy, verify == "full")
  if evaluate_model is not None or stage0 is not None:  # the policy holds M_0, also on resume
    record = dict(stage0[0]) if stage0 is not None else {"iteration": 0}
    if evaluate_model is not None:
      stage_runner.at(0, "heldout evaluation")
      record.update(_evaluate_model(workdir, 0, policy, evaluate_model))
    all_metrics.append(record)
    if is_main_process:
      if stage0 is None:
        _log_iteration(workdir, 0, all_metrics, step_metrics=())
      else:
        _log_trained(workdir, 0, "sft", stage0[1], all_metrics, all_timings)
  for iteration in range(1, config.pipeline.num_iterations + 1):
    result, timings = recipe.run_iteration(config, workdir, iteration, policy, pool,
                                           evaluate_extra, verify_full=verify == "full")
    last = iteration == config.pipeline.num_iterations
    if evaluate_model is not None and (last or config.evaluate.get("heldout_every_iteration",
                                                                   True)):
      # run_iteration leaves M_t in the policy (trained or loaded)
      stage_runner.at(iteration, "heldout evaluation")
      result.update(_evaluate_model(workdir, iteration, policy, evaluate_model))
    all_metrics.append(result)
    if is_main_process:
      _log_trained(workdir, iteration, recipe.trains, timings, all_metrics, all_timings)
  stage_runner.at(None, None)
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
