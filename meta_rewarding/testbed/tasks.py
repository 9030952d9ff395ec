"""Synthetic instruction families where checking an answer is easy and finding one needs search.

Pure Python (``random``, ``re``, ``hashlib``): no jax, no numpy. Every task is short enough for a
tiny model: instructions of at most ~60 characters, answers of at most ~8.

Why these families (docs/design.md#design, "Tasks where checking is easier than answering"): a judge can only be
better than the actor when checking a given answer is easier than producing one. In each family
below the actor must pick, from several candidates, one that meets every constraint at once (an
implicit search it has to do in one shot), while the judge checks ONE candidate with a short,
local computation it writes out ("13-4=9, 9-9=0: ok; 9 in 7, 2, 9: 9-9=0: ok"; judging.py). A
meta-judge can then verify a judgment's written check (is 13-4 really 9? is 9 really in the
list?) without solving the task itself. Every family has many valid answers.

  pair_sum      Pick two of 7, 2, 9, 4, 6 that add up to 13.        -> 4 and 9  (or 7 and 6)
                4-5 distinct digits 1-9; the target is the sum of some pair of them.
  digit_sum     Write a number from 30 to 59 whose digits add up to 9.  -> 36 (or 45, 54)
                a range of 10-30 two-digit numbers; the target is the digit sum of one of them.
  letter_after  Write a letter from q, b, f, a, t that comes after m.  -> q  (or t)
                4-5 distinct letters; the pivot is not among them and 1-2 of them come after it.

``Task.answer`` is one valid answer (the reference); ``is_valid_answer(task, normalized)`` in
``oracle.py`` says whether any other answer is valid too.

Disjoint data by construction: ``split_of(instruction)`` puts every instruction, by a hash of its
canonical text, into exactly one split: ``eval`` (held-out evaluation, 10%), ``sft`` (the seed
model's demonstrations, 30%) or ``pool`` (the pipeline's prompt pool, 60%). ``generate_tasks``
draws from one split, so the seed's SFT tasks, the pool and the evaluation set cannot overlap,
whatever seeds or sizes are asked for.

``generate_tasks(seed, n, families, split)``
  * Deterministic in ``seed`` (its own ``random.Random(seed)``; global state is never touched) and
    in the order of ``families``.
  * Balanced: task i is assigned family ``families[i % len(families)]`` before shuffling, so every
    family gets ``n // F`` or ``n // F + 1`` tasks; the returned list is shuffled.
  * Instructions are unique. A family asked for more tasks than its split has distinct
    instructions (``capacity(family, split)``, exact) raises ``ValueError`` before any sampling.

``task_from_instruction(instruction)`` recovers the task (family, reference answer, params) from
the text alone, because the pipeline only carries prompt strings. It accepts exactly the
canonical text of some family's template (surrounding whitespace is ignored) when the task has a
valid answer; anything else gives ``None``. For every generated task,
``task_from_instruction(task.instruction) == task``.

The testbed's response format is ``reference_response(task)`` = ``"The answer is <answer>."``; the
oracle (``oracle.py``) also accepts the bare answer.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import random
import re
import string
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

FAMILIES = ("pair_sum", "digit_sum", "letter_after")

_LETTERS = string.ascii_lowercase

# Splits: (name, [lo, hi) of the instruction's hash bucket in 0..99).
SPLITS = {"eval": (0, 10), "sft": (10, 40), "pool": (40, 100)}


@dataclass(frozen=True)
class Task:
  """One instruction with a reference answer.

  ``params`` (read-only mapping, excluded from the hash) hold what the instruction was built from:
  pair_sum ``numbers`` (tuple of ints), ``target``; digit_sum ``low``, ``high``, ``target``;
  letter_after ``letters`` (str), ``pivot``.
  """

  family: str
  instruction: str
  answer: str
  params: Mapping[str, Any] = field(default_factory=dict, hash=False)

  def __post_init__(self):
    object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


def reference_response(task: Task) -> str:
  """The canonical well-formed, correct response: ``"The answer is <answer>."``."""
  return f"The answer is {task.answer}."


def split_of(instruction: str) -> str:
  """The split (eval | sft | pool) an instruction belongs to, by a hash of its canonical text."""
  bucket = int.from_bytes(hashlib.sha256(instruction.strip().encode()).digest()[:8], "big") % 100
  for name, (lo, hi) in SPLITS.items():
    if lo <= bucket < hi:
      return name
  raise AssertionError(bucket)


def digit_sum(n: int) -> int:
  return sum(int(d) for d in str(abs(n)))


# --------------------------------------------------------------------------------------------
# Valid answers per family (the oracle's ground truth; also used to draw many-answer demos).

def valid_pairs(numbers: Sequence[int], target: int) -> list[tuple[int, int]]:
  """The pairs (in list order) of two different entries of ``numbers`` that add up to target."""
  return [(a, b) for a, b in itertools.combinations(numbers, 2) if a + b == target]


def valid_numbers(low: int, high: int, target: int) -> list[int]:
  return [n for n in range(low, high + 1) if digit_sum(n) == target]


def valid_letters(letters: str, pivot: str) -> list[str]:
  return [c for c in letters if c > pivot]


def valid_answers(task: Task) -> list[str]:
  """Every valid answer of ``task`` in its canonical spelling."""
  p = task.params
  if task.family == "pair_sum":
    return [f"{a} and {b}" for a, b in valid_pairs(p["numbers"], p["target"])]
  if task.family == "digit_sum":
    return [str(n) for n in valid_numbers(p["low"], p["high"], p["target"])]
  if task.family == "letter_after":
    return valid_letters(p["letters"], p["pivot"])
  raise ValueError(f"unknown task family {task.family!r}")


# --------------------------------------------------------------------------------------------
# Builders: params -> Task (None when no answer is valid). The single place where each
# template's text and reference answer are defined.

def _pair_sum(numbers: Sequence[int], target: int) -> Task | None:
  numbers = tuple(numbers)
  pairs = valid_pairs(numbers, target)
  if not pairs or len(set(numbers)) != len(numbers):
    return None
  return Task("pair_sum", f"Pick two of {', '.join(map(str, numbers))} that add up to {target}.",
              f"{pairs[0][0]} and {pairs[0][1]}", {"numbers": numbers, "target": target})


def _digit_sum(low: int, high: int, target: int) -> Task | None:
  found = valid_numbers(low, high, target) if low <= high else []
  if not found:
    return None
  return Task("digit_sum", f"Write a number from {low} to {high} whose digits add up to {target}.",
              str(found[0]), {"low": low, "high": high, "target": target})


def _letter_after(letters: str, pivot: str) -> Task | None:
  found = valid_letters(letters, pivot)
  if not found or pivot in letters or len(set(letters)) != len(letters):
    return None
  # The letters are written apart ("q, b, f"), never as one string ('qbf'): sentencepiece merges
  # runs of letters into pieces, and a letter inside a piece is not the token the answer and the
  # judge's check write, so a check of "is q listed" would have to see inside pieces.
  return Task("letter_after", f"Write a letter from {', '.join(letters)} that comes after {pivot}.",
              found[0], {"letters": letters, "pivot": pivot})


# --------------------------------------------------------------------------------------------
# Sizes (inclusive ranges), chosen so that a ~1M-parameter model learns each family only in part
# within its CPU budget: the search over candidates is where the actor fails, the check is not.
PAIR_SUM_COUNT = (4, 5)        # how many distinct digits 1-9 are listed
DIGIT_SUM_LOW = (10, 89)       # the range's lower end ...
DIGIT_SUM_WIDTH = (9, 29)      # ... and high - low (high capped at 99)
LETTER_AFTER_COUNT = (4, 5)    # how many distinct letters are listed
LETTER_AFTER_VALID = (1, 2)    # how many of them come after the pivot


def _span(bounds: tuple[int, int]) -> range:
  return range(bounds[0], bounds[1] + 1)


def _sample_pair_sum(rng: random.Random) -> Task:
  numbers = rng.sample(range(1, 10), rng.randint(*PAIR_SUM_COUNT))
  a, b = rng.sample(numbers, 2)
  return _pair_sum(numbers, a + b)


def _sample_digit_sum(rng: random.Random) -> Task:
  low = rng.randint(*DIGIT_SUM_LOW)
  high = min(99, low + rng.randint(*DIGIT_SUM_WIDTH))
  return _digit_sum(low, high, digit_sum(rng.randint(low, high)))


def _letter_pivots(letters: str) -> list[str]:
  """Pivots (letters not listed) with LETTER_AFTER_VALID letters of ``letters`` after them."""
  lo, hi = LETTER_AFTER_VALID
  return [p for p in _LETTERS if p not in letters and lo <= len(valid_letters(letters, p)) <= hi]


def _sample_letter_after(rng: random.Random) -> Task:
  while True:
    letters = "".join(rng.sample(_LETTERS, rng.randint(*LETTER_AFTER_COUNT)))
    pivots = _letter_pivots(letters)
    if pivots:
      return _letter_after(letters, rng.choice(pivots))


_SAMPLERS: dict[str, Callable[[random.Random], Task]] = {
    "pair_sum": _sample_pair_sum,
    "digit_sum": _sample_digit_sum,
    "letter_after": _sample_letter_after,
}


# --------------------------------------------------------------------------------------------
# Exact capacities per split (enumerated once: every instruction the sampler can produce).

def _pair_sum_instructions():
  for count in _span(PAIR_SUM_COUNT):
    for numbers in itertools.permutations(range(1, 10), count):
      for target in sorted({a + b for a, b in itertools.combinations(numbers, 2)}):
        yield _pair_sum(numbers, target).instruction


def _digit_sum_instructions():
  seen = set()
  for low in _span(DIGIT_SUM_LOW):
    for width in _span(DIGIT_SUM_WIDTH):
      high = min(99, low + width)
      for target in sorted({digit_sum(n) for n in range(low, high + 1)}):
        text = _digit_sum(low, high, target).instruction
        if text not in seen:
          seen.add(text)
          yield text


@functools.lru_cache(maxsize=None)
def _split_counts(family: str) -> Mapping[str, int]:
  counts = dict.fromkeys(SPLITS, 0)
  if family == "letter_after":
    # About 58 million instructions: too many to hash one by one. Counted by formula (sets of
    # `count` letters with k after the pivot and the rest before it, in every order); as the
    # split is a hash, each split holds its share up to a vanishing error, reported less 1%.
    total = 0
    for index, _ in enumerate(_LETTERS):
      after, before = 25 - index, index
      for count in _span(LETTER_AFTER_COUNT):
        for k in _span(LETTER_AFTER_VALID):
          total += math.comb(after, k) * math.comb(before, count - k) * math.factorial(count)
    for name, (lo, hi) in SPLITS.items():
      counts[name] = int(total * (hi - lo) / 100 * 0.99)
    counts["all"] = total
    return MappingProxyType(counts)
  texts = _pair_sum_instructions() if family == "pair_sum" else _digit_sum_instructions()
  total = 0
  for text in texts:
    counts[split_of(text)] += 1
    total += 1
  counts["all"] = total
  return MappingProxyType(counts)


def capacity(family: str, split: str | None = None) -> int:
  """The number of distinct instructions of ``family`` in ``split`` (None: all splits).

  Exact for pair_sum and digit_sum (enumerated); for letter_after (about 40 million
  instructions) a lower bound: the split's expected share less 1%."""
  _check_family(family)
  _check_split(split)
  return _split_counts(family)["all" if split is None else split]


