"""Judge evaluation on preference data in RewardBench's format: how often a model, as a judge,
prefers the chosen response.

  python -m meta_rewarding.judge_eval --checkpoint=HF_DIR --pairs=SOURCE \
      [--protocol=pairwise|pointwise] [--orders=both|random] [--num_samples=k --temperature=0.8]
      [--output=DIR [--overwrite]]

SOURCE: a JSONL or parquet file, or `hf:<name>[:<split>]` (through `datasets`; RewardBench's
reference is `hf:allenai/reward-bench:filtered`), one record per pair: `prompt`, `chosen`,
`rejected` (strings or one-message lists), optional `subset` and `id`. A bad record is an error
naming its file and line; so is a line that is not UTF-8 (`FILE:LINE: not UTF-8 (byte 0xff at
column 7)`).

Protocols:
  pairwise   the Self-Taught Evaluator's judge prompt (`prompts.PAIRWISE_SYSTEM_PROMPT` and
             `prompts.PAIRWISE_TEMPLATE`, the MT-Bench pairwise prompt without its tie option, as
             RewardBench and the STE reference use it). A verdict names [[A]] or [[B]]; a judgment
             with both tags or neither has none (`prompts.parse_pairwise_verdict`, the STE
             reference implementation's rule). One order scores 1 when its verdict names the
             chosen response, 0 when it names the rejected one, 0.5 without a verdict (RewardBench
             scores such ties 0.5); with `--num_samples=k` the order's verdict is the majority of
             the k verdicts (a tie of votes: no verdict). A pair's score is the mean of its orders.
             `--orders` says which orders are judged:
               both    (the default) every pair in both orders, the chosen response as assistant A
                       and then as B, so position bias cancels; position consistency is reported.
               random  RewardBench's own protocol (scripts/run_generative.py): every pair judged
                       once, the chosen response at a random position. RewardBench draws it from
                       an unseeded np.random; here it is drawn per pair from (--seed, the pair's
                       id), so a rerun, a reordered file or a subset of it judges each pair in
                       the same order. Half the judgments of `both`; position
                       bias does not cancel within a pair, and there is no position consistency.
             Departure from RewardBench's parser: its `process_judgement` returns "A" for any
             judgment containing "[[A]]", so a judgment naming both tags counts as a vote for A
             there and as no verdict (0.5) here (a judge that writes both tags has not decided,
             and crediting A would reward position bias). How many judgments carry both tags is
             reported (`both_verdict_tags` in scores.json, a line of the table), so the effect of
             the difference can be read off a run.
  pointwise  the pipeline's own judge (`--judge_template`, default the paper's 5-point rubric):
             each response is judged `--num_samples` times and its parsed scores averaged, as the
             pipeline averages N judgments. The pair scores 1 when the chosen response's mean is
             higher, 0 when lower, 0.5 when equal or when either has no parseable score (the
             Meta-Rewarding paper's Table 3 counts agreement with the human ranking; a tie agrees
             with neither side, and scoring it 0.5 keeps an always-tie judge at chance). Each
             response is judged alone, so `--orders` does not apply (`random` is refused).

Output: a table on stdout (accuracy per subset, RewardBench's four sections and their mean, the
weighting used, the position-consistency and parse rates); with `--output=DIR`, `DIR/pairs.jsonl`
(one record per input pair: id, subset, score in [0, 1], verdicts, where the chosen response
stood in each order, raw judgments) and `DIR/scores.json` (subsets, sections, score, weighting,
rates).

Resume: judgments are generated in chunks under `DIR/judgments.jsonl` (as the pipeline's stages),
and `DIR/inputs.json` records what they are judgments of: the pairs (the file's sha256; for a
dataset source, its name and split and the sha256 of the loaded pairs), the checkpoint
(`checkpoints.model_identity`: its model marker's digest, or its files' sizes and mtimes), the
protocol, the orders, the template's sha256 and the system prompt, and the sampling settings
(temperature, top_p, num_samples, max_new_tokens, seed, dtype, chat_format). A rerun with the same
inputs resumes where it stopped; `--batch_size` and `--mesh` may change (they do not change what is
judged). A directory holding judgments of other inputs, or judgments without `inputs.json` (made
by an older judge_eval: what they are cannot be told), is refused with one line naming what
differs; `--overwrite` removes judge_eval's own files there (inputs.json, judgments.jsonl and its
chunks, pairs.jsonl, scores.json; nothing else in DIR) and starts over.

Sections (`section_scores`): RewardBench's grouping (Chat, Chat Hard, Safety, Reasoning), each
the mean of its subsets weighted by RewardBench's leaderboard example counts (EXAMPLE_COUNTS,
exactly rewardbench/constants.py's, where math-prm weighs as much as all code subsets together);
`score` is the mean of the sections present. A file with none of RewardBench's subsets (e.g. the
testbed's) has no sections, and its `score` is the mean pair score. `weighting` in scores.json and
the table says which of the two a score is.

Errors are one line on stderr, "error: ...", without a traceback: exit 2 for a flag that is
malformed, unknown, missing or out of range (--num_samples, --batch_size, --max_new_tokens >= 1;
--temperature >= 0, and > 0 when --num_samples > 1; --top_p in (0, 1]; --seed in [0, 2**32 - 1];
--dtype float32 | bfloat16; --chat_format one of choices.CHAT_FORMATS; --mesh axis=size pairs
that fit the devices; --output not a file), before anything is read; exit 1 for bad input (the
pairs, the template, the checkpoint, an --output of other inputs).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import os
import sys
from typing import Iterable, Mapping, Sequence

from absl import app, flags, logging

from meta_rewarding import artifacts, chunk_store, data, errors, prompts, runtime, sample, sources
from meta_rewarding.choices import CHAT_FORMATS, JUDGE_PROTOCOLS, PAIR_ORDERS
from meta_rewarding.errors import UserError
from meta_rewarding.recipe_types import TOO_LONG, PipelineError  # TOO_LONG: the sampler's too
from meta_rewarding.testbed import evaluate as testbed_evaluate
from meta_rewarding.tokenizer import load_tokenizer

# RewardBench's sections and the example counts its leaderboard weighs subsets by, exactly as
# rewardbench/constants.py has them (EXAMPLE_COUNTS, SUBSET_MAPPING); math-prm has 447 examples
# and is counted as 984, the six code subsets together.
SECTIONS = {
    "Chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy",
             "mt-bench-med"),
    "Chat Hard": ("mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor",
                  "llmbar-adver-GPTInst", "llmbar-adver-GPTOut", "llmbar-adver-manual"),
    "Safety": ("refusals-dangerous", "refusals-offensive", "xstest-should-refuse",
               "xstest-should-respond", "donotanswer"),
    "Reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}
EXAMPLE_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
    "mt-bench-med": 40, "mt-bench-hard": 37, "llmbar-natural": 100, "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "refusals-dangerous": 100, "refusals-offensive": 100, "xstest-should-refuse": 250,
    "xstest-should-respond": 154, "donotanswer": 136, "math-prm": 984, "hep-cpp": 164,
    "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}
LEADERBOARD_WEIGHTING = "rewardbench-leaderboard (rewardbench/constants.py EXAMPLE_COUNTS)"
MEAN_WEIGHTING = "mean pair score (no RewardBench subset present)"
DTYPES = sample.DTYPES
MAX_SEED = sample.MAX_SEED
INPUTS_FILE = "inputs.json"
# Everything judge_eval writes into --output (with its markers, chunks and temp files): what
# --overwrite removes, and what tells a directory of old judgments from a fresh one.
OWN_FILES = (INPUTS_FILE, "judgments.jsonl", "pairs.jsonl", "scores.json")


class JudgeEvalError(UserError, ValueError):
  """Bad input to judge_eval (the message says which flag, file or line); exit 1."""


class FlagError(JudgeEvalError):
  """A flag value out of range or contradicting another (the message names the flag and the
  allowed values); exit 2, found before anything is read or loaded."""


# ------------------------------------------------------------------------------------------------
# Data.

def load_preference_pairs(source: str) -> list[dict]:
  """Pairs of `source` (module doc) as dicts: id, subset, prompt, chosen, rejected, where."""
  split = None
  parsed = sources.parse(source)
  if parsed.kind == sources.HF:
    source, split = parsed.value, (parsed.split or None)
  try:
    loaded = data.load_pairs(source, split=split, keep=("id", "subset"))
  except data.DataError as e:
    # data reads a JSON file whole, so its error gives a byte offset into the file: say the line.
    path = os.path.expanduser(source)
    located = (sample.find_not_utf8(path)
               if isinstance(e.__cause__, UnicodeDecodeError) and os.path.isfile(path) else None)
    raise JudgeEvalError(located or str(e)) from e
  pairs, seen = [], set()
  for n, pair in enumerate(loaded):
    where = pair.pop("source")
    pair_id = pair.setdefault("id", n)
    if not isinstance(pair_id, (str, int)) or isinstance(pair_id, bool):
      raise JudgeEvalError(f"{where}: field 'id' must be a string or an integer")
    if pair_id in seen:
      raise JudgeEvalError(f"{where}: id {pair_id!r} appears twice")
    seen.add(pair_id)
    subset = pair.setdefault("subset", "all")
    if not isinstance(subset, str) or not subset:
      raise JudgeEvalError(f"{where}: field 'subset' must be a non-empty string")
    pairs.append({**pair, "where": where})
  return pairs


def _question(prompt) -> str:
  """The user question a judge sees: the text, or a conversation's turns written out."""
  if isinstance(prompt, str):
    return prompt
  return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)


