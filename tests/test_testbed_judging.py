"""The testbed judge's written check and the meta-judge's assessment (judging.py): hand-worked."""

import random

import pytest

from meta_rewarding import prompts
from meta_rewarding.testbed import judging, oracle
from meta_rewarding.testbed.tasks import FAMILIES, generate_tasks, task_from_instruction

PAIR = task_from_instruction("Pick two of 7, 2, 9, 4, 6 that add up to 13.")
DIGITS = task_from_instruction("Write a number from 30 to 59 whose digits add up to 9.")
LETTER = task_from_instruction("Write a letter from q, b, f, a, t that comes after m.")

TRUE_CHECKS = [
    (PAIR, "The answer is 9 and 4.", "Check: 13-9=4, 4-4=0: ok; 9 in 7, 2, 9: 9-9=0: ok; 4 in 7, 2, 9, 4: 4-4=0: ok.",
     "right"),
    (PAIR, "The answer is 7 and 2.", "Check: 13-7=6, 2-6=-4: no; 7 in 7: 7-7=0: ok; 2 in 7, 2: 2-2=0: ok.",
     "wrong"),
    (PAIR, "The answer is 5 and 8.", "Check: 13-5=8, 8-8=0: ok; 5 in 7, 2, 9, 4, 6: 5-6=-1: no; 8 in 7, 2, 9, 4, 6: 8-6=2: no.",
     "wrong"),
    (PAIR, "The answer is 6 and 7.", "Check: 13-6=7, 7-7=0: ok; 6 in 7, 2, 9, 4, 6: 6-6=0: ok; 7 in 7: 7-7=0: ok.",
     "right"),
    (DIGITS, "The answer is 45.", "Check: 9-4=5, 5-5=0: ok; 45>=30: 4-3=1: ok; 45<=59: 5-4=1: ok.",
     "right"),
    (DIGITS, "The answer is 46.", "Check: 9-4=5, 6-5=1: no; 46>=30: 4-3=1: ok; 46<=59: 5-4=1: ok.",
     "wrong"),
    (DIGITS, "The answer is 63.", "Check: 9-6=3, 3-3=0: ok; 63>=30: 6-3=3: ok; 63<=59: 5-6=-1: no.",
     "wrong"),
    (DIGITS, "The answer is 36.", "Check: 9-3=6, 6-6=0: ok; 36>=30: 3-3=0, 6-0=6: ok; 36<=59: 5-3=2: ok.",
     "right"),
    (task_from_instruction("Write a number from 32 to 57 whose digits add up to 12."),
     "The answer is 30.", "Check: 12-3=9, 0-9=-9: no; 30>=32: 3-3=0, 0-2=-2: no; 30<=57: 5-3=2: ok.",
     "wrong"),
    (DIGITS, "The answer is 9.", "Check: 9=9, target 9: ok; 9>=30: no; 9<=59: ok.", "wrong"),
    (PAIR, "The answer is 2 and 2.",
     "Check: 13-2=11, 2-11=-9: no; 2 used twice: no; 2 in 7, 2: 2-2=0: ok.", "wrong"),
    # Letters by their places in the alphabet (a=1 ... z=26); "after m" is at least 14.
    (LETTER, "The answer is t.",
     "Check: t in q, b, f, a, t: 20-20=0: ok; t after m: 20>=14: 2-1=1: ok.", "right"),
    (LETTER, "The answer is q.",
     "Check: q in q: 17-17=0: ok; q after m: 17>=14: 1-1=0, 7-4=3: ok.", "right"),
    (LETTER, "The answer is b.", "Check: b in q, b: 2-2=0: ok; b after m: 02>=14: 0-1=-1: no.",
     "wrong"),
    (LETTER, "The answer is z.",
     "Check: z in q, b, f, a, t: 26-20=6: no; z after m: 26>=14: 2-1=1: ok.", "wrong"),
    (LETTER, "The answer is m.",
     "Check: m in q, b, f, a, t: 13-20=-7: no; m after m: 13>=14: 1-1=0, 3-4=-1: no.", "wrong"),
    (task_from_instruction("Write a letter from n, c, x, e that comes after m."), "The answer is n.",
     "Check: n in n: 14-14=0: ok; n after m: 14>=14: 1-1=0, 4-4=0: ok.", "right"),
    (LETTER, "I do not know.", "Check: no clear answer.", "unclear"),
]


