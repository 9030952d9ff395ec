"""The Self-Taught Evaluator stages as pure functions (Wang et al. 2024, arXiv 2408.02666;
docs/design.md#the-self-taught-evaluator-as-built): records in, records out, like stages.py for Meta-Rewarding.

Once, before iteration 1, with the seed model M_0 (only with `ste.categorize`):

  candidates  `selection_candidates`: `ste.selection_candidates` instructions of the pool (0: all),
              in the order iteration 1 would draw them
  categorize  `category_prompts` -> `category_records`: the paper's categorisation prompt; each
              instruction's category and complexity score (1-10)
  select      `select_instructions`: those whose category is in `ste.categories` (the paper keeps
              its "reasoning" instructions), complexity >= `ste.min_complexity` (the project's
              reading of "challenging"; 0: off) and at most `ste.max_per_category` per category
              (the project's reading of "balanced"; 0: no cap). Every iteration then draws its
              prompts from this set (`selected_prompt_records`).

One iteration t turns judge M_{t-1} into M_t = SFT(seed, data_t):

  prompts     `stages.prompt_records` (the pipeline's) or, with a selection,
              `selected_prompt_records`: P instructions
  actor       `actor_records`: one good response y_w per instruction x
  worse       `worse_prompts` -> `worse_records`: the model writes a modified instruction x' and a
              good answer to it with the paper's worse-response prompt; that answer is y_l for x
  judge       `judge_requests` -> `judge_records`: N pairwise judgments of (x, y_w, y_l).
              `ste.orders = "both"` (RAM's recipe, README "Generate judgement": "to avoid position
              bias"): every pair is judged in both orders, `0_1` (y_w as A) and `1_0` (y_w as B),
              N judgments each; "random": one seeded random order per pair (`chosen_position`).
              Every request records its `order` and `chosen_position` (where y_w is: its label).
  sft_data    `rejection_sample` + `balance_labels` -> `sft_records`, as RAM's
              src/prepare_sft_data.py: it groups the judgments by their prompt text, so each order
              of a pair is an example of its own with its own label (A for `0_1`, B for `1_0`);
              per example the N judgments are shuffled and the FIRST whose verdict is the label is
              kept: one judgment per order, a random one of the correct ones, never all of them (a
              pair can give two examples, one per order). Then as many label-A as label-B examples
              (shuffle each label's examples, keep min(#A, #B) of each; with both orders the
              labels start out balanced up to the judge's position bias).
  sft         SFT of the seed on (judge prompt, judgment), the loss on the judgment tokens only;
              `ste.train_on = "iteration"`: this iteration's sft_data, "accumulated": the
              sft_data of iterations 1..t (the pipeline concatenates the files)
  evaluate    `iteration_metrics`: counts kept and dropped at every step, verdict and match rates,
              label balance, SFT loss (and `selection_metrics` with a selection)

Every record carries `uid` (the instruction's position in prompts.jsonl) and `id` (its pool index),
as in stages.py; a judge request is identified by (`uid`, `order`) (`request_key`). Nothing here
does I/O or imports jax; pipeline.py runs these with files, chunks, resume and the policy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from meta_rewarding import prompts as prompts_lib
from meta_rewarding.choices import PAIR_ORDERS
from meta_rewarding.recipe_types import Generation, join_key, sample_prompt_ids
from meta_rewarding.testbed import oracle
from meta_rewarding.testbed.tasks import task_from_instruction

LABELS = ("A", "B")
# RAM's names of the two orders: `0_1` puts the baseline response (y_w, response 0) first, as A.
ORDER_OF_POSITION = {"A": "0_1", "B": "1_0"}
_ORDER_INDEX = {"0_1": 0, "1_0": 1}


# --------------------------------------------------------------------------------------------------
# Instruction selection.

def category_prompts(template: str, records: Sequence[Mapping]) -> list[str]:
  return [prompts_lib.render_category_prompt(template, r["prompt"]) for r in records]


def category_records(records: Sequence[Mapping], fits: Sequence[bool],
                     generations: Sequence[Sequence[Generation]]) -> list[dict]:
  """One record per instruction: the reply, its parsed category (`prompts.parse_category`) and
  complexity score (`prompts.parse_complexity`). An instruction whose prompt does not fit the
  context has neither (`too_long`)."""
  replies = iter(generations)
  out = []
  for r, ok in zip(records, fits):
    base = {"uid": join_key(r), "id": r["id"], "prompt": r["prompt"]}
    if not ok:
      out.append({**base, "text": None, "category": None, "complexity": None, "too_long": True})
      continue
    g = next(replies)[0]
    out.append({**base, "text": g.text, "finish_reason": g.finish_reason,
                "category": prompts_lib.parse_category(g.text),
                "complexity": prompts_lib.parse_complexity(g.text), "too_long": False})
  return out


def selection_candidates(pool: Sequence[str], count: int, seed: int) -> list[dict]:
  """The instructions the selection categorises: `count` of the pool (0: all of it), in the order
  of the run's prompt stream (`recipe_types.sample_prompt_ids`, iteration 1)."""
  ids = sample_prompt_ids(len(pool), int(count) or len(pool), 1, seed)
  return [{"uid": k, "id": i, "prompt": pool[i]} for k, i in enumerate(ids)]


