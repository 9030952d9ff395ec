"""Builds the testbed's seed model: a tiny Llama taught, imperfectly, to act, judge and meta-judge.

  python -m meta_rewarding.testbed.seed --out=meta_rewarding/testbed/seed

writes a Hugging Face Llama directory (config.json, model.safetensors, tokenizer.model,
generation_config.json) plus README.md and build_info.json (command, sizes, build time, the seed's
measured figures). The build is deterministic: demonstrations come from seeded `random.Random`
streams, the sentencepiece trainer is single-threaded without sampling, the initialisation and the
SFT data order derive from the build seed (build_info.json records the weights' sha256).

This module is the builder only: a run never imports it. What a run (and this build) share lives
next to it: responses.py (responses of known quality, judged battles) and measure.py (held-out
tasks, `measure`).

What the seed is taught (the project's own SFT, `train.run_sft`, on five kinds of demonstrations;
every prompt is one user message in the Llama-2 chat format, exactly as the pipeline sends it):

  actor       a testbed instruction  ->  "The answer is X."
              X is one of the task's valid answers (drawn uniformly: most tasks have several)
              with probability 1 - ACTOR_WRONG, else a *plausible mistake* (`plausible_mistake`:
              a pair that misses the target or uses an unlisted number, a number out of range or
              with the wrong digit sum, a letter before the pivot or not listed).
  judge       templates.JUDGE_TEMPLATE(instruction, response)  ->
              "Check: 13-4=9, 9-9=0: ok; 4 in 7, 2, 9, 4: 4-4=0: ok; 9 in 7, 2, 9: 9-9=0:
               ok. So the response is right. Score: 5"
              (formats: judging.py). The response is right / a plausible mistake / a random
              well-formed answer / malformed (no clear answer, oracle score 0) with
              probabilities RESPONSE_MIX. The check states, for this one response, each
              constraint as a short local computation next to its outcome; the verdict follows
              from it; the score from the verdict (right 5, wrong 1, unclear 0). With
              probability JUDGE_SLIP the check holds false clauses that flip the verdict; with
              probability JUDGE_MISCALIBRATED (`--judge_miscalibrated`; the shipped v6 seed's
              last call: 0.2) the score is on the wrong side ("So the response is right.
              Score: 2"). That last fault is one of judging, not of acting: actor pairs do not
              train it, and a meta-judge that checks the response sees it.
  meta-judge  templates.META_JUDGE_TEMPLATE(instruction, response, judgment A, judgment B)  ->
              "A: score 1. B: score 5. Check: ... So the response is right, want 5.
               A: 5-1=4. B: 5-5=0. Winner: Judgment B"
              A and B judge one response: one sound (true check, fitting score), one unsound
              (slipped with probability META_UNSOUND_SLIP, else miscalibrated), so the oracle
              always prefers the sound one. The meta-judge checks the response itself (the
              judge's local computations on one candidate; it never has to solve the task), then
              subtracts each judgment's score (copied first) from the score its verdict implies
              and names the one at 0 (judging.meta_text). With
              probability META_FLIP its own check is a slipped one, and it names the unsound one.
              The third call adds battles between the model's OWN sampled judgments
              (`own_battle_meta_demos`), same-score ones included, labelled the same way.
  pairwise    templates.PAIRWISE_TEMPLATE(instruction, response A, response B)  ->
              "A: Check: ... So A is right. B: Check: ... So B is wrong. [[A]]"
              the Self-Taught Evaluator's pairwise judge: a right answer against a wrong one (a
              plausible mistake, or half the time an answer to a modified task), the right one as
              A in half of them; each check slips with probability JUDGE_SLIP.
  worse       templates.WORSE_RESPONSE_TEMPLATE(instruction, a right response)  ->
              "[User Question Modified]\n<x'>\n\n[The start of Assistant's answer to the modified
              instruction]\nThe answer is <y'>.\n[The end of ...]"
              the Self-Taught Evaluator's worse response, in the paper's output format: a task x'
              close to the instruction (`tasks.modified_task`: another target, an earlier pivot)
              and an answer right for x' and wrong for the instruction.

How the meta-judge demonstrations are kept free of the biases that wreck Meta-Rewarding (a
meta-judge that prefers Judgment A, or the higher score, teaches the judge that bias): the sound
judgment is Judgment A in half the battles (drawn independently of everything else), and the
responses judged are right in half of them (META_RESPONSE_MIX), where the sound judgment has the
higher score, and not right in the other half, where it has the lower one; the label noise
(META_FLIP) is independent of both. `demo_noise_report` measures the share of labels naming A and
naming the higher score (both ~50%), and the tests hold them there. The own-battle
demonstrations of the third call keep the same balance by construction: each battle's order is
drawn at random, the decisive battles are taken half where the better judgment has the higher
score and half where it has the lower, and in a battle of two equal scores (which the
subtractions cannot decide) the winner is drawn at random.

So the demonstrations are only mostly right (`demo_noise_report`, checked by the tests): actor
~78% right; judge scores agree with the oracle ~89%; meta-judge labels name the oracle's better
judgment ~94% of the time; pairwise labels name the right answer ~92% of the time. The model's capacity (0.9M parameters, a few thousand CPU SFT steps)
adds errors of its own, above all in the actor's search: the tasks are built so that checking
one candidate (a digit sum, a list lookup, a letter comparison) is easier than finding one that
meets every constraint at once (tasks.py).
The seed's measured figures (held-out tasks, the pipeline's sampling settings) are in
build_info.json and README.md next to the weights.

Training: one `train.run_sft` call (warmup + cosine, one AdamW state) whose batches each hold one
kind: the kinds differ a lot in length (median ~34 / ~119 / ~199 / ~162 / ~134 tokens for actor /
judge / meta / pairwise / worse), and mixed batches would pad every row to the longest. run_sft takes step s's batch from its seeded epoch permutation
(`data.epoch_order`), so `order_for_run_sft` places the examples where that permutation will pick
them in the wanted order; `check_order` verifies it with `data.step_indices`. A first phase trains
the actor alone (the copy-and-compare circuits all three roles need appear only after several
hundred steps of such data; at learning rates of 2e-3 and more they did not appear at all within
the budget); then the kinds are interleaved evenly (`step_kinds`,
`BuildConfig.phases`). Two more calls follow, each with a fresh schedule and optimizer state: one
weighted towards the judge (`judge_stage`), then one whose judge demonstrations are half about the
model's own sampled answers (`own_judge_stage`, `own_answer_judge_demos`): a judge taught only on
RESPONSE_MIX judged a fixed mix well but its own answers much worse (its own mistakes are not
the plausible mistakes of the mix); likewise half its meta-judge demonstrations are battles
between the model's own judgments (`own_battle_meta_demos`). Tasks: the `sft` split only
(tasks.split_of), so no demonstration is about a pool or evaluation task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import random
import shutil
import tempfile
import time
from typing import Iterable, Sequence

import jax
from absl import app, flags, logging

from meta_rewarding import checkpoints, data, prompts, runtime, sampling, strategies, train
from meta_rewarding.config import base as config_base, rules as config_rules
from meta_rewarding.testbed import judging, oracle, templates
from meta_rewarding.testbed.measure import EVAL_SEED, eval_task_list, measure
from meta_rewarding.testbed.responses import (META_RESPONSE_MIX, META_UNSOUND_SLIP,
                                              MODIFIED_ANSWER_END, MODIFIED_ANSWER_START,
                                              MODIFIED_QUESTION, RESPONSE_MIX, meta_battle,
                                              plausible_mistake, right_answer, sample_response)
from meta_rewarding.testbed.settings import (ACTOR_MAX_NEW_TOKENS, ARCHITECTURE, CHAT_FORMAT,
                                             JUDGE_MAX_NEW_TOKENS, PIPELINE_SAMPLING)
from meta_rewarding.testbed.tasks import FAMILIES, Task, generate_tasks, modified_task, split_of
from meta_rewarding.tokenizer import load_tokenizer, train_sentencepiece

# ----------------------------------------------------------------------------------------------
# Noise (the documented rates; tests check the generator realises them).

# RESPONSE_MIX (judged responses), META_RESPONSE_MIX and META_UNSOUND_SLIP (battles) are in
# responses.py: `measure` draws its fixed responses and battles from them too.
ACTOR_WRONG = 0.22             # actor demonstrations with a plausible mistake
JUDGE_SLIP = 0.08              # the judge's check states false clauses that flip its verdict
JUDGE_MISCALIBRATED = 0.04     # the judge's score is on the wrong side of the pass mark
META_FLIP = 0.06               # meta-judge label names the unsound judgment (either position)
# The third call's battles between the model's own judgments (`own_battle_meta_demos`): answers
# sampled and answers judged per demonstration wanted (most answers' two judgments agree and make
# no decisive battle: 131 of 512 answers of the v3 seed did), and the share of same-score battles.
OWN_BATTLE_ANSWERS = 6
OWN_BATTLE_JUDGED = 4
OWN_BATTLE_SAME_SCORE = 0.3

# ----------------------------------------------------------------------------------------------
# Judgments (formats: judging.py).

def judge_demo(task: Task, response: str, rng: random.Random, slip: float = JUDGE_SLIP,
               miscalibrated: float = JUDGE_MISCALIBRATED) -> judging.Judgment:
  """A (noisy) demonstration judgment of `response`: a true check and the score it implies,
  except with probability `slip` a slipped check (its verdict flipped; malformed responses have
  nothing to slip on) and with probability `miscalibrated` a score on the wrong side."""
  u = rng.random()
  if u < slip:
    slipped = judging.slipped_check(task, response, rng)
    if slipped is not None:
      return judging.judgment(slipped)
  if slip <= u < slip + miscalibrated:
    return judging.judgment(judging.true_check(task, response), miscalibrated=True, rng=rng)
  return judging.judgment(judging.true_check(task, response))


# ----------------------------------------------------------------------------------------------
# Demonstrations.

@dataclasses.dataclass(frozen=True)
class Demo:
  """One SFT example: `prompt` (a user message; the chat template is applied at tokenization) and
  `response`, plus what the noise did (for the tests and the build report)."""
  kind: str              # actor | judge | meta
  prompt: str
  response: str
  instruction: str
  correct: bool          # the demonstration is what a perfect model would say (oracle-wise)
  info: dict = dataclasses.field(default_factory=dict, compare=False)

  def record(self) -> dict:
    return {"prompt": self.prompt, "response": self.response}


def actor_demo(task: Task, rng: random.Random, wrong: float = ACTOR_WRONG) -> Demo:
  mistake = rng.random() < wrong
  answer = plausible_mistake(task, rng) if mistake else right_answer(task, rng)
  return Demo("actor", task.instruction, f"The answer is {answer}.", task.instruction,
              not mistake)


def judge_demo_record(task: Task, rng: random.Random, response: str | None = None,
                      miscalibrated: float = JUDGE_MISCALIBRATED) -> Demo:
  """A judge demonstration of `response` (None: one drawn from RESPONSE_MIX), miscalibrated with
  probability `miscalibrated`."""
  if response is None:
    response, kind = sample_response(task, rng)
  else:
    kind = "own"
  j = judge_demo(task, response, rng, miscalibrated=miscalibrated)
  agrees = oracle.judgment_agrees(task, response, j.score)
  return Demo("judge", prompts.render_judge_prompt(templates.JUDGE_TEMPLATE, task.instruction,
                                                   response),
              j.text(), task.instruction, agrees,
              {"response_kind": kind, "score": j.score, "slipped": not j.check.true,
               "miscalibrated": j.miscalibrated})


def meta_demo_record(task: Task, rng: random.Random) -> Demo:
  """A meta-judgment of a `meta_battle`: the meta-judge's own check of the response, then the
  judgment whose score fits its verdict (`judging.meta_text`). With probability META_FLIP the
  own check is a slipped one (its verdict flipped), so the winner is the unsound judgment and the
  text stays consistent; a malformed response has nothing to slip on and is never flipped."""
  response, kind, a, b, better = meta_battle(task, rng)
  own = judging.true_check(task, response)
  slipped = judging.slipped_check(task, response, rng) if rng.random() < META_FLIP else None
  flip = slipped is not None
  text = judging.meta_text(slipped if flip else own, a.score, b.score)
  winner = prompts.parse_winner(text)
  prompt = prompts.render_meta_judge_prompt(templates.META_JUDGE_TEMPLATE, task.instruction,
                                            response, a.text(), b.text())
  higher = "A" if a.score > b.score else "B"
  return Demo("meta", prompt, text, task.instruction,
              winner == better, {"response_kind": kind, "flip": flip, "better": better,
                                 "winner": winner, "winner_higher": winner == higher})


# The Self-Taught Evaluator's two tasks (templates.PAIRWISE_TEMPLATE, WORSE_RESPONSE_TEMPLATE).

def worse_response_text(modified_instruction: str, response: str) -> str:
  """The worse-response prompt's answer, in the paper's output format (the markers of
  RAM's worse_response.prompt, which `prompts.parse_worse_response` reads)."""
  return (f"{MODIFIED_QUESTION}\n{modified_instruction}\n\n{MODIFIED_ANSWER_START}\n{response}\n"
          f"{MODIFIED_ANSWER_END}")


def worse_demo_record(task: Task, rng: random.Random) -> Demo | None:
  """The worse-response prompt about a right answer to `task` -> a modified task x' (tasks.
  modified_task: close, of the same family) and a right answer to x' that is wrong for `task`.
  Only modifications inside the `sft` split are used, so no demonstration names a pool or
  evaluation task. None when there is none."""
  for _ in range(8):
    modified = modified_task(task, rng)
    if modified is None:
      return None
    new, answer = modified
    if split_of(new.instruction) == "sft":
      break
  else:
    return None
  good = f"The answer is {right_answer(task, rng)}."
  prompt = templates.WORSE_RESPONSE_TEMPLATE.format(instruction=task.instruction, response=good)
  worse = f"The answer is {answer}."
  return Demo("worse", prompt, worse_response_text(new.instruction, worse), task.instruction,
              True, {"modified": new.instruction})


def pairwise_text(check_a: judging.Check, check_b: judging.Check, winner: str) -> str:
  """The testbed's pairwise judgment: each response's check and verdict, then the paper's tag."""
  return (f"A: {check_a.text()} So A is {check_a.verdict}. "
          f"B: {check_b.text()} So B is {check_b.verdict}. [[{winner}]]")


def pairwise_demo_record(task: Task, rng: random.Random, slip: float = JUDGE_SLIP) -> Demo:
  """A pairwise judgment of a right answer against a wrong one (a plausible mistake, or half the
  time an answer to a modified task, the Self-Taught Evaluator's kind of worse response), the
  right one as Response A in half of them (drawn independently). Each check slips with
  probability `slip` like the pointwise judge's; the verdict follows the checks (when both come
  out the same, it is a coin flip)."""
  good = f"The answer is {right_answer(task, rng)}."
  modified = modified_task(task, rng) if rng.random() < 0.5 else None
  bad = f"The answer is {modified[1] if modified else plausible_mistake(task, rng)}."
  good_first = rng.random() < 0.5
  a, b = (good, bad) if good_first else (bad, good)

  def check(response):
    slipped = judging.slipped_check(task, response, rng) if rng.random() < slip else None
    return slipped or judging.true_check(task, response)

  check_a, check_b = check(a), check(b)
  if check_a.verdict == "right" and check_b.verdict != "right":
    winner = "A"
  elif check_b.verdict == "right" and check_a.verdict != "right":
    winner = "B"
  else:
    winner = rng.choice("AB")
  better = "A" if good_first else "B"
  prompt = templates.PAIRWISE_TEMPLATE.format(input=task.instruction, response_a=a, response_b=b)
  return Demo("pairwise", prompt, pairwise_text(check_a, check_b, winner), task.instruction,
              winner == better, {"winner": winner, "better": better,
                                 "modified": modified is not None})


def demonstrations(seed: int, kind: str, n: int, exclude: Iterable[str] = (),
                   judge_miscalibrated: float = JUDGE_MISCALIBRATED) -> list[Demo]:
  """`n` demonstrations of `kind` (KINDS), deterministic in (seed, kind, n).

  Tasks come from the `sft` split (`tasks.split_of`: never the pool's or the evaluation's) over
  all families (balanced), skipping the instructions in `exclude`."""
  stream = {"actor": 1, "judge": 2, "meta": 3, "pairwise": 4, "worse": 5}[kind]
  rng = random.Random(f"demos/{seed}/{kind}")
  exclude = set(exclude)
  # Enough unique tasks per family, interleaved so that every stretch of the list covers all
  # families; tasks repeat only past 4000 per family.
  per_family = min(int(n * 1.25) // len(FAMILIES) + 10, 4000)
  columns = [[t for t in generate_tasks(seed * 10 + stream + 7919 * i, per_family, (family,),
                                        split="sft")
              if t.instruction not in exclude] for i, family in enumerate(FAMILIES)]
  pool = [column[j % len(column)] for j in range(max(map(len, columns)))
          for column in columns]
  out = []
  i = 0
  while len(out) < n:
    task = pool[i % len(pool)]
    i += 1
    if kind == "actor":
      out.append(actor_demo(task, rng))
    elif kind == "judge":
      out.append(judge_demo_record(task, rng, miscalibrated=judge_miscalibrated))
    elif kind == "meta":
      out.append(meta_demo_record(task, rng))
    elif kind == "pairwise":
      out.append(pairwise_demo_record(task, rng))
    else:
      d = worse_demo_record(task, rng)
      if d is not None:
        out.append(d)
  return out


def demo_noise_report(demos: Sequence[Demo]) -> dict:
  """Measured noise of a set of demonstrations (what the module docstring promises)."""
  by = {}
  for d in demos:
    by.setdefault(d.kind, []).append(d)
  out = {}
  if "actor" in by:
    out["actor_correct"] = sum(d.correct for d in by["actor"]) / len(by["actor"])
  if "judge" in by:
    js = by["judge"]
    out["judge_agrees"] = sum(d.correct for d in js) / len(js)
    out["judge_slipped"] = sum(d.info["slipped"] for d in js) / len(js)
    out["judge_miscalibrated"] = sum(d.info["miscalibrated"] for d in js) / len(js)
  if "meta" in by:
    ms = by["meta"]
    out["meta_label_correct"] = sum(d.correct for d in ms) / len(ms)
    out["meta_first_position"] = sum(d.info["winner"] == "A" for d in ms) / len(ms)
    # Over battles whose scores differ (own-battle demonstrations also hold same-score ones).
    differ = [d for d in ms if not d.info.get("same_score")]
    out["meta_picks_higher_score"] = sum(d.info["winner_higher"] for d in differ) / len(differ)
  if "pairwise" in by:
    ps = by["pairwise"]
    out["pairwise_label_correct"] = sum(d.correct for d in ps) / len(ps)
    out["pairwise_first_position"] = sum(d.info["winner"] == "A" for d in ps) / len(ps)
  return out


# ----------------------------------------------------------------------------------------------
# The model, the tokenizer and the build (ARCHITECTURE and CHAT_FORMAT: settings.py).

KINDS = ("actor", "judge", "meta", "pairwise", "worse")
TOKENIZER_VOCAB = 512
TOKENIZER_SYMBOLS = ("[INST]", "[/INST]")  # the Llama-2 chat markers, one piece each

# Length buckets per kind (prompt + response tokens, Llama-2 chat format, this tokenizer).
_BUCKETS = {"actor": (32, 48), "judge": (144, 176), "meta": (336, 384), "pairwise": (208, 256),
            "worse": (136, 160)}


@dataclasses.dataclass
class BuildConfig:
  """What `build` does (defaults = the shipped seed)."""
  seed: int = 0
  # A testbed model directory to start from (its weights and tokenizer) instead of random weights
  # and a new tokenizer; "" = from scratch.
  init: str = ""
  steps: int = 2700                      # optimizer steps of the one run_sft call
  # (fraction of the steps, ((kind, share of the phase's steps), ...)) in order: actor
  # demonstrations alone first, so the copy-and-compare circuits every role needs form early,
  # then all three kinds interleaved.
  phases: tuple = ((0.4, (("actor", 1.0),)),
                   (0.6, (("actor", 0.25), ("judge", 0.4), ("meta", 0.15), ("pairwise", 0.1),
                          ("worse", 0.1))))
  batch_size: int = 32
  learning_rate: float = 1e-3            # warmup, then cosine decay to 0.1x
  warmup_steps: int = 40
  # A second run_sft call (fresh schedule and optimizer state, new demonstrations: build seed + 1)
  # weighted towards the judge: after the first call the seed acts well but its judge barely
  # compares its own answer with the response's. 0 steps: no second call.
  judge_steps: int = 900
  judge_shares: tuple = (("actor", 0.15), ("judge", 0.45), ("meta", 0.3), ("pairwise", 0.05),
                         ("worse", 0.05))
  judge_learning_rate: float = 5e-4
  judge_warmup_steps: int = 20
  # A third call, on the model's OWN answers: after the second call the seed judges the fixed
  # response mix well (~71% balanced) but its own sampled answers near chance (~55%): its own
  # mistakes are not the plausible mistakes of RESPONSE_MIX, and on its own answers it scores by
  # how hard the task feels rather than by comparing. This call samples the model's answers to
  # training tasks (the pipeline's sampling settings) and mixes judge demonstrations of them
  # (same noise rules) half and half with the usual ones. 0 steps: no third call.
  own_judge_steps: int = 700
  own_judge_shares: tuple = (("actor", 0.15), ("judge", 0.45), ("meta", 0.3), ("pairwise", 0.05),
                             ("worse", 0.05))
  own_judge_samples: int = 4             # sampled answers per training task
  # The share of the own-answer judge demonstrations about answers that are NOT right (None: as
  # sampled, ~22% for the shipped seed). Measured: 800 more steps of the third call at 0.5 on top
  # of the shipped seed moved the judge's balanced accuracy on its own answers only from 54.2% to
  # 56.8% (it lowered the pass rate on right answers as much as it raised the fail rate on wrong
  # ones) with the first judgment formats. With the subtraction formats (judging.py) the v2 and
  # v3 builds pass 0.5 (`--own_judge_not_right_share`, build_info.json's command).
  own_judge_not_right_share: float | None = None
  # The share of the third call's meta-judge demonstrations about battles between the model's
  # own judgments (`own_battle_meta_demos`); 0: none (the v1-v3 builds).
  own_battle_share: float = 0.5
  # The share of judge demonstrations whose score is on the wrong side of the pass mark for the
  # verdict their own check reaches (`judging.MISCALIBRATED_SCORES`). The v6 build's third call
  # raises it from JUDGE_MISCALIBRATED so that the seed's judge has a fault of judging, not of
  # acting, that actor pairs do not train (bench/results/seed_diagnosis.md, "v6").
  judge_miscalibrated: float = JUDGE_MISCALIBRATED
  eval_tasks: int = 200                  # held-out tasks for the seed's figures
  eval_samples: int = 4                  # actor samples per task

  def __post_init__(self):
    # A judge demonstration is slipped, miscalibrated or sound: the two shares add up to at most 1.
    if not 0.0 <= self.judge_miscalibrated <= 1.0 - JUDGE_SLIP:
      raise ValueError(f"BuildConfig.judge_miscalibrated={self.judge_miscalibrated}: expected a "
                       f"share in [0, {1.0 - JUDGE_SLIP:g}] (1 - JUDGE_SLIP)")


def judge_stage(cfg: BuildConfig) -> BuildConfig:
  """The second SFT call of the build as a one-phase config of its own."""
  return dataclasses.replace(cfg, seed=cfg.seed + 1, steps=cfg.judge_steps,
                             phases=((1.0, cfg.judge_shares),),
                             learning_rate=cfg.judge_learning_rate,
                             warmup_steps=cfg.judge_warmup_steps, judge_steps=0)


def own_judge_stage(cfg: BuildConfig) -> BuildConfig:
  """The third SFT call of the build (judging the model's own answers) as a config of its own."""
  return dataclasses.replace(cfg, seed=cfg.seed + 2, steps=cfg.own_judge_steps,
                             phases=((1.0, cfg.own_judge_shares),),
                             learning_rate=cfg.judge_learning_rate,
                             warmup_steps=cfg.judge_warmup_steps, judge_steps=0,
                             own_judge_steps=0)


def _sample_own_answers(model_config, params, tokenizer, cfg: BuildConfig, n_tasks: int,
                        stream: int, *, mesh, exclude: Iterable[str] = ()
                        ) -> tuple[object, list[tuple]]:
  """(the sampler, [(task, answer)]): `own_judge_samples` answers, at the pipeline's sampling
  settings, to each of `n_tasks` training tasks (`generate_tasks` over all families from stream
  `stream`, skipping `exclude`)."""
  exclude = set(exclude)
  tasks = [t for t in generate_tasks(cfg.seed * 10 + stream, n_tasks + n_tasks // 10 + 50,
                                     split="sft")
           if t.instruction not in exclude][:n_tasks]
  sampler = sampling.Sampler(model_config, params, tokenizer, mesh=mesh,
                             rules=config_rules.DECODE_RULES, batch_size=64,
                             prompt_buckets=(48, 96, 128, 192, 256))
  rows = sampler.generate([t.instruction for t in tasks], n=cfg.own_judge_samples,
                          strategy=strategies.Sampling(**PIPELINE_SAMPLING),
                          max_new_tokens=ACTOR_MAX_NEW_TOKENS, seed=cfg.seed + stream,
                          progress=True)
  return sampler, [(t, c.text.strip()) for t, row in zip(tasks, rows) for c in row]


def _split_by_correctness(answers: Sequence[tuple]) -> tuple[list[tuple], list[tuple]]:
  """([(task, answer)] that are right, the ones that are not), each in the order given."""
  right, other = [], []
  for task, answer in answers:
    (right if oracle.is_correct(task, answer) else other).append((task, answer))
  return right, other


def own_answer_judge_demos(model_config, params, tokenizer, cfg: BuildConfig, n: int, *, mesh,
                           exclude: Iterable[str] = (), log=print) -> list[Demo]:
  """`n` judge demonstrations of the model's own sampled answers to training tasks.

  Tasks: `generate_tasks` over all families (a stream of their own, skipping `exclude`), each
  answered `own_judge_samples` times at the pipeline's sampling settings; every answer gets a
  `judge_demo` (the same noise as the others). With `cfg.own_judge_not_right_share` set, three
  times as many answers are sampled and that share of the demonstrations is drawn from the ones
  that are not right (fewer when too few were sampled; the log says how many).
  Deterministic in (cfg.seed, n) and the weights."""
  share = cfg.own_judge_not_right_share
  want = -(-n * (1 if share is None else 3) // cfg.own_judge_samples)
  _, answers = _sample_own_answers(model_config, params, tokenizer, cfg, want, 5, mesh=mesh,
                                   exclude=exclude)
  if share is not None:
    right, other = _split_by_correctness(answers)
    k_other = min(len(other), round(n * share))
    k_right = min(len(right), n - k_other)
    log(f"own answers: {len(answers)} sampled, {len(right)} right; demonstrations from "
        f"{k_right} right and {k_other} not right")
    picked = right[:k_right] + other[:k_other]
    random.Random(f"own-judge-order/{cfg.seed}").shuffle(picked)
    answers = picked
  rng = random.Random(f"own-judge/{cfg.seed}")
  demos = [judge_demo_record(t, rng, r, cfg.judge_miscalibrated) for t, r in answers]
  return demos[:n]


def own_battles(task: Task, response: str, judgments: Sequence[str]
                ) -> tuple[tuple | None, tuple | None]:
  """(a decisive battle, a same-score battle) among the model's own `judgments` of `response`,
  each (text A, score A, text B, score B, the oracle's better "A"|"B"|None) or None.

  Decisive: the first pair of its own judgments the oracle tells apart; failing that, one of its
  own judgments the oracle rejects against the true judgment (`judging.true_check` with the
  score it implies: the text a perfect judge of this format writes, so it reads like the model's
  own right judgments). Same-score: its first two judgments when their scores are equal.
  Judgments without a whole-number score take no part (the pipeline battles only valid ones)."""
  own = []
  for text in judgments:
    score = prompts.parse_score(text)
    if score is not None and float(score).is_integer():
      own.append((text, int(score)))
  truth = judging.judgment(judging.true_check(task, response))
  candidates = list(itertools.combinations(own, 2)) + [(x, (truth.text(), truth.score))
                                                        for x in own]
  decisive = None
  for (text_a, score_a), (text_b, score_b) in candidates:
    better = oracle.better_judgment(task, response, score_a, score_b)
    if better is not None:
      decisive = (text_a, score_a, text_b, score_b, better)
      break
  same = None
  if len(own) >= 2 and own[0][1] == own[1][1]:
    same = (own[0][0], own[0][1], own[1][0], own[1][1], None)
  return decisive, same


def own_battle_meta_demo(task: Task, response: str, battle: tuple, rng: random.Random) -> Demo:
  """A meta-judge demonstration of one `own_battles` battle, in an order drawn at random: the
  true own check (a slipped one with probability META_FLIP, as in `meta_demo_record`), and for
  equal scores a winner drawn at random (`judging.meta_winner`'s `tie`)."""
  text_a, score_a, text_b, score_b, better = battle
  if rng.random() < 0.5:
    text_a, score_a, text_b, score_b = text_b, score_b, text_a, score_a
    better = {"A": "B", "B": "A", None: None}[better]
  own = judging.true_check(task, response)
  slipped = judging.slipped_check(task, response, rng) if rng.random() < META_FLIP else None
  tie = rng.choice("AB")
  text = judging.meta_text(slipped or own, score_a, score_b, tie=tie)
  winner = prompts.parse_winner(text)
  prompt = prompts.render_meta_judge_prompt(templates.META_JUDGE_TEMPLATE, task.instruction,
                                            response, text_a, text_b)
  higher = None if score_a == score_b else ("A" if score_a > score_b else "B")
  return Demo("meta", prompt, text, task.instruction, better is None or winner == better,
              {"response_kind": "own", "flip": slipped is not None, "better": better,
               "winner": winner, "winner_higher": winner == higher, "same_score": higher is None})


def own_battle_meta_demos(model_config, params, tokenizer, cfg: BuildConfig, n: int, *, mesh,
                          exclude: Iterable[str] = (), log=print) -> list[Demo]:
  """Up to `n` meta-judge demonstrations of battles between the model's OWN judgments.

  The pipeline's meta-judge compares two of the model's judgments, which rarely look like the
  planted unsound judgments of `meta_battle`; taught only on those, the v3 seed was right on 95%
  of fixed battles but 57% of its own, and where the scores differed it named Judgment B 78% of
  the time: its own check copied Judgment B's (bench/results/seed_diagnosis.md). Here training
  tasks get `own_judge_samples` sampled answers each (OWN_BATTLE_ANSWERS per demonstration
  wanted); OWN_BATTLE_JUDGED per demonstration are judged, the ones that are not right first up
  to half of them (its lenient mistakes, where the better judgment has the lower score, happen
  only on those), each twice at the pipeline's settings; `own_battles` picks the battles. The
  demonstrations hold:
    - decisive battles, half where the oracle's better judgment has the higher score and half
      where it has the lower (so the labels do not favour the higher score), in a random order
      (so they do not favour a position), labelled by the true own check;
    - OWN_BATTLE_SAME_SCORE of `n` battles between two judgments with the same score (75% of
      the pipeline's battles, never in `meta_battle`), the winner drawn at random.
  Fewer when too few battles of a kind were sampled (the log says how many).
  Deterministic in (cfg.seed, n) and the weights."""
  want = -(-n * OWN_BATTLE_ANSWERS // cfg.own_judge_samples)
  sampler, sampled = _sample_own_answers(model_config, params, tokenizer, cfg, want, 6,
                                         mesh=mesh, exclude=exclude)
  judged = n * OWN_BATTLE_JUDGED
  right, other = _split_by_correctness(sampled)
  other = other[:judged // 2]
  answers = other + right[:judged - len(other)]
  rows = sampler.generate([prompts.render_judge_prompt(templates.JUDGE_TEMPLATE, t.instruction, r)
                           for t, r in answers], n=2,
                          strategy=strategies.Sampling(**PIPELINE_SAMPLING),
                          max_new_tokens=JUDGE_MAX_NEW_TOKENS, seed=cfg.seed + 7,
                          share_prefix=True, progress=True)
  higher, lower, same = [], [], []
  for (task, response), row in zip(answers, rows):
    decisive, tie = own_battles(task, response, [c.text for c in row])
    if decisive is not None:
      _, score_a, _, score_b, better = decisive
      better_is_higher = (score_a > score_b) == (better == "A")
      (higher if better_is_higher else lower).append((task, response, decisive))
    if tie is not None:
      same.append((task, response, tie))
  k_same = min(len(same), round(n * OWN_BATTLE_SAME_SCORE))
  k_each = min(len(higher), len(lower), (n - k_same) // 2)
  log(f"own battles: {len(sampled)} answers sampled, {len(answers)} judged twice "
      f"({len(other)} not right); decisive {len(higher)} where the better "
      f"judgment has the higher score, {len(lower)} the lower, {len(same)} same-score; "
      f"demonstrations from {k_each} + {k_each} decisive and {k_same} same-score")
  picked = higher[:k_each] + lower[:k_each] + same[:k_same]
  random.Random(f"own-battle-order/{cfg.seed}").shuffle(picked)
  rng = random.Random(f"own-battle/{cfg.seed}")
  return [own_battle_meta_demo(t, r, b, rng) for t, r, b in picked]


def tokenizer_corpus(seed: int, n: int = 1500) -> list[str]:
  """Texts the sentencepiece model is trained on: demonstrations of every kind and the templates."""
  texts = [templates.JUDGE_TEMPLATE, templates.META_JUDGE_TEMPLATE, templates.PAIRWISE_TEMPLATE,
           templates.WORSE_RESPONSE_TEMPLATE, " ".join(TOKENIZER_SYMBOLS)]
  for kind in KINDS:
    for d in demonstrations(seed + 1000, kind, n):
      texts += [d.prompt, d.response]
  return texts


def build_tokenizer(directory: str, seed: int):
  prefix = os.path.join(directory, "tokenizer")
  train_sentencepiece(tokenizer_corpus(seed), prefix, TOKENIZER_VOCAB,
                      user_defined_symbols=TOKENIZER_SYMBOLS)
  os.replace(prefix + ".model", os.path.join(directory, "tokenizer.model"))
  if os.path.exists(prefix + ".vocab"):
    os.remove(prefix + ".vocab")
  return load_tokenizer(os.path.join(directory, "tokenizer.model"), chat_format=CHAT_FORMAT)


def step_kinds(cfg: BuildConfig) -> list[str]:
  """The kind each optimizer step trains on: the phases in order, each a deterministic weighted
  round-robin over its shares (every kind spread evenly over the phase)."""
  kinds: list[str] = []
  bounds = [0]
  for fraction, _ in cfg.phases:
    bounds.append(min(cfg.steps, bounds[-1] + round(fraction * cfg.steps)))
  bounds[-1] = cfg.steps
  for (_, shares), lo, hi in zip(cfg.phases, bounds, bounds[1:]):
    credit = {k: 0.0 for k, _ in shares}
    for _ in range(hi - lo):
      for k, share in shares:
        credit[k] += share
      pick = max(credit, key=lambda k: credit[k])  # ties: the first kind listed
      credit[pick] -= 1.0
      kinds.append(pick)
  return kinds




def order_for_run_sft(batches: Sequence[Sequence[dict]], seed: int) -> list[dict]:
  """The example list that makes `train.run_sft` (1 epoch, batch len(batches[0]), no grad
  accumulation, data seed `seed`) train on `batches` in this order.

  run_sft draws the order of epoch 0 as `data.epoch_order(seed, 0, n)` and takes step s's batch
  from positions [s*B, (s+1)*B) of it; placing the k-th wanted example at index order[k] makes
  those positions hold exactly `batches`. This keeps every batch to one kind (one length bucket,
  little padding) while one optimizer state and one learning-rate schedule span all kinds.
  `check_order` verifies the result against `data.step_indices`.
  """
  flat = [ex for batch in batches for ex in batch]
  order = data.epoch_order(seed, 0, len(flat))
  out: list = [None] * len(flat)
  for k, i in enumerate(order):
    out[int(i)] = flat[k]
  return out


def check_order(examples: Sequence[dict], batches: Sequence[Sequence[dict]], seed: int):
  size = len(batches[0])
  for s, batch in enumerate(batches):
    _, idx = data.step_indices(seed, s, len(examples), size)
    if any(examples[int(i)] is not want for i, want in zip(idx, batch)):
      raise RuntimeError("run_sft's data order is not data.epoch_order(seed, epoch, n) any more; "
                         "update seed.order_for_run_sft")


def sft_config(cfg: BuildConfig):
  t = config_base.train_config()
  t.learning_rate = cfg.learning_rate
  t.warmup_steps = cfg.warmup_steps
  t.decay = "cosine"
  t.end_learning_rate_ratio = 0.1
  t.batch_size = cfg.batch_size
  t.grad_accum_steps = 1
  t.num_epochs = 1
  t.max_length = max(b for k in _BUCKETS for b in _BUCKETS[k])
  t.length_buckets = tuple(sorted({b for k in _BUCKETS for b in _BUCKETS[k]}))
  t.truncation = "error"        # the demonstrations are filtered to fit beforehand
  t.checkpoint_every = 500
  t.keep_checkpoints = 1
  t.log_every = 100
  return t


def interleave(own: Sequence[Demo], usual: Sequence[Demo]) -> list[Demo]:
  """`own` spread evenly through `usual` (every stretch of the result holds both in the overall
  proportion), each list's order kept."""
  total = len(own) + len(usual)
  out, i = [], 0
  for j in range(total):
    # own[i] goes at the position where its share of the prefix first reaches i + 1.
    if i < len(own) and (i + 1) * total <= (j + 1) * len(own):
      out.append(own[i])
      i += 1
    else:
      out.append(usual[j - i])
  return out


def train_seed(cfg: BuildConfig, model_config, params, tokenizer, *, mesh, log=print,
               checkpoint_dir: str, own_answers: bool = False):
  """One `train.run_sft` call over kind-homogeneous batches (module docstring); returns
  (params, per-step history). `own_answers`: half the judge demonstrations judge the model's own
  sampled answers (`own_answer_judge_demos`), alternating with the usual ones."""
  exclude = {t.instruction for t in eval_task_list(cfg.eval_tasks)}
  kinds = step_kinds(cfg)
  examples = {}
  for k in KINDS:
    need = kinds.count(k) * cfg.batch_size
    # A few spare demonstrations replace the rare ones longer than the kind's largest bucket.
    demos = demonstrations(cfg.seed, k, need + need // 20 + 8, exclude, cfg.judge_miscalibrated)
    if k == "judge" and own_answers:
      log(f"sampling the model's own answers for {len(demos) // 2} judge demonstrations ...")
      own = own_answer_judge_demos(model_config, params, tokenizer, cfg, len(demos) // 2,
                                   mesh=mesh, exclude=exclude, log=log)
      demos = interleave(own, demos[:len(demos) - len(own)])
    if k == "meta" and own_answers and cfg.own_battle_share:
      wanted = round(len(demos) * cfg.own_battle_share)
      log(f"sampling the model's own judgments for {wanted} meta-judge demonstrations ...")
      own = own_battle_meta_demos(model_config, params, tokenizer, cfg, wanted, mesh=mesh,
                                  exclude=exclude, log=log)
      demos = interleave(own, demos[:len(demos) - len(own)])
    tokenized, report = data.tokenize_sft([d.record() for d in demos], tokenizer,
                                          max_length=_BUCKETS[k][-1], truncation="skip")
    if len(tokenized) < need:
      raise RuntimeError(f"too many {k} demonstrations exceed {_BUCKETS[k][-1]} tokens: {report}")
    examples[k] = iter(tokenized[:need])
  batches = [[next(examples[k]) for _ in range(cfg.batch_size)] for k in kinds]
  ordered = order_for_run_sft(batches, cfg.seed)
  check_order(ordered, batches, cfg.seed)
  log(f"SFT: {cfg.steps} steps of {cfg.batch_size} "
      f"({', '.join(f'{k} {kinds.count(k)}' for k in KINDS)})")
  params, history = train.run_sft(model_config, params, ordered, sft_config(cfg), mesh=mesh,
                                  rules=config_rules.rules_for(runtime_config(cfg.seed))[0],
                                  checkpoint_dir=checkpoint_dir,
                                  seed=cfg.seed, progress=True)
  for s, h in enumerate(history):
    h["kind"] = kinds[s]
  return params, history


def loss_summary(history: Sequence[dict], kinds=KINDS, parts: int = 6
                 ) -> list[dict]:
  """Mean SFT loss per kind over `parts` equal stretches of the run (for build_info/README)."""
  out = []
  n = len(history)
  for p in range(parts):
    chunk = history[p * n // parts:(p + 1) * n // parts]
    row = {"steps": f"{p * n // parts + 1}-{(p + 1) * n // parts}"}
    for k in kinds:
      xs = [h["loss"] for h in chunk if h.get("kind") == k]
      if xs:
        row[k] = round(sum(xs) / len(xs), 4)
    out.append(row)
  return out


# ----------------------------------------------------------------------------------------------
# The build.

COMMAND = "python -m meta_rewarding.testbed.seed --out=meta_rewarding/testbed/seed"
# The command-line flags of `main` and the BuildConfig fields they set.
_FLAG_FIELDS = ("seed", "init", "steps", "judge_steps", "judge_learning_rate", "own_judge_steps",
                "own_judge_not_right_share", "own_battle_share", "judge_miscalibrated",
                "eval_tasks")


def command(cfg: BuildConfig) -> str:
  """The command line that builds `cfg`: COMMAND plus a flag for every field that differs from
  the default (`init` as given)."""
  default = BuildConfig()
  flags = []
  for name in _FLAG_FIELDS:
    value = getattr(cfg, name)
    if value != getattr(default, name):
      flags.append(f"--{name}={-1.0 if value is None else value}")
  return " ".join([COMMAND] + flags)


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def runtime_config(seed: int):
  """The seed's model as a run config (`runtime.build` makes it): ARCHITECTURE in float32 on every
  local device (fsdp), the default rules."""
  c = config_base.get_base_config()
  c.seed = seed
  c.model.architecture = dict(ARCHITECTURE)
  c.model.dtype = c.model.param_dtype = "float32"
  c.mesh.shape = {"data": 1, "fsdp": -1, "tensor": 1}
  return c


def build(out: str, cfg: BuildConfig | None = None, *, log=print) -> dict:
  """Builds the seed into `out` (replaced atomically at the end); returns build_info."""

  cfg = cfg or BuildConfig()
  start = time.time()
  out = os.path.abspath(out)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  work = tempfile.mkdtemp(prefix=".seed-build-", dir=parent)
  try:
    if cfg.init:
      shutil.copy(os.path.join(cfg.init, "tokenizer.model"), os.path.join(work, "tokenizer.model"))
      tokenizer = load_tokenizer(os.path.join(work, "tokenizer.model"), chat_format=CHAT_FORMAT)
    else:
      tokenizer = build_tokenizer(work, cfg.seed)
    # The run's factory (runtime.py): the architecture with the tokenizer's ids, checked against
    # its vocabulary, random weights from the build seed created in their shards (or `init`'s).
    rt_config = runtime_config(cfg.seed)
    rt_config.model.checkpoint = os.path.abspath(cfg.init) if cfg.init else ""
    rt = runtime.build(rt_config, tokenizer)
    model_config, params, mesh = rt.model_config, rt.params, rt.mesh
    log(f"tokenizer: {tokenizer.vocab_size} pieces; model: {model_config.num_params():,} "
        f"parameters ({time.time() - start:.0f} s)")
    history = []
    if cfg.steps:
      params, history = train_seed(cfg, model_config, params, tokenizer, mesh=mesh, log=log,
                                   checkpoint_dir=os.path.join(work, "sft"))
    if cfg.judge_steps:
      second = judge_stage(cfg)
      params, more = train_seed(second, model_config, params, tokenizer, mesh=mesh, log=log,
                                checkpoint_dir=os.path.join(work, "sft_judge"))
      history = history + more
    if cfg.own_judge_steps:
      third = own_judge_stage(cfg)
      params, more = train_seed(third, model_config, params, tokenizer, mesh=mesh, log=log,
                                checkpoint_dir=os.path.join(work, "sft_own_judge"),
                                own_answers=True)
      history = history + more
    log(f"SFT done ({time.time() - start:.0f} s): {loss_summary(history)[-1]}")
    train_seconds = time.time() - start
    log(f"measuring on {cfg.eval_tasks} held-out tasks ...")
    figures = measure(model_config, params, tokenizer, eval_task_list(cfg.eval_tasks),
                      samples=cfg.eval_samples, seed=cfg.seed, mesh=mesh)
    log(f"figures: {json.dumps(figures)}")
    with open(os.path.join(work, "tokenizer.model"), "rb") as f:
      tokenizer_bytes = f.read()
    staged = os.path.join(work, "seed")
    checkpoints.save_hf(staged, model_config, params,
                        extra_files={"tokenizer.model": tokenizer_bytes})
    total_seconds = time.time() - start
    demos_noise = demo_noise_report([d for k in ("actor", "judge", "meta")
                                     for d in demonstrations(cfg.seed + 2000, k, 2000, (),
                                                             cfg.judge_miscalibrated)])
    files = {name: os.path.getsize(os.path.join(staged, name)) for name in sorted(os.listdir(staged))}
    info = {
        "command": command(cfg),
        "init_model_sha256": (_sha256(os.path.join(cfg.init, "model.safetensors"))
                              if cfg.init else None),
        "build_seconds": round(total_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "machine": f"{os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()})",
        "build_config": dataclasses.asdict(cfg),
        "architecture": ARCHITECTURE,
        "num_params": model_config.num_params(),
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "user_defined_symbols":
                      list(TOKENIZER_SYMBOLS), "chat_format": CHAT_FORMAT},
        "noise": {"actor_wrong": ACTOR_WRONG, "response_mix": dict(RESPONSE_MIX),
                  "judge_slip": JUDGE_SLIP,
                  "judge_miscalibrated": cfg.judge_miscalibrated,
                  "meta_response_mix": dict(META_RESPONSE_MIX),
                  "meta_unsound_slip": META_UNSOUND_SLIP, "meta_flip": META_FLIP},
        "demonstrations_measured": {k: round(v, 4) for k, v in demos_noise.items()},
        "sft_loss": loss_summary(history),
        "figures": figures,
        "eval": {"tasks": cfg.eval_tasks, "seed": EVAL_SEED, "samples_per_task": cfg.eval_samples,
                 "sampling": "temperature 0.8, top-p 0.95, top-k 32 (the pipeline's)"},
        "model_sha256": _sha256(os.path.join(staged, "model.safetensors")),
        "files_bytes": files,
    }
    with open(os.path.join(staged, "build_info.json"), "w") as f:
      json.dump(info, f, indent=2)
      f.write("\n")
    with open(os.path.join(staged, "README.md"), "w") as f:
      f.write(readme(info))
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(staged, out)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  log(f"wrote {out} in {time.time() - start:.0f} s")
  return info


def _rebuild_text(info: dict) -> str:
  if not info.get("init_model_sha256"):
    return (f"Rebuild from scratch (deterministic; {info['build_seconds'] / 60:.1f} min on "
            f"{info['machine']}):\n\n    {info['command']}\n")
  return (f"Rebuild (deterministic given the starting model; {info['build_seconds'] / 60:.1f} min "
          f"on {info['machine']}):\n\n    {info['command']}\n\nThe starting model (`--init`) has "
          f"model.safetensors sha256 {info['init_model_sha256']}"
          + (f": {info['init_note']}" if info.get("init_note") else "") + ".\n")


def _miscalibration_note(info: dict) -> str:
  """Says so when the build raised the judge's miscalibration on purpose (`--judge_miscalibrated`)."""
  rate = info.get("build_config", {}).get("judge_miscalibrated", JUDGE_MISCALIBRATED)
  if rate == JUDGE_MISCALIBRATED:
    return ""
  return (f" (this build's last call set {rate:g} on purpose: a fault of judging, which actor\n"
          f"pairs do not train and a meta-judge that checks the response can see)")


def readme(info: dict) -> str:
  f = info["figures"]
  pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"
  fam = ", ".join(f"{k.split('/')[1]} {pct(v)}" for k, v in f.items()
                  if k.startswith("actor_accuracy/"))
  d = info["demonstrations_measured"]
  size = sum(info["files_bytes"].values())
  return f"""# The testbed seed model

A tiny Llama ({info['num_params']:,} parameters: {info['architecture']['num_hidden_layers']} layers,
d={info['architecture']['hidden_size']}, float32) with a {info['tokenizer']['vocab_size']}-piece
sentencepiece tokenizer (byte fallback), taught by the project's own SFT (`train.run_sft`) to act,
judge and meta-judge on the synthetic testbed, and to write the Self-Taught Evaluator's pairwise
judgments and worse responses -- imperfectly, on purpose. It is the starting model
of `configs/local_cpu.py`. Hugging Face Llama layout: `LlamaForCausalLM.from_pretrained` loads it;
prompts use the Llama-2 chat format (`<s>[INST] ... [/INST]`).

{_rebuild_text(info)}

How it is made: `meta_rewarding/testbed/seed.py` (module docstring). Demonstrations, with their
noise as measured: actor answers right {pct(d.get('actor_correct'))}; judge scores agreeing with
the oracle {pct(d.get('judge_agrees'))}, on the wrong side of the pass mark for the judgment's own
verdict {pct(d.get('judge_miscalibrated'))}{_miscalibration_note(info)}; meta-judge labels naming the
oracle's better judgment
{pct(d.get('meta_label_correct'))}, naming Judgment A {pct(d.get('meta_first_position'))}, naming
the higher-scored judgment {pct(d.get('meta_picks_higher_score'))}.
Templates: `meta_rewarding/testbed/templates.py`.

## Measured figures

{f['tasks']} held-out testbed tasks (the `eval` split: in no demonstration and no prompt pool), the
pipeline's sampling (temperature 0.8, top-p 0.95, top-k 32), two judgments per sampled answer:

| figure | value |
|---|---|
| actor accuracy ({info['eval']['samples_per_task']} samples per task) | {pct(f['actor_accuracy'])} |
| actor accuracy (greedy) | {pct(f['actor_accuracy_greedy'])} |
| actor accuracy per family | {fam} |
| judge parse rate (own responses) | {pct(f['judge_parse_rate'])} |
| judge balanced accuracy (own responses; chance, always-pass and always-fail 50%) | {pct(f['judge_balanced_accuracy'])} |
| judge accuracy vs oracle (own responses; always-pass {pct(f['actor_accuracy'])}, always-fail {pct(1 - f['actor_accuracy'])}) | {pct(f['judge_accuracy'])} |
| judge mean score (own responses) | {'-' if f['judge_score_mean'] is None else f"{f['judge_score_mean']:.2f}"} |
| judge checks that are exactly true (own responses) | {pct(f['judge_check_true_rate'])} |
| judge parse rate / accuracy / balanced accuracy (fixed 45/40/15 right/wrong/malformed set) | {pct(f['judge_parse_rate_fixed'])} / {pct(f['judge_accuracy_fixed'])} / {pct(f['judge_balanced_accuracy_fixed'])} |
| meta-judge parse rate | {pct(f['meta_parse_rate'])} |
| meta-judge accuracy (fixed battles: one sound, one unsound judgment; both orders) | {pct(f['meta_accuracy'])} |
| meta-judge first-position rate / picks the higher score (unbiased: ~50% / ~50%) | {pct(f['meta_first_position_rate'])} / {pct(f['meta_picks_higher_rate'])} |
| meta-judge accuracy on its own judge's battles where the oracle prefers one ({f['meta_battles_own']} battles) | {pct(f['meta_accuracy_own'])} |
| pairwise judge accuracy (Self-Taught Evaluator prompt; right vs wrong, both orders, no verdict = 0.5) / first-position rate | {pct(f['pairwise_accuracy'])} / {pct(f['pairwise_first_position_rate'])} |
| worse responses that name a modified task and an answer right for it, wrong for the original | {pct(f['worse_valid_rate'])} |

{('Provenance of the weights in this directory: ' + info['note'] + '.') if info.get('note') else ''}

Files: {', '.join(f'{k} ({v / 1e6:.2f} MB)' if v > 1e5 else k for k, v in info['files_bytes'].items())},
README.md, build_info.json ({size / 1e6:.1f} MB in all). `build_info.json` holds the build config,
the SFT loss per kind over the run, the figures and the model's sha256.
"""


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # orbax / jax INFO lines are not the tool's output
  f = flags.FLAGS
  cfg = BuildConfig(seed=f.seed, init=f.init, steps=f.steps, judge_steps=f.judge_steps,
                    own_judge_steps=f.own_judge_steps, eval_tasks=f.eval_tasks,
                    judge_learning_rate=f.judge_learning_rate,
                    own_battle_share=f.own_battle_share,
                    judge_miscalibrated=f.judge_miscalibrated,
                    own_judge_not_right_share=(None if f.own_judge_not_right_share < 0
                                               else f.own_judge_not_right_share))
  info = build(f.out, cfg)
  print(json.dumps(info["figures"], indent=2))


if __name__ == "__main__":
  flags.DEFINE_string("out", None, "Output directory (replaced).", required=True)
  flags.DEFINE_integer("seed", BuildConfig.seed, "Build seed (demonstrations, init, data order).")
  flags.DEFINE_string("init", BuildConfig.init, "Start from this testbed model directory (weights "
                      "and tokenizer) instead of from scratch.")
  flags.DEFINE_float("judge_learning_rate", BuildConfig.judge_learning_rate,
                     "Peak learning rate of the second and third calls.")
  flags.DEFINE_integer("steps", BuildConfig.steps, "SFT optimizer steps (first call).")
  flags.DEFINE_integer("judge_steps", BuildConfig.judge_steps,
                       "SFT optimizer steps of the judge-weighted second call (0: none).")
  flags.DEFINE_integer("own_judge_steps", BuildConfig.own_judge_steps,
                       "SFT optimizer steps of the third call, judging the model's own answers "
                       "(0: none).")
  flags.DEFINE_float("own_judge_not_right_share", -1.0,
                     "Share of the third call's own-answer judge demonstrations about answers that "
                     "are not right (negative: as sampled).")
  flags.DEFINE_float("own_battle_share", BuildConfig.own_battle_share,
                     "Share of the third call's meta-judge demonstrations about battles between "
                     "the model's own judgments (0: none).")
  # A demonstration is slipped, miscalibrated or sound, so the two shares add up to at most 1.
  flags.DEFINE_float("judge_miscalibrated", BuildConfig.judge_miscalibrated,
                     "Share of judge demonstrations whose score does not fit their own verdict.",
                     lower_bound=0.0, upper_bound=1.0 - JUDGE_SLIP)
  flags.DEFINE_integer("eval_tasks", BuildConfig.eval_tasks, "Held-out tasks for the figures.")
  app.run(main)
