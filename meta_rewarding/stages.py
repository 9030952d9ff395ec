"""The Meta-Rewarding stages as pure functions (docs/design.md#one-iteration): records in, records out.

One iteration t turns model M_t into M_{t+1}; each stage is a function of the earlier stages'
records (and, for the generation stages, of what the policy generated):

  prompts      `prompt_records`: P prompts from the pool, seeded by (seed, t); `usable_prompts`
               keeps those that fit the context
  actor        `actor_records`: K responses per prompt, exact duplicates dropped
  judge        `judge_items` -> `judge_prompts` -> `judge_records`: N judgments per response,
               parsed; score = mean of the valid ones
  actor_pairs  `actor_pairs`: length-controlled best-vs-worst per prompt (rho_t)
  meta_judge   `meta_judge_requests` -> `meta_judge_prompts` -> `meta_judge_records`: battles
               between the valid judgments of the highest-variance response, in both orders
  judge_pairs  `judge_pairs`: position weights, battle matrix, Elo, chosen/rejected
  dpo          `training_pairs`: the pairs the schedule (`scheduled_pairs`) trains on
  evaluate     `iteration_metrics`: the 4.3 metrics

Every record carries `uid`, its prompt's position in the iteration's prompts.jsonl (0..P-1), and
`id`, the prompt's index in the pool; the stages join on `uid` (`join_key`).

Nothing here does I/O or imports jax: pipeline.py (the driver) writes, chunks and resumes the
stages' records and calls the policy; a new recipe is a new list of these functions, not a copy of
the driver. The types both recipes share (`Generation`, `Policy`, `PipelineError`, `join_key`, the
prompt stream) are in recipe_types.py.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from meta_rewarding import prompts as prompts_lib, rewarding
from meta_rewarding.choices import TRAIN_PAIRS
from meta_rewarding.recipe_types import Generation, PipelineError, join_key, sample_prompt_ids

STAGE_IDS = {"prompts": 0, "actor": 1, "judge": 2, "meta_judge": 3, "dpo": 4,
             # The Self-Taught Evaluator's stages (ste.py).
             "ste_categorize": 5, "ste_actor": 6, "ste_worse": 7, "ste_order": 8, "ste_judge": 9,
             "ste_sft_data": 10, "ste_sft": 11,
             # Stage 0: SFT of the loaded model into M_0 (pipeline.py, `sft.data`).
             "sft": 12}


def stage_seed(seed: int, iteration: int, stage: str, chunk: int = 0) -> int:
  """A 31-bit seed from (config seed, iteration, stage, chunk): independent streams per stage."""
  return int(np.random.SeedSequence([seed, iteration, STAGE_IDS[stage], chunk]).generate_state(1)[0]
             & 0x7FFFFFFF)


def per_iteration(values, iteration: int, name: str):
  """The entry of a per-iteration config list for 1-based `iteration` (the last one repeats)."""
  values = list(values)
  if not values:
    raise PipelineError(f"config {name} is an empty list; give one value per iteration")
  return values[min(iteration, len(values)) - 1]


# --------------------------------------------------------------------------------------------------
# Prompts.

def prompt_records(pool: Sequence[str], count: int, iteration: int, seed: int) -> list[dict]:
  """Iteration `iteration`'s prompts (`sample_prompt_ids`) as records."""
  ids = sample_prompt_ids(len(pool), count, iteration, seed)
  # uid (the position in this list) is what the later stages join on; id is the pool index.
  return [{"uid": k, "id": i, "prompt": pool[i]} for k, i in enumerate(ids)]


def usable_prompts(records: Sequence[Mapping], fits: Sequence[bool], *, skip_long: bool,
                   iteration: int) -> tuple[list[Mapping], int]:
  """The prompt records whose `fits` entry is true, and how many were not.

  A prompt that does not fit is an error unless `skip_long` (data.skip_long_prompts): the user
  should know that part of the pool can never be used."""
  usable = [r for r, ok in zip(records, fits) if ok]
  skipped = len(records) - len(usable)
  if skipped and not skip_long:
    ids = [str(r["id"]) for r, ok in zip(records, fits) if not ok]
    raise PipelineError(f"{skipped} prompts of iteration {iteration} do not fit the context "
                        f"(pool ids {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}); "
                        "shorten them or set data.skip_long_prompts=True")
  return usable, skipped


