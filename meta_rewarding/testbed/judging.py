"""What the testbed's judge writes (a check, then a score) and how a meta-judge verifies it.

Pure Python. The seed model is taught these formats (``seed.py``); the oracle (``oracle.py``)
stays the ground truth. A judgment states the facts it checked about the response, each a short
local computation, then the verdict they imply, then the score::

  pair_sum      Check: 13-4=9, 9-9=0: ok; 4 in 7, 2, 9, 4: 4-4=0: ok; 9 in 7, 2, 9: 9-9=0:
                ok. So the response is right. Score: 5
  digit_sum     Check: 9-4=5, 5-5=0: ok; 45>=30: 4-3=1: ok; 45<=59: 5-4=1: ok. So the
                response is right. Score: 5
  letter_after  Check: t in q, b, f, a, t: 20-20=0: ok; t after m: 20>=14: 2-1=1: ok. So the
                response is right. Score: 5
  no answer     Check: no clear answer. So the response is unclear. Score: 0

Every clause is a short local computation written out next to its outcome (``ok`` or ``no``).
Where the constraint is a comparison of numbers, the computation is a chain of one-digit
subtractions and the outcome follows from the last number written alone: the complement the
target needs, then the answer's other number or digit minus it, ok exactly when that is 0
("13-4=9, 9-9=0"); a range bound compared digit by digit as differences, ok exactly when the last
one is not negative ("45>=30: 4-3=1"). A list lookup copies the list item by item up to the
item equal to the answer, then subtracts the last item copied from the answer, ok exactly when
that is 0 ("9 in 7, 2, 9: 9-9=0"). Letters are compared as their places in the alphabet (a=1 ...
z=26: "t after m: 20>=14: 2-1=1", after m meaning at least 14). The verdict is "right" exactly
when no clause says ``no``. Every clause can be verified from the judgment, the question and the
response alone (is 13-4 really 9? is 9 the last item copied?), so the meta-judge re-checks one
candidate and never has to find an answer itself.

Why subtractions: a 1M-parameter judge learns many-valued lookups (it writes sums and
differences right 90-100% of the time) but not a yes/no comparison spread over several tokens.
The previous formats wrote the sum next to the target ("4+9=13, target 13"), the whole list before
the mark ("9 in 7, 2, 9, 4, 6") and whole two-digit comparisons ("45>=30"); the seed taught them
wrote every fact right and marked ok 80-100% of the failing facts it was fed (teacher forcing),
so it balanced only 57.6% on its own answers (``python -m meta_rewarding.testbed.diagnose``,
bench/results/seed_diagnosis.md). Written as "13-4=9 vs 6" and "45>=30, 4>3", 300 judge-only SFT
steps from that seed got 27-43% and 0% of the failing marks right; as the subtractions here
(with twice the share of random answers among the judged responses), 100% and 100%.

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


def _either_mark(fact: str, passes: bool) -> tuple[str, bool, str, bool]:
  """A clause whose false form keeps the fact and flips the mark."""
  return (_clause(fact, passes), passes, _clause(fact, not passes), not passes)


def _position(letter: str) -> int:
  """A letter's place in the alphabet (a=1 ... z=26): letters are compared as these numbers."""
  return ord(letter) - ord("a") + 1


def _difference_clause(head: str, x: int, y: int) -> tuple[str, bool, str, bool]:
  """'<head>: x-y=d: ok|no', ok exactly when d is 0 (x equals y). The false form keeps x and y and
  states a last difference that flips the outcome."""
  d = x - y
  passes = d == 0
  false_d = 0 if not passes else (1 if y > 0 else -1)
  return (_clause(f"{head}: {x}-{y}={d}", passes), passes,
          _clause(f"{head}: {x}-{y}={false_d}", not passes), not passes)


def _membership(x, items) -> tuple[str, bool, str, bool]:
  """'x in <the list, copied up to x>: x-last=d: ok|no'. The list is copied item by item and the
  copy stops at the first item equal to x; when none is, the whole list is copied. Then x minus
  the last item copied, ok exactly when that is 0 ("9 in 7, 2, 9: 9-9=0: ok"; "5 in 7, 2, 9, 4,
  6: 5-6=-1: no"). Letters are subtracted as their places in the alphabet ("t in q, b, t:
  20-20=0: ok"). Without the subtraction the mark was a yes/no test of the last item against x,
  ten-odd tokens back, and the v2 seed's judge, fed a true copy of a list without x, marked it ok
  72-85% of the time (bench/results/seed_diagnosis.md); a mark that follows from the last number
  alone is the kind it learned (100% on sums)."""
  items = list(items)
  copied = items[:items.index(x) + 1] if x in items else items
  value = _position if isinstance(x, str) else int
  return _difference_clause(f"{x} in {', '.join(map(str, copied))}", value(x), value(copied[-1]))


