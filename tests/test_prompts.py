"""Tests for meta_rewarding.prompts: templates, rendering, and the score / winner parsers."""

import pytest

from meta_rewarding import prompts
from meta_rewarding.prompts import (JUDGE_TEMPLATE, META_JUDGE_TEMPLATE, parse_score,
                                    parse_winner, render_judge_prompt, render_meta_judge_prompt,
                                    render_meta_judge_prompt_parts, shared_prefix_split)

# ---------------------------------------------------------------------------------------------
# Templates.

RUBRIC_SENTENCES = [
    "- Add 1 point if the response is relevant and provides some information related to the "
    "user’s inquiry, even if it is incomplete or contains some irrelevant content.",
    "- Add another point if the response addresses a substantial portion of the user’s question, "
    "but does not completely resolve the query or provide a direct answer.",
    "- Award a third point if the response answers the basic elements of the user’s question in "
    "a useful way, regardless of whether it seems to have been written by an AI Assistant or if "
    "it has elements typically found in blogs or search results.",
    "- Grant a fourth point if the response is clearly written from an AI Assistant’s "
    "perspective, addressing the user’s question directly and comprehensively, and is "
    "well-organized and helpful, even if there is slight room for improvement in clarity, "
    "conciseness or focus.",
    "- Bestow a fifth point for a response that is impeccably tailored to the user’s question by "
    "an AI Assistant, without extraneous information, reflecting expert knowledge, and "
    "demonstrating a high-quality, engaging, and insightful answer.",
]


def test_judge_template_is_verbatim():
  t = JUDGE_TEMPLATE
  assert t.startswith(
      "Review the user’s question and the corresponding response using the additive 5-point "
      "scoring system described below. Points are accumulated based on the satisfaction of each "
      "criterion:\n\n- Add 1 point")
  for line in RUBRIC_SENTENCES:
    assert "\n" + line + "\n" in t
  assert "\n\nUser: {instruction}\n\n<response>{response}</response>\n\n" in t
  assert ("After examining the user’s instruction and the response:\n\n"
          "- Briefly justify your total score, up to 100 words.\n"
          "- Conclude with the score using the format: “Score: <total points>”\n\n") in t
  assert t.endswith(
      "Remember to assess from the AI Assistant perspective, utilizing web search knowledge as "
      "necessary. To evaluate the response in alignment with this additive scoring model, we’ll "
      "systematically attribute points based on the outlined criteria.")
  # The curly quotes of the paper survive (no ASCII apostrophes or straight double quotes).
  assert "'" not in t and '"' not in t


def test_meta_judge_template_is_verbatim():
  t = META_JUDGE_TEMPLATE
  assert t.startswith(
      "Review the user’s question and the corresponding response, along with two judgments. "
      "Determine which judgment is more accurate according to the rubric provided below. The "
      "rubric used for the initial judgments is as follows:\n\n- Add 1 point")
  for line in RUBRIC_SENTENCES:
    assert "\n" + line + "\n" in t
  assert ("\n\nUser: {prompt}\n\nResponse: {response}\n\nJudgment A: {judgment_a}\n\n"
          "Judgment B: {judgment_b}\n\n") in t
  assert t.endswith(
      "After examining the original question, response, and both judgments:\n\n"
      "- Explain which judgment is more accurate according to the original rubric and why. "
      "Consider factors such as adherence to the rubric, accuracy in evaluating the response, and "
      "consistency in applying the criteria.\n"
      "- Conclude with a clear statement of which judgment is better using the format: "
      "“Winner: [Judgement A | Judgement B]”")
  assert "'" not in t and '"' not in t


def test_render_judge_prompt():
  out = render_judge_prompt(JUDGE_TEMPLATE, "What is 2+2?", "4")
  assert "\nUser: What is 2+2?\n\n<response>4</response>\n" in out
  assert "{instruction}" not in out and "{response}" not in out
  assert out.count("Score: <total points>") == 1