@pytest.mark.parametrize("task, response, text, verdict", TRUE_CHECKS)
def test_true_check_hand_worked(task, response, text, verdict):
  check = judging.true_check(task, response)
  assert check.text() == text and check.verdict == verdict and check.true
  # The verdict of a true check is the oracle's.
  assert (verdict == "right") == oracle.is_correct(task, response)
  assert (verdict == "unclear") == (oracle.oracle_score(task, response) == oracle.SCORE_INVALID)
  j = judging.judgment(check)
  assert prompts.parse_score(j.text()) == judging.VERDICT_SCORE[verdict]
  assert oracle.judgment_agrees(task, response, j.score) and j.sound
  assert judging.check_is_true(task, response, j.text()) is True


def test_slipped_checks_flip_the_verdict_with_false_clauses():
  rng = random.Random(0)
  # A right response: one clause falsified, e.g. the sum.
  texts = {judging.slipped_check(PAIR, "9 and 4", rng).text() for _ in range(40)}
  assert texts == {
      "Check: 13-9=4, 4-4=1: no; 9 in 7, 2, 9: 9-9=0: ok; 4 in 7, 2, 9, 4: 4-4=0: ok.",
      "Check: 13-9=4, 4-4=0: ok; 9 in 7, 2, 9: 9-9=1: no; 4 in 7, 2, 9, 4: 4-4=0: ok.",
      "Check: 13-9=4, 4-4=0: ok; 9 in 7, 2, 9: 9-9=0: ok; 4 in 7, 2, 9, 4: 4-4=1: no."}
  # A wrong response: every failing clause falsified, so that it reads as right.
  slipped = judging.slipped_check(PAIR, "5 and 8", rng)
  assert slipped.text() == ("Check: 13-5=8, 8-8=0: ok; 5 in 7, 2, 9, 4, 6: 5-6=0: ok; "
                            "8 in 7, 2, 9, 4, 6: 8-6=0: ok.")
  assert slipped.verdict == "right" and not slipped.true
  assert judging.slipped_check(DIGITS, "46", rng).text() == (
      "Check: 9-4=5, 6-5=0: ok; 46>=30: 4-3=1: ok; 46<=59: 5-4=1: ok.")
  assert judging.slipped_check(DIGITS, "63", rng).text() == (
      "Check: 9-6=3, 3-3=0: ok; 63>=30: 6-3=3: ok; 63<=59: 5-6=1: ok.")
  # A range decided by the units digits slips there (the last difference with the other sign).
  near = task_from_instruction("Write a number from 39 to 57 whose digits add up to 12.")
  texts = {judging.slipped_check(near, "39", rng).text() for _ in range(40)}
  assert texts == {"Check: 12-3=9, 9-9=-1: no; 39>=39: 3-3=0, 9-9=0: ok; 39<=57: 5-3=2: ok.",
                   "Check: 12-3=9, 9-9=0: ok; 39>=39: 3-3=0, 9-9=-1: no; 39<=57: 5-3=2: ok.",
                   "Check: 12-3=9, 9-9=0: ok; 39>=39: 3-3=0, 9-9=0: ok; 39<=57: 5-3=-1: no."}
  assert judging.slipped_check(LETTER, "b", rng).text() == (
      "Check: b in q, b: 2-2=0: ok; b after m: 02>=14: 0-1=1: ok.")
  assert judging.slipped_check(LETTER, "I do not know.", rng) is None
  for task in generate_tasks(3, 90):
    for response in (f"The answer is {task.answer}.", "The answer is 1 and 1.", "The answer is 55.",
                     "The answer is a."):
      if oracle.oracle_score(task, response) == oracle.SCORE_INVALID:
        continue
      s = judging.slipped_check(task, response, rng)
      assert s.verdict != judging.true_check(task, response).verdict
      j = judging.judgment(s)
      assert not oracle.judgment_agrees(task, response, j.score) and not j.sound
      assert judging.check_is_true(task, response, j.text()) is False