# --------------------------------------------------------------------------------------------------
# Actor.

def dedupe_responses(generations: Sequence[Generation]) -> tuple[list[Generation], int]:
  """Drops exact duplicate texts (keeping the first); returns (kept, number dropped)."""
  seen, kept = set(), []
  for g in generations:
    if g.text not in seen:
      seen.add(g.text)
      kept.append(g)
  return kept, len(generations) - len(kept)


def actor_records(prompts: Sequence[Mapping],
                  generations: Sequence[Sequence[Generation]]) -> list[dict]:
  """One record per prompt: its distinct responses (`dedupe_responses`), in sampling order."""
  out = []
  for r, g in zip(prompts, generations):
    kept, dropped = dedupe_responses(g)
    responses = [dataclasses.asdict(x) for x in kept]
    # How many of the K samples each kept text stands for: sample-level statistics (the
    # testbed's actor accuracy) must not undercount answers the actor gives repeatedly.
    copies = collections.Counter(x.text for x in g)
    for record in responses:
      record["samples"] = copies[record["text"]]
    out.append({"uid": join_key(r), "id": r["id"], "prompt": r["prompt"],
                "responses": responses, "duplicates_dropped": dropped})
  return out


# --------------------------------------------------------------------------------------------------
# Judge.

def judge_items(actor: Sequence[Mapping]) -> list[tuple[Mapping, int]]:
  """(actor record, response index) for every response: what the judge stage judges."""
  return [(a, i) for a in actor for i in range(len(a["responses"]))]


def judge_prompts(template: str, items: Sequence[tuple[Mapping, int]]) -> list[str]:
  """The judge prompt of each (actor record, response index) item."""
  return [prompts_lib.render_judge_prompt(template, a["prompt"], a["responses"][i]["text"])
          for a, i in items]


def judge_records(items: Sequence[tuple[Mapping, int]], fits: Sequence[bool],
                  generations: Sequence[Sequence[Generation]]) -> list[dict]:
  """One record per item: its judgments, parsed, and the response's score.

  `generations` holds the judgments of the items whose `fits` entry is true, in order; an item
  whose prompt does not fit gets no judgments and `too_long`."""
  judged = iter(generations)
  out = []
  for (a, i), ok in zip(items, fits):
    judgments = [{"text": g.text, "num_tokens": g.num_tokens, "finish_reason": g.finish_reason,
                  "score": prompts_lib.parse_score(g.text)} for g in next(judged)] if ok else []
    out.append({"uid": join_key(a), "id": a["id"], "response_index": i, "judgments": judgments,
                "too_long": not ok,
                "score": rewarding.response_score([j["score"] for j in judgments])})
  return out


# --------------------------------------------------------------------------------------------------
# Actor pairs.

def response_length(record: Mapping[str, Any], unit: str) -> int:
  if unit == "chars":
    return len(record["text"])
  if unit == "tokens":
    return int(record["num_tokens"])
  raise PipelineError(f"pipeline.length_unit={unit!r}; expected 'chars' or 'tokens'")


def actor_pairs(actor: Sequence[Mapping], judge: Sequence[Mapping], rho: float,
                length_unit: str) -> list[dict]:
  """Length-controlled actor pairs (4.2 step 4), one per prompt at most (joined by `join_key`)."""
  by_prompt: dict[int, dict[int, Mapping]] = {}
  for j in judge:
    by_prompt.setdefault(join_key(j), {})[j["response_index"]] = j
  pairs = []
  for a in actor:
    judged = by_prompt.get(join_key(a), {})
    responses = a["responses"]
    scores = [judged[i]["score"] if i in judged else None for i in range(len(responses))]
    lengths = [response_length(r, length_unit) for r in responses]
    pair = rewarding.select_actor_pair(scores, lengths, rho)
    if pair is None:
      continue
    c, r = pair
    pairs.append({"uid": join_key(a), "id": a["id"], "kind": "actor", "prompt": a["prompt"],
                  "chosen": responses[c]["text"], "rejected": responses[r]["text"],
                  "chosen_index": c, "rejected_index": r, "chosen_score": scores[c],
                  "rejected_score": scores[r], "chosen_length": lengths[c],
                  "rejected_length": lengths[r]})
  return pairs