def test_render_meta_judge_prompt():
  out = render_meta_judge_prompt(META_JUDGE_TEMPLATE, "Q?", "R.", "J one. Score: 3",
                                 "J two. Score: 5")
  assert ("\nUser: Q?\n\nResponse: R.\n\nJudgment A: J one. Score: 3\n\n"
          "Judgment B: J two. Score: 5\n\n") in out
  for p in ("{prompt}", "{response}", "{judgment_a}", "{judgment_b}"):
    assert p not in out


def test_braces_in_user_text_are_inserted_verbatim():
  nasty_q = "Format {name} and {0} and {response} and {judgment_b} and {{x}} and {"
  nasty_r = "def f(): return {'a': 1} # {instruction} {prompt} }"
  out = render_judge_prompt(JUDGE_TEMPLATE, nasty_q, nasty_r)
  assert f"User: {nasty_q}\n\n<response>{nasty_r}</response>" in out
  out = render_meta_judge_prompt(META_JUDGE_TEMPLATE, nasty_q, nasty_r, "{judgment_b}",
                                 "{judgment_a}")
  assert (f"User: {nasty_q}\n\nResponse: {nasty_r}\n\nJudgment A: {{judgment_b}}\n\n"
          f"Judgment B: {{judgment_a}}\n\n") in out


def test_custom_templates_and_aliases():
  assert render_judge_prompt("Q={prompt} R={response}", "q", "r") == "Q=q R=r"
  assert render_judge_prompt("{response}|{instruction}|{response}", "q", "r") == "r|q|r"
  # The paper's own spelling of the meta-judge placeholders.
  t = "User: {prompt}\nResponse: {response}\nJudgment A: {judgment a}\nJudgment B: {judgment b}"
  assert render_meta_judge_prompt(t, "q", "r", "a", "b") == (
      "User: q\nResponse: r\nJudgment A: a\nJudgment B: b")


@pytest.mark.parametrize("template, missing", [
    ("User: {instruction}", "{response}"),
    ("<response>{response}</response>", "{instruction}"),
    ("User: <INSTRUCTION_HERE> <RESPONSE_HERE>", "{instruction}"),
])
def test_judge_template_missing_placeholder(template, missing):
  with pytest.raises(ValueError, match=missing.replace("{", r"\{").replace("}", r"\}")):
    render_judge_prompt(template, "q", "r")


@pytest.mark.parametrize("drop", ["{prompt}", "{response}", "{judgment_a}", "{judgment_b}"])
def test_meta_template_missing_placeholder(drop):
  template = META_JUDGE_TEMPLATE.replace(drop, "")
  with pytest.raises(ValueError, match="missing the placeholder"):
    render_meta_judge_prompt(template, "q", "r", "a", "b")
  with pytest.raises(ValueError, match="missing the placeholder"):
    render_meta_judge_prompt_parts(template, "q", "r", "a", "b")


def test_render_rejects_non_strings():
  with pytest.raises(TypeError, match="response"):
    render_judge_prompt(JUDGE_TEMPLATE, "q", None)
  with pytest.raises(TypeError, match="template"):
    render_judge_prompt(None, "q", "r")


def test_shared_prefix_split():
  split = shared_prefix_split(META_JUDGE_TEMPLATE)
  assert META_JUDGE_TEMPLATE[split:].startswith("Judgment A: {judgment_a}")
  assert META_JUDGE_TEMPLATE[:split].endswith("Response: {response}\n\n")
  # A template whose first line holds a judgment placeholder splits at the placeholder.
  assert shared_prefix_split("{prompt} {response} -> {judgment_b} vs {judgment_a}") == 23