def test_miscalibrated_judgments_and_meta_assessments():
  rng = random.Random(1)
  check = judging.true_check(DIGITS, "45")
  low = judging.judgment(check, miscalibrated=True, rng=rng)
  assert low.score in (1, 2) and low.miscalibrated and not low.sound
  assert not oracle.judgment_agrees(DIGITS, "45", low.score)
  sound = judging.judgment(check)
  slipped = judging.judgment(judging.slipped_check(DIGITS, "45", rng))
  own = "Check: 9-4=5, 5-5=0: ok; 45>=30: 4-3=1: ok; 45<=59: 5-4=1: ok. So the response is right"
  assert judging.meta_text(check, sound.score, slipped.score) == (
      f"A: score 5. B: score 1. {own}, want 5. A: 5-5=0. B: 5-1=4. Winner: Judgment A")
  assert judging.meta_text(check, low.score, sound.score) == (
      f"A: score {low.score}. B: score 5. {own}, want 5. A: 5-{low.score}={5 - low.score}. "
      f"B: 5-5=0. Winner: Judgment B")
  # A deliberately wrong call is written from a false own check, so its text names the unsound
  # judgment consistently.
  false_own = judging.slipped_check(DIGITS, "45", rng)
  wrong_call = judging.meta_text(false_own, sound.score, slipped.score)
  assert wrong_call.startswith("A: score 5. B: score 1. Check: ")
  assert wrong_call.endswith("So the response is wrong, want 1. A: 1-5=-4. B: 1-1=0. "
                             "Winner: Judgment B")
  assert prompts.parse_winner(wrong_call) == "B"
  # Neither fits: the closer score wins, then A.
  unclear = judging.true_check(DIGITS, "I do not know.")
  assert judging.meta_winner(unclear.verdict, 3, 4) == "A"
  assert judging.meta_winner("right", 1, 2) == "B"
  # Equal scores (both fit, or both miss by as much): the winner is the one given as the tie's.
  assert judging.meta_winner("right", 5, 5) == "A"
  assert judging.meta_winner("right", 5, 5, tie="B") == "B"
  assert judging.meta_winner("wrong", 0, 2, tie="B") == "B"
  assert judging.meta_text(check, 5, 5, tie="B") == (
      f"A: score 5. B: score 5. {own}, want 5. A: 5-5=0. B: 5-5=0. Winner: Judgment B")


def test_check_is_true_reads_only_the_check():
  assert judging.check_is_true(DIGITS, "45", "Score: 5") is None
  check = "Check: 9-4=5, 5-5=0: ok; 45>=30: 4-3=1: ok; 45<=59: 5-4=1: ok."
  assert judging.check_is_true(DIGITS, "45", check + " So the response is wrong. Score: 1") is True
  assert judging.check_is_true(DIGITS, "45", check.replace("5-4=1: ok", "5-4=1: no")
                               + " So the response is wrong. Score: 1") is False


def test_score_fits_written_verdict():
  check = "Check: 9-4=5, 5-5=0: ok; 45>=30: 4-3=1: ok; 45<=59: 5-4=1: ok."
  fit = lambda text: judging.score_fits_written_verdict(text, prompts.parse_score(text))
  assert fit(check + " So the response is right. Score: 5") is True
  assert fit(check + " So the response is right. Score: 2") is False   # miscalibrated
  assert fit(check + " So the response is wrong. Score: 1") is True    # the check is not read
  assert fit(check + " So the response is wrong. Score: 4") is False
  assert fit("Check: no clear answer. So the response is unclear. Score: 0") is True
  assert fit("Check: no clear answer. So the response is unclear. Score: 3") is False
  # Nothing to compare: no valid score, no verdict sentence, or a verdict of no known kind.
  assert fit(check + " So the response is right.") is None
  assert fit(check + " Score: 5") is None
  assert fit(check + " So the response is fine. Score: 5") is None
  # Every demonstration judgment: fits exactly when it is not miscalibrated.
  rng = random.Random(3)
  for _ in range(200):
    task = generate_tasks(rng.randrange(10**6), 1)[0]
    j = judging.judgment(judging.true_check(task, "The answer is 45."),
                         miscalibrated=rng.random() < 0.5, rng=rng)
    assert fit(j.text()) is (not j.miscalibrated)


def test_every_family_has_checks():
  for family in FAMILIES:
    task = generate_tasks(0, 1, (family,))[0]
    assert judging.true_check(task, task.answer).verdict == "right"


def test_the_verdict_is_right_exactly_when_no_clause_says_no():
  for task in generate_tasks(4, 60):
    for response in (f"The answer is {task.answer}.", "The answer is 1 and 1.", "The answer is 55.",
                     "The answer is a."):
      check = judging.true_check(task, response)
      if check.clauses:
        marks = [c.text.rsplit(": ", 1)[1] for c in check.clauses]
        assert set(marks) <= {"ok", "no"}
        assert (check.verdict == "right") == ("no" not in marks)
