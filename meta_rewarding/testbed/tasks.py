"""Synthetic instruction families whose answers a program can check (DESIGN.md section 6).

Pure Python (``random``, ``re``, ``math``): no jax, no numpy. Every task is short enough for a tiny
model: instructions of at most ~50 characters, answers of at most ~15.

Families (the instruction text is the canonical template; ``params`` hold what it was made from)::

  add      What is 47 + 8?                            -> 55          a in [10, 99], b in [1, 9]
  reverse  Reverse the letters of 'plnt'.             -> tnlp        3-4 random letters
  sort     Sort in ascending order: 5, 2, 8, 1.       -> 1, 2, 5, 8  3-4 digits in 0-9
  count    How many times does 'a' appear in 'bnaaq'? -> 2           3-6 letters, 0-3 copies
  edit     Write 'plnt' in capital letters.           -> PLNT        op "upper", 3-4 letters
           Replace each 'a' with 'o' in 'banqa'.      -> bonqo       op "replace", 3-5 letters,
                                                                     1-2 copies, new != old

The sizes (module constants ``ADD_FIRST`` ... ``REPLACE_COPIES``) are chosen for the testbed's
~1M-parameter seed model, so that every family is learnable within its CPU budget but not learned.

Words are random lowercase letters (not dictionary words), so the spaces are large and the model
cannot answer from memory. ``count`` and ``edit``/replace plant the letter 0-3 (1-2) times, so the
answers are spread out instead of mostly 0. Within a family the sub-kind (word length, list length,
number of copies, edit op) is drawn uniformly first, then the rest.

``generate_tasks(seed, n, families)``
  * Deterministic in ``seed`` (its own ``random.Random(seed)``; global state is never touched) and
    in the order of ``families``.
  * Balanced: task i is assigned family ``families[i % len(families)]`` before shuffling, so every
    family gets ``n // F`` or ``n // F + 1`` tasks; the returned list is shuffled.
  * Instructions are unique. A family asked for more tasks than it has distinct instructions
    (``capacity(family)``, exact) raises ``ValueError`` before any sampling; as a safety net, a
    family that keeps producing duplicates (more than ``20 * quota + 1000`` draws) raises too.

``task_from_instruction(instruction)`` recovers the task (family, answer, params) from the text
alone, because the pipeline only carries prompt strings. It accepts exactly the canonical text of
some family's template (surrounding whitespace is ignored), also outside the generator's ranges
(``What is 2 + 2?`` is fine: the answer is still computable); anything else gives ``None``. For
every generated task, ``task_from_instruction(task.instruction) == task``.

The testbed's response format is ``reference_response(task)`` = ``"The answer is <answer>."``; the
oracle (``oracle.py``) also accepts the bare answer.
"""

from __future__ import annotations

import math
import random
import re
import string
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

FAMILIES = ("add", "reverse", "sort", "count", "edit")

_LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class Task:
    """One instruction with its reference answer.

    ``params`` (read-only mapping, excluded from the hash) hold what the instruction was built from:
    add ``a, b``; reverse ``word``; sort ``numbers`` (tuple of ints); count ``letter, word``;
    edit ``op`` ("upper" with ``word``, or "replace" with ``letter, new, word``).
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


# --------------------------------------------------------------------------------------------
# Builders: params -> Task. The single place where each template's text and answer are defined.

def _add(a: int, b: int) -> Task:
    return Task("add", f"What is {a} + {b}?", str(a + b), {"a": a, "b": b})


def _reverse(word: str) -> Task:
    return Task("reverse", f"Reverse the letters of '{word}'.", word[::-1], {"word": word})


def _sort(numbers: Sequence[int]) -> Task:
    numbers = tuple(numbers)
    return Task("sort", f"Sort in ascending order: {', '.join(map(str, numbers))}.",
                ", ".join(map(str, sorted(numbers))), {"numbers": numbers})


def _count(letter: str, word: str) -> Task:
    return Task("count", f"How many times does '{letter}' appear in '{word}'?",
                str(word.count(letter)), {"letter": letter, "word": word})


def _upper(word: str) -> Task:
    return Task("edit", f"Write '{word}' in capital letters.", word.upper(),
                {"op": "upper", "word": word})


def _replace(letter: str, new: str, word: str) -> Task:
    return Task("edit", f"Replace each '{letter}' with '{new}' in '{word}'.",
                word.replace(letter, new), {"op": "replace", "letter": letter, "new": new,
                                            "word": word})


# --------------------------------------------------------------------------------------------
# Samplers: rng -> Task, and the exact number of distinct instructions each can produce.

def _word(rng: random.Random, length: int, alphabet: str = _LETTERS) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def _planted(rng: random.Random, letter: str, length: int, copies: int) -> str:
    """A random word of ``length`` letters holding ``letter`` exactly ``copies`` times."""
    others = _LETTERS.replace(letter, "")
    chars = [rng.choice(others) for _ in range(length)]
    for i in rng.sample(range(length), copies):
        chars[i] = letter
    return "".join(chars)


# The difficulty of each family (inclusive ranges). Sized for the testbed's ~1M-parameter seed
# model, which has a few thousand CPU SFT steps to learn all three roles: with 3-digit sums and
# 6-letter words it learned almost none of add / reverse / edit (0-8%), so nothing there could be
# judged or improved. At these sizes every family is learnable but not yet learned.
ADD_FIRST = (10, 99)          # a two-digit number ...
ADD_SECOND = (1, 9)           # ... plus a one-digit number (one possible carry)
REVERSE_LETTERS = (3, 4)
SORT_DIGITS = (3, 4)          # how many digits (each 0-9) to sort
COUNT_LETTERS = (3, 6)        # word length; the letter is planted 0-3 times
COUNT_COPIES = (0, 3)
UPPER_LETTERS = (3, 4)
REPLACE_LETTERS = (3, 5)      # word length; the letter is planted 1-2 times
REPLACE_COPIES = (1, 2)


def _span(bounds: tuple[int, int]) -> range:
    return range(bounds[0], bounds[1] + 1)


def _sample_count(rng: random.Random) -> Task:
    letter = rng.choice(_LETTERS)
    length = rng.randint(*COUNT_LETTERS)
    return _count(letter, _planted(rng, letter, length, rng.randint(COUNT_COPIES[0], min(
        COUNT_COPIES[1], length))))


def _sample_edit(rng: random.Random) -> Task:
    if rng.random() < 0.5:
        return _upper(_word(rng, rng.randint(*UPPER_LETTERS)))
    letter = rng.choice(_LETTERS)
    new = rng.choice(_LETTERS.replace(letter, ""))
    return _replace(letter, new, _planted(rng, letter, rng.randint(*REPLACE_LETTERS),
                                          rng.randint(*REPLACE_COPIES)))


_SAMPLERS: dict[str, Callable[[random.Random], Task]] = {
    "add": lambda rng: _add(rng.randint(*ADD_FIRST), rng.randint(*ADD_SECOND)),
    "reverse": lambda rng: _reverse(_word(rng, rng.randint(*REVERSE_LETTERS))),
    "sort": lambda rng: _sort([rng.randint(0, 9) for _ in range(rng.randint(*SORT_DIGITS))]),
    "count": _sample_count,
    "edit": _sample_edit,
}


def _planted_words(lengths: range, copies: range) -> int:
    # Words over 26 letters with exactly k copies of one fixed letter: C(L, k) * 25^(L - k).
    return sum(math.comb(n, k) * 25 ** (n - k) for n in lengths for k in copies if k <= n)


_CAPACITY = {
    "add": len(_span(ADD_FIRST)) * len(_span(ADD_SECOND)),
    "reverse": sum(26 ** n for n in _span(REVERSE_LETTERS)),
    "sort": sum(10 ** n for n in _span(SORT_DIGITS)),
    "count": 26 * _planted_words(_span(COUNT_LETTERS), _span(COUNT_COPIES)),
    "edit": sum(26 ** n for n in _span(UPPER_LETTERS))
            + 26 * 25 * _planted_words(_span(REPLACE_LETTERS), _span(REPLACE_COPIES)),
}


def capacity(family: str) -> int:
    """The exact number of distinct instructions the generator can produce for ``family``."""
    _check_family(family)
    return _CAPACITY[family]


def _check_family(family: str) -> None:
    if family not in _SAMPLERS:
        raise ValueError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")


def generate_tasks(seed: int, n: int, families: Sequence[str] = FAMILIES) -> list[Task]:
    """``n`` tasks with unique instructions, balanced over ``families``, deterministic in seed."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    families = tuple(families)
    if not families:
        raise ValueError("families must not be empty")
    if len(set(families)) != len(families):
        raise ValueError(f"families must not repeat: {families}")
    for i, family in enumerate(families):
        _check_family(family)
        quota = len(range(i, n, len(families)))  # slots i, i+F, i+2F, ... < n
        if quota > _CAPACITY[family]:
            raise ValueError(
                f"cannot draw {quota} unique {family!r} tasks (n={n} over {len(families)} "
                f"families): the family has only {_CAPACITY[family]} distinct instructions")

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
            if draws[family] > 20 * quotas[family] + 1000:
                raise ValueError(
                    f"gave up drawing {quotas[family]} unique {family!r} tasks after "
                    f"{draws[family] - 1} draws (too many duplicates; the family has "
                    f"{_CAPACITY[family]} distinct instructions): ask for fewer tasks")
            task = _SAMPLERS[family](rng)
            if task.instruction not in seen:
                break
        seen.add(task.instruction)
        tasks.append(task)
    return tasks


# --------------------------------------------------------------------------------------------
# Parsing: instruction text -> Task.

_Q = r"'([a-z]+)'"  # a quoted lowercase word
_L = r"'([a-z])'"   # a quoted single letter
_PARSERS: list[tuple[re.Pattern, Callable[[re.Match], Task]]] = [
    (re.compile(r"What is (\d+) \+ (\d+)\?"), lambda m: _add(int(m[1]), int(m[2]))),
    (re.compile(rf"Reverse the letters of {_Q}\."), lambda m: _reverse(m[1])),
    (re.compile(r"Sort in ascending order: (\d+(?:, \d+)*)\."),
     lambda m: _sort([int(x) for x in m[1].split(", ")])),
    (re.compile(rf"How many times does {_L} appear in {_Q}\?"), lambda m: _count(m[1], m[2])),
    (re.compile(rf"Write {_Q} in capital letters\."), lambda m: _upper(m[1])),
    (re.compile(rf"Replace each {_L} with {_L} in {_Q}\."), lambda m: _replace(m[1], m[2], m[3])),
]


def task_from_instruction(instruction: str) -> Task | None:
    """The task whose canonical instruction is ``instruction`` (stripped), or ``None``."""
    text = instruction.strip()
    for pattern, build in _PARSERS:
        match = pattern.fullmatch(text)
        if match:
            task = build(match)
            # Rebuilding must give back the same text: this rejects non-canonical spellings such
            # as leading zeros ("What is 047 + 5?"), whose answer would be ambiguous to judge.
            return task if task.instruction == text else None
    return None