def test_prefix_parts_concatenate_and_are_shared():
  parts = [render_meta_judge_prompt_parts(META_JUDGE_TEMPLATE, "Q {x}", "R {judgment_a}", a, b)
           for a, b in [("ja", "jb"), ("jb", "ja"), ("Score: 1", "{judgment_b} Score: 5")]]
  for (prefix, suffix), (a, b) in zip(parts, [("ja", "jb"), ("jb", "ja"),
                                              ("Score: 1", "{judgment_b} Score: 5")]):
    assert prefix + suffix == render_meta_judge_prompt(META_JUDGE_TEMPLATE, "Q {x}",
                                                       "R {judgment_a}", a, b)
    assert suffix.startswith(f"Judgment A: {a}\n\nJudgment B: {b}\n\n")
  assert len({prefix for prefix, _ in parts}) == 1
  assert parts[0][0].endswith("User: Q {x}\n\nResponse: R {judgment_a}\n\n")


def test_prefix_parts_with_question_repeated_after_judgments():
  t = "Q: {prompt}\nR: {response}\nA: {judgment_a}\nB: {judgment_b}\nAgain, Q: {prompt}"
  prefix, suffix = render_meta_judge_prompt_parts(t, "q", "r", "a", "b")
  assert (prefix, suffix) == ("Q: q\nR: r\n", "A: a\nB: b\nAgain, Q: q")


# ---------------------------------------------------------------------------------------------
# parse_score.

SCORE_CASES = [
    # Plain and formatted finals.
    ("The response is relevant and correct.\nScore: 4", 4.0),
    ("Score: 5", 5.0),
    ("Score: 0", 0.0),
    ("Score: 5.0", 5.0),
    ("score:3", 3.0),
    ("SCORE : 2", 2.0),
    ("**Score: 4.5**", 4.5),
    ("**Score:** 4", 4.0),
    ("*Score*: 3", 3.0),
    ("Score: **4**", 4.0),
    ("Score: __2__", 2.0),
    ("Score: 4.75.", 4.75),
    ("Score: 4.", 4.0),
    ("Score: .5", 0.5),
    ("Score: 4 points", 4.0),
    ("Score: 3 points.", 3.0),
    ("Final score: 4", 4.0),
    ("Total Score: 1", 1.0),
    ("“Score: 3”", 3.0),
    ("Score: [4]", 4.0),
    ("Score: <4>", 4.0),
    ("Score:\n\n5", 5.0),
    ("Score： 2", 2.0),
    ("Score: 4/5", 4.0),
    ("Score: 4 / 5", 4.0),
    ("Score: 3.5 out of 5", 3.5),
    ("Score: 4 (out of 5)", 4.0),
    # Several statements: the last numeric one decides.
    ("Relevance gives 1 point (Score: 1), then substance (Score: 2).\nScore: 3", 3.0),
    ("Initial score: 2\nOn reflection the answer is complete.\n**Score: 4**", 4.0),
    ("Score: 4\n\n- 1 point for relevance\n- 1 point for substance", 4.0),
    # A template echo after the real score holds no number, so it is no statement.
    ("Justification: fine.\nScore: 4\nConclude with the score using the format: "
     "“Score: <total points>”", 4.0),
    ("Score: 3.\nScore:", 3.0),
    # Failures.
    ("", None),
    ("The response deserves four points.", None),
    ("Score: <total points>", None),
    ("Score: four", None),
    ("Score:", None),
    ("Scores: 4", None),  # not the word "score"
    ("Score: 6", None),
    ("Score: 5.5", None),
    ("Score: 45", None),
    ("Score: -1", None),
    ("Score: −2", None),
    ("Score: 8/10", None),
    ("Score: 4 out of 10", None),
    ("Score: 4-5", None),
    ("Score: 3 to 4", None),
    ("Score: 3 or 4", None),
    ("Score: 4,5", None),
    ("Score: 4points", None),
    ("Score: 4.5.5", None),
    ("Score: 1 + 1 + 1 = 3", None),
    # The last statement decides even when it is invalid: no fall-back to an earlier one.
    ("Score: 4\nActually, Score: 7", None),
    ("Score: 3\nScore: -1", None),
    # The value stands on the label's line, or opens the next non-blank line when the label's line
    # holds nothing else; a numbered list under a label is no value (issue 14).
    ("Sure! Here's how you can complete the score:\n\n1. Carbon\n2. Hydrogen\n3. Oxygen", None),
    ("Final score:\n\n1. The response is relevant.", None),
    ("Let me tally the score:\n1) Relevance: 1 point\n2) Substance: 1 point", None),
    ("**Score:**\n\n**1.** The response is relevant.", None),
    ("Score:\n- relevance: yes\n- substance: yes", None),
    ("Score: 4\n\nScore breakdown:\n1. relevance\n2. substance", 4.0),  # a list is no statement
    ("**Score:**\n4", 4.0),
    ("**Score:**\n**4**", 4.0),
    ("Score:\n4.", 4.0),
    ("Score:\n3 points", 3.0),
    # Realistic judgments (accepted).
    ("Check: 4+9=13, target 13; 4 listed; 9 listed. So the response is right. Score: 5", 5.0),
    ("Check: no clear answer. So the response is unclear. Score: 0", 0.0),
    ("The response names both elements but gives no detail, so it earns the first two points."
     "\n\n**Final Score: 2**", 2.0),
    ("Points: relevance (1), substance (1), usefulness (1).\nTotal score: 3 points", 3.0),
    ("Score: 4 (the response misses one detail)", 4.0),
    ("The response earns points 1-3 but not the fourth.\nScore: 3", 3.0),
    ("score: 2.5/5", 2.5),
    ("Justification: clear and complete.\n\nScore: 5/5", 5.0),
    # Realistic judgments (refused).
    ("Score: N/A", None),
    ("Score: 10/10", None),
    ("I would give this response a score of 4.", None),  # no "Score:" statement
    ("Rating: 4", None),
    ("Score:\n\nThe response is relevant.", None),
]


