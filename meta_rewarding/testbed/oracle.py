"""The testbed oracle: is a response right, the score a perfect judge gives, which judgment wins.

Pure Python (``re``, ``math``). The rules, exactly:

Extracting the answer (``extract_answer``; family-agnostic). Testbed responses have the form
``The answer is X.`` or just ``X``.
  1. ``None`` or blank -> ``None``.
  2. If the text contains ``the answer is`` (any case, any whitespace, optional colon), keep what
     follows its LAST occurrence; otherwise keep the whole text. Leading whitespace is dropped.
  3. Keep the first line, then cut at the first sentence end: ``.``, ``!`` or ``?`` (optionally
     followed by closing markdown/quotes) before whitespace or the end. So extra sentences after the
     answer are ignored (``432. Hope this helps.`` -> ``432``); extra words in the answer's own
     sentence are not (``432, because ...`` stays, and is then malformed).
  4. Strip wrapping markdown, quotes and punctuation (`` *_"'` `` and ``.!?,;:``) from both ends and
     collapse inner whitespace to single spaces. Empty -> ``None``.

Normalising per family (``normalize_answer``; ``None`` = not a well-formed answer for the family):
  pair_sum      two integers joined by ``and``, ``&``, ``+``, a comma or spaces (``4 and 9``,
                ``4, 9``, ``4+9``) -> ``4 and 9`` (in the order given).
  digit_sum     an integer (``45``, ``+45``, ``045``) -> its decimal form (``45``).
  letter_after  one letter (any case) -> lowercase.
A response is correct iff its normalised answer is valid for the task (``is_valid_answer``): the
two numbers are different entries of the list and add up to the target; the number lies in the
range and its digits add up to the target; the letter is listed and comes after the pivot.

Oracle score (what a perfect judge gives on the 5-point scale):
  5 correct; 1 well-formed but wrong (relevant, an attempt: the rubric's first point); 0 no answer
  or not well-formed (garbled, truncated, extra words).

Judgment agreement: a valid score ``s`` *agrees* with the oracle iff ``(s >= 3) == is_correct``
(3 = the rubric's "answers the basic elements" point). A ``None`` score (unparseable) never agrees.

``better_judgment(task, response, score_a, score_b)`` -- the more accurate of two judgments:
  1. both ``None`` -> ``None``; exactly one ``None`` -> the other wins;
  2. exactly one agrees -> it wins;
  3. both or neither agree -> the smaller ``|score - oracle_score|`` wins (1e-9 tolerance);
  4. equal -> ``None`` (the oracle has no preference).

Aggregates (``float('nan')`` when the denominator is empty; lists must have equal lengths):
  actor_accuracy       correct responses / responses
  judge_accuracy       agreeing judgments / valid (non-``None``) judgments
  meta_judge_accuracy  battles where the meta-judge picked the oracle's better judgment / battles
                       where the oracle has a preference and the meta-judge's winner is not ``None``
"""

from __future__ import annotations

import re
from typing import Sequence

from meta_rewarding.testbed.tasks import Task, digit_sum

SCORE_CORRECT = 5.0
SCORE_WRONG = 1.0
SCORE_INVALID = 0.0
PASS_THRESHOLD = 3.0
_TOLERANCE = 1e-9

_MARKER = re.compile(r"the\s+answer\s+is\s*:?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?][*_\"'`]*(?=\s|$)")
_WRAPPING = " \t*_\"'`.!?,;:"
_INTEGER = re.compile(r"[+]?\d+")
_PAIR = re.compile(r"(\d+)\s*(?:\s|,|&|\+|\band\b)\s*(\d+)")
_LETTER = re.compile(r"[A-Za-z]")


def extract_answer(response: str | None) -> str | None:
    """The candidate answer in ``response`` (rules 1-4 of the module docstring), or ``None``."""
    if response is None:
        return None
    markers = list(_MARKER.finditer(response))
    text = response[markers[-1].end():] if markers else response
    text = text.lstrip()
    text = text.split("\n", 1)[0]
    text = _SENTENCE_END.split(text, 1)[0]
    text = " ".join(text.strip(_WRAPPING).split())
    return text or None


def normalize_answer(task: Task, answer: str | None) -> str | None:
  """``answer`` in the family's canonical form, or ``None`` if it is not well-formed."""
  if answer is None:
    return None
  family = task.family
  if family == "pair_sum":
    match = _PAIR.fullmatch(answer)
    return f"{int(match[1])} and {int(match[2])}" if match else None
  if family == "digit_sum":
    return str(int(answer)) if _INTEGER.fullmatch(answer) else None
  if family == "letter_after":
    return answer.lower() if _LETTER.fullmatch(answer) else None
  raise ValueError(f"unknown task family {family!r}")


