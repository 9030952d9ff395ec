"""Wires a config into the pipeline: prompts, policy, oracle, multi-host set-up."""

from __future__ import annotations

import jax
from absl import logging

from meta_rewarding import data, distributed, pipeline, plan
from meta_rewarding.stages import PipelineError


def load_pool(config) -> list[str]:
  """The prompt pool the config names: a file, a `datasets` name, or "testbed:<n>"."""
  source = config.data.prompts
  if not source:
    raise PipelineError("config.data.prompts is empty: give a JSONL/parquet file, "
                        "'hf:<dataset>[:<split>]' or 'testbed:<n>'")
  if source.startswith("testbed:"):
    from meta_rewarding.testbed.tasks import generate_tasks
    # The pool split only: never a task the seed was taught on or one the evaluation holds out.
    return [t.instruction for t in generate_tasks(config.seed, int(source.split(":", 1)[1]),
                                                  split="pool")]
  if source.startswith("hf:"):
    name, _, split = source[3:].partition(":")
    return data.load_prompts(name, field=config.data.field, split=split or "train")
  return data.load_prompts(source, field=config.data.field)


def run(config, workdir: str) -> list[dict]:
  distributed.maybe_initialize_distributed(config.mesh.distributed)
  plan.check_fits(config)  # refuse a config that cannot fit before any work is done
  main_process = jax.process_index() == 0
  error = None
  if main_process:
    try:
      pipeline.check_config(workdir, config.to_json(), config.allow_config_change)
    except PipelineError as e:
      error = e
  if not distributed.main_process_decides(error is None):  # every process stops, not only process 0
    raise error or PipelineError(f"process 0 refused the config for {workdir}; see its log")
  pool = load_pool(config)
  logging.info("prompt pool: %d prompts from %s", len(pool), config.data.prompts)
  from meta_rewarding.policy import JaxPolicy
  policy = JaxPolicy.from_config(config, workdir, pool)
  evaluate_extra = None
  if config.evaluate.oracle == "testbed":
    from meta_rewarding.testbed.evaluate import oracle_metrics
    evaluate_extra = oracle_metrics
  elif config.evaluate.oracle:
    raise PipelineError(f"evaluate.oracle={config.evaluate.oracle!r}; expected '' or 'testbed'")
  evaluate_model = None
  if config.evaluate.get("heldout_tasks", 0):
    if config.evaluate.oracle != "testbed":
      raise PipelineError(
          f"evaluate.heldout_tasks={config.evaluate.heldout_tasks} needs "
          "evaluate.oracle='testbed' (the held-out tasks are testbed tasks); set it to 0")
    from meta_rewarding.testbed.evaluate import heldout_evaluator
    evaluate_model = heldout_evaluator(config)
  if config.evaluate.get("judge_pairs"):
    from meta_rewarding import judge_eval
    evaluators = [e for e in (evaluate_model, judge_eval.pipeline_evaluator(config)) if e]
    evaluate_model = lambda policy, label: {k: v for e in evaluators
                                            for k, v in e(policy, label).items()}
  return pipeline.run(config, workdir, policy, pool, evaluate_extra=evaluate_extra,
                      evaluate_model=evaluate_model, is_main_process=main_process)
