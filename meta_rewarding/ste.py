"""The Self-Taught Evaluator stages as pure functions (Wang et al. 2024, arXiv 2408.02666;
docs/design.md#the-self-taught-evaluator-as-built): records in, records out, like stages.py for Meta-Rewarding.

One iteration t turns judge M_{t-1} into M_t = SFT(seed, data_t):

  prompts     `stages.prompt_records` (the pipeline's): P instructions from the pool
  categorize  `category_prompts` -> `category_records`: optional instruction selection with the
              paper's categorisation prompt; the instructions whose category is in
              `ste.categories` go on
  actor       `actor_records`: one good response y_w per instruction x
  worse       `worse_prompts` -> `worse_records`: the model writes a modified instruction x' and a
              good answer to it with the paper's worse-response prompt; that answer is y_l for x
  judge       `judge_requests` -> `judge_records`: N pairwise judgments of (x, y_w, y_l) with y_w
              at a seeded random position (A or B, recorded as `chosen_position`)
  sft_data    `rejection_sample` + `balance_labels` -> `sft_records`: one judgment whose verdict
              names y_w per example, A and B labels equally many (the reference implementation's
              prepare_sft_data.py: shuffle the N samples, take the first match; shuffle each label's
              examples and keep min(#A, #B) of each)
  sft         SFT of the seed on (judge prompt, judgment), the loss on the judgment tokens only
  evaluate    `iteration_metrics`: counts kept and dropped at every step, verdict and match rates,
              label balance, SFT loss

Every record carries `uid` (the instruction's position in prompts.jsonl) and `id` (its pool index),
as in stages.py. Nothing here does I/O or imports jax; pipeline.py runs these with files, chunks,
resume and the policy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from meta_rewarding import prompts as prompts_lib
from meta_rewarding.stages import Generation, join_key

LABELS = ("A", "B")


# --------------------------------------------------------------------------------------------------
# Instruction selection.

def category_prompts(template: str, records: Sequence[Mapping]) -> list[str]:
  return [prompts_lib.render_category_prompt(template, r["prompt"]) for r in records]


def category_records(records: Sequence[Mapping], fits: Sequence[bool],
                     generations: Sequence[Sequence[Generation]],
                     categories: Sequence[str]) -> list[dict]:
  """One record per instruction: the reply, its parsed category and whether it is kept (its
  category is one of `categories`, compared case-insensitively). An instruction whose prompt does
  not fit the context is not kept (`too_long`)."""
  wanted = {c.strip().lower() for c in categories}
  replies = iter(generations)
  out = []
  for r, ok in zip(records, fits):
    base = {"uid": join_key(r), "id": r["id"], "prompt": r["prompt"]}
    if not ok:
      out.append({**base, "text": None, "category": None, "kept": False, "too_long": True})
      continue
    g = next(replies)[0]
    category = prompts_lib.parse_category(g.text)
    out.append({**base, "text": g.text, "finish_reason": g.finish_reason, "category": category,
                "kept": category is not None and category.lower() in wanted, "too_long": False})
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


def judge_requests(pairs: Sequence[Mapping], template: str, order_seed: int) -> list[dict]:
  """Per pair: its judge prompt (the user message) with y_w at `chosen_position`."""
  out = []
  for p in pairs:
    uid = join_key(p)
    position = chosen_position(order_seed, uid)
    a, b = (p["chosen"], p["rejected"]) if position == "A" else (p["rejected"], p["chosen"])
    out.append({"uid": uid, "id": p["id"], "chosen_position": position,
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
  """The index of the judgment kept for `record`: the N judgments shuffled (seeded by (seed, uid)),
  the first whose verdict is the known label (`chosen_position`); None when none matches. A
  judgment cut by the length limit is never kept (its verdict tag may be all that was written)."""
  judgments = record["judgments"]
  order = np.random.default_rng([seed, join_key(record)]).permutation(len(judgments))
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
  """The SFT data of one iteration: one (judge prompt, kept judgment) per example with a match,
  label-balanced when `balance`; `prompt` is the judge prompt (the user message), `response` the
  judgment, `label` the verdict it gives."""
  examples = []
  for r in judged:
    if r["too_long"]:
      continue
    k = rejection_sample(r, seed)
    if k is not None:
      examples.append({"uid": join_key(r), "id": r["id"], "prompt": r["judge_prompt"],
                       "response": r["judgments"][k]["text"], "label": r["chosen_position"],
                       "judgment_index": k})
  if balance:
    return [dict(e) for e in balance_labels(examples, seed)]
  return sorted(examples, key=join_key)


# --------------------------------------------------------------------------------------------------
# Metrics.

def _mean(xs):
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


def _rate(num, den):
  return num / den if den else None


def iteration_metrics(iteration: int, prompt_records: Sequence[Mapping],
                      categories: Sequence[Mapping] | None, actor: Sequence[Mapping],
                      worse: Sequence[Mapping], judged: Sequence[Mapping],
                      sft_data: Sequence[Mapping], sft_steps: Sequence[Mapping],
                      skipped_long_prompts: int, seed: int) -> dict:
  """The STE numbers of one iteration, from its artifacts: what was kept and dropped at every
  step, the judge's verdict and match rates, label balance, SFT loss."""
  out: dict[str, Any] = {"iteration": iteration, "prompts": len(prompt_records),
                         "skipped/long_prompts": skipped_long_prompts}
  if categories is not None:
    out.update({
        "ste/category_kept": sum(c["kept"] for c in categories),
        "ste/category_dropped": sum(not c["kept"] for c in categories),
        "ste/category_unparsed": sum(c["category"] is None and not c["too_long"]
                                     for c in categories),
        "skipped/long_category_prompts": sum(c["too_long"] for c in categories),
    })
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
  with_match = sum(rejection_sample(r, seed) is not None for r in judged if not r["too_long"])
  labels = [r["chosen_position"] for r in judged if not r["too_long"]
            and rejection_sample(r, seed) is not None]
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
  from meta_rewarding.testbed import oracle
  from meta_rewarding.testbed.tasks import task_from_instruction
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

  judged = {join_key(r): r for r in records["judge"]}
  verdicts = [(j["verdict"], better(r)) for r in records["judge"] for j in r["judgments"]
              if j["verdict"] is not None and better(r) is not None]
  kept = [(e["label"], better(judged[join_key(e)])) for e in records["sft_data"]
          if better(judged[join_key(e)]) is not None]
  values = list(right.values())
  return {
      "oracle/unknown_prompts": unknown,
      "oracle/ste_chosen_correct": _rate(sum(c for c, _ in values), len(values)),
      "oracle/ste_rejected_correct": _rate(sum(r for _, r in values), len(values)),
      "oracle/ste_label_right": _rate(sum(c and not r for c, r in values), len(values)),
      "oracle/ste_judgment_right": _rate(sum(v == b for v, b in verdicts), len(verdicts)),
      "oracle/ste_kept_right": _rate(sum(v == b for v, b in kept), len(kept)),
  }
