"""What both recipes share: the types the driver and stages speak, the join key, the prompt draw.

Meta-Rewarding (stages.py) and the Self-Taught Evaluator (ste.py) are two lists of pure stages on
one driver (pipeline.py); this module is what both import, so neither depends on the other:

  `Generation`          one sampled completion, as the stages store it
  `TOO_LONG`, `fitting` the finish reason of a prompt that did not fit the context, and the split
                        of a policy's answer into (fits, generations of those that fit)
  `Policy`              what the driver needs from a model (`JaxPolicy` in policy.py; tests
                        script one)
  `PipelineError`       a configuration or resume problem the user must fix
  `join_key`            what one iteration's records join on (`uid`)
  `sample_prompt_ids`   the run's seeded prompt stream (`stages.prompt_records` draws from the pool,
                        `ste.selected_prompt_records` from the up-front selection)
  `Recipe`              the interface of a recipe (recipes/): its iteration and what it trains on

Nothing here does I/O or imports jax.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from meta_rewarding.errors import UserError


class PipelineError(UserError, ValueError):
  """A configuration or resume problem the user must fix (the message says what to change)."""


@dataclasses.dataclass(frozen=True)
class Generation:
  """One sampled completion, as the pipeline stores it."""
  text: str
  num_tokens: int
  finish_reason: str  # "stop" | "length" | TOO_LONG


# The finish reason of a prompt that does not fit the context (`prompt_length.py`): nothing was
# generated. Policies report it; the stages drop such prompts, judge prompts and battles, counted.
TOO_LONG = "too_long"


def fitting(generations: Sequence[Sequence[Generation]]) -> tuple[list[bool], list]:
  """(per prompt: whether it fit the context, the generations of the prompts that did, in order)."""
  fits = [not (row and row[0].finish_reason == TOO_LONG) for row in generations]
  return fits, [row for row, ok in zip(generations, fits) if ok]


class Policy(Protocol):
  """What the pipeline needs from a model. `JaxPolicy` (policy.py) is the real one; tests script one.

  Optional: `missing_model_files(path) -> list[str]`, what a saved model directory lacks ([] when it
  is complete); without it a directory's presence means complete."""

  def generate(self, prompts: Sequence[str], *, n: int, max_new_tokens: int, seed: int,
               share_prefix: bool, desc: str) -> list[list[Generation]]:
    """n completions per prompt (with the config's sampling settings), in input order; a prompt
    that does not fit the context with `max_new_tokens` gets generations whose finish_reason is
    TOO_LONG (and no text)."""

  def train_dpo(self, pairs: Sequence[Mapping[str, str]], *, checkpoint_dir: str,
                seed: int) -> list[dict]:
    """DPO on {prompt, chosen, rejected} pairs, reference = the current model; returns step metrics."""

  def train_sft(self, records: Sequence[Mapping[str, str]], *, checkpoint_dir: str, seed: int,
                system_prompt: str = "", train_config=None) -> list[dict]:
    """SFT on {prompt, response} records, the loss on the response tokens only; returns step
    metrics. Called by the Self-Taught Evaluator's judge training (with the config's `train`) and
    by stage 0 (`train_config` = the config's `sft.train`; None: `train`)."""

  def save(self, path: str) -> None:
    """Writes the current model (atomically) so `load` can resume from it."""

  def load(self, path: str) -> None:
    """Replaces the current model by the one saved at `path`."""