# --------------------------------------------------------------------------------------------------
# Meta-judge.

def scheduled_pairs(train_pairs: Sequence[str], iteration: int) -> str:
  """What iteration `iteration` trains on: "both", "actor", "judge" or "none"."""
  use = per_iteration(train_pairs, iteration, "pipeline.train_pairs")
  if use not in TRAIN_PAIRS:
    raise PipelineError(f"pipeline.train_pairs entry {use!r}: expected both|actor|judge|none")
  return use


def runs_meta_judge(meta_judge_config, use: str) -> bool:
  """Whether the meta-judge runs: when enabled and this iteration trains on judge pairs, or when
  meta_judge.run_when_unused asks for its metrics anyway."""
  return bool(meta_judge_config.enabled and
              (use in ("both", "judge") or meta_judge_config.run_when_unused))


def meta_judge_requests(actor: Sequence[Mapping], judge: Sequence[Mapping],
                        skip_same_score: bool = False) -> list[dict]:
  """Per prompt: the highest-variance response and the battles among its valid judgments.

  `skip_same_score` (``meta_judge.skip_same_score``) leaves out the battles between two judgments
  with the same score, for a meta-judge that cannot tell such judgments apart (the testbed's,
  which re-checks the response and compares the scores): its verdicts there are coin flips, and
  the Elo then turns them into judge pairs whose chosen judgment is no better than the rejected
  one. Without those battles, judgments with one score stay level with each other, so the chosen
  and the rejected judgment of a pair always differ in score. A request with no battle left is
  dropped."""
  by_prompt: dict[int, list[Mapping]] = {}
  for j in judge:
    by_prompt.setdefault(join_key(j), []).append(j)
  requests = []
  for a in actor:
    judged = sorted(by_prompt.get(join_key(a), []), key=lambda j: j["response_index"])
    if not judged:
      continue
    per_response = [[x["score"] for x in j["judgments"]] for j in judged]
    choice = rewarding.highest_variance_response(per_response)
    if choice is None:
      continue
    record = judged[choice]
    scores = [x["score"] for x in record["judgments"]]
    valid = [i for i, score in enumerate(scores) if score is not None]
    battles = rewarding.battle_orders(valid)
    if skip_same_score:
      battles = [(m, n) for m, n in battles if scores[m] != scores[n]]
    if not battles:
      continue
    requests.append({"uid": join_key(a), "id": a["id"], "prompt": a["prompt"],
                     "response_index": record["response_index"],
                     "response": a["responses"][record["response_index"]]["text"],
                     "judgments": [x["text"] for x in record["judgments"]],
                     "scores": scores,
                     "orders": [list(b) for b in battles]})
  return requests


def meta_judge_prompts(template: str, requests: Sequence[Mapping]) -> list[str]:
  """The meta-judge prompt of every battle of every request, flattened in request order."""
  return [prompts_lib.render_meta_judge_prompt(template, r["prompt"], r["response"],
                                               r["judgments"][a_idx], r["judgments"][b_idx])
          for r in requests for a_idx, b_idx in r["orders"]]


def meta_judge_records(requests: Sequence[Mapping], fits: Sequence[bool],
                       generations: Sequence[Sequence[Generation]]) -> list[dict]:
  """One record per request, with its battles' verdicts parsed.

  `fits` has one entry per battle (as `meta_judge_prompts` flattens them); `generations` one row
  (of one verdict) per battle that fits, in order. A battle that does not fit has no verdict and
  `too_long`."""
  fit_iter, verdicts = iter(fits), iter(generations)
  out = []
  for r in requests:
    battles = []
    for a_idx, b_idx in r["orders"]:
      if not next(fit_iter):
        battles.append({"a": a_idx, "b": b_idx, "text": None, "winner": None, "too_long": True})
        continue
      g = next(verdicts)[0]
      battles.append({"a": a_idx, "b": b_idx, "text": g.text, "finish_reason": g.finish_reason,
                      "winner": prompts_lib.parse_winner(g.text), "too_long": False})
    out.append({"uid": join_key(r), **{k: r[k] for k in ("id", "prompt", "response_index",
                                                         "response", "judgments", "scores")},
                "battles": battles})
  return out