@pytest.mark.parametrize("text, expected", SCORE_CASES)
def test_parse_score(text, expected):
  assert parse_score(text) == expected


def test_parse_score_table_is_large():
  assert len(SCORE_CASES) >= 30


def test_parse_score_of_realistic_judgment():
  judgment = (
      "The response is relevant (1 point) and addresses most of the question (2 points). It "
      "answers the basic elements usefully (3 points) and is written from an AI Assistant's "
      "perspective, directly and comprehensively (4 points), but it includes an unnecessary "
      "paragraph about history, so it misses the fifth point.\n\n**Score: 4**")
  assert parse_score(judgment) == 4.0
  # A judge echoing the prompt's template (it contains the format line) before answering.
  echoed = render_judge_prompt(JUDGE_TEMPLATE, "q", "r") + "\n\nThe answer is perfect. Score: 5"
  assert parse_score(echoed) == 5.0
  assert parse_score(render_judge_prompt(JUDGE_TEMPLATE, "q", "r")) is None


def test_parse_score_rejects_non_string():
  with pytest.raises(TypeError):
    parse_score(None)


# ---------------------------------------------------------------------------------------------
# parse_winner.

WINNER_CASES = [
    ("Winner: Judgment A", "A"),
    ("Winner: Judgment B", "B"),
    ("Winner: [Judgement B]", "B"),
    ("Winner: [Judgement A]", "A"),
    ("**Winner:** Judgment A", "A"),
    ("**Winner: Judgement B**", "B"),
    ("Winner: **Judgment B**", "B"),
    ("winner: judgement a.", "A"),
    ("WINNER: JUDGMENT B", "B"),
    ("Winner: “Judgement A”", "A"),
    ("Winner: Judgment (B)", "B"),
    ("Winner: Judgement [A]", "A"),
    ("The winner: Judgment B.", "B"),
    ("**Winner:**\n\nJudgment B is more accurate.", "B"),
    ("Judgment A awards 5 points although the response misses part of the question; Judgment B "
     "correctly stops at 4.\n\nWinner: [Judgement B]", "B"),
    # Both named, but the statement opens with one that is not joined to the other.
    ("Winner: Judgment B (Judgment A overrated the response)", "B"),
    ("Winner: Judgement A, since Judgement B ignores the rubric.", "A"),
    # The last statement naming a judgment decides.
    ("Winner: Judgment A\nOn second thought...\nWinner: Judgment B", "B"),
    ("Judgment A is better. Judgment B misses the error. Winner: Judgment A", "A"),
    ("Winner: Judgment B\nWinner: tie", "B"),  # statements naming nothing are skipped
    # Failures.
    ("", None),
    ("Judgment A is more accurate.", None),  # no Winner: statement
    ("Winner: A", None),  # bare letter: not a judgment's name
    ("Winner: tie", None),
    ("Winner:", None),
    ("Winner: Judgment Assessment pending", None),
    ("Winner: [Judgement A | Judgement B]", None),  # template echo names both
    ("Winner: Judgment A or Judgment B", None),
    ("Winner: Judgment A or B", None),
    ("Winner: Judgment A and Judgment B are equally accurate", None),
    ("Winner: Judgment A / Judgment B", None),
    ("Winner: neither Judgment A nor Judgment B", None),
    ("Winner: not Judgment A but Judgment B", None),
    ("Winner: Judgment A\n\nConclude using the format: “Winner: [Judgement A | Judgement B]”",
     None),
    ("Winners: Judgment A", None),
    # Only a well-formed name opening the statement is a verdict (issue 14).
    ("Judgment B: [Winner: Adjudgement A | Judgement B: Adjudgement B]", None),
    ("Winner: Adjudgement A", None),
    ("Winner: I think Judgment A is better", None),
    ("Winner: the more accurate one is Judgment B", None),
    ("Winner: Judgments A and B are equally accurate", None),
    ("Winner: Both judgments are flawed", None),
    ("Winner: The Judgement A", None),
    ("Winner: Judgment B\nWinner: Adjudgement A", None),  # the last attempt decides, even if bad
    # Realistic meta-judgments (accepted).
    ("A: check false. B: check true, score fits. Winner: Judgment B", "B"),
    ("A: check true, score fits. B: check false. Winner: Judgment A", "A"),
    ("**Winner: [Judgement A]**", "A"),
    ("Winner: Judgment B is more accurate because it applies the rubric consistently.", "B"),
    ("Winner:\nJudgement A", "A"),
    ("After comparing both judgments against the rubric:\n\n### Winner: Judgment A", "A"),
    ("Winner: Judgment B's assessment follows the rubric.", "B"),
    ("Winner: **[Judgement B]**\n\nJudgment A overrated the response.", "B"),
]


@pytest.mark.parametrize("text, expected", WINNER_CASES)
def test_parse_winner(text, expected):
  assert parse_winner(text) == expected


def test_parse_winner_table_is_large():
  assert len(WINNER_CASES) >= 30


def test_parse_winner_of_rendered_prompt_is_none():
  # The meta-judge prompt itself holds the format line, which names both judgments.
  prompt = render_meta_judge_prompt(META_JUDGE_TEMPLATE, "q", "r", "Score: 3", "Score: 4")
  assert parse_winner(prompt) is None
  assert parse_winner(prompt + "\n\nJudgment B follows the rubric. Winner: Judgement B") == "B"


def test_parse_winner_rejects_non_string():
  with pytest.raises(TypeError):
    parse_winner(b"Winner: Judgment A")


def test_module_imports_only_stdlib():
  # The parsers are used in offline analysis; keep the module light.
  with open(prompts.__file__, encoding="utf-8") as f:
    src = f.read()
  assert "import numpy" not in src and "import jax" not in src
