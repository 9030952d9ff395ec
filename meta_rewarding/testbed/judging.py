"""What the testbed's judge writes (a check, then a score) and how a meta-judge verifies it.

Pure Python. The seed model is taught these formats (``seed.py``); the oracle (``oracle.py``)
stays the ground truth. A judgment states the facts it checked about the response, each a short
local computation, then the verdict they imply, then the score::

  pair_sum      Check: 4+9=13, target 13: ok; 4 in 7, 2, 9, 4, 6: ok; 9 in 7, 2, 9, 4, 6: ok.
                So the response is right. Score: 5
  digit_sum     Check: 4+5=9, target 9: ok; 45>=30: ok; 45<=59: ok. So the response is right.
                Score: 5
  letter_after  Check: t in q, b, f, a, t: ok; t after m: ok. So the response is right. Score: 5
  no answer     Check: no clear answer. So the response is unclear. Score: 0

Every clause is one local computation written out next to its outcome (``ok`` or ``no``): a sum
next to the target, a number next to a copy of the list it should be in, two numbers side by
side. The verdict is "right" exactly when no clause says ``no``. Every clause can be verified
from the judgment, the question and the response alone (is 4+9 really 13? is 9 in the list? is
45 at most 59? does t come after m?): this is what makes the meta-judge's job easier than the
actor's, since it never has to find an answer itself. (The first format, "4 listed; 45 in 30-59",
left the lookup and the comparison implicit, and the seed's judge got exactly those wrong on its
own answers: it balanced only 54% on them.)

A *slip* (``slipped_check``) states one or more false clauses, chosen so that the verdict flips
(a right response called wrong, a wrong one called right): the kind of error a meta-judge can
catch by re-checking the clauses. A *miscalibrated* judgment has a true check but a score on the
wrong side of the pass mark (``MISCALIBRATED_SCORES``).
"""

from __future__ import annotations

import dataclasses
import random

from meta_rewarding.testbed import oracle
from meta_rewarding.testbed.tasks import Task, digit_sum

VERDICT_SCORE = {"right": 5, "wrong": 1, "unclear": 0}
MISCALIBRATED_SCORES = {"right": (1, 2), "wrong": (4, 5), "unclear": (3, 4)}


@dataclasses.dataclass(frozen=True)
class Clause:
  """One checked fact: its text as written and whether the fact is true."""
  text: str
  true: bool
  passes: bool     # what the clause, as written, says about the response (a constraint met)


@dataclasses.dataclass(frozen=True)
class Check:
  clauses: tuple[Clause, ...]   # empty: the response has no clear answer

  @property
  def verdict(self) -> str:
    if not self.clauses:
      return "unclear"
    return "right" if all(c.passes for c in self.clauses) else "wrong"

  @property
  def true(self) -> bool:
    return all(c.true for c in self.clauses)

  def text(self) -> str:
    if not self.clauses:
      return "Check: no clear answer."
    return "Check: " + "; ".join(c.text for c in self.clauses) + "."


def _mark(passes: bool) -> str:
  return "ok" if passes else "no"


def _clause(fact: str, passes: bool) -> str:
  """A clause as written: the fact checked, then its outcome for the response."""
  return f"{fact}: {_mark(passes)}"


def _membership(x, items) -> tuple[str, bool, str, bool]:
  """'x in <the list, copied>: ok|no'. The list is written out again so that the lookup is over
  the tokens just written, right next to the mark: looking it up in the question instead
  competes with every other copy of x (in the response, in the sum clause), which is exactly
  where the seed's judge went wrong (it wrote "6 listed" for an unlisted 6 the actor had written)."""
  listed = x in items
  fact = f"{x} in {', '.join(map(str, items))}"
  return (_clause(fact, listed), listed, _clause(fact, not listed), not listed)


def _pair_sum_clauses(task: Task, answer: str) -> list[tuple[str, bool, str, bool]]:
  """(clause as true, passes, the clause with the opposite outcome, its passes) per clause."""
  p = task.params
  a, b = (int(x) for x in answer.split(" and "))
  s, t = a + b, p["target"]
  # The sum clause: "a+b=s, target t: ok" passes iff s == t. Its false form keeps a and b and
  # states a sum that flips the outcome (the target when s != t, one off when s == t).
  false_sum = t if s != t else s + (1 if s < 18 else -1)
  out = [(_clause(f"{a}+{b}={s}, target {t}", s == t), s == t,
          _clause(f"{a}+{b}={false_sum}, target {t}", s != t), s != t)]
  if a == b:
    out.append((_clause(f"{a} used twice", False), False, _clause(f"{a} used once", True), True))
  for x in dict.fromkeys((a, b)):  # each number once, in the order given
    out.append(_membership(x, p["numbers"]))
  return out