# --------------------------------------------------------------------------------------------------
# Judge pairs and training pairs.

def judge_pairs(meta: Sequence[Mapping], judge_template: str, max_chosen_chars: int | None,
                l2: float) -> tuple[list[dict], tuple[float, float], int]:
  """Judge pairs from all meta-judge battles of the iteration (4.2 step 5).

  Returns (pairs, (w1, w2), identical_dropped). A pair whose chosen and rejected judgments are the
  same text (the judge sampled one judgment twice and the battles split them) is dropped: its DPO
  gradient is zero, so it teaches nothing and only pulls `rewards/accuracies` down.
  `identical_dropped` counts them; it is a function of the meta-judge records alone, so a resumed
  run recomputes the same number.
  """
  all_battles = [(b["a"], b["b"], b["winner"]) for m in meta for b in m["battles"]]
  w1, w2 = rewarding.position_weights(*rewarding.count_position_wins(all_battles))
  pairs, identical_dropped = [], 0
  for m in meta:
    battles = [(b["a"], b["b"], b["winner"]) for b in m["battles"]]
    n = len(m["judgments"])
    elo = rewarding.elo_scores(rewarding.battle_matrix(n, battles, w1, w2), l2)
    lengths = [len(t) for t in m["judgments"]]
    # Only judgments that took part in battles compete for chosen / rejected.
    players = sorted({i for a, b, _ in battles for i in (a, b)})
    sub = rewarding.select_judge_pair([elo[i] for i in players], [lengths[i] for i in players],
                                      max_chosen_chars)
    if sub is None:
      continue
    c, r = players[sub[0]], players[sub[1]]
    if m["judgments"][c] == m["judgments"][r]:
      identical_dropped += 1
      continue
    pairs.append({"uid": join_key(m), "id": m["id"], "kind": "judge",
                  "prompt": prompts_lib.render_judge_prompt(judge_template, m["prompt"], m["response"]),
                  "chosen": m["judgments"][c], "rejected": m["judgments"][r],
                  "chosen_index": c, "rejected_index": r, "elo": [float(e) for e in elo],
                  "chosen_score": m["scores"][c], "rejected_score": m["scores"][r]})
  return pairs, (w1, w2), identical_dropped


def training_pairs(use: str, a_pairs: Sequence[Mapping],
                   j_pairs: Sequence[Mapping] | None) -> list[dict]:
  """The {prompt, chosen, rejected, kind} pairs DPO trains on, as `scheduled_pairs` says."""
  pairs = []
  if use in ("both", "actor"):
    pairs += a_pairs
  if use in ("both", "judge") and j_pairs:
    pairs += j_pairs
  return [{k: q[k] for k in ("prompt", "chosen", "rejected", "kind")} for q in pairs]


# --------------------------------------------------------------------------------------------------
# Metrics.

def _mean(xs):
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


