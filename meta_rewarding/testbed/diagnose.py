"""Where a testbed judge goes wrong, clause by clause: the fact it writes, or the ok/no mark.

  python -m meta_rewarding.testbed.diagnose --model=DIR [--tasks=300] [--output=FILE.md]

A testbed judgment (`judging.py`) is a list of clauses, each a fact next to its mark ("13-4=9,
9-9=0: ok", "9 in 7, 2, 9: 9-9=0: ok", "45>=30: 4-3=1: ok", "t after m: 20>=14: 2-1=1: ok"),
then the verdict the marks imply. A judge whose balanced accuracy is near chance can fail in two different ways, and
each calls for a different fix: it writes the fact wrong (a wrong sum, a list copied wrong), or it
writes the fact right and the mark wrong (it does not compare). This module separates them, per
kind of clause, on three kinds of responses to held-out tasks: right answers, plausible mistakes
(`responses.plausible_mistake`) and random well-formed answers (`responses.random_answer`: each
constraint fails about as often as it holds, whatever the answer looks like).

Two measurements per clause:
  forced   the true judgment is fed to the model (teacher forcing, one forward per judgment); at
           each mark, does the model put more probability on the true mark than on the other?
           This is the mark given a correctly written fact, free of the model's own earlier errors.
  greedy   the model writes its own judgment (greedy); for each clause of the true check: is the
           fact written exactly, and, where it is, is the mark the true one?

Used for issue 13's seed: its judge writes the sums right but never writes "no" where a number
is missing from a list or out of a range (`bench/results/seed_diagnosis.md`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import random
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from meta_rewarding import artifacts, checkpoints, errors, prompts, sampling, strategies
from meta_rewarding.config import rules as config_rules
from meta_rewarding.data import prompt_messages
from meta_rewarding.model import llama
from meta_rewarding.testbed import judging, templates
from meta_rewarding.testbed.measure import eval_task_list
from meta_rewarding.testbed.responses import plausible_mistake, random_answer, right_answer
from meta_rewarding.testbed.settings import CHAT_FORMAT, JUDGE_MAX_NEW_TOKENS
from meta_rewarding.testbed.tasks import Task
from meta_rewarding.tokenizer import load_tokenizer

RESPONSE_KINDS = ("right", "plausible", "random")


def clause_kind(fact: str) -> str:
  """The kind of one clause's fact, from its text (family-agnostic)."""
  complement = r"\d+-\d+=-?\d+, \d+--?\d+=-?\d+"     # "13-4=9, 9-9=0"
  whole_sum = r"[\d+]+=\d+, target \d+"                # "1+0+0=1, target 9"
  if re.fullmatch(complement, fact) or re.fullmatch(whole_sum, fact):
    return "sum vs target"
  if re.fullmatch(r"\S+ in .+", fact):
    return "membership"
  if " after " in fact:   # before the range bounds: "t after m: 20>=14: 2-1=1" has a ">=" too
    return "letter order"
  if ">=" in fact:
    return "at least low"
  if "<=" in fact:
    return "at most high"
  if fact.endswith(("used twice", "used once")):
    return "distinct"
  raise ValueError(f"not a testbed clause: {fact!r}")


def split_clause(text: str) -> tuple[str, str | None]:
  """'fact: mark' -> (fact, mark); a clause with no ': ok|no' ending -> (text, None)."""
  fact, sep, mark = text.rpartition(": ")
  if not sep or mark not in ("ok", "no"):
    return text, None
  return fact, mark


def written_clauses(judgment_text: str) -> list[str] | None:
  """The clauses of a judgment as written ('Check: a; b; c. So the response is ...'), or None
  when the text has no such check (`judging.written_check`)."""
  written = judging.written_check(judgment_text)
  if written is None:
    return None
  return written.removeprefix("Check:").strip().removesuffix(".").split("; ")


@dataclasses.dataclass(frozen=True)
class Case:
  task: Task
  kind: str           # RESPONSE_KINDS
  response: str
  check: judging.Check


def cases(tasks: Sequence[Task], seed: int = 0) -> list[Case]:
  """One right, one plausible-mistake and one random response per task (those with a clause to
  check), deterministic in (tasks, seed)."""
  rng = random.Random(f"diagnose/{seed}")
  out = []
  for t in tasks:
    for kind in RESPONSE_KINDS:
      answer = {"right": right_answer, "plausible": plausible_mistake,
                "random": random_answer}[kind](t, rng)
      response = f"The answer is {answer}."
      check = judging.true_check(t, response)
      if check.clauses:
        out.append(Case(t, kind, response, check))
  return out


def compare_written(case: Case, written: str) -> list[dict]:
  """Per clause of the true check: its kind, true mark, whether the written judgment has the
  same fact at that place, and (where it has) whether its mark is the true one."""
  got = written_clauses(written) or []
  rows = []
  for i, clause in enumerate(case.check.clauses):
    fact, mark = split_clause(clause.text)
    got_fact, got_mark = split_clause(got[i]) if i < len(got) else (None, None)
    rows.append({"clause": clause_kind(fact), "true_mark": mark, "response": case.kind,
                 "fact_right": got_fact == fact,
                 "mark_right": (got_mark == mark) if got_fact == fact else None})
  return rows


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _mark_logits(model_config, params, tokens, valid, ok_id: int, no_id: int):
  """[B,T] right-padded rows -> [B,T,2] logits of (ok, no) at every position (one full forward;
  only the two columns leave the device)."""
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  logits, _ = llama.Llama(model_config).apply({"params": params}, tokens, positions,
                                              llama.causal_mask(valid))
  return logits[..., jnp.array([ok_id, no_id])]