def _canonical(category: str) -> str:
  return category.strip().lower()


def selection_reason(record: Mapping, categories: Sequence[str], min_complexity: float) -> str:
  """Why a categorised instruction is or is not a selection candidate: "ok", "too_long",
  "unparsed" (no category), "category" (not one of `categories`, compared case-insensitively) or
  "easy" (complexity below `min_complexity`, or none given while a minimum is set)."""
  if record["too_long"]:
    return "too_long"
  if record["category"] is None:
    return "unparsed"
  if _canonical(record["category"]) not in {_canonical(c) for c in categories}:
    return "category"
  if min_complexity and (record.get("complexity") is None
                         or record["complexity"] < min_complexity):
    return "easy"
  return "ok"


def select_instructions(categorized: Sequence[Mapping], categories: Sequence[str], *,
                        min_complexity: float, max_per_category: int, seed: int) -> list[dict]:
  """The selected instructions, in candidate order: those whose `selection_reason` is "ok", at
  most `max_per_category` per category (0: no cap; a category with more loses a seeded random
  share). Records: `uid` (position in the selection), `id` (pool index), `prompt`, `category`,
  `complexity`, `candidate` (the candidate's uid)."""
  ok = [r for r in categorized if selection_reason(r, categories, min_complexity) == "ok"]
  if max_per_category:
    rng = np.random.default_rng(seed)
    by_category: dict[str, list] = {}
    for r in ok:
      by_category.setdefault(_canonical(r["category"]), []).append(r)
    keep = set()
    for name in sorted(by_category):
      members = by_category[name]
      picked = rng.permutation(len(members))[:int(max_per_category)]
      keep.update(join_key(members[int(i)]) for i in picked)
    ok = [r for r in ok if join_key(r) in keep]
  return [{"uid": k, "id": r["id"], "prompt": r["prompt"], "category": r["category"],
           "complexity": r.get("complexity"), "candidate": join_key(r)}
          for k, r in enumerate(ok)]


def selected_prompt_records(selected: Sequence[Mapping], count: int, iteration: int,
                            seed: int) -> list[dict]:
  """Iteration `iteration`'s prompts drawn from the selection as `stages.prompt_records` draws from
  the pool (one seeded stream over the selected set); `id` stays the pool index. At most the whole
  selection per iteration."""
  if not selected:
    return []
  ids = sample_prompt_ids(len(selected), min(int(count), len(selected)), iteration, seed)
  return [{"uid": k, "id": selected[i]["id"], "prompt": selected[i]["prompt"]}
          for k, i in enumerate(ids)]


