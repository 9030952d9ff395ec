"""The Self-Taught Evaluator recipe (`recipe = "ste"`): one iteration's stages and SFT of the seed.

The same driver (pipeline.py) runs another list of stages (ste.py) with the same prompts stage,
chunking, markers, resume, timings, held-out hooks and metrics writers (stage_runner.py,
chunk_store.py). Its files:

  selection   (ste.categorize only; once, before iteration 1, with the seed M_0)
              ste_selection/categorize.jsonl (chunked, resumable), ste_selection/selected.jsonl
  prompts     iter_t/prompts.jsonl      judge     iter_t/judge.jsonl (both orders: 2 per pair)
  actor       iter_t/actor.jsonl        sft_data  iter_t/sft_data.jsonl
  worse       iter_t/worse.jsonl        sft       iter_t/sft.jsonl, iter_t/model/
  evaluate    iter_t/metrics.json, metrics.jsonl

The data of iteration t comes from M_{t-1} (the model the policy holds when the iteration
starts); the SFT starts from the seed model every iteration, as the paper does:
M_t = SFT(seed, data_t), data_t = iteration t's sft_data (ste.train_on = "iteration") or that of
iterations 1..t (ste.train_on = "accumulated"). With no SFT data, M_t is the seed itself.
With a selection, every iteration draws its prompts from selected.jsonl (`_ste_selection`).
`RECIPE` is what pipeline.run and run.py use (recipe_types.Recipe).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from absl import logging

from meta_rewarding import artifacts, chunk_store, stage_runner, stages, ste
from meta_rewarding.config import declarations
from meta_rewarding.recipe_types import PipelineError, Policy, Recipe, SamplingStage


SEED_MODEL_DIR = "seed_model"  # the seed, saved once when model.checkpoint names no directory


def seed_model_dir(config, workdir: str) -> str:
  """Where the STE loop reloads the seed from before each iteration's SFT."""
  return config.model.checkpoint or artifacts.join(workdir, SEED_MODEL_DIR)


def _keep_seed_model(config, workdir: str, policy: Policy) -> str:
  """The seed's directory: model.checkpoint, or (a randomly initialised seed) a copy the policy
  saves now, while it still holds the seed, unless an earlier run saved it."""
  path = seed_model_dir(config, workdir)
  if not config.model.checkpoint and stage_runner.missing_model_files(policy, path):
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
  it = stage_runner.Iteration(config, 0, policy, artifacts.join(workdir, STE_SELECTION_DIR),
                              verify_full)
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


def run_iteration(config, workdir: str, iteration: int, policy: Policy, pool: Sequence[str],
                  evaluate_extra: Callable[[Mapping[str, list]], dict] | None = None,
                  verify_full: bool = False) -> tuple[dict, dict]:
  """One STE iteration (see above), run or resumed; returns (metrics, timings) like
  the Meta-Rewarding recipe's."""
  it, finished, resumed, timings = stage_runner.begin(config, workdir, iteration, policy,
                                                      verify_full)
  if finished is not None:
    return finished
  s = config.ste
  selection = _ste_selection(config, workdir, iteration, policy, pool, verify_full)
  if selection is None:
    prompt_records = stage_runner.prompts_stage(it, pool)
  else:  # drawn from the up-front selection
    it.at("prompts")
    prompt_records = chunk_store.stage(
        it.path("prompts.jsonl"), lambda: ste.selected_prompt_records(
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
  sft_steps = stage_runner.train_stage(it, "sft", train, timings)

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
  stage_runner.finish(it, result, timings, resumed)
  return result, timings


def _ste_stage(it: stage_runner.Iteration, name: str, records: Sequence, build_prompts: Callable,
               to_records: Callable, *, max_new_tokens: int, n: int = 1,
               share_prefix: bool = False) -> list:
  """An STE generation stage: `n` generations of each record's prompt (`build_prompts(chunk)`),
  turned into records by `to_records(chunk, fits, generations)`, in chunks of
  pipeline.chunk_size records (iter_t/<name>.jsonl)."""
  def run_chunk(chunk, c):
    fits, generations = stage_runner.generate_where_fits(
        it.policy, build_prompts(chunk), n=int(n), max_new_tokens=int(max_new_tokens),
        seed=it.seed(f"ste_{name}", c), share_prefix=share_prefix,
        desc=f"iter {it.iteration} {name} [{c}]")
    return to_records(chunk, fits, generations)
  it.at(name)
  return chunk_store.run_chunked(it.path(f"{name}.jsonl"), records, it.config.pipeline.chunk_size,
                                 run_chunk)


def prepare(config, workdir: str, policy: Policy, verify_full: bool) -> None:
  """Before anything is trained (the policy holds M_0): the seed kept where every iteration's SFT
  reloads it from (`_keep_seed_model`). There is no stage 0: `sft.data` is refused."""
  del verify_full  # the seed's directory is not checked here: each iteration checks its model
  _keep_seed_model(config, workdir, policy)
  if stage_runner.sft_data(config):
    raise PipelineError(f"sft.data={stage_runner.sft_data(config)!r}: stage 0 is for the "
                        "Meta-Rewarding recipe; the Self-Taught Evaluator's seed is its own "
                        "starting point (set model.checkpoint to an SFT model instead)")


def judge_settings(config) -> dict:
  """How an STE model judges `evaluate.judge_pairs` (`judge_eval.pipeline_evaluator`): both orders
  with the prompt it is trained on (ste.pairwise_template and ste.system_prompt), one judgment per
  order, `ste.judge_max_new_tokens` long, at the config's sampling settings."""
  s = config.ste
  return {"protocol": "pairwise", "num_samples": 1,
          "max_new_tokens": int(s.judge_max_new_tokens),
          "pairwise_template": s.pairwise_template, "system_prompt": s.system_prompt}


def sampling_stages(config) -> list[SamplingStage]:
  """One response and one worse response per instruction, N pairwise judgments per pair and order
  (ste.orders="both": both orders), sharing the prefix when a system prompt leads. The
  categorisation (with ste.categorize) runs once before iteration 1, counted here at one
  iteration's prompts for a figure."""
  s = config.ste
  prompts = int(config.pipeline.prompts_per_iteration)
  orders = 2 if s.get("orders", "both") == "both" else 1
  out = [SamplingStage("categorize", 1, "ste.category_max_new_tokens", False, prompts)
         ] if s.categorize else []
  return out + [SamplingStage("actor", 1, "actor.max_new_tokens", False, prompts),
                SamplingStage("worse", 1, "ste.worse_max_new_tokens", False, prompts),
                SamplingStage("judge", int(s.num_judgments), "ste.judge_max_new_tokens",
                              bool(s.system_prompt), prompts * orders)]


def train_examples(config) -> int:
  """At most one SFT example (a kept judgment) per instruction."""
  return int(config.pipeline.prompts_per_iteration)


SCHEMA = declarations.RECIPES["ste"]  # what it reads of the config
RECIPE = Recipe(name="ste", trains=SCHEMA.trains, prepare=prepare, run_iteration=run_iteration,
                oracle_metrics=ste.testbed_oracle_metrics, judge_settings=judge_settings,
                heldout_tasks=SCHEMA.heldout_tasks, sampling_stages=sampling_stages,
                train_examples=train_examples)