def _digit_sum_clauses(task: Task, answer: str) -> list[tuple[str, bool, str, bool]]:
  p = task.params
  n, t = int(answer), p["target"]
  digits = "+".join(answer.lstrip("+"))
  s = digit_sum(n)
  false_sum = t if s != t else s + (1 if s < 18 else -1)
  # The range as two comparisons, each between two numbers written side by side.
  above, below = n >= p["low"], n <= p["high"]
  return [(_clause(f"{digits}={s}, target {t}", s == t), s == t,
           _clause(f"{digits}={false_sum}, target {t}", s != t), s != t),
          (_clause(f"{n}>={p['low']}", above), above, _clause(f"{n}>={p['low']}", not above),
           not above),
          (_clause(f"{n}<={p['high']}", below), below, _clause(f"{n}<={p['high']}", not below),
           not below)]


def _letter_after_clauses(task: Task, answer: str) -> list[tuple[str, bool, str, bool]]:
  p = task.params
  c, pivot = answer, p["pivot"]
  after = c > pivot      # a letter equal to the pivot does not come after it
  return [_membership(c, p["letters"]),
          (_clause(f"{c} after {pivot}", after), after, _clause(f"{c} after {pivot}", not after),
           not after)]


_CLAUSES = {"pair_sum": _pair_sum_clauses, "digit_sum": _digit_sum_clauses,
            "letter_after": _letter_after_clauses}


def _clause_options(task: Task, response: str | None):
  answer = oracle.normalize_answer(task, oracle.extract_answer(response))
  if answer is None:
    return None
  return _CLAUSES[task.family](task, answer)


def true_check(task: Task, response: str | None) -> Check:
  """The check a perfect judge writes: every clause true; its verdict is the oracle's."""
  options = _clause_options(task, response)
  if options is None:
    return Check(())
  return Check(tuple(Clause(text, True, passes) for text, passes, _, _ in options))


def slipped_check(task: Task, response: str | None, rng: random.Random) -> Check | None:
  """A check with false clauses that flip its verdict (None: no answer to slip on).

  A right response gets one of its clauses falsified (at random); a wrong one gets every failing
  clause falsified, so that the check, as written, passes it."""
  options = _clause_options(task, response)
  if options is None:
    return None
  failing = [i for i, (_, passes, _, _) in enumerate(options) if not passes]
  flip = set(failing) if failing else {rng.randrange(len(options))}
  return Check(tuple(Clause(f_text, False, f_passes) if i in flip else Clause(text, True, passes)
                     for i, (text, passes, f_text, f_passes) in enumerate(options)))


@dataclasses.dataclass(frozen=True)
class Judgment:
  check: Check
  score: int

  @property
  def miscalibrated(self) -> bool:
    return self.score not in (VERDICT_SCORE[self.check.verdict],)

  @property
  def sound(self) -> bool:
    """The check is true and the score fits its verdict."""
    return self.check.true and not self.miscalibrated

  def text(self) -> str:
    return f"{self.check.text()} So the response is {self.check.verdict}. Score: {self.score}"


def judgment(check: Check, miscalibrated: bool = False, rng: random.Random | None = None
             ) -> Judgment:
  if miscalibrated:
    return Judgment(check, (rng or random).choice(MISCALIBRATED_SCORES[check.verdict]))
  return Judgment(check, VERDICT_SCORE[check.verdict])


def assessment(name: str, j: Judgment) -> str:
  """What the meta-judge writes about one judgment (``name`` is A or B)."""
  if not j.check.true:
    return f"{name}: check false"
  if j.miscalibrated:
    return f"{name}: check true, score {j.score} does not fit"
  return f"{name}: check true, score fits"


def meta_text(a: Judgment, b: Judgment, winner: str) -> str:
  """The meta-judge's output: both assessments, then the verdict. When ``winner`` names the
  unsound judgment (label noise), the assessments are swapped so the text stays consistent."""
  sound_a, sound_b = a.sound, b.sound
  if (winner == "A") != sound_a and sound_a != sound_b:  # a deliberate wrong call: say it wrongly
    a, b = b, a
  return f"{assessment('A', a)}. {assessment('B', b)}. Winner: Judgment {winner}"


def written_check(text: str) -> str | None:
  """The ``Check: ...`` part of a judgment as written, up to its verdict sentence (None: the
  text has no ``Check: ... So the response is`` part to read)."""
  start = text.find("Check:")
  end = text.find(" So the response is", start)
  if start < 0 or end < 0:
    return None
  return text[start:end]


def check_is_true(task: Task, response: str | None, text: str) -> bool | None:
  """Whether a judgment's written check is exactly the true check of the response (None: the
  text has no ``Check: ... So`` part to read)."""
  written = written_check(text)
  return None if written is None else written == true_check(task, response).text()
