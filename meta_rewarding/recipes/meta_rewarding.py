"""The Meta-Rewarding recipe (also Self-Rewarding): one iteration's stages and DPO on their pairs.

One iteration t turns model M_t into M_{t+1}; the stages are the pure functions of stages.py, and
this module gives each one its file (stage_runner.py, chunk_store.py) and runs them in order:

  prompts      iter_t/prompts.jsonl       actor_pairs  iter_t/actor_pairs.jsonl
  actor        iter_t/actor.jsonl         meta_judge   iter_t/meta_judge.jsonl
  judge        iter_t/judge.jsonl         judge_pairs  iter_t/judge_pairs.jsonl
  dpo          iter_t/dpo.jsonl, iter_t/model/ (reference log-probs once, then DPO)
  evaluate     iter_t/metrics.json, metrics.jsonl (the 4.3 metrics)

Self-Rewarding is the same loop with `meta_judge.enabled = False` (no meta_judge / judge_pairs).
With `sft.data` set, stage 0 makes M_0 by SFT before iteration 1 (iter_0/; see `run_stage0`).
`RECIPE` is what pipeline.run and run.py use (recipe_types.Recipe).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from absl import logging

from meta_rewarding import artifacts, chunk_store, distributed, judge_eval, stage_runner, stages
from meta_rewarding.config import declarations
from meta_rewarding.recipe_types import PipelineError, Policy, Recipe, SamplingStage
from meta_rewarding.testbed import evaluate as testbed_evaluate


def run_iteration(config, workdir: str, iteration: int, policy: Policy, pool: Sequence[str],
                  evaluate_extra: Callable[[Mapping[str, list]], dict] | None = None,
                  verify_full: bool = False) -> tuple[dict, dict]:
  """Runs (or resumes) iteration `iteration` (1-based); returns its metrics and its timings
  (process 0's; {} on the others).

  An iteration is finished when metrics.json (written last) is there and its model directory is
  complete; a finished iteration is loaded with the timings it was run with."""
  it, finished, resumed, timings = stage_runner.begin(config, workdir, iteration, policy,
                                                      verify_full)
  if finished is not None:
    return finished
  p = config.pipeline
  skipped = {"long_prompts": 0, "long_judge_prompts": 0, "long_meta_judge_prompts": 0}

  prompt_records = stage_runner.prompts_stage(it, pool)
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
  # finish: also the dpo/tokens_per_second of a dpo.jsonl from before timings.json
  stage_runner.finish(it, result, timings, resumed)
  return result, timings


def _actor_stage(it: stage_runner.Iteration, prompts: Sequence[Mapping]) -> list:
  """Actor records of the prompts that fit the context (the others are an error unless
  data.skip_long_prompts; then they are left out, and counted by the caller)."""
  actor = it.config.actor

  def run_chunk(chunk, c):
    fits, generations = stage_runner.generate_where_fits(
        it.policy, [r["prompt"] for r in chunk], n=actor.num_responses,
        max_new_tokens=actor.max_new_tokens, seed=it.seed("actor", c), share_prefix=False,
        desc=f"iter {it.iteration} actor [{c}]")
    usable, _ = stages.usable_prompts(chunk, fits, skip_long=it.config.data.skip_long_prompts,
                                      iteration=it.iteration)
    return stages.actor_records(usable, generations)
  it.at("actor")
  return chunk_store.run_chunked(it.path("actor.jsonl"), prompts, it.config.pipeline.chunk_size,
                                 run_chunk)


def _judge_stage(it: stage_runner.Iteration, actor_records: Sequence[Mapping]) -> list:
  judge = it.config.judge

  def run_chunk(chunk, c):
    fits, generations = stage_runner.generate_where_fits(
        it.policy, stages.judge_prompts(judge.template, chunk), n=judge.num_judgments,
        max_new_tokens=judge.max_new_tokens, seed=it.seed("judge", c), share_prefix=True,
        desc=f"iter {it.iteration} judge [{c}]")
    return stages.judge_records(chunk, fits, generations)
  it.at("judge")
  # Chunked over responses, in groups of chunk_size prompts' worth.
  chunk_size = it.config.pipeline.chunk_size * max(1, it.config.actor.num_responses)
  return chunk_store.run_chunked(it.path("judge.jsonl"), stages.judge_items(actor_records),
                                 chunk_size, run_chunk)


def _meta_judge_stage(it: stage_runner.Iteration, actor_records: Sequence[Mapping],
                      judge_records: Sequence[Mapping]) -> list:
  meta_judge = it.config.meta_judge

  def run_chunk(chunk, c):
    fits, generations = stage_runner.generate_where_fits(
        it.policy, stages.meta_judge_prompts(meta_judge.template, chunk), n=1,
        max_new_tokens=meta_judge.max_new_tokens, seed=it.seed("meta_judge", c),
        share_prefix=True, desc=f"iter {it.iteration} meta-judge [{c}]")
    return stages.meta_judge_records(chunk, fits, generations)
  requests = stages.meta_judge_requests(actor_records, judge_records, meta_judge.skip_same_score)
  it.at("meta_judge")
  return chunk_store.run_chunked(it.path("meta_judge.jsonl"), requests,
                                 it.config.pipeline.chunk_size, run_chunk)


def _judge_pairs_stage(it: stage_runner.Iteration, meta: Sequence[Mapping]
                       ) -> tuple[list, tuple[float, float], int]:
  """(judge pairs as written, position weights, identical pairs dropped). The weights and the
  count are recomputed from the meta-judge records on every run, also when the file exists."""
  it.at("judge_pairs")
  c = it.config
  pairs, position_w, identical_dropped = stages.judge_pairs(
      meta, c.judge.template, c.meta_judge.max_chosen_chars, c.meta_judge.elo_l2)
  return (chunk_store.stage(it.path("judge_pairs.jsonl"), lambda: pairs), position_w,
          identical_dropped)


def _dpo_stage(it: stage_runner.Iteration, pairs: Sequence[Mapping], timings: dict) -> list:
  """DPO on `pairs` (or the saved model of an earlier run, loaded); returns the step records."""
  def train():
    if not pairs:
      logging.warning("iteration %d: no pairs to train on; the model is carried over unchanged",
                      it.iteration)
      return []
    return it.policy.train_dpo(pairs, checkpoint_dir=it.path("dpo_checkpoints"),
                               seed=it.seed("dpo"))
  return stage_runner.train_stage(it, "dpo", train, timings)


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

def run_stage0(config, workdir: str, policy: Policy, verify_full: bool
               ) -> tuple[dict, dict] | None:
  """Stage 0, run or resumed: (its metrics, its timings) with M_0 left in the policy; None when
  the config names no `sft.data`. The recipe's `prepare`."""
  if not stage_runner.sft_data(config):
    return None
  it, finished, _, timings = stage_runner.begin(config, workdir, 0, policy, verify_full)
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
  records = stage_runner.load_sft_records(config)

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
  steps = stage_runner.train_stage(it, "sft", train, timings)

  it.at("evaluate")
  result = {"iteration": 0, **stages.stage0_metrics(len(records), steps)}
  stage_runner.finish(it, result, timings, resumed)
  return chunk_store.finished_json(it.path("metrics.json")), timings  # what a resumed run reads


def sampling_stages(config) -> list[SamplingStage]:
  """K responses per prompt; N judgments of every response, sharing the judge prompt's prefix;
  with the meta-judge, both orders of every pair of one response's N judgments (at most N(N-1)
  battles per prompt, `stages.meta_judge_requests`), one sample each."""
  prompts = int(config.pipeline.prompts_per_iteration)
  K, N = int(config.actor.num_responses), int(config.judge.num_judgments)
  out = [SamplingStage("actor", K, "actor.max_new_tokens", False, prompts),
         SamplingStage("judge", N, "judge.max_new_tokens", True, prompts * K)]
  if config.meta_judge.enabled:
    out.append(SamplingStage("meta_judge", 1, "meta_judge.max_new_tokens", True,
                             prompts * N * (N - 1)))
  return out


def train_examples(config) -> int:
  """At most an actor pair and a judge pair per prompt (one with actor pairs only)."""
  kinds = set(str(x) for x in config.pipeline.train_pairs)
  return int(config.pipeline.prompts_per_iteration) * (2 if "both" in kinds else 1)


SCHEMA = declarations.RECIPES["meta_rewarding"]  # what it reads of the config
RECIPE = Recipe(name="meta_rewarding", trains=SCHEMA.trains, prepare=run_stage0,
                run_iteration=run_iteration, oracle_metrics=testbed_evaluate.oracle_metrics,
                judge_settings=judge_eval.judge_settings, heldout_tasks=SCHEMA.heldout_tasks,
                sampling_stages=sampling_stages, train_examples=train_examples)