def _complement_clause(target: int, x: int, y: int) -> tuple[str, bool, str, bool]:
  """'t-x=c, y-c=d: ok|no': do x and y add up to t? Two subtractions: the complement c that x
  needs, then y minus it; the mark is ok exactly when d is 0. Every step is arithmetic the judge
  writes out (a many-valued lookup, which a tiny model learns), and the mark follows from the
  last number alone. The false form keeps t, x and y and states a wrong last difference that
  flips the outcome."""
  c = target - x
  d = y - c
  passes = d == 0
  false_d = 0 if not passes else (1 if y < 9 else -1)
  return (_clause(f"{target}-{x}={c}, {y}-{c}={d}", passes), passes,
          _clause(f"{target}-{x}={c}, {y}-{c}={false_d}", not passes), not passes)


def _order_clause(n: int, bound: int, op: str, head: str | None = None
                  ) -> tuple[str, bool, str, bool]:
  """'n>=bound' or 'n<=bound' by subtraction, digit by digit: the tens digits' difference (the
  side that should be larger first), then, only where it is 0, the units' ("45>=30: 4-3=1: ok";
  "35>=32: 3-3=0, 5-2=3: ok"; "25>=30: 2-3=-1: no"). The mark is ok exactly when the last
  difference is not negative. Numbers not of two digits (a malformed answer) are compared whole,
  unless `head` writes them as two digits (letter order: "03>=14"), which it also replaces. The
  false form states the last difference with the other sign."""
  holds = n >= bound if op == ">=" else n <= bound
  two_digits = head is not None or (10 <= n <= 99 and 10 <= bound <= 99)
  head = head or f"{n}{op}{bound}"
  if not two_digits:
    return _either_mark(head, holds)
  big, small = (n, bound) if op == ">=" else (bound, n)
  steps = [(big // 10, small // 10)]
  if big // 10 == small // 10:
    steps.append((big % 10, small % 10))
  diffs = [a - b for a, b in steps]
  false = diffs[:-1] + [-1 if diffs[-1] >= 0 else 1]
  text = lambda ds: head + ": " + ", ".join(f"{a}-{b}={d}" for (a, b), d in zip(steps, ds))
  return (_clause(text(diffs), holds), holds, _clause(text(false), not holds), not holds)


def _letter_order(c: str, pivot: str) -> tuple[str, bool, str, bool]:
  """'c after pivot: pc>=pp: <digit differences>': c comes after the pivot exactly when its place
  in the alphabet is at least the pivot's plus one; both are written as two digits and compared
  as a range bound is ("t after m: 20>=14: 2-1=1: ok"; "c after m: 03>=14: 0-1=-1: no"). So a
  letter equal to the pivot does not come after it. Written as a bare "t after m: ok", the mark
  was a yes/no comparison of two letters, and the v2 seed's judge got 29-43% of the failing ones
  right (forced); digit differences are the steps it learned for range bounds (100%)."""
  pc, pp = _position(c), _position(pivot) + 1
  return _order_clause(pc, pp, ">=", head=f"{c} after {pivot}: {pc:02d}>={pp:02d}")


def _pair_sum_clauses(task: Task, answer: str) -> list[tuple[str, bool, str, bool]]:
  """(clause as true, passes, the clause with the opposite outcome, its passes) per clause."""
  p = task.params
  a, b = (int(x) for x in answer.split(" and "))
  out = [_complement_clause(p["target"], a, b)]
  if a == b:
    out.append((_clause(f"{a} used twice", False), False, _clause(f"{a} used once", True), True))
  for x in dict.fromkeys((a, b)):  # each number once, in the order given
    out.append(_membership(x, p["numbers"]))
  return out


def _digit_sum_clauses(task: Task, answer: str) -> list[tuple[str, bool, str, bool]]:
  p = task.params
  n, t = int(answer), p["target"]
  if 10 <= n <= 99:
    total = _complement_clause(t, n // 10, n % 10)   # "9-4=5, 5-5=0": the units digit t needs
  else:                                              # not two digits: the digit sum in full
    digits = "+".join(str(n))
    s = digit_sum(n)
    false_sum = t if s != t else s + (1 if s < 18 else -1)
    total = (_clause(f"{digits}={s}, target {t}", s == t), s == t,
             _clause(f"{digits}={false_sum}, target {t}", s != t), s != t)
  return [total, _order_clause(n, p["low"], ">="), _order_clause(n, p["high"], "<=")]


def _letter_after_clauses(task: Task, answer: str) -> list[tuple[str, bool, str, bool]]:
  p = task.params
  c, pivot = answer, p["pivot"]
  return [_membership(c, p["letters"]), _letter_order(c, pivot)]


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


def fits(verdict: str, score: int) -> bool:
  """Whether a judgment's score is the one ``verdict`` implies (VERDICT_SCORE)."""
  return score == VERDICT_SCORE[verdict]


def meta_winner(verdict: str, score_a: int, score_b: int, tie: str = "A") -> str:
  """The judgment whose score fits ``verdict`` (the meta-judge's own); when both or neither do,
  the one whose score is closer to it; equal scores: ``tie`` (the demonstrations draw it at
  random, so that neither position is taught to win a battle the scores cannot decide)."""
  fit_a, fit_b = fits(verdict, score_a), fits(verdict, score_b)
  if fit_a != fit_b:
    return "A" if fit_a else "B"
  want = VERDICT_SCORE[verdict]
  distance_a, distance_b = abs(score_a - want), abs(score_b - want)
  if distance_a == distance_b:
    return tie
  return "B" if distance_b < distance_a else "A"


def meta_text(own: Check, score_a: int, score_b: int, tie: str = "A") -> str:
  """The meta-judge's output about Judgments A and B (their scores ``score_a``, ``score_b``):
  the two scores, copied first; its own check of the response and the score its verdict
  implies; each copied score subtracted from that one; the winner (``meta_winner``: the
  difference that is 0, else the smaller one, and ``tie`` when the two are equal)::

    A: score 1. B: score 5. Check: 13-4=9, 9-9=0: ok; 4 in 7, 2, 9, 4: 4-4=0: ok; 9 in 7, 2,
    9: 9-9=0: ok. So the response is right, want 5. A: 5-1=4. B: 5-5=0. Winner: Judgment B

  The meta-judge re-checks the response (one candidate, the same local computations as the
  judge's); it never solves the task. Each judgment is then judged by a subtraction, a
  many-valued step of the kind the judge's clauses use, rather than a yes/no "fits".

  Why the scores come first: copied at the start of the output, Judgment B's score sits a fixed
  number of tokens back (the template's last line), and Judgment A's is the other "Score:" of the
  prompt; the subtractions then find each score in the output's own "A: score", "B: score" (a
  copy of a recent, uniquely labelled token). The previous format copied them after its check,
  from 100+ tokens back, and the seed's meta-judge copied the wrong judgment's score about half
  the time and stayed at chance (bench/results/seed_diagnosis.md, "v2"). A wrong call is written
  with a false own check (``slipped_check``), so the text stays consistent with its winner."""
  verdict = own.verdict
  want = VERDICT_SCORE[verdict]
  return (f"A: score {score_a}. B: score {score_b}. {own.text()} So the response is {verdict}, "
          f"want {want}. A: {want}-{score_a}={want - score_a}. "
          f"B: {want}-{score_b}={want - score_b}. "
          f"Winner: Judgment {meta_winner(verdict, score_a, score_b, tie)}")


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


def score_fits_written_verdict(text: str, score: float | None) -> bool | None:
  """Whether a judgment's parsed ``score`` is the one its own written verdict implies
  (VERDICT_SCORE: "So the response is right. Score: 5" fits, "... right. Score: 2" does not).
  None: no valid score, or no ``So the response is <verdict>.`` to read. A judge that does not
  follow its own analysis has a fault of judging that actor pairs never train."""
  if score is None:
    return None
  head = "So the response is "
  at = text.rfind(head)
  if at < 0:
    return None
  verdict = text[at + len(head):].split(".", 1)[0]
  return fits(verdict, score) if verdict in VERDICT_SCORE else None