def sample_prompt_ids(pool_size: int, per_iteration_count: int, iteration: int, seed: int) -> list[int]:
  """Indices into the pool for iteration t (1-based), deterministic in all four arguments.

  The run draws from one stream: epoch e is a seeded permutation of the whole pool, the epochs are
  concatenated, and iteration t takes stream positions [(t-1)·P, t·P). So no prompt repeats within a
  run until the pool is exhausted, and every prompt is drawn once per epoch.

  When an iteration straddles an epoch boundary, the pool indices it already drew from the end of
  epoch e-1 are moved (in their permuted order) to the end of epoch e's permutation, so an iteration
  never holds a pool index twice (the stages join on `uid`, so a repeat would not mis-join, but it
  would spend two of the iteration's prompts on one task). Every epoch stays a full permutation,
  iteration boundaries stay at fixed stream positions, and iterations that do not reach a boundary
  draw what they always drew. This needs P ≤ pool size; a larger P raises PipelineError.
  """
  if pool_size <= 0:
    raise PipelineError("the prompt pool is empty")
  if per_iteration_count > pool_size:
    raise PipelineError(
        f"pipeline.prompts_per_iteration={per_iteration_count} is larger than the prompt pool "
        f"({pool_size} prompts), so an iteration would draw some prompt twice; lower "
        "pipeline.prompts_per_iteration or use a larger pool")
  if per_iteration_count <= 0:
    return []
  start = (iteration - 1) * per_iteration_count
  stop = start + per_iteration_count
  ids = []
  order = None
  # Epoch e's order depends on the end of epoch e-1's (already adjusted) order, so build them in turn
  # from epoch 0; a permutation per epoch is cheap next to generating one response per prompt.
  for epoch in range((stop - 1) // pool_size + 1):
    perm = np.random.default_rng([seed, epoch]).permutation(pool_size)
    boundary = epoch * pool_size
    straddle_start = boundary - boundary % per_iteration_count  # start of the iteration holding it
    if epoch > 0 and straddle_start < boundary:
      already = order[straddle_start - (epoch - 1) * pool_size:]
      moved = np.isin(perm, already)
      perm = np.concatenate([perm[~moved], perm[moved]])
    order = perm
    lo, hi = max(start - boundary, 0), min(stop - boundary, pool_size)
    if lo < hi:
      ids.extend(int(i) for i in order[lo:hi])
  return ids


def join_key(record: Mapping[str, Any]) -> int:
  """The key that joins one iteration's records: `uid`, the prompt's position in prompts.jsonl.

  Not `id` (the pool index): an iteration must never hold a pool index twice, but the stages must
  not rely on it, or a repeated prompt would have its scores joined to the other copy's responses.
  Records written before `uid` existed fall back to `id`, which is what they were joined by.
  """
  return record["uid"] if "uid" in record else record["id"]


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A recipe: the stages of one iteration and what it trains on (recipes/ holds the two; the
  config's `recipe` picks one in `recipes.for_config`, the one place a run asks which it is).

  Callables take the config first:
    prepare(config, workdir, policy, verify_full) -> (metrics, timings) | None: before iteration
        1, while the policy holds the loaded model; a (metrics, timings) pair is a stage 0 that
        trained M_0 by SFT (iteration 0's record)
    run_iteration(config, workdir, iteration, policy, pool, evaluate_extra, verify_full)
        -> (metrics, timings): iteration t, run or resumed, leaving M_t in the policy
    oracle_metrics(stage_records) -> dict: the testbed oracle's `evaluate_extra` hook
    judge_settings(config) -> dict: how its models judge `evaluate.judge_pairs`
        (`judge_eval.pipeline_evaluator`)
    sampling_stages(config) -> [SamplingStage]: what one iteration samples, for the memory plan
        and the compile check (`plan.py`, `compile_check.py`)
    train_examples(config) -> int: the most training examples one iteration makes

  What it trains (`trains`) decides the training programs: DPO trains on packed pairs (one row of
  prompt + chosen + rejected, up to 2 x max_length) after a reference log-prob pass; SFT on one
  row of up to max_length per example, with no reference pass.
  """
  name: str
  trains: str  # "dpo" | "sft": the training stage, its step file iter_t/<trains>.jsonl
  prepare: Callable[..., tuple[dict, dict] | None]
  run_iteration: Callable[..., tuple[dict, dict]]
  oracle_metrics: Callable[[Mapping[str, list]], dict]
  judge_settings: Callable[[Any], dict]
  heldout_tasks: bool  # whether `evaluate.heldout_tasks` measures its models (the testbed's)
  sampling_stages: Callable[[Any], list["SamplingStage"]]
  train_examples: Callable[[Any], int]

  @property
  def row_factor(self) -> int:
    """A training row's longest length in units of `train.max_length` (data.collate's limit)."""
    return 2 if self.trains == "dpo" else 1

  @property
  def reference_pass(self) -> bool:
    """Whether training needs the reference model's log-probs first (DPO does)."""
    return self.trains == "dpo"


@dataclasses.dataclass(frozen=True)
class SamplingStage:
  """One sampling stage of an iteration, as the planner sizes it: `n` samples per item, up to the
  config key `max_new_tokens_key`'s tokens each, `shared` when the items share a prompt prefix;
  `items`: how many items one iteration samples for."""
  name: str
  n: int
  max_new_tokens_key: str
  shared: bool
  items: int
