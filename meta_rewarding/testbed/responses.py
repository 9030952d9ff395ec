"""Testbed responses of known quality, and judged battles, drawn from seeded streams.

What the seed's builder (seed.py) teaches from and what `measure.measure` scores a model on:

  `right_answer`, `plausible_mistake`, `random_answer`, `malformed_response`
                        one response to a task: right, a plausible mistake (a pair that misses the
                        target or uses an unlisted number, a number out of range or with the wrong
                        digit sum, a letter before the pivot or not listed), drawn without regard
                        to the constraints, or with no clear answer (oracle score 0)
  `sample_response`     one of them, drawn from a mix (RESPONSE_MIX)
  `meta_battle`         one sound and one unsound judgment of one response, in a random order
  MODIFIED_*            the Self-Taught Evaluator's worse-response format (its markers)

Also `testbed.evaluate.preference_pairs` (a right answer against a plausible mistake) and
`testbed.diagnose` draw from here. Pure Python.
"""

from __future__ import annotations

import itertools
import random

from meta_rewarding.testbed import judging, oracle
from meta_rewarding.testbed.tasks import Task, digit_sum, valid_answers

# Judged responses: right, a plausible mistake, a random well-formed answer (each constraint fails
# about as often as it holds, so a mark cannot be guessed from how plausible the answer looks:
# bench/results/seed_diagnosis.md), no clear answer.
RESPONSE_MIX = (("correct", 0.35), ("wrong", 0.25), ("random", 0.30), ("malformed", 0.10))
# Meta-judge battles: one sound and one unsound judgment of a response (slipped with this
# probability, else miscalibrated). Right and not-right responses are drawn half and half, so the
# sound judgment has the higher score in half the battles; it is Judgment A in half of them.
META_RESPONSE_MIX = (("correct", 0.5), ("wrong", 0.4), ("malformed", 0.1))
META_UNSOUND_SLIP = 0.75

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


# ----------------------------------------------------------------------------------------------
# Responses.

def _candidates(task: Task, rng: random.Random) -> list[str]:
  """Plausible wrong answers for `task` (may include right ones or duplicates; filtered)."""
  p, f = task.params, task.family
  if f == "pair_sum":
    numbers, t = p["numbers"], p["target"]
    missed = [(a, b) for a, b in itertools.combinations(numbers, 2) if a + b != t]
    near = [f"{a} and {b}" for a, b in missed if abs(a + b - t) <= 2] or \
        [f"{a} and {b}" for a, b in missed]
    unlisted = [f"{x} and {t - x}" for x in numbers if 0 < t - x <= 9 and t - x not in numbers]
    unlisted += [f"{x} and {y}" for x, y in itertools.combinations(numbers, 2) if x + y == t
                 for y in [y + rng.choice((-1, 1))] if 0 < y <= 9 and y not in numbers]
    twice = [f"{t // 2} and {t // 2}"] if t % 2 == 0 and t // 2 in numbers else []
    return near + unlisted + twice
  if f == "digit_sum":
    lo, hi, t = p["low"], p["high"], p["target"]
    near = [str(n) for n in range(lo, hi + 1) if 1 <= abs(digit_sum(n) - t) <= 2] or \
        [str(n) for n in range(lo, hi + 1) if digit_sum(n) != t]
    outside = [str(n) for n in range(max(10, lo - 12), min(99, hi + 12) + 1)
               if not lo <= n <= hi and digit_sum(n) == t]
    return near + outside
  if f == "letter_after":
    letters, pivot = p["letters"], p["pivot"]
    before = [c for c in letters if c < pivot]
    unlisted = [c for c in _LETTERS if c > pivot and c not in letters]
    return before + before + unlisted[:3] + [pivot]
  raise ValueError(f"unknown family {f!r}")


def plausible_mistake(task: Task, rng: random.Random) -> str:
  """A well-formed but wrong answer to `task`, of a kind a tired human (or a tiny model) makes:
  a pair that misses the target or uses an unlisted number, a number out of range or with the
  wrong digit sum, a letter before the pivot or not listed."""
  options = []
  for c in _candidates(task, rng):
    if c not in options and oracle.oracle_score(task, f"The answer is {c}.") == \
        oracle.SCORE_WRONG:
      options.append(c)
  return rng.choice(options)