# ------------------------------------------------------------------------------------------------
# Requests and scores (pure).

def chosen_positions(pairs: Sequence[Mapping], orders: str = "both", seed: int = 0
                     ) -> list[tuple[str, ...]]:
  """Per pair, where the chosen response stands in each order it is judged in: ("A", "B") for
  `both`; for `random`, ("A",) or ("B",), drawn from (seed, the pair's id) alone, so a pair keeps its
  order when the file is reordered or cut down."""
  if orders == "both":
    return [("A", "B")] * len(pairs)
  if orders != "random":
    raise FlagError(f"--orders={orders!r}: expected one of {' | '.join(PAIR_ORDERS)}")
  out = []
  for p in pairs:
    digest = hashlib.sha256(json.dumps([seed, p["id"]]).encode("utf-8")).digest()
    out.append(("A",) if digest[0] % 2 == 0 else ("B",))
  return out


def pairwise_requests(pairs: Sequence[Mapping], template: str, system_prompt: str,
                      positions: Sequence[Sequence[str]] | None = None) -> list:
  """One chat prompt per pair and order, the chosen response as assistant `positions[i][j]`
  (default: both orders, A then B: [pair0 AB, pair0 BA, pair1 AB, ...]). Both orders start with
  the same system prompt and question, which the sampler prefills once."""
  if positions is None:
    positions = chosen_positions(pairs)
  out = []
  for p, where in zip(pairs, positions):
    q = _question(p["prompt"])
    for chosen_as in where:
      a, b = ((p["chosen"], p["rejected"]) if chosen_as == "A" else (p["rejected"], p["chosen"]))
      user = template.format(input=q, response_a=a, response_b=b)
      out.append([{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
                 if system_prompt else [{"role": "user", "content": user}])
  return out


def pointwise_requests(pairs: Sequence[Mapping], template: str) -> list[str]:
  """Two judge prompts per pair (the pipeline's rubric): [pair0 chosen, pair0 rejected, ...]."""
  return [prompts.render_judge_prompt(template, _question(p["prompt"]), response)
          for p in pairs for response in (p["chosen"], p["rejected"])]


def majority(verdicts: Iterable[str | None]) -> str | None:
  """The verdict most of `verdicts` name ("A" or "B"); None for a tie of votes or no votes."""
  votes = collections.Counter(v for v in verdicts if v is not None)
  if votes["A"] == votes["B"]:
    return None
  return "A" if votes["A"] > votes["B"] else "B"


def pairwise_orders_score(verdicts_per_order: Sequence[Sequence[str | None]],
                          positions: Sequence[str]) -> dict:
  """Score of one pair from the verdicts of each order it was judged in, the chosen response
  standing at `positions[j]` ("A" or "B") in order j. Position consistency is defined only for a
  pair judged in both orders."""
  decided = [majority(v) for v in verdicts_per_order]
  order_scores = [0.5 if v is None else float(v == where) for v, where in zip(decided, positions)]
  picks = [None if v is None else ("chosen" if v == where else "rejected")
           for v, where in zip(decided, positions)]
  out = {"score": sum(order_scores) / len(order_scores), "order_scores": order_scores,
         "verdicts": decided, "chosen_as": list(positions),
         "parsed": [v is not None for vs in verdicts_per_order for v in vs]}
  if sorted(positions) == ["A", "B"]:
    out["consistent"] = picks[0] is not None and picks[0] == picks[1]
  return out


def pairwise_pair_score(chosen_first: Sequence[str | None], chosen_second: Sequence[str | None]
                        ) -> dict:
  """Score of one pair from the verdicts of its two orders (chosen as A, then as B)."""
  return pairwise_orders_score([chosen_first, chosen_second], ("A", "B"))


def pointwise_pair_score(chosen_scores: Sequence[float | None],
                         rejected_scores: Sequence[float | None]) -> dict:
  """Score of one pair from the parsed judge scores of each response (None: no score)."""
  c = [x for x in chosen_scores if x is not None]
  r = [x for x in rejected_scores if x is not None]
  mean_c = sum(c) / len(c) if c else None
  mean_r = sum(r) / len(r) if r else None
  if mean_c is None or mean_r is None or mean_c == mean_r:
    score = 0.5
  else:
    score = float(mean_c > mean_r)
  return {"score": score, "means": [mean_c, mean_r],
          "parsed": [x is not None for x in list(chosen_scores) + list(rejected_scores)]}


def has_both_tags(text: str) -> bool:
  """Whether a pairwise judgment names both verdicts: no verdict here, "A" for RewardBench's
  `process_judgement` (module doc)."""
  return "[[A]]" in text and "[[B]]" in text


def section_scores(subset_accuracy: Mapping[str, float]) -> dict[str, float]:
  """RewardBench's section scores of the subsets present: per section, the subsets' accuracies
  weighted by EXAMPLE_COUNTS. Sections with none of their subsets present are left out."""
  out = {}
  for section, subsets in SECTIONS.items():
    present = [s for s in subsets if s in subset_accuracy]
    if present:
      total = sum(EXAMPLE_COUNTS[s] for s in present)
      out[section] = sum(subset_accuracy[s] * EXAMPLE_COUNTS[s] for s in present) / total
  return out


def summarize(records: Sequence[Mapping]) -> dict:
  """scores.json: accuracy per subset, the sections, the score and its weighting, position
  consistency, parse rate."""
  by_subset = collections.defaultdict(list)
  for r in records:
    by_subset[r["subset"]].append(r["score"])
  subsets = {s: sum(xs) / len(xs) for s, xs in sorted(by_subset.items())}
  sections = section_scores(subsets)
  mean = sum(r["score"] for r in records) / len(records)
  parsed = [ok for r in records for ok in r["parsed"]]
  out = {"pairs": len(records), "subsets": subsets, "sections": sections,
         "score": sum(sections.values()) / len(sections) if sections else mean,
         "weighting": LEADERBOARD_WEIGHTING if sections else MEAN_WEIGHTING,
         "mean_pair_score": mean, "parse_rate": sum(parsed) / len(parsed) if parsed else None}
  consistency = [r["consistent"] for r in records if "consistent" in r]
  if consistency:
    out["position_consistency"] = sum(consistency) / len(consistency)
  if any("both_tags" in r for r in records):
    out["both_verdict_tags"] = sum(r.get("both_tags", 0) for r in records)
  return out


def table(summary: Mapping) -> str:
  """The stdout table: subsets, sections, score, its weighting and the rates."""
  lines = [f"{'subset':<28}{'pairs':>7}{'accuracy':>10}"]
  for subset, acc in summary["subsets"].items():
    lines.append(f"{subset:<28}{summary['subset_pairs'][subset]:>7}{100 * acc:>9.1f}%")
  for section, acc in summary["sections"].items():
    lines.append(f"{'section ' + section:<35}{100 * acc:>9.1f}%")
  lines.append(f"{'score':<35}{100 * summary['score']:>9.1f}%")
  lines.append(f"weighting: {summary['weighting']}")
  if summary.get("orders"):
    lines.append(f"orders: {summary['orders']}")
  if "position_consistency" in summary:
    lines.append(f"{'position consistency':<35}{100 * summary['position_consistency']:>9.1f}%")
  if summary.get("parse_rate") is not None:
    lines.append(f"{'parse rate':<35}{100 * summary['parse_rate']:>9.1f}%")
  if summary.get("both_verdict_tags"):
    lines.append(f"{summary['both_verdict_tags']} judgments named both [[A]] and [[B]] (no verdict "
                 "here; RewardBench's parser reads them as [[A]])")
  if summary.get("requests_too_long"):
    lines.append(f"{summary['requests_too_long']} judge prompts did not fit the model's context "
                 "(scored as no verdict)")
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# The evaluation (the model's side).

def evaluate(pairs: Sequence[Mapping], generate, *, protocol: str, num_samples: int,
             judge_template: str = prompts.JUDGE_TEMPLATE,
             pairwise_template: str = prompts.PAIRWISE_TEMPLATE,
             system_prompt: str = prompts.PAIRWISE_SYSTEM_PROMPT, orders: str = "both",
             order_seed: int = 0, output: str | None = None, chunk_size: int = 64
             ) -> tuple[list[dict], dict]:
  """(one record per pair, the summary). `generate(requests, n) -> [[text] * n]` is the judge (a
  row of None: the request did not fit the model's context; counted, and scored as no verdict);
  with `output`, its judgments are kept in chunks under `output/judgments.jsonl` and a rerun
  resumes from them, matched by position: the caller keys the directory by its inputs (`run`
  does, with `prepare_output`)."""
  if protocol not in JUDGE_PROTOCOLS:
    raise FlagError(f"--protocol={protocol!r}: expected one of {' | '.join(JUDGE_PROTOCOLS)}")
  if protocol == "pairwise":
    positions = chosen_positions(pairs, orders, order_seed)
    requests = pairwise_requests(pairs, pairwise_template, system_prompt, positions)
  else:
    positions = [("chosen", "rejected")] * len(pairs)  # one request per response
    requests = pointwise_requests(pairs, judge_template)

  def run_chunk(chunk, _):
    return [{"texts": texts} if texts[0] is not None else {"texts": [""] * len(texts),
                                                           "too_long": True}
            for texts in generate(list(chunk), num_samples)]

  if output:
    # Every pair has as many requests as the first (2, or 1 for random orders): a chunk holds all
    # of its pairs' requests.
    judged = chunk_store.run_chunked(artifacts.join(output, "judgments.jsonl"), requests,
                                     len(positions[0]) * chunk_size if positions else chunk_size,
                                     run_chunk)
  else:
    judged = run_chunk(requests, 0)
  records, row = [], 0
  for pair, where in zip(pairs, positions):
    texts = [judged[row + j]["texts"] for j in range(len(where))]
    row += len(where)
    if protocol == "pairwise":
      result = pairwise_orders_score(
          [[prompts.parse_pairwise_verdict(t) for t in order] for order in texts], where)
      result["both_tags"] = sum(has_both_tags(t) for order in texts for t in order)
    else:
      result = pointwise_pair_score([prompts.parse_score(t) for t in texts[0]],
                                    [prompts.parse_score(t) for t in texts[1]])
    records.append({"id": pair["id"], "subset": pair["subset"], **result, "judgments": texts})
  summary = summarize(records)
  summary["subset_pairs"] = dict(collections.Counter(r["subset"] for r in records))
  summary["requests_too_long"] = sum(bool(j.get("too_long")) for j in judged)
  summary["protocol"] = protocol
  if protocol == "pairwise":
    summary["orders"] = orders
  summary["num_samples"] = num_samples
  return records, summary


def judgment_texts(rows) -> list:
  """`evaluate`'s judge output from generations (the pipeline's or the sampler's): per request
  its texts, stripped, or a row of None when the request did not fit the context."""
  return [[None] * len(row) if row[0].finish_reason == TOO_LONG else [g.text.strip() for g in row]
          for row in rows]


def load_judge_pairs(source: str) -> list[dict]:
  """Preference pairs for `evaluate.judge_pairs`: "testbed:<n>" is n of the testbed's held-out
  oracle pairs (`testbed.evaluate.preference_pairs`: a right answer against a plausible mistake,
  one subset per family); anything else is a SOURCE (JSONL / parquet / hf:<name>)."""
  parsed = sources.parse(source)
  if parsed.kind == sources.TESTBED:
    if parsed.count() is None:
      raise PipelineError(f"evaluate.judge_pairs={source!r}: 'testbed:<n>' needs a count n >= 1")
    return testbed_evaluate.preference_pairs(parsed.count())
  return load_preference_pairs(source)


def judge_settings(config) -> dict:
  """How a Meta-Rewarding model judges `evaluate.judge_pairs` (the recipe's `judge_settings`):
  `evaluate.judge_protocol` (pointwise: `judge.num_judgments` scores per response, averaged, with
  `judge.template`), `judge.max_new_tokens` long. `pipeline_evaluator`'s keyword arguments for
  `evaluate`, and `max_new_tokens`."""
  protocol = config.evaluate.get("judge_protocol", "pairwise")
  return {"protocol": protocol,
          "num_samples": 1 if protocol == "pairwise" else int(config.judge.num_judgments),
          "max_new_tokens": int(config.judge.max_new_tokens),
          "judge_template": config.judge.template}


def pipeline_evaluator(config, judge: Mapping | None = None):
  """The pipeline's `evaluate_model(policy, label)` hook for `evaluate.judge_pairs`, of either
  recipe: every model M_0 ... M_T judges the pairs (`load_judge_pairs`) at the config's sampling
  settings as `judge` says (the recipe's `judge_settings(config)`; None: `judge_settings`, the
  Meta-Rewarding judge's), reported as judge_eval/score, judge_eval/<subset>,
  judge_eval/position_consistency (pairwise), judge_eval/parse_rate.
  Judgments are not kept on disk here (no `output`), so there is nothing to resume or key."""
  pairs = load_judge_pairs(config.evaluate.judge_pairs)
  settings = dict(judge_settings(config) if judge is None else judge)
  max_new_tokens = int(settings.pop("max_new_tokens"))

  def evaluate_model(policy, label: str) -> dict:
    def generate(requests, n):
      rows = policy.generate(requests, n=n, max_new_tokens=max_new_tokens,
                             seed=int(config.seed), share_prefix=True, desc=f"judge_eval {label}")
      return judgment_texts(rows)
    _, summary = evaluate(pairs, generate, **settings)
    out = {"judge_eval/score": summary["score"], "judge_eval/parse_rate": summary["parse_rate"],
           "judge_eval/requests_too_long": summary["requests_too_long"]}
    if "position_consistency" in summary:
      out["judge_eval/position_consistency"] = summary["position_consistency"]
    out.update({f"judge_eval/{name}": value
                for name, value in {**summary["subsets"], **summary["sections"]}.items()})
    return out
  return evaluate_model


# ------------------------------------------------------------------------------------------------
# The command.

@dataclasses.dataclass
class Options:
  """The command's settings (its flags; `main` fills them)."""
  checkpoint: str
  pairs: str
  protocol: str = "pairwise"
  orders: str = "both"
  num_samples: int = 1
  temperature: float = 0.0
  top_p: float = 0.95
  max_new_tokens: int = 512
  batch_size: int = 16
  mesh: str = ""
  dtype: str = "bfloat16"
  chat_format: str = "auto"
  judge_template: str = ""
  output: str = ""
  overwrite: bool = False
  seed: int = 0


def check_options(o: Options):
  """Every flag in range and consistent with the others, before anything is read or loaded; a
  `FlagError` naming the flag and the allowed values otherwise."""
  checks = [
      ("protocol", o.protocol in JUDGE_PROTOCOLS, " | ".join(JUDGE_PROTOCOLS)),
      ("orders", o.orders in PAIR_ORDERS, " | ".join(PAIR_ORDERS)),
      ("num_samples", o.num_samples >= 1, "an integer >= 1"),
      ("temperature", math.isfinite(o.temperature) and o.temperature >= 0,
       "a finite number >= 0 (0 = greedy)"),
      ("top_p", 0 < o.top_p <= 1, "a number in (0, 1] (1 = off)"),
      # 0 new tokens leaves every judgment empty: no verdict, every pair 0.5.
      ("max_new_tokens", o.max_new_tokens >= 1, "an integer >= 1"),
      ("batch_size", o.batch_size >= 1, "an integer >= 1"),
      ("seed", 0 <= o.seed <= MAX_SEED, f"an integer in [0, {MAX_SEED}]"),
      ("dtype", o.dtype in DTYPES, " | ".join(DTYPES)),
      ("chat_format", o.chat_format in CHAT_FORMATS, " | ".join(CHAT_FORMATS)),
  ]
  for name, ok, allowed in checks:
    if not ok:
      raise FlagError(f"--{name}={getattr(o, name)!r} is out of range; expected {allowed}")
  if o.num_samples > 1 and o.temperature == 0:
    raise FlagError("--num_samples > 1 with --temperature=0 repeats one greedy judgment; "
                    "set --temperature (e.g. 0.8) for a majority vote")
  if o.orders == "random" and o.protocol != "pairwise":
    raise FlagError("--orders=random applies to --protocol=pairwise only (pointwise judges each "
                    "response alone)")
  if o.overwrite and not o.output:
    raise FlagError("--overwrite applies to --output=DIR; set --output")
  if o.output and artifacts.exists(o.output) and not artifacts.isdir(o.output):
    raise FlagError(f"--output={o.output} is a file; expected a directory")
  if o.mesh:
    try:
      sample.check_mesh(o.mesh)
    except sample.FlagError as e:
      raise FlagError(str(e)) from e


def _sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with artifacts.open_file(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _sha256_text(text: str) -> str:
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pairs_identity(source: str, pairs: Sequence[Mapping]) -> dict:
  """What identifies the pairs: a local file's sha256; for a dataset (hf:<name>[:<split>]), its
  name and split and the sha256 of the loaded pairs' canonical JSON (a hub dataset can change
  under the same name)."""
  path = os.path.expanduser(source)
  if os.path.isfile(path):
    return {"file_sha256": _sha256_file(path)}
  loaded = [{k: v for k, v in p.items() if k != "where"} for p in pairs]
  canonical = json.dumps(loaded, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return {"dataset": source, "records_sha256": _sha256_text(canonical)}


def input_identity(o: Options, pairs: Sequence[Mapping], judge_template: str) -> dict:
  """inputs.json: everything that decides what the judgments in --output are (module doc)."""
  from meta_rewarding import checkpoints  # jax: this module loads without it (test_layering.py)
  identity = {
      "pairs": pairs_identity(o.pairs, pairs),
      "checkpoint": checkpoints.model_identity(o.checkpoint),
      "protocol": o.protocol,
      "sampling": {"temperature": o.temperature, "top_p": o.top_p, "num_samples": o.num_samples,
                   "max_new_tokens": o.max_new_tokens, "seed": o.seed, "dtype": o.dtype,
                   "chat_format": o.chat_format},
  }
  if o.protocol == "pairwise":
    identity.update(orders=o.orders, template_sha256=_sha256_text(prompts.PAIRWISE_TEMPLATE),
                    system_prompt=prompts.PAIRWISE_SYSTEM_PROMPT)
  else:
    identity["template_sha256"] = _sha256_text(judge_template)
  return identity


# How each part of inputs.json is named when it differs.
_LABELS = {"pairs": "pairs file", "checkpoint": "checkpoint", "protocol": "protocol",
           "orders": "orders", "template_sha256": "template", "system_prompt": "system prompt"}
# Not compared: where the inputs were found (a moved file or checkpoint is the same input).
_INFORMATIVE = ("paths",)


def identity_differences(saved: Mapping, identity: Mapping) -> list[str]:
  """Names of the inputs that differ between a saved inputs.json and this run's."""
  def keys(mine, theirs):  # this run's order first (pairs, checkpoint, ...), then the record's
    return list(mine) + [k for k in theirs if k not in mine and k not in _INFORMATIVE]
  out = []
  for key in keys(identity, saved):
    if key == "sampling" and isinstance(saved.get(key), Mapping):
      mine, theirs = identity.get(key, {}), saved[key]
      out += [f"--{k}" for k in keys(mine, theirs) if theirs.get(k) != mine.get(k)]
    elif saved.get(key) != identity.get(key):
      out.append(_LABELS.get(key, key))
  return out


def _own_entries(output: str) -> list[str]:
  """judge_eval's own files in `output` (OWN_FILES, their markers, chunks and temp files)."""
  if not artifacts.isdir(output):
    return []
  return [name for name in artifacts.listdir(output)
          if any(name == own or name.startswith(own + ".") for own in OWN_FILES)]


def _remove_own_entries(output: str):
  # The record goes first: a removal cut short leaves judgments without one, which the next run
  # refuses (it cannot tell what they are) instead of resuming from a half-removed set.
  names = sorted(_own_entries(output), key=lambda name: name != INPUTS_FILE)
  for name in names:
    path = artifacts.join(output, name)
    if artifacts.isdir(path) and not os.path.islink(path):
      artifacts.rmtree(path)
    else:  # a file, or a link (removed, never followed)
      artifacts.remove(path)


def prepare_output(output: str, identity: Mapping, *, overwrite: bool = False,
                   paths: Mapping | None = None):
  """Readies `output` for the judgments of `identity`: resumes a directory made with the same
  inputs, starts a fresh one, or refuses one holding judgments of other or unknown inputs (a
  `JudgeEvalError` naming what differs); `overwrite` removes judge_eval's own files first."""
  hint = "use another --output or pass --overwrite"
  record_path = artifacts.join(output, INPUTS_FILE)
  if overwrite:
    _remove_own_entries(output)
  elif artifacts.exists(record_path):
    try:
      saved = artifacts.read_json(record_path)
    except artifacts.ArtifactError as e:
      raise JudgeEvalError(f"--output={output}: its {INPUTS_FILE} cannot be read ({e}), so what "
                           f"its judgments are of cannot be told; {hint}") from e
    if not isinstance(saved, Mapping):
      raise JudgeEvalError(f"--output={output}: its {INPUTS_FILE} is not a JSON object, so what "
                           f"its judgments are of cannot be told; {hint}")
    differ = identity_differences(saved, identity)
    if differ:
      verb = "differs" if len(differ) == 1 else "differ"
      raise JudgeEvalError(f"--output={output} holds judgments of other inputs "
                           f"({', '.join(differ)} {verb}); {hint}")
    return
  elif _own_entries(output):
    raise JudgeEvalError(f"--output={output} holds judgments without {INPUTS_FILE} (made by an "
                         f"older judge_eval), so what they are of cannot be told; {hint}")
  artifacts.makedirs(output)
  artifacts.write_json(record_path, {**identity, "paths": dict(paths or {})})


def _read_template(path: str) -> str:
  try:
    with artifacts.open_file(path, "rb") as f:
      text = "".join(line for _, line in sample.decode_lines(path, f))
    prompts.validate_judge_template(text)
  except sample.NotUTF8Error as e:
    raise JudgeEvalError(f"--judge_template: {e}") from e
  except (OSError, ValueError) as e:
    raise JudgeEvalError(f"--judge_template={path}: {e}") from e
  return text


def run(o: Options) -> dict:
  """The command; returns the summary."""
  check_options(o)
  judge_template = _read_template(o.judge_template) if o.judge_template else prompts.JUDGE_TEMPLATE
  pairs = load_preference_pairs(o.pairs)  # before the slow model load: bad input fails fast
  if not artifacts.isdir(o.checkpoint):
    raise JudgeEvalError(f"--checkpoint={o.checkpoint}: no such directory (expected a Hugging "
                         "Face model directory)")
  if o.output:
    prepare_output(o.output, input_identity(o, pairs, judge_template), overwrite=o.overwrite,
                   paths={"pairs": o.pairs, "checkpoint": o.checkpoint})

  from meta_rewarding import sampling, strategies  # jax: as in input_identity
  tokenizer = load_tokenizer(o.checkpoint, chat_format=o.chat_format)
  mesh_shape = sample.parse_mesh(o.mesh) if o.mesh else None  # None: the first device
  rt = runtime.build_for_checkpoint(o.checkpoint, tokenizer, dtype=o.dtype, mesh_shape=mesh_shape,
                                    seed=o.seed)
  sampler = sampling.Sampler(rt.model_config, rt.params, tokenizer, mesh=rt.mesh,
                             rules=rt.decode_rules, batch_size=o.batch_size)
  strategy = (strategies.Greedy() if o.temperature == 0 else
              strategies.Sampling(temperature=o.temperature, top_p=o.top_p))

  def generate(requests, n):
    rows = sampler.generate(requests, n=n, strategy=strategy, max_new_tokens=o.max_new_tokens,
                            seed=o.seed, share_prefix=True, desc="judge_eval",
                            too_long="report")
    return judgment_texts(rows)

  records, summary = evaluate(pairs, generate, protocol=o.protocol, orders=o.orders,
                              order_seed=o.seed, num_samples=o.num_samples,
                              judge_template=judge_template, output=o.output or None)
  print(table(summary), flush=True)
  if o.output:
    artifacts.write_jsonl(artifacts.join(o.output, "pairs.jsonl"), records)
    artifacts.write_json(artifacts.join(o.output, "scores.json"), summary)
  return summary


def _define_flags():
  # Defined only when run as a command: sample.py defines flags of the same names when it is.
  flags.DEFINE_string("checkpoint", None, "Hugging Face Llama directory (config, weights, tokenizer).")
  flags.DEFINE_string("pairs", None, "JSONL / parquet file, or hf:<name>[:<split>].")
  flags.DEFINE_enum("protocol", "pairwise", JUDGE_PROTOCOLS, "pairwise (STE prompt) or pointwise.")
  flags.DEFINE_enum("orders", "both", PAIR_ORDERS, "Pairwise: both (default: every pair in both "
                    "orders, position bias cancels) or random (RewardBench's protocol: each pair "
                    "once, the chosen response at a position drawn from --seed and the pair's id).")
  flags.DEFINE_integer("num_samples", 1, "Judgments per order (pairwise, majority vote) or per "
                       "response (pointwise, scores averaged); >= 1.")
  flags.DEFINE_float("temperature", 0.0, "0: greedy; >= 0; num_samples > 1 needs > 0.")
  flags.DEFINE_float("top_p", 0.95, "Nucleus mass when sampling, in (0, 1].")
  flags.DEFINE_integer("max_new_tokens", 512, "Tokens per judgment (>= 1).")
  flags.DEFINE_integer("batch_size", 16, "Decode rows per batch (>= 1).")
  flags.DEFINE_string("mesh", "", "Mesh shape, e.g. 'fsdp=-1' (default: the first device).")
  flags.DEFINE_string("dtype", "bfloat16", f"Compute and parameter dtype ({' | '.join(DTYPES)}).")
  flags.DEFINE_string("chat_format", "auto", "auto | llama3 | llama2 | hf | raw.")
  flags.DEFINE_string("judge_template", "", "Pointwise judge template file ('' = the paper's).")
  flags.DEFINE_string("output", "", "Directory for pairs.jsonl, scores.json, inputs.json and the "
                      "resumable judgments; a rerun with the same inputs resumes, other inputs "
                      "are refused.")
  flags.DEFINE_bool("overwrite", False, "Remove judge_eval's own files in --output (made with "
                    "other inputs) and start over.")
  flags.DEFINE_integer("seed", 0, f"Sampling seed, and --orders=random's; in [0, {MAX_SEED}].")


def main(argv):
  if len(argv) > 1:
    sample.fail(f"unexpected arguments {argv[1:]}", sample.EXIT_USAGE)
  logging.set_verbosity(logging.WARNING)
  try:
    run(Options(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(Options)}))
  except (FlagError, sample.FlagError) as e:
    sample.fail(e, sample.EXIT_USAGE)
  except (UserError, app.UsageError) as e:  # the reason, without a traceback
    sample.fail(e, sample.EXIT_INPUT)
  except OSError as e:  # a read-only or full --output, an unreadable file: the path and reason
    sample.fail(errors.os_error_line(e), sample.EXIT_INPUT)
  except KeyboardInterrupt:
    print("judge_eval: interrupted (with --output, the same command resumes)", file=sys.stderr)
    sys.exit(130)


FLAGS = flags.FLAGS

if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["checkpoint", "pairs"])
  app.run(main, flags_parser=sample.parse_flags)
