"""The oracle in the meta-judge's seat (testbed/oracle_meta_judge.py): hand-worked verdicts, and
the wrapper answers only the meta-judge's prompts."""

import pytest

from meta_rewarding import prompts
from meta_rewarding.recipe_types import Generation
from meta_rewarding.testbed import templates
from meta_rewarding.testbed.oracle_meta_judge import (OracleMetaJudgePolicy, oracle_winner,
                                                      template_pattern)

PAIR = "Pick two of 7, 2, 9, 4, 6 that add up to 13."
RIGHT = "The answer is 9 and 4."
TRUE_PASS = ("Check: 13-9=4, 4-4=0: ok; 9 in 7, 2, 9: 9-9=0: ok; 4 in 7, 2, 9, 4: 4-4=0: ok. "
             "So the response is right. Score: 5")
# The same verdict from a list copied short (a false fact): the score cannot tell them apart.
FALSE_PASS = ("Check: 13-9=4, 4-4=0: ok; 9 in 7, 9: 9-9=0: ok; 4 in 7, 2, 9, 4: 4-4=0: ok. "
              "So the response is right. Score: 5")
FALSE_FAIL = ("Check: 13-9=4, 4-4=0: ok; 9 in 7, 2, 9: 9-9=1: no; 4 in 7, 2, 9, 4: 4-4=0: ok. "
              "So the response is wrong. Score: 1")


@pytest.mark.parametrize("rule, a, b, winner", [
    ("verdict", TRUE_PASS, FALSE_FAIL, "A"),      # the pass agrees with a right response
    ("verdict", FALSE_FAIL, TRUE_PASS, "B"),
    ("verdict", TRUE_PASS, FALSE_PASS, None),     # same score: the scores cannot decide
    ("check", TRUE_PASS, FALSE_PASS, "A"),        # ... the checks can
    ("check", FALSE_PASS, TRUE_PASS, "B"),
    ("check", FALSE_PASS, FALSE_FAIL, "A"),       # agreement comes before the check
    ("check", TRUE_PASS, TRUE_PASS, None),
    ("verdict", "Score: 4", "Score: 5", "B"),     # both pass: the one nearer the oracle's 5
    ("verdict", "no score", "Score: 1", "B"),     # a parsed score beats none
])
def test_oracle_winner_hand_worked(rule, a, b, winner):
  assert oracle_winner(rule, PAIR, RIGHT, a, b) == winner


def test_oracle_winner_refuses_an_unknown_rule_and_abstains_on_an_unknown_task():
  with pytest.raises(ValueError, match="oracle meta-judge rule 'elo'"):
    oracle_winner("elo", PAIR, RIGHT, TRUE_PASS, FALSE_FAIL)
  assert oracle_winner("check", "Write a poem.", RIGHT, TRUE_PASS, FALSE_FAIL) is None


def test_template_pattern_reads_a_rendered_prompt_back():
  text = prompts.render_meta_judge_prompt(templates.META_JUDGE_TEMPLATE, PAIR, RIGHT,
                                          TRUE_PASS, FALSE_FAIL)
  fields = template_pattern(templates.META_JUDGE_TEMPLATE).fullmatch(text)
  assert fields.group("instruction", "response", "judgment_a", "judgment_b") == (
      PAIR, RIGHT, TRUE_PASS, FALSE_FAIL)
  judge_prompt = prompts.render_judge_prompt(templates.JUDGE_TEMPLATE, PAIR, RIGHT)
  assert template_pattern(templates.META_JUDGE_TEMPLATE).fullmatch(judge_prompt) is None


class _Model:
  params = "the model's parameters"

  def __init__(self):
    self.calls = []

  def generate(self, prompts_, *, n, **kwargs):
    self.calls.append(list(prompts_))
    return [[Generation("Score: 3", 2, "stop")] * n for _ in prompts_]


def test_the_wrapper_answers_meta_judge_prompts_and_passes_the_rest_on():
  model = _Model()
  policy = OracleMetaJudgePolicy(model, templates.META_JUDGE_TEMPLATE, "check")
  meta = [prompts.render_meta_judge_prompt(templates.META_JUDGE_TEMPLATE, PAIR, RIGHT, a, b)
          for a, b in ((FALSE_PASS, TRUE_PASS), (TRUE_PASS, TRUE_PASS))]
  out = policy.generate(meta, n=1, max_new_tokens=8, seed=0, share_prefix=True, desc="meta")
  assert [row[0].text for row in out] == ["Oracle (check): Winner: Judgment B",
                                          "Oracle (check): Winner: tie"]
  assert [prompts.parse_winner(row[0].text) for row in out] == ["B", None]
  assert model.calls == []
  judge = [prompts.render_judge_prompt(templates.JUDGE_TEMPLATE, PAIR, RIGHT)]
  assert policy.generate(judge, n=2, max_new_tokens=8, seed=0, share_prefix=False,
                         desc="judge")[0][1].text == "Score: 3"
  assert model.calls == [judge]
  assert policy.params == "the model's parameters"    # everything else is the model's
  with pytest.raises(ValueError, match="testbed_oracle='always_a'"):
    OracleMetaJudgePolicy(model, templates.META_JUDGE_TEMPLATE, "always_a")
