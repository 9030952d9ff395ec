"""Wires a config into the pipeline: prompts, policy, the recipe's hooks (oracle, held-out and
judge evaluation), multi-host set-up; `recipe = "ste"` runs the Self-Taught Evaluator's stages on
the same driver (`recipes.for_config` says which).

`preflight` checks everything about a run that needs no write: the config against this machine
(mesh, cache room per role), the memory plan, the checkpoint, tokenizer and data files, the prompt
pool's size. `main` calls it before it creates the workdir or its log directory, so a refused run
leaves nothing behind and its corrected rerun is not refused as "a different config". `run` then
takes the workdir lock (`workdir_lock.hold`) before the pipeline's first write.
"""

from __future__ import annotations

import os

import jax
from absl import logging

from meta_rewarding import (artifacts, checkpoints, config_check, data, distributed, judge_eval,
                            pipeline, plan, recipes, sources, stage_runner, workdir_lock)
from meta_rewarding.choices import ORACLES
from meta_rewarding.policy import JaxPolicy
from meta_rewarding.recipe_types import PipelineError
from meta_rewarding.testbed.evaluate import heldout_evaluator
from meta_rewarding.testbed.oracle_meta_judge import OracleMetaJudgePolicy
from meta_rewarding.testbed.tasks import generate_tasks

VERIFY_MODES = ("cheap", "full")  # main --verify: see pipeline.run


def load_pool(config) -> list[str]:
  """The prompt pool the config names: a file, a `datasets` name, or "testbed:<n>"."""
  source = config.data.prompts
  if not source:
    raise PipelineError("config.data.prompts is empty: give a JSONL/parquet file, "
                        "'hf:<dataset>[:<split>]' or 'testbed:<n>'")
  parsed = sources.parse(source)
  if parsed.kind == sources.TESTBED:
    # The pool split only: never a task the seed was taught on or one the evaluation holds out.
    return [t.instruction for t in generate_tasks(config.seed, int(parsed.value), split="pool")]
  if parsed.kind == sources.HF:
    return data.load_prompts(parsed.value, field=config.data.field, split=parsed.split or "train")
  return data.load_prompts(source, field=config.data.field)


def _check_sources(config):
  """The checkpoint, tokenizer, stage-0 SFT file and judge-pairs file the config names exist and
  can be read."""
  m = config.model
  if m.checkpoint:
    # config.json read and understood: a wrong path or a hub name (not supported: download it
    # first) fails here, not after the seed's held-out evaluation.
    checkpoints.read_hf_config(m.checkpoint)
  if m.tokenizer and not m.tokenizer.startswith("train:") and not artifacts.exists(m.tokenizer):
    raise PipelineError(f"model.tokenizer={m.tokenizer!r}: no such file or directory")
  sft = stage_runner.sft_data(config)
  if sft:
    # Read here, not after the checkpoint loads: a local file or a gs:// one (copied to a local
    # cache, `artifacts.localize`); a bad record is a data.DataError naming its file and line.
    path = sft if artifacts.is_remote(sft) else os.path.expanduser(sft)
    if not artifacts.exists(path) or artifacts.isdir(path):
      raise PipelineError(f"sft.data={sft!r}: no such file")
    stage_runner.load_sft_records(config)
  pairs = config.evaluate.get("judge_pairs", "")
  if pairs and sources.parse(pairs).kind == sources.FILE and not artifacts.exists(pairs):
    raise PipelineError(f"evaluate.judge_pairs={pairs!r}: no such file")
  oracle = config.evaluate.oracle
  if oracle not in ORACLES:
    raise PipelineError(f"evaluate.oracle={oracle!r}; expected '' or 'testbed'")
  if config.evaluate.get("heldout_tasks", 0) and oracle != "testbed":
    raise PipelineError(
        f"evaluate.heldout_tasks={config.evaluate.heldout_tasks} needs "
        "evaluate.oracle='testbed' (the held-out tasks are testbed tasks); set it to 0")


def preflight(config) -> list[str]:
  """Checks what can be checked before anything is written; returns the prompt pool.

  Raises a UserError (one line) or config_check.ConfigError (one line per problem)."""
  distributed.maybe_initialize_distributed(config.mesh.distributed)
  config_check.check_run_environment(config, jax.device_count())
  plan.check_fits(config)  # refuse a config that cannot fit before any work is done
  _check_sources(config)
  pool = load_pool(config)
  unique = len(set(pool))
  wanted = int(config.pipeline.prompts_per_iteration)
  if unique < wanted:
    raise PipelineError(
        f"pipeline.prompts_per_iteration={wanted} needs that many different prompts; "
        f"data.prompts={config.data.prompts!r} holds {unique} ({len(pool)} with repeats): lower "
        "pipeline.prompts_per_iteration or use a larger pool")
  if unique < len(pool):
    logging.warning("data.prompts=%r holds %d repeated prompts (%d different of %d)",
                    config.data.prompts, len(pool) - unique, unique, len(pool))
  logging.info("prompt pool: %d prompts from %s", len(pool), config.data.prompts)
  return pool


def run(config, workdir: str, pool: list[str] | None = None, verify: str = "cheap") -> list[dict]:
  """Runs (or resumes) the config's iterations in `workdir`; returns their metrics.

  `pool`: what `preflight` returned (it runs here when None). `verify`: "cheap" checks every
  finished iteration's files by size against their markers on resume, "full" by sha256 too."""
  if verify not in VERIFY_MODES:
    raise ValueError(f"verify={verify!r}; expected one of {VERIFY_MODES}")
  if pool is None:
    pool = preflight(config)
  with lock_workdir(workdir):
    return _run_locked(config, workdir, pool, verify, jax.process_index() == 0)


def lock_workdir(workdir: str):
  """The workdir lock (`workdir_lock.hold`), taken by process 0 only; re-entrant."""
  return workdir_lock.hold(workdir, enabled=jax.process_index() == 0)


def _run_locked(config, workdir: str, pool: list[str], verify: str, main_process: bool):
  error = None
  if main_process:
    try:
      pipeline.check_config(workdir, config.to_json(), config.allow_config_change)
    except PipelineError as e:
      error = e
  if not distributed.main_process_decides(error is None):  # every process stops, not only process 0
    raise error or PipelineError(f"process 0 refused the config for {workdir}; see its log")
  policy = JaxPolicy.from_config(config, workdir, pool)
  if config.meta_judge.get("testbed_oracle"):  # a diagnostic upper bound, not the method
    policy = OracleMetaJudgePolicy(policy, config.meta_judge.template,
                                   config.meta_judge.testbed_oracle)
  recipe = recipes.for_config(config)
  evaluate_extra = recipe.oracle_metrics if config.evaluate.oracle == "testbed" else None
  evaluators = []
  # With the testbed oracle (see _check_sources); the Self-Taught Evaluator's models are measured
  # as judges only.
  if recipe.heldout_tasks and config.evaluate.get("heldout_tasks", 0):
    evaluators.append(heldout_evaluator(config))
  if config.evaluate.get("judge_pairs"):
    evaluators.append(judge_eval.pipeline_evaluator(config, recipe.judge_settings(config)))
  evaluate_model = None
  if evaluators:
    evaluate_model = lambda policy, label: {k: v for e in evaluators
                                            for k, v in e(policy, label).items()}
  return pipeline.run(config, workdir, policy, pool, evaluate_extra=evaluate_extra,
                      evaluate_model=evaluate_model, is_main_process=main_process, verify=verify)