def forced_marks(model_config, params, tokenizer, all_cases: Sequence[Case], *,
                 batch_size: int = 32) -> list[list[bool]]:
  """Per case, per clause: does the model, fed the true judgment, prefer the true mark?"""
  ok_id, no_id = (tokenizer.encode_content(f" {m}")[-1] for m in ("ok", "no"))
  rows, marks = [], []
  for c in all_cases:
    text = judging.judgment(c.check).text()
    p_ids, r_ids = tokenizer.encode_prompt_response(prompt_messages(
        prompts.render_judge_prompt(templates.JUDGE_TEMPLATE, c.task.instruction, c.response),
        None), text)
    ids = list(p_ids) + list(r_ids)
    at = [len(p_ids) + i for i, x in enumerate(r_ids) if x in (ok_id, no_id)]
    if len(at) < len(c.check.clauses):
      raise ValueError(f"the tokenizer does not keep ' ok' / ' no' as one piece in {text!r}")
    rows.append(ids)
    marks.append(at[:len(c.check.clauses)])
  out = []
  width = -(-max(map(len, rows)) // 16) * 16     # one compiled shape per 16 tokens of length
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    tokens = np.zeros((batch_size, width), np.int32)
    valid = np.zeros((batch_size, width), bool)
    for r, ids in enumerate(chunk):
      tokens[r, :len(ids)] = ids
      valid[r, :len(ids)] = True                  # right padding: causal attention never sees it
    logits = np.asarray(_mark_logits(model_config, params, tokens, valid, ok_id, no_id))
    for r in range(len(chunk)):
      c = all_cases[start + r]
      out.append([bool((logits[r, q - 1, 0] > logits[r, q - 1, 1]) == clause.passes)
                  for q, clause in zip(marks[start + r], c.check.clauses)])
  return out


def diagnose(model_config, params, tokenizer, tasks: Sequence[Task], *, seed: int = 0,
             batch_size: int = 32, mesh=None) -> list[dict]:
  """The table: one row per (clause kind, true mark, response kind) with n, forced mark accuracy,
  greedy fact accuracy and greedy mark accuracy where the fact is right."""
  all_cases = cases(tasks, seed)
  forced = forced_marks(model_config, params, tokenizer, all_cases, batch_size=batch_size)
  sampler = sampling.Sampler(model_config, params, tokenizer, mesh=mesh,
                             rules=config_rules.DECODE_RULES, batch_size=batch_size,
                             prompt_buckets=(128, 192))
  greedy = sampler.generate(
      [prompts.render_judge_prompt(templates.JUDGE_TEMPLATE, c.task.instruction, c.response)
       for c in all_cases], n=1, strategy=strategies.Greedy(),
      max_new_tokens=JUDGE_MAX_NEW_TOKENS, share_prefix=True, progress=False)
  groups = collections.defaultdict(lambda: collections.Counter())
  for c, marks, row in zip(all_cases, forced, greedy):
    for clause_row, mark in zip(compare_written(c, row[0].text), marks):
      g = groups[(clause_row["clause"], clause_row["true_mark"], clause_row["response"])]
      g["n"] += 1
      g["forced_right"] += mark
      g["fact_right"] += clause_row["fact_right"]
      g["mark_right"] += bool(clause_row["mark_right"])
  table = []
  for (clause, mark, kind), g in sorted(groups.items()):
    table.append({"clause": clause, "true_mark": mark, "response": kind, "n": g["n"],
                  "forced_mark_accuracy": g["forced_right"] / g["n"],
                  "greedy_fact_accuracy": g["fact_right"] / g["n"],
                  "greedy_mark_accuracy_given_fact": (g["mark_right"] / g["fact_right"]
                                                      if g["fact_right"] else None)})
  return table


def markdown(table: Sequence[dict]) -> str:
  pct = lambda x: "-" if x is None else f"{100 * x:.0f}%"
  lines = ["| clause | true mark | response | n | forced: true mark preferred | greedy: fact "
           "written right | greedy: mark right, given the fact |", "|---|---|---|---|---|---|---|"]
  for r in table:
    lines.append(f"| {r['clause']} | {r['true_mark']} | {r['response']} | {r['n']} | "
                 f"{pct(r['forced_mark_accuracy'])} | {pct(r['greedy_fact_accuracy'])} | "
                 f"{pct(r['greedy_mark_accuracy_given_fact'])} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # orbax / jax INFO lines are not the tool's output
  f = flags.FLAGS
  if f.tasks < 1:
    raise SystemExit(f"--tasks={f.tasks}: give at least 1")
  try:
    config, params = checkpoints.load_hf(f.model, dtype="float32")
    tokenizer = load_tokenizer(f.model, chat_format=CHAT_FORMAT)
  except (OSError, ValueError, errors.UserError) as e:
    raise SystemExit(f"--model={f.model}: cannot load a testbed model: {e}") from None
  table = diagnose(config, params, tokenizer, eval_task_list(f.tasks), seed=f.seed)
  text = markdown(table)
  print(text, end="")
  if f.output:
    artifacts.write_text(f.output, text)
    print(f"wrote {f.output}")


if __name__ == "__main__":
  from absl import app
  flags.DEFINE_string("model", None, "A testbed model directory (HF Llama + tokenizer.model).",
                      required=True)
  flags.DEFINE_integer("tasks", 300, "Held-out (eval split) tasks; three responses each.")
  flags.DEFINE_integer("seed", 0, "Seed of the responses drawn.")
  flags.DEFINE_string("output", None, "Also write the markdown table here.")
  app.run(main)