def selection_metrics(categorized: Sequence[Mapping], selected: Sequence[Mapping],
                      categories: Sequence[str], min_complexity: float) -> dict:
  """What the up-front selection categorised, dropped and kept (the same in every iteration)."""
  reasons = [selection_reason(r, categories, min_complexity) for r in categorized]
  out = {
      "ste/selection_candidates": len(categorized),
      "skipped/long_category_prompts": reasons.count("too_long"),
      "ste/selection_unparsed": reasons.count("unparsed"),
      "ste/selection_other_category": reasons.count("category"),
      "ste/selection_too_easy": reasons.count("easy"),
      "ste/selection_dropped_balance": reasons.count("ok") - len(selected),
      "ste/selected": len(selected),
  }
  for name in categories:
    out[f"ste/selected/{name}"] = sum(_canonical(r["category"]) == _canonical(name)
                                      for r in selected)
  return out


# --------------------------------------------------------------------------------------------------
# Response pairs.

def actor_records(records: Sequence[Mapping], generations: Sequence[Sequence[Generation]]
                  ) -> list[dict]:
  """One record per instruction: its good response y_w (`response`)."""
  return [{"uid": join_key(r), "id": r["id"], "prompt": r["prompt"],
           "response": dataclasses.asdict(g[0])} for r, g in zip(records, generations)]


def worse_prompts(template: str, actor: Sequence[Mapping]) -> list[str]:
  return [prompts_lib.render_worse_response_prompt(template, a["prompt"], a["response"]["text"])
          for a in actor]


def worse_records(actor: Sequence[Mapping], fits: Sequence[bool],
                  generations: Sequence[Sequence[Generation]]) -> list[dict]:
  """One record per actor record: the raw reply and, when it parses, the pair (chosen = y_w,
  rejected = the answer to the modified instruction). `status` says why a pair is missing:
  "empty_response" (y_w is empty: nothing to compare), "too_long" (the prompt does not fit),
  "unparseable" (`prompts.parse_worse_response` found no pair; a reply cut by the length limit
  must hold the end marker) or "identical" (y_l == y_w: no preference to learn)."""
  replies = iter(generations)
  out = []
  for a, ok in zip(actor, fits):
    chosen = a["response"]["text"]
    base = {"uid": join_key(a), "id": a["id"], "prompt": a["prompt"], "chosen": chosen,
            "text": None, "modified_instruction": None, "rejected": None}
    if not ok:
      out.append({**base, "status": "too_long"})
      continue
    g = next(replies)[0]
    base.update(text=g.text, finish_reason=g.finish_reason)
    parsed = prompts_lib.parse_worse_response(g.text, require_end=g.finish_reason == "length")
    if not chosen.strip():
      status = "empty_response"
    elif parsed is None:
      status = "unparseable"
    elif parsed[1].strip() == chosen.strip():
      status = "identical"
    else:
      status = "ok"
      base.update(modified_instruction=parsed[0], rejected=parsed[1])
    out.append({**base, "status": status})
  return out


def usable_pairs(worse: Sequence[Mapping]) -> list[Mapping]:
  """The worse records that hold a pair."""
  return [w for w in worse if w["status"] == "ok"]


# --------------------------------------------------------------------------------------------------
# Judgments.

def chosen_position(order_seed: int, uid: int) -> str:
  """Where y_w goes in example `uid`'s judge prompt: "A" or "B", seeded by (order_seed, uid) so it
  does not depend on chunking or on which other examples survived."""
  return LABELS[int(np.random.default_rng([order_seed, uid]).integers(2))]


def request_key(record: Mapping) -> tuple[int, str]:
  """A judge request's identity: (the pair's uid, its order "0_1" | "1_0"). Records written before
  orders were recorded are named by their `chosen_position` (an SFT example's: its `label`)."""
  order = record.get("order")
  if order is None:
    order = ORDER_OF_POSITION[record["chosen_position"] if "chosen_position" in record
                              else record["label"]]
  return join_key(record), order