def is_valid_answer(task: Task, normalized: str | None) -> bool:
  """Whether a normalised answer meets every constraint of the task."""
  if normalized is None:
    return False
  p = task.params
  if task.family == "pair_sum":
    a, b = (int(x) for x in normalized.split(" and "))
    return a != b and a in p["numbers"] and b in p["numbers"] and a + b == p["target"]
  if task.family == "digit_sum":
    n = int(normalized)
    return p["low"] <= n <= p["high"] and digit_sum(n) == p["target"]
  if task.family == "letter_after":
    return normalized in p["letters"] and normalized > p["pivot"]
  raise ValueError(f"unknown task family {task.family!r}")


def _verdict(task: Task, response: str | None) -> float:
  normalized = normalize_answer(task, extract_answer(response))
  if normalized is None:
    return SCORE_INVALID
  return SCORE_CORRECT if is_valid_answer(task, normalized) else SCORE_WRONG


def is_correct(task: Task, response: str | None) -> bool:
    """Whether the response's normalised answer is valid for the task."""
    return _verdict(task, response) == SCORE_CORRECT


def oracle_score(task: Task, response: str | None) -> float:
    """5.0 correct, 1.0 well-formed but wrong, 0.0 no/garbled answer."""
    return _verdict(task, response)


def judgment_error(task: Task, response: str | None, judged_score: float) -> float:
    """``|judged_score - oracle_score|``; ``judged_score`` must be a number (not ``None``)."""
    if judged_score is None:
        raise ValueError("judged_score is None: an unparseable judgment has no error")
    return abs(float(judged_score) - oracle_score(task, response))


def judgment_agrees(task: Task, response: str | None, score: float | None) -> bool:
    """Whether ``score >= 3`` matches the response's correctness (``None`` never agrees)."""
    return score is not None and (score >= PASS_THRESHOLD) == is_correct(task, response)


def better_judgment(task: Task, response: str | None, score_a: float | None,
                    score_b: float | None) -> str | None:
    """``"A"``, ``"B"`` or ``None``: the more accurate judgment by the module docstring's rule."""
    if score_a is None or score_b is None:
        if score_a is None and score_b is None:
            return None
        return "B" if score_a is None else "A"
    oracle = oracle_score(task, response)
    correct = oracle == SCORE_CORRECT
    agrees_a = (score_a >= PASS_THRESHOLD) == correct
    agrees_b = (score_b >= PASS_THRESHOLD) == correct
    if agrees_a != agrees_b:
        return "A" if agrees_a else "B"
    error_a, error_b = abs(score_a - oracle), abs(score_b - oracle)
    if abs(error_a - error_b) <= _TOLERANCE:
        return None
    return "A" if error_a < error_b else "B"


def _check_lengths(*sequences: Sequence) -> None:
    lengths = {len(s) for s in sequences}
    if len(lengths) > 1:
        raise ValueError(f"sequences must have equal lengths, got {[len(s) for s in sequences]}")


def _share(hits: int, total: int) -> float:
    return hits / total if total else float("nan")


def actor_accuracy(tasks: Sequence[Task], responses: Sequence[str | None]) -> float:
    """Share of responses that are correct."""
    _check_lengths(tasks, responses)
    return _share(sum(is_correct(t, r) for t, r in zip(tasks, responses)), len(tasks))


def judge_accuracy(tasks: Sequence[Task], responses: Sequence[str | None],
                   scores: Sequence[float | None]) -> float:
    """Share of valid (non-``None``) judge scores that agree with the oracle's verdict."""
    _check_lengths(tasks, responses, scores)
    valid = [(t, r, s) for t, r, s in zip(tasks, responses, scores) if s is not None]
    return _share(sum(judgment_agrees(t, r, s) for t, r, s in valid), len(valid))


def meta_judge_accuracy(tasks: Sequence[Task], responses: Sequence[str | None],
                        score_pairs: Sequence[tuple[float | None, float | None]],
                        winners: Sequence[str | None]) -> float:
    """Share of decided battles (winner not ``None``, oracle has a preference) the meta-judge got
    right. ``score_pairs[i]`` are the scores of judgments A and B of battle i."""
    _check_lengths(tasks, responses, score_pairs, winners)
    hits = total = 0
    for task, response, (score_a, score_b), winner in zip(tasks, responses, score_pairs, winners):
        preferred = better_judgment(task, response, score_a, score_b)
        if preferred is None or winner is None:
            continue
        total += 1
        hits += winner == preferred
    return _share(hits, total)