def _check_family(family: str) -> None:
  if family not in _SAMPLERS:
    raise ValueError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")


def _check_split(split: str | None) -> None:
  if split is not None and split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} or None")


def generate_tasks(seed: int, n: int, families: Sequence[str] = FAMILIES,
                   split: str | None = None) -> list[Task]:
  """``n`` tasks with unique instructions from ``split`` (None: any), balanced over
  ``families``, deterministic in ``seed``."""
  if n < 0:
    raise ValueError(f"n must be >= 0, got {n}")
  families = tuple(families)
  if not families:
    raise ValueError("families must not be empty")
  if len(set(families)) != len(families):
    raise ValueError(f"families must not repeat: {families}")
  _check_split(split)
  for i, family in enumerate(families):
    _check_family(family)
    quota = len(range(i, n, len(families)))  # slots i, i+F, i+2F, ... < n
    if quota > capacity(family, split):
      raise ValueError(
          f"cannot draw {quota} unique {family!r} tasks from split {split!r} (n={n} over "
          f"{len(families)} families): it has only {capacity(family, split)} distinct "
          "instructions")

  share = 1.0 if split is None else (SPLITS[split][1] - SPLITS[split][0]) / 100
  rng = random.Random(seed)
  assignment = [families[i % len(families)] for i in range(n)]
  rng.shuffle(assignment)
  quotas = {family: assignment.count(family) for family in families}
  draws = {family: 0 for family in families}
  seen: set[str] = set()
  tasks = []
  for family in assignment:
    while True:
      draws[family] += 1
      # A safety net against an endless loop near a split's capacity: far more draws than the
      # split's share and the duplicates explain.
      if draws[family] > (20 * quotas[family] + 1000) / share:
        raise ValueError(
            f"gave up drawing {quotas[family]} unique {family!r} tasks from split {split!r} "
            f"after {draws[family] - 1} draws (too many duplicates): ask for fewer tasks")
      task = _SAMPLERS[family](rng)
      if task.instruction not in seen and (split is None or split_of(task.instruction) == split):
        break
    seen.add(task.instruction)
    tasks.append(task)
  return tasks