def judge_requests(pairs: Sequence[Mapping], template: str, order_seed: int,
                   orders: str = "both") -> list[dict]:
  """The judge prompts (the user message) of the pairs: with `orders = "both"`, two per pair, y_w
  as A (`0_1`) then y_w as B (`1_0`); with "random", one per pair, y_w at `chosen_position`."""
  if orders not in PAIR_ORDERS:
    raise ValueError(f"ste.orders={orders!r}: expected one of {', '.join(PAIR_ORDERS)}")
  out = []
  for p in pairs:
    uid = join_key(p)
    positions = LABELS if orders == "both" else (chosen_position(order_seed, uid),)
    for position in positions:
      a, b = (p["chosen"], p["rejected"]) if position == "A" else (p["rejected"], p["chosen"])
      out.append({"uid": uid, "id": p["id"], "order": ORDER_OF_POSITION[position],
                  "chosen_position": position,
                  "judge_prompt": prompts_lib.render_pairwise_prompt(template, p["prompt"], a, b)})
  return out


def judge_messages(requests: Sequence[Mapping], system_prompt: str) -> list:
  """What the policy generates from: the judge prompt alone, or [system, user] messages."""
  if not system_prompt:
    return [r["judge_prompt"] for r in requests]
  return [[{"role": "system", "content": system_prompt},
           {"role": "user", "content": r["judge_prompt"]}] for r in requests]


def judge_records(requests: Sequence[Mapping], fits: Sequence[bool],
                  generations: Sequence[Sequence[Generation]]) -> list[dict]:
  """One record per request: its N judgments with their parsed verdicts
  (`prompts.parse_pairwise_verdict`: "A", "B" or None)."""
  judged = iter(generations)
  out = []
  for r, ok in zip(requests, fits):
    judgments = [{"text": g.text, "num_tokens": g.num_tokens, "finish_reason": g.finish_reason,
                  "verdict": prompts_lib.parse_pairwise_verdict(g.text)}
                 for g in next(judged)] if ok else []
    out.append({**r, "judgments": judgments, "too_long": not ok})
  return out


# --------------------------------------------------------------------------------------------------
# Rejection sampling and the SFT data.

def rejection_sample(record: Mapping, seed: int) -> int | None:
  """The index of the judgment kept for the judge request `record` (one order of one pair): its N
  judgments shuffled (seeded by (seed, uid, order)), the first whose verdict is the order's label
  (`chosen_position`: A for `0_1`, B for `1_0`); None when none matches. RAM's
  `rejection_sampling` (prepare_sft_data.py, without its majority_voting option). A judgment cut
  by the length limit is never kept (its verdict tag may be all that was written)."""
  judgments = record["judgments"]
  key = [seed, join_key(record)]
  if record.get("order") is not None:  # records from before orders were recorded: (seed, uid)
    key.append(_ORDER_INDEX[record["order"]])
  order = np.random.default_rng(key).permutation(len(judgments))
  for i in order:
    j = judgments[int(i)]
    if j["verdict"] == record["chosen_position"] and j["finish_reason"] != "length":
      return int(i)
  return None


def balance_labels(examples: Sequence[Mapping], seed: int) -> list[Mapping]:
  """The reference implementation's balancing: shuffle the label-A and label-B examples, keep
  min(#A, #B) of each, shuffle the union (seeded)."""
  rng = np.random.default_rng(seed)
  by_label = {label: [e for e in examples if e["label"] == label] for label in LABELS}
  for label in LABELS:
    rng.shuffle(by_label[label])
  keep = min(len(v) for v in by_label.values())
  kept = by_label["A"][:keep] + by_label["B"][:keep]
  rng.shuffle(kept)
  return kept


