"""An oracle in the meta-judge's seat: the upper bound of the judge pairs on the testbed.

A diagnostic, not the method. ``meta_judge.testbed_oracle`` (configs/local_cpu.py variant
``oracle_meta=<rule>``) wraps the policy in ``OracleMetaJudgePolicy``: every prompt of the
pipeline's meta-judge stage (recognised by ``meta_judge.template``) is answered by the oracle instead
of the model; actor, judge, training and the held-out evaluation (which samples the model directly)
are the model's own. Whatever else the loop does stays as it is: the battle orders, the position
weights, the Elo, the pair rules and DPO. So an arm with the oracle here measures what judge pairs
can do for this model's judge when the meta-judge is never wrong, by one of two rules:

  verdict  the judgment whose score the oracle prefers (``oracle.better_judgment``: the one whose
           pass/fail agrees with the response's correctness, else the one closer to the oracle's
           score); "Winner: tie" when it prefers neither. A perfect meta-judge of the testbed's
           format, which compares scores with its own verdict.
  check    first that rule's agreement, then whether the judgment's written check is exactly the
           true check (``judging.check_is_true``), then the closeness of the scores: a perfect
           meta-judge that also reads the checks, so a same-score battle is decided by the checks.

Its output is one line the pipeline's parser reads (``prompts.parse_winner``), saying which rule
decided: "Oracle (check): Winner: Judgment B". A tie is "Winner: tie", which the parser reads as
no verdict, so the battle adds nothing to the Elo (as an unparsed one).
"""

from __future__ import annotations

import re
from typing import Sequence

from meta_rewarding import prompts
from meta_rewarding.choices import META_JUDGE_ORACLES
from meta_rewarding.recipe_types import Generation
from meta_rewarding.testbed import judging, oracle
from meta_rewarding.testbed.tasks import task_from_instruction

RULES = META_JUDGE_ORACLES[1:]  # ("verdict", "check"); "" is the model
_FIELDS = ("instruction", "response", "judgment_a", "judgment_b")


def template_pattern(template: str) -> re.Pattern:
  """A regex that reads a rendered meta-judge prompt back into its four fields."""
  parts = re.split(r"\{(" + "|".join(_FIELDS) + r")\}", template)
  regex = ""
  for i, part in enumerate(parts):
    regex += f"(?P<{part}>.*?)" if i % 2 else re.escape(part)
  return re.compile(regex, re.DOTALL)


def oracle_winner(rule: str, instruction: str, response: str, judgment_a: str,
                  judgment_b: str) -> str | None:
  """"A", "B" or None (neither is better by ``rule``; also for a task the oracle does not know)."""
  if rule not in RULES:
    raise ValueError(f"oracle meta-judge rule {rule!r}: expected one of {RULES}")
  task = task_from_instruction(instruction)
  if task is None:
    return None
  score_a, score_b = prompts.parse_score(judgment_a), prompts.parse_score(judgment_b)
  if rule == "check":
    agrees = [oracle.judgment_agrees(task, response, s) for s in (score_a, score_b)]
    if agrees[0] != agrees[1]:
      return "A" if agrees[0] else "B"
    true = [bool(judging.check_is_true(task, response, j)) for j in (judgment_a, judgment_b)]
    if true[0] != true[1]:
      return "A" if true[0] else "B"
  return oracle.better_judgment(task, response, score_a, score_b)


def oracle_meta_text(rule: str, winner: str | None) -> str:
  return f"Oracle ({rule}): Winner: " + (f"Judgment {winner}" if winner else "tie")


class OracleMetaJudgePolicy:
  """The policy, with the oracle answering its meta-judge prompts (module docstring).

  A call to ``generate`` whose prompts are all meta-judge prompts gets the oracle's verdicts; any
  other call, and every other method, goes to the wrapped policy."""

  def __init__(self, policy, meta_judge_template: str, rule: str):
    if rule not in RULES:
      raise ValueError(f"meta_judge.testbed_oracle={rule!r}: expected '' or one of {RULES}")
    self._policy = policy
    self._pattern = template_pattern(meta_judge_template)
    self.rule = rule

  def __getattr__(self, name):
    return getattr(self._policy, name)

  def generate(self, prompts_: Sequence[str], *, n: int, **kwargs) -> list[list[Generation]]:
    fields = [self._pattern.fullmatch(p) for p in prompts_]
    if not fields or not all(fields):
      return self._policy.generate(prompts_, n=n, **kwargs)
    out = []
    for f in fields:
      text = oracle_meta_text(self.rule, oracle_winner(self.rule, *(f.group(k) for k in _FIELDS)))
      # No tokenizer here: the word count stands in for num_tokens, which meta-judge records
      # do not keep (stages.meta_judge_records stores text, finish_reason and the winner).
      out.append([Generation(text, len(text.split()), "stop")] * n)
    return out