# --------------------------------------------------------------------------------------------
# Modified tasks (the Self-Taught Evaluator's "modified instruction" on the testbed).

def modified_task(task: Task, rng: random.Random) -> tuple[Task, str] | None:
  """(x', y'): a task of the same family, close to ``task`` but not the same, and one of x''s
  valid answers that is NOT a valid answer to ``task`` -- what the Self-Taught Evaluator's
  worse-response prompt asks for (a good answer to a modified instruction, a worse answer to the
  original). None when the family's change leaves no such answer.

    pair_sum      another target that two listed numbers add up to
    digit_sum     another digit sum that some number of the range has
    letter_after  an earlier pivot (not listed), so that a listed letter between the two pivots
                  comes after the new one but not after the old one
  """
  p, f = task.params, task.family
  options: list[tuple[Task, str]] = []
  if f == "pair_sum":
    for t in sorted({a + b for a, b in itertools.combinations(p["numbers"], 2)} - {p["target"]}):
      new = _pair_sum(p["numbers"], t)
      options += [(new, f"{a} and {b}") for a, b in valid_pairs(p["numbers"], t)]
  elif f == "digit_sum":
    for t in sorted({digit_sum(n) for n in range(p["low"], p["high"] + 1)} - {p["target"]}):
      new = _digit_sum(p["low"], p["high"], t)
      options += [(new, str(n)) for n in valid_numbers(p["low"], p["high"], t)]
  elif f == "letter_after":
    for pivot in _LETTERS:
      if pivot < p["pivot"] and pivot not in p["letters"]:
        new = _letter_after(p["letters"], pivot)
        if new is not None:
          options += [(new, c) for c in valid_letters(p["letters"], pivot) if c < p["pivot"]]
  else:
    raise ValueError(f"unknown task family {f!r}")
  if not options:
    return None
  # One modified task first (uniformly), then one of its answers: tasks with many answers are
  # not favoured.
  tasks_ = list(dict.fromkeys(t for t, _ in options))
  new = rng.choice(tasks_)
  return new, rng.choice([a for t, a in options if t == new])


# --------------------------------------------------------------------------------------------
# Parsing: instruction text -> Task.

_PARSERS: list[tuple[re.Pattern, Callable[[re.Match], Task | None]]] = [
    (re.compile(r"Pick two of (\d+(?:, \d+)+) that add up to (\d+)\."),
     lambda m: _pair_sum([int(x) for x in m[1].split(", ")], int(m[2]))),
    (re.compile(r"Write a number from (\d+) to (\d+) whose digits add up to (\d+)\."),
     lambda m: _digit_sum(int(m[1]), int(m[2]), int(m[3]))),
    (re.compile(r"Write a letter from ([a-z](?:, [a-z])+) that comes after ([a-z])\."),
     lambda m: _letter_after(m[1].replace(", ", ""), m[2])),
]


def task_from_instruction(instruction: str) -> Task | None:
  """The task whose canonical instruction is ``instruction`` (stripped), or ``None``."""
  text = instruction.strip()
  for pattern, build in _PARSERS:
    match = pattern.fullmatch(text)
    if match:
      task = build(match)
      # Rebuilding must give back the same text: this rejects non-canonical spellings such
      # as leading zeros ("from 030 to 59"), whose answer would be ambiguous to judge.
      return task if task is not None and task.instruction == text else None
  return None