def sft_records(judged: Sequence[Mapping], seed: int, *, balance: bool) -> list[dict]:
  """The SFT data of one iteration: one (judge prompt, kept judgment) per judge request (per order
  of a pair) with a match, label-balanced when `balance`; `prompt` is the judge prompt (the user
  message), `response` the judgment, `label` the verdict it gives, `order` the request's order."""
  examples = []
  for r in judged:
    if r["too_long"]:
      continue
    k = rejection_sample(r, seed)
    if k is not None:
      examples.append({"uid": join_key(r), "id": r["id"], "order": request_key(r)[1],
                       "prompt": r["judge_prompt"], "response": r["judgments"][k]["text"],
                       "label": r["chosen_position"], "judgment_index": k})
  if balance:
    return [dict(e) for e in balance_labels(examples, seed)]
  return sorted(examples, key=request_key)


# --------------------------------------------------------------------------------------------------
# Metrics.

def _mean(xs):
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


def _rate(num, den):
  return num / den if den else None


def iteration_metrics(iteration: int, prompt_records: Sequence[Mapping],
                      selection: Mapping | None, actor: Sequence[Mapping],
                      worse: Sequence[Mapping], judged: Sequence[Mapping],
                      sft_data: Sequence[Mapping], sft_steps: Sequence[Mapping],
                      skipped_long_prompts: int, seed: int,
                      trained_on: int | None = None) -> dict:
  """The STE numbers of one iteration, from its artifacts: what was kept and dropped at every
  step, the judge's verdict and match rates, label balance, SFT loss. `selection`: the up-front
  selection's `selection_metrics` (None without one); `trained_on`: the examples the SFT saw
  (more than this iteration's with `ste.train_on = "accumulated"`; None: this iteration's)."""
  out: dict[str, Any] = {"iteration": iteration, "prompts": len(prompt_records),
                         "skipped/long_prompts": skipped_long_prompts}
  if selection is not None:
    out.update(selection)
  responses = [a["response"] for a in actor]
  status = [w["status"] for w in worse]
  out.update({
      "ste/responses": len(responses),
      "ste/response_tokens_mean": _mean([r["num_tokens"] for r in responses]),
      "ste/response_stopped_by_length_share": _mean(
          [float(r["finish_reason"] == "length") for r in responses]),
      "ste/pairs": status.count("ok"),
      "ste/worse_unparseable": status.count("unparseable"),
      "ste/worse_identical": status.count("identical"),
      "ste/empty_responses": status.count("empty_response"),
      "skipped/long_worse_prompts": status.count("too_long"),
      "ste/worse_parse_rate": _rate(status.count("ok") + status.count("identical"),
                                    len([s for s in status if s not in ("too_long",
                                                                        "empty_response")])),
  })
  judgments = [j for r in judged for j in r["judgments"]]
  verdicts = [j["verdict"] for j in judgments]
  matches = [j["verdict"] == r["chosen_position"] for r in judged for j in r["judgments"]]
  matched = [r for r in judged if not r["too_long"] and rejection_sample(r, seed) is not None]
  with_match = len(matched)
  labels = [r["chosen_position"] for r in matched]
  orders_matched: dict[int, int] = {}
  for r in matched:
    orders_matched[join_key(r)] = orders_matched.get(join_key(r), 0) + 1
  kept_labels = [e["label"] for e in sft_data]
  out.update({
      "ste/judged": sum(not r["too_long"] for r in judged),
      "skipped/long_judge_prompts": sum(r["too_long"] for r in judged),
      "ste/judgments": len(judgments),
      "ste/verdict_rate": _rate(sum(v is not None for v in verdicts), len(verdicts)),
      "ste/match_rate": _rate(sum(matches), len(matches)),
      # Position bias: of the verdicts given, how many name the first response.
      "ste/first_position_verdict_rate": _rate(verdicts.count("A"),
                                               sum(v is not None for v in verdicts)),
      "ste/chosen_as_a_share": _rate(sum(r["chosen_position"] == "A" for r in judged), len(judged)),
      "ste/with_match": with_match,
      "ste/dropped_no_match": sum(not r["too_long"] for r in judged) - with_match,
      "ste/matched_label_a": labels.count("A"),
      "ste/matched_label_b": labels.count("B"),
      "ste/dropped_balance": with_match - len(sft_data),
      "ste/kept": len(sft_data),
      "ste/kept_label_a_share": _rate(kept_labels.count("A"), len(kept_labels)),
      # Pairs (not requests) with a kept-able judgment in both orders (0 with ste.orders=random).
      "ste/pairs_matched_both_orders": sum(n == 2 for n in orders_matched.values()),
      "sft/trained_on": len(sft_data) if trained_on is None else trained_on,
  })
  if sft_steps:
    last = sft_steps[-1]
    for key in ("loss", "grad_norm", "learning_rate"):
      values = [s[key] for s in sft_steps if s.get(key) is not None]
      if values:
        out[f"sft/{key}"] = float(np.mean(values))
        out[f"sft/final_{key}"] = float(last.get(key, values[-1]))
    out.update({k: v for k, v in sft_steps[0].items() if k.startswith("data/")})
  out["sft/steps"] = len(sft_steps)
  return out


