"""Wires a config into the pipeline: prompts, policy, oracle, multi-host set-up; `recipe = "ste"`
runs the Self-Taught Evaluator's stages on the same driver."""

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
  if config.meta_judge.get("testbed_oracle"):  # a diagnostic upper bound, not the method
    from meta_rewarding.testbed.oracle_meta_judge import OracleMetaJudgePolicy
    policy = OracleMetaJudgePolicy(policy, config.meta_judge.template,
                                   config.meta_judge.testbed_oracle)
  if pipeline.recipe(config) == "ste":
    from meta_rewarding import ste
    return pipeline.run(
        config, workdir, policy, pool,
        evaluate_extra=ste.testbed_oracle_metrics if config.evaluate.oracle == "testbed" else None,
        evaluate_model=ste_judge_evaluator(config) if config.evaluate.judge_pairs else None,
        is_main_process=main_process)
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


def load_judge_pairs(source: str) -> list[dict]:
  """Preference pairs for `evaluate.judge_pairs`: "testbed:<n>" is n of the testbed's held-out
  oracle pairs (`testbed.evaluate.preference_pairs`: a right answer against a plausible mistake,
  one subset per family); anything else is a judge_eval SOURCE (JSONL / parquet / hf:<name>)."""
  if source.startswith("testbed:"):
    n = source.split(":", 1)[1]
    if not (n.isdigit() and int(n) >= 1):
      raise PipelineError(f"evaluate.judge_pairs={source!r}: 'testbed:<n>' needs a count n >= 1")
    from meta_rewarding.testbed.evaluate import preference_pairs
    return preference_pairs(int(n))
  from meta_rewarding import judge_eval
  return judge_eval.load_preference_pairs(source)


def ste_judge_evaluator(config):
  """The `evaluate_model` hook of an STE run: every model M_0 ... M_T judges the
  `evaluate.judge_pairs` pairs in both orders with the prompt it is trained on (ste.pairwise_template
  and ste.system_prompt), one judgment per order at the config's sampling settings; reported as
  judge_eval/score, judge_eval/<subset>, judge_eval/position_consistency, judge_eval/parse_rate,
  the names of the Meta-Rewarding pipeline's hook (`judge_eval.pipeline_evaluator`)."""
  from meta_rewarding import judge_eval
  pairs = load_judge_pairs(config.evaluate.judge_pairs)
  s = config.ste

  def evaluate_model(policy, label: str) -> dict:
    def generate(requests, n):
      rows = policy.generate(requests, n=n, max_new_tokens=int(s.judge_max_new_tokens),
                             seed=int(config.seed), share_prefix=True, desc=f"judge_eval {label}")
      return judge_eval.judgment_texts(rows)
    _, summary = judge_eval.evaluate(pairs, generate, protocol="pairwise", num_samples=1,
                                     pairwise_template=s.pairwise_template,
                                     system_prompt=s.system_prompt)
    out = {"judge_eval/score": summary["score"], "judge_eval/parse_rate": summary["parse_rate"],
           "judge_eval/requests_too_long": summary["requests_too_long"],
           "judge_eval/position_consistency": summary.get("position_consistency")}
    out.update({f"judge_eval/{name}": value
                for name, value in {**summary["subsets"], **summary["sections"]}.items()})
    return out
  return evaluate_model