def iteration_metrics(iteration: int, prompts: Sequence[Mapping], actor: Sequence[Mapping],
                      judge: Sequence[Mapping], a_pairs: Sequence[Mapping],
                      meta: Sequence[Mapping] | None, j_pairs: Sequence[Mapping] | None,
                      dpo_steps: Sequence[Mapping], position_w: tuple[float, float] | None,
                      skipped: Mapping[str, int], judge_identical_dropped: int = 0) -> dict:
  """The numbers of docs/design.md#what-each-iteration-reports for one iteration, from its artifacts.

  `judge_identical_dropped` is the third value `judge_pairs` returns (0 without a meta-judge).
  """
  responses = [r for a in actor for r in a["responses"]]
  tokens = [r["num_tokens"] for r in responses]
  chars = [len(r["text"]) for r in responses]
  out: dict[str, Any] = {"iteration": iteration, "prompts": len(prompts)}
  out.update({f"skipped/{k}": v for k, v in skipped.items()})
  out.update({
      "actor/responses": len(responses),
      "actor/length_tokens_mean": _mean(tokens), "actor/length_tokens_median":
          float(np.median(tokens)) if tokens else None,
      "actor/length_chars_mean": _mean(chars), "actor/length_chars_median":
          float(np.median(chars)) if chars else None,
      "actor/duplicates_dropped": sum(a["duplicates_dropped"] for a in actor),
      "actor/stopped_by_length_share": _mean([float(r["finish_reason"] == "length") for r in responses]),
  })
  stats = rewarding.judge_score_stats([x["score"] for j in judge for x in j["judgments"]])
  out.update({
      "judge/judgments": stats["judgments"], "judge/parse_failures": stats["parse_failures"],
      "judge/parse_failure_rate": stats["parse_failure_rate"], "judge/score_mean": stats["mean"],
      "judge/fractional_share": stats["fractional_share"],
      "judge/score_histogram": {str(k): v for k, v in enumerate(stats["histogram"])},
      "judge/scored_responses": sum(j["score"] is not None for j in judge),
  })
  out.update({
      "pairs/actor": len(a_pairs),
      "pairs/judge": len(j_pairs) if j_pairs is not None else 0,
      "pairs/judge_identical_dropped": judge_identical_dropped,
      "pairs/actor_score_margin_mean": _mean([p["chosen_score"] - p["rejected_score"] for p in a_pairs]),
      "pairs/chosen_length_mean": _mean([p["chosen_length"] for p in a_pairs]),
      "pairs/rejected_length_mean": _mean([p["rejected_length"] for p in a_pairs]),
  })
  if meta is not None:
    # One pool of battles over the whole iteration: offset each prompt's judgment indices.
    battles, scores = [], []
    for m in meta:
      offset = len(scores)
      scores.extend(m["scores"])
      battles.extend((offset + x["a"], offset + x["b"], x["winner"]) for x in m["battles"]
                     if not x.get("too_long"))
    mstats = rewarding.meta_judge_stats(battles, scores)
    # meta_judge.skip_same_score's count: the battles the paper's rule (every pair) would send,
    # less those sent. Recomputed from the actor and judge records, so a resumed run reports it too.
    every_pair = sum(len(r["orders"]) for r in meta_judge_requests(actor, judge))
    out.update({
        "meta/prompts": len(meta), "meta/battles": mstats["battles"],
        "meta/same_score_battles_skipped": every_pair - sum(len(m["battles"]) for m in meta),
        "meta/parse_failure_rate": mstats["parse_failure_rate"],
        "meta/first_position_win_rate": mstats["first_position_win_rate"],
        "meta/first_position_win_rate_same_score": mstats["first_position_win_rate_same_score"],
        "meta/first_position_win_rate_diff_score": mstats["first_position_win_rate_diff_score"],
        "meta/picks_higher_score_rate": mstats["higher_score_pick_rate"],
        "meta/position_weight_first": position_w[0] if position_w else None,
        "meta/position_weight_second": position_w[1] if position_w else None,
    })
  if dpo_steps:
    last = dpo_steps[-1]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "grad_norm", "learning_rate", "tokens_per_second"):
      values = [s[key] for s in dpo_steps if s.get(key) is not None]
      if values:
        out[f"dpo/{key}"] = float(np.mean(values))
        out[f"dpo/final_{key}"] = float(last.get(key, values[-1]))
    out["dpo/steps"] = len(dpo_steps)
    out.update({k: v for k, v in dpo_steps[0].items() if k.startswith("data/")})
  else:
    out["dpo/steps"] = 0
  return out


def stage0_metrics(num_records: int, steps: Sequence[Mapping]) -> dict:
  """Stage 0's record (iteration 0 of metrics.jsonl): the SFT data's counts (records read, used,
  skipped as too long, truncated: the policy's length policy, in the first step record) and the
  mean and final loss, gradient norm and learning rate of its steps."""
  first = steps[0] if steps else {}
  skipped = int(first.get("data/sft_skipped_too_long", 0))
  out: dict[str, Any] = {
      "sft/examples": int(num_records),
      "sft/examples_used": int(num_records) - skipped,
      "sft/examples_skipped_too_long": skipped,
      "sft/examples_truncated": int(first.get("data/sft_truncated", 0)),
      "sft/steps": len(steps),
  }
  for key in ("loss", "grad_norm", "learning_rate"):
    values = [s[key] for s in steps if s.get(key) is not None]
    if values:
      out[f"sft/{key}"] = float(np.mean(values))
      out[f"sft/final_{key}"] = float(values[-1])
  return out