def testbed_oracle_metrics(records: Mapping[str, list]) -> dict:
  """The pipeline's `evaluate_extra` hook for STE runs on the synthetic testbed: how often the
  synthetic label is really right, by the testbed's oracle (`evaluate.oracle = "testbed"`).

  oracle/ste_chosen_correct     share of the pairs whose y_w answers x correctly
  oracle/ste_rejected_correct   share whose y_l (the answer to x') happens to answer x correctly
  oracle/ste_label_right        share where y_w is right and y_l wrong: the label is true
  oracle/ste_judgment_right     of the judgments with a verdict, on pairs the oracle orders (one
                                right, one wrong), the share naming the right one
  oracle/ste_kept_right         the same for the kept (SFT) judgments
  Instructions that are not testbed tasks are counted (oracle/unknown_prompts) and left out.
  """
  tasks, unknown = {}, 0
  for w in records["worse"]:
    task = task_from_instruction(w["prompt"])
    if task is None:
      unknown += 1
    else:
      tasks[join_key(w)] = task
  right = {}  # uid -> (y_w right, y_l right)
  for w in usable_pairs(records["worse"]):
    if join_key(w) in tasks:
      task = tasks[join_key(w)]
      right[join_key(w)] = (oracle.is_correct(task, w["chosen"]),
                            oracle.is_correct(task, w["rejected"]))

  def better(r):  # the position of the oracle-right response, None when the oracle ties them
    chosen_ok, rejected_ok = right.get(join_key(r), (False, False))
    if chosen_ok == rejected_ok:
      return None
    other = "B" if r["chosen_position"] == "A" else "A"
    return r["chosen_position"] if chosen_ok else other

  judged = {request_key(r): r for r in records["judge"]}
  verdicts = [(j["verdict"], better(r)) for r in records["judge"] for j in r["judgments"]
              if j["verdict"] is not None and better(r) is not None]
  kept = [(e["label"], better(judged[request_key(e)])) for e in records["sft_data"]
          if better(judged[request_key(e)]) is not None]
  values = list(right.values())
  return {
      "oracle/unknown_prompts": unknown,
      "oracle/ste_chosen_correct": _rate(sum(c for c, _ in values), len(values)),
      "oracle/ste_rejected_correct": _rate(sum(r for _, r in values), len(values)),
      "oracle/ste_label_right": _rate(sum(c and not r for c, r in values), len(values)),
      "oracle/ste_judgment_right": _rate(sum(v == b for v, b in verdicts), len(verdicts)),
      "oracle/ste_kept_right": _rate(sum(v == b for v, b in kept), len(kept)),
  }