def right_answer(task: Task, rng: random.Random) -> str:
  """One of the task's valid answers, uniformly: the actor is shown every way to be right."""
  return rng.choice(valid_answers(task))


def malformed_response(task: Task, rng: random.Random) -> str:
  """A response with no clear answer (oracle score 0): truncated, hedged, or a non-answer."""
  options = ["The answer is", "I do not know.",
             f"The answer is {right_answer(task, rng)} or {plausible_mistake(task, rng)}.",
             f"The answer is {right_answer(task, rng)} maybe."]
  text = rng.choice(options)
  if oracle.oracle_score(task, text) != oracle.SCORE_INVALID:
    text = "I do not know."
  return text


def random_answer(task: Task, rng: random.Random) -> str:
  """A well-formed answer drawn without regard to the constraints: numbers mostly from the list,
  a number from around the range, a letter mostly from the list."""
  p = task.params
  if task.family == "pair_sum":
    pick = lambda: rng.choice(p["numbers"]) if rng.random() < 0.8 else rng.randint(1, 9)
    return f"{pick()} and {pick()}"
  if task.family == "digit_sum":
    return str(rng.randint(max(10, p["low"] - 15), min(99, p["high"] + 15)))
  if task.family == "letter_after":
    return rng.choice(p["letters"]) if rng.random() < 0.7 else rng.choice(_LETTERS)
  raise ValueError(f"unknown family {task.family!r}")


def sample_response(task: Task, rng: random.Random, mix=RESPONSE_MIX) -> tuple[str, str]:
  """(response text, kind) with kind drawn from `mix`: correct | wrong | random | malformed (a
  random answer may happen to be right)."""
  u, acc = rng.random(), 0.0
  kind = mix[-1][0]
  for name, p in mix:
    acc += p
    if u < acc:
      kind = name
      break
  if kind == "correct":
    return f"The answer is {right_answer(task, rng)}.", kind
  if kind == "wrong":
    return f"The answer is {plausible_mistake(task, rng)}.", kind
  if kind == "random":
    return f"The answer is {random_answer(task, rng)}.", kind
  return malformed_response(task, rng), kind


# ----------------------------------------------------------------------------------------------
# Battles.

def meta_battle(task: Task, rng: random.Random
                ) -> tuple[str, str, judging.Judgment, judging.Judgment, str]:
  """(response, response kind, judgment A, judgment B, the oracle's better "A"|"B"): one sound
  and one unsound judgment of one response (META_RESPONSE_MIX), in a random order."""
  response, kind = sample_response(task, rng, META_RESPONSE_MIX)
  sound = judging.judgment(judging.true_check(task, response))
  # A malformed response offers nothing to slip on: its unsound judgment is always miscalibrated.
  # (Dropping those battles instead would leave the sound judgment the higher score in 54% of
  # the rest: right responses 50% against wrong 40% + malformed 10% only balances if all count.)
  slipped = judging.slipped_check(task, response, rng) if rng.random() < META_UNSOUND_SLIP \
      else None
  if slipped is not None:
    unsound = judging.judgment(slipped)
  else:
    unsound = judging.judgment(sound.check, miscalibrated=True, rng=rng)
  first = rng.random() < 0.5
  a, b = (sound, unsound) if first else (unsound, sound)
  better = oracle.better_judgment(task, response, a.score, b.score)
  if better != ("A" if first else "B"):  # by construction the sound one agrees, the other not
    raise AssertionError((task, response, a, b, better))
  return response, kind, a, b, better


# The Self-Taught Evaluator's worse-response format (templates.WORSE_RESPONSE_TEMPLATE).

MODIFIED_QUESTION = "[User Question Modified]"
MODIFIED_ANSWER_START = "[The start of Assistant's answer to the modified instruction]"
MODIFIED_ANSWER_END = "[The end of Assistant's answer to the modified instruction]"
