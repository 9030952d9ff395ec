"""Judge and meta-judge prompt templates, their rendering, and the parsers for their verdicts.

Pure Python (``re`` only): no jax, no numpy, so the pipeline, the testbed and offline analysis of
stored judgments can all import it cheaply.

Templates (docs/design.md#prompts-and-their-sources) are kept verbatim from the papers; only the slots for the user's text use
named placeholders. Templates are config values, so every render function takes the template:

  judge template       ``{instruction}`` (or ``{prompt}``) and ``{response}``
  meta-judge template  the same, plus ``{judgment_a}`` and ``{judgment_b}``
  Self-Taught Evaluator (at the end of this module): the pairwise judge ``{input}``,
  ``{response_a}``, ``{response_b}``; the worse-response prompt ``{instruction}``, ``{response}``
  (parsed by ``parse_worse_response``); the categorisation prompt ``{instruction}``
  (``parse_category``)

(``{prompt}``, ``{judgment a}`` and ``{judgment b}`` -- the paper's own spellings -- are accepted
as aliases, so a template copied from the Meta-Rewarding paper works as is.)

Rendering is a single pass over the template: placeholders are found in the template only, never
in the substituted text, so user text containing braces or even literal placeholder names
(``"{response}"``) is inserted untouched. ``str.format`` is not used for the same reason.

Parsing rules (shared contract with the pipeline; every failure is ``None``, counted by the caller,
never guessed):

``parse_score``
  * A *score statement* is the word ``score`` (case-insensitive, whole word: ``Final score`` counts,
    ``scores`` does not), optional markdown/spaces, a colon, then optional markdown, spaces, one
    opening bracket or quote, and a number (optionally signed, optionally fractional).
  * The number stands on the label's own line. Only when the rest of that line is blank (or
    markdown: ``**Score:**``) may it open the next non-blank line
    (``**Score:**\\n4``) -- and there a numbered-list marker (``1. Carbon``, ``2) ...``) is a list
    under the label, not a value: ``the score:\\n\\n1. The response ...`` is no statement.
    ``Score:`` labels followed by something that is not a number (``Score: <total points>`` echoed
    from the template, ``Score:`` at a truncated end, a list) are not statements and are skipped.
  * The LAST statement decides. If it is malformed or out of range the result is ``None`` -- there
    is no fall-back to an earlier statement (the judge's final word was unusable; an earlier number
    may be an intermediate tally).
  * Valid values lie in [0, 5]. ``4/5`` and ``4 out of 5`` mean 4 points of 5 and give 4.0; any
    other denominator (``8/10``) is a failure rather than a rescaling.
  * Malformed: a number glued to a letter or digit group (``4points``, ``4,5``, ``4.5.5`` is read
    as 4.5 followed by ``.5`` and rejected), a range (``4-5``, ``3 to 4``, ``3 or 4``), arithmetic
    (``1 + 1 + 1 = 3``).  Negative numbers are read with their sign, so ``Score: -1`` is out of
    range (a failure), not ``1``.

``parse_winner``
  * A *winner statement* is the word ``winner`` (whole word), optional markdown, a colon, then the
    rest of that line (or, if that is blank, the next non-blank line).
  * Statements that mention no judgment at all (``Winner: tie``) are skipped. Any other statement
    must OPEN with a well-formed name -- ``Judgment A`` or ``Judgment B`` (also ``Judgement``, any
    case, after markdown, brackets or quotes, and with brackets, quotes or markdown between the word
    and the letter) -- or it is malformed: ``Winner: Adjudgement A | Judgement B``, ``Winner: I
    think Judgment A``, ``Winner: Judgments A and B``, ``Winner: Judgment Assessment``. Bare letters
    (``Winner: A``) are not names: the template asks for the full name.
  * The opening name is the verdict unless the other judgment is joined to it by ``|``, ``/``,
    ``or``, ``and``, ``nor``, ``vs`` (``[Judgement A | Judgement B]`` echoed from the template,
    ``Judgment A or B``): then the statement names both. Later mentions do not change it
    (``Winner: Judgment B (Judgment A overrates it)`` -> B).
  * The LAST statement mentioning a judgment decides (the spec's literal rule); a malformed one or
    one naming both gives ``None``. Note the asymmetry with scores, which follows the spec: a
    ``Score: <total points>`` echo after the real score is skipped (it holds no number), but a
    ``Winner: [Judgement A | Judgement B]`` echo after the real verdict is the last statement
    naming a judgment, so it makes the result ``None``.
"""

from __future__ import annotations

import re

# --------------------------------------------------------------------------------------------
# Templates.

# The five additive-rubric bullets, shared verbatim by both templates.
RUBRIC = (
    "- Add 1 point if the response is relevant and provides some information related to the "
    "user’s inquiry, even if it is incomplete or contains some irrelevant content.\n"
    "- Add another point if the response addresses a substantial portion of the user’s question, "
    "but does not completely resolve the query or provide a direct answer.\n"
    "- Award a third point if the response answers the basic elements of the user’s question in a "
    "useful way, regardless of whether it seems to have been written by an AI Assistant or if it "
    "has elements typically found in blogs or search results.\n"
    "- Grant a fourth point if the response is clearly written from an AI Assistant’s perspective, "
    "addressing the user’s question directly and comprehensively, and is well-organized and "
    "helpful, even if there is slight room for improvement in clarity, conciseness or focus.\n"
    "- Bestow a fifth point for a response that is impeccably tailored to the user’s question by "
    "an AI Assistant, without extraneous information, reflecting expert knowledge, and "
    "demonstrating a high-quality, engaging, and insightful answer."
)

# Self-Rewarding, Figure 2 (<INSTRUCTION_HERE> / <RESPONSE_HERE> became named placeholders).
JUDGE_TEMPLATE = (
    "Review the user’s question and the corresponding response using the additive 5-point "
    "scoring system described below. Points are accumulated based on the satisfaction of each "
    "criterion:\n"
    "\n"
    f"{RUBRIC}\n"
    "\n"
    "User: {instruction}\n"
    "\n"
    "<response>{response}</response>\n"
    "\n"
    "After examining the user’s instruction and the response:\n"
    "\n"
    "- Briefly justify your total score, up to 100 words.\n"
    "- Conclude with the score using the format: “Score: <total points>”\n"
    "\n"
    "Remember to assess from the AI Assistant perspective, utilizing web search knowledge as "
    "necessary. To evaluate the response in alignment with this additive scoring model, we’ll "
    "systematically attribute points based on the outlined criteria."
)

# Meta-Rewarding, Figure 2 (as quoted in seeds/000_*.txt), laid out with bullets on their own
# lines like the judge template.
META_JUDGE_TEMPLATE = (
    "Review the user’s question and the corresponding response, along with two judgments. "
    "Determine which judgment is more accurate according to the rubric provided below. The rubric "
    "used for the initial judgments is as follows:\n"
    "\n"
    f"{RUBRIC}\n"
    "\n"
    "User: {prompt}\n"
    "\n"
    "Response: {response}\n"
    "\n"
    "Judgment A: {judgment_a}\n"
    "\n"
    "Judgment B: {judgment_b}\n"
    "\n"
    "After examining the original question, response, and both judgments:\n"
    "\n"
    "- Explain which judgment is more accurate according to the original rubric and why. Consider "
    "factors such as adherence to the rubric, accuracy in evaluating the response, and "
    "consistency in applying the criteria.\n"
    "- Conclude with a clear statement of which judgment is better using the format: "
    "“Winner: [Judgement A | Judgement B]”"
)

# Slot name -> accepted placeholder spellings (canonical first).
_SLOTS = {
    "instruction": ("{instruction}", "{prompt}"),
    "response": ("{response}",),
    "judgment_a": ("{judgment_a}", "{judgment a}"),
    "judgment_b": ("{judgment_b}", "{judgment b}"),
}
_JUDGE_SLOTS = ("instruction", "response")
_META_SLOTS = ("instruction", "response", "judgment_a", "judgment_b")
_JUDGMENT_SLOTS = ("judgment_a", "judgment_b")


def _placeholder_regex(slots):
  spellings = [s for slot in slots for s in _SLOTS[slot]]
  # Longest first so no spelling shadows another.
  return re.compile("|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True)))


_SPELLING_TO_SLOT = {s: slot for slot, spellings in _SLOTS.items() for s in spellings}
_JUDGE_RE = _placeholder_regex(_JUDGE_SLOTS)
_META_RE = _placeholder_regex(_META_SLOTS)
_JUDGMENT_RE = _placeholder_regex(_JUDGMENT_SLOTS)


def _check_template(template, slots, kind):
  if not isinstance(template, str):
    raise TypeError(f"{kind} template must be a str, got {type(template).__name__}")
  for slot in slots:
    spellings = _SLOTS[slot]
    if not any(s in template for s in spellings):
      alias = f" (or {', '.join(spellings[1:])})" if len(spellings) > 1 else ""
      raise ValueError(
          f"{kind} template is missing the placeholder {spellings[0]}{alias}; "
          f"it must contain {', '.join(_SLOTS[s][0] for s in slots)}")


def _check_text(name, value):
  if not isinstance(value, str):
    raise TypeError(f"{name} must be a str, got {type(value).__name__}")


def _substitute(template, regex, values):
  # One pass over the template: substituted text is never scanned again.
  return regex.sub(lambda m: values[_SPELLING_TO_SLOT[m.group(0)]], template)


def validate_judge_template(template: str) -> None:
  """Raises ValueError naming the first missing placeholder of a judge template."""
  _check_template(template, _JUDGE_SLOTS, "judge")


def validate_meta_judge_template(template: str) -> None:
  """Raises ValueError naming the first missing placeholder of a meta-judge template."""
  _check_template(template, _META_SLOTS, "meta-judge")


def render_judge_prompt(template: str, instruction: str, response: str) -> str:
  """The judge prompt for one (instruction, response); wrap it in the chat template afterwards."""
  validate_judge_template(template)
  _check_text("instruction", instruction)
  _check_text("response", response)
  return _substitute(template, _JUDGE_RE, {"instruction": instruction, "response": response})


def render_meta_judge_prompt(template: str, instruction: str, response: str, judgment_a: str,
                             judgment_b: str) -> str:
  """The meta-judge prompt comparing judgment A (first position) with judgment B (second)."""
  prefix, suffix = render_meta_judge_prompt_parts(template, instruction, response, judgment_a,
                                                  judgment_b)
  return prefix + suffix


def shared_prefix_split(template: str) -> int:
  """Index into a meta-judge template where the judgment-dependent part starts.

  Everything before it is identical for all battles of one (prompt, response), so the sampler can
  prefill it once and reuse its KV cache. The split is placed at the start of the line holding the
  first judgment placeholder (not right at the placeholder) so that the boundary falls after a
  newline: BPE tokenizers never merge a newline with the following word, so tokenizing prefix and
  suffix separately gives the same tokens as tokenizing the whole prompt. If that line is the
  first line, the split is at the placeholder itself.
  """
  validate_meta_judge_template(template)
  first = _JUDGMENT_RE.search(template).start()
  line_start = template.rfind("\n", 0, first) + 1
  return line_start if line_start > 0 else first


def render_meta_judge_prompt_parts(template: str, instruction: str, response: str,
                                   judgment_a: str, judgment_b: str) -> tuple[str, str]:
  """Renders a meta-judge prompt as ``(shared_prefix, suffix)``; ``prefix + suffix`` is the prompt.

  ``shared_prefix`` depends only on (template, instruction, response): it is the same string for
  every battle of one prompt's judgments. ``suffix`` holds the judgments (and whatever else the
  template puts after them, rendered too).
  """
  split = shared_prefix_split(template)
  for name, value in (("instruction", instruction), ("response", response),
                      ("judgment_a", judgment_a), ("judgment_b", judgment_b)):
    _check_text(name, value)
  values = {"instruction": instruction, "response": response, "judgment_a": judgment_a,
            "judgment_b": judgment_b}
  # Placeholders never straddle the split (it lies on a line start or on a placeholder start),
  # so rendering the two halves separately equals rendering the whole.
  return (_substitute(template[:split], _META_RE, values),
          _substitute(template[split:], _META_RE, values))


# --------------------------------------------------------------------------------------------
# Parsers.

SCORE_MIN = 0.0
SCORE_MAX = 5.0

_INLINE_MD = r"[ \t*_`]*"  # markdown emphasis / code marks and spaces, never a line break
_SCORE_LABEL = re.compile(r"\bscore\b" + _INLINE_MD + r"[:：]", re.IGNORECASE)
_NUMBER = r"[-+−–]?(?:\d+(?:\.\d+)?|\.\d+)"
_SCORE_VALUE = re.compile(
    _INLINE_MD + r"(?P<open>[\[(<“\"'])?" + _INLINE_MD +
    r"(?P<num>" + _NUMBER + r")" +
    r"(?:" + _INLINE_MD + r"(?:/|\bout[ \t]+of\b)" + _INLINE_MD + r"(?P<den>" + _NUMBER + r"))?",
    re.IGNORECASE)
# The rest of a label's line and any blank lines after it, when they hold nothing but markdown:
# "**Score:**\n4" puts the value on the next line.
_TO_NEXT_LINE = re.compile(_INLINE_MD + r"(?:\r?\n" + _INLINE_MD + r")+")
# A number opening a line followed by "." or ")" and text is a numbered list ("1. Carbon").
_LIST_MARKER = re.compile(r"[.)][*_`]*[ \t]+\S")
# What may not follow the number: glued letters/digits (4points, 4,5), ranges, arithmetic.
# Only the rest of the line is inspected, so a bullet list after the score ("- 1 point...") is no
# range.
_SCORE_BAD_TAIL = re.compile(
    r"(?:[^\W_]|[.,]\d|" + _INLINE_MD + r"(?:[-–—+=×]|\bto\b|\bor\b)" + _INLINE_MD + r"[-+]?\.?\d)",
    re.IGNORECASE)


def _to_float(s):
  return float(s.replace("−", "-").replace("–", "-"))


def _score_value(text, label_end):
  """The value match of the score label ending at `label_end`, or None if it is no statement."""
  m = _SCORE_VALUE.match(text, label_end)
  if m is not None:
    return m
  gap = _TO_NEXT_LINE.match(text, label_end)
  if gap is None:
    return None
  m = _SCORE_VALUE.match(text, gap.end())
  if (m is not None and m.group("open") is None and m.group("den") is None
      and _LIST_MARKER.match(text, m.end())):
    return None
  return m


def parse_score(text: str) -> float | None:
  """The judge's score: the number of the last ``Score: <number>`` statement, in [0, 5], else None.

  See the module docstring for the exact rules.
  """
  if not isinstance(text, str):
    raise TypeError(f"judgment must be a str, got {type(text).__name__}")
  last = None
  for label in _SCORE_LABEL.finditer(text):
    m = _score_value(text, label.end())
    if m is not None:
      last = m
  if last is None:
    return None
  if _SCORE_BAD_TAIL.match(text, last.end()):
    return None
  value = _to_float(last.group("num"))
  if last.group("den") is not None and _to_float(last.group("den")) != SCORE_MAX:
    return None
  if not SCORE_MIN <= value <= SCORE_MAX:
    return None
  return value


_WINNER_LABEL = re.compile(r"\bwinner\b[*_`\s]*[:：]", re.IGNORECASE)
# Anything judgment-like, even inside a word ("Adjudgement", "judgments"): a statement holding one
# is a verdict attempt, to be read or refused, never skipped.
_MENTION = re.compile(r"judge?ment", re.IGNORECASE)
_JUDGMENT_NAME = re.compile(
    r"\bjudge?ment\b[\s*_`\"'“”‘’\[\](){}<>:#-]*\b(?P<letter>[ab])(?![a-z0-9])", re.IGNORECASE)
_OPENER = re.compile(r"[\s*_`\"'“”‘’\[\](){}<>]*")
# A name joined by an alternative/conjunction to another name or bare letter: "A | Judgement B",
# "A or B", "A and Judgment B".
_JOINED_TO_OTHER = re.compile(
    r"[\s*_`\"'“”‘’\[\](){}<>,]*(?:\||/|\bor\b|\band\b|\bnor\b|\bvs\b\.?|\bversus\b)"
    r"[\s*_`\"'“”‘’\[\](){}<>:#-]*(?:\bjudge?ments?\b[\s*_`\"'“”‘’\[\](){}<>:#-]*)?"
    r"\b[ab](?![a-z0-9])",
    re.IGNORECASE)
_BLANKISH = re.compile(r"[\s*_`\"'“”‘’\[\](){}<>.,:;-]*")


def _winner_values(text):
  """The value text of each ``Winner:`` statement, in order."""
  labels = list(_WINNER_LABEL.finditer(text))
  for i, label in enumerate(labels):
    end = labels[i + 1].start() if i + 1 < len(labels) else len(text)
    body = text[label.end():end]
    line, newline, rest = body.partition("\n")
    if _BLANKISH.fullmatch(line) and newline:
      # "**Winner:**" on its own line: the verdict is on the next non-blank line.
      for next_line in rest.split("\n"):
        if not _BLANKISH.fullmatch(next_line):
          line = next_line
          break
    yield line


def _named_winner(value):
  """'A'/'B' for a well-formed verdict; 'bad' for a malformed one or one naming both; None if the
  statement mentions no judgment (it is then no verdict at all)."""
  if not _MENTION.search(value):
    return None
  name = _JUDGMENT_NAME.match(value, _OPENER.match(value).end())
  if name is None or _JOINED_TO_OTHER.match(value, name.end()):
    return "bad"
  return name.group("letter").upper()


def parse_winner(text: str) -> str | None:
  """The meta-judge's verdict, ``"A"`` or ``"B"``, from the last ``Winner:`` statement, else None.

  See the module docstring for the exact rules.
  """
  if not isinstance(text, str):
    raise TypeError(f"meta-judgment must be a str, got {type(text).__name__}")
  verdict = None
  for value in _winner_values(text):
    named = _named_winner(value)
    if named is not None:
      verdict = named
  return verdict if verdict in ("A", "B") else None


# ------------------------------------------------------------------------------------------------
# The Self-Taught Evaluator's pairwise judge (Wang et al. 2024, arXiv 2408.02666): the MT-Bench
# pairwise prompt without its tie option, as the STE reference implementation and RewardBench send
# it -- a system message, then the question and the two answers. Used by `judge_eval`.

PAIRWISE_SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. You should choose the assistant that follows "
    "the user's instructions and answers the user's question better. Your evaluation should "
    "consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level "
    "of detail of their responses. Begin your evaluation by comparing the two responses and "
    "provide a short explanation. Avoid any position biases and ensure that the order in which the "
    "responses were presented does not influence your decision. Do not allow the length of the "
    "responses to influence your evaluation. Do not favor certain names of the assistants. Be as "
    "objective as possible. After providing your explanation, output your final verdict by "
    "strictly following this format: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B "
    "is better."
)

PAIRWISE_TEMPLATE = (
    "[User Question]\n"
    "{input}\n"
    "\n"
    "[The Start of Assistant A's Answer]\n"
    "{response_a}\n"
    "[The End of Assistant A's Answer]\n"
    "\n"
    "[The Start of Assistant B's Answer]\n"
    "{response_b}\n"
    "[The End of Assistant B's Answer]\n"
)


def parse_pairwise_verdict(text: str) -> str | None:
  """"A" or "B" from a pairwise judgment's [[A]] / [[B]] tag; None when it has both tags or
  neither (the STE reference implementation's rule; a [[C]] tie is no verdict either)."""
  if not isinstance(text, str):
    raise TypeError(f"judgment must be a str, got {type(text).__name__}")
  a, b = "[[A]]" in text, "[[B]]" in text
  if a == b:
    return None
  return "A" if a else "B"



# The Self-Taught Evaluator's evaluation-plan judge prompt, verbatim from the reference
# implementation (facebookresearch/RAM, projects/self_taught_evaluator/data/prompts/eval_plan.prompt:
# the prompt RAM generates its training judgments with, README "Generate judgement"), with the
# project's placeholder names: {response_a} for the file's {generation} and {response_b} for its
# {generation2}. Everything else is the file's: one user message (no system prompt), the typo
# "evaluaiton", the backslashes before the quotes around [[A]] / [[B]], the space after "is better."
# and the final newline. Its verdict format is the pairwise prompt's ([[A]] / [[B]]), read by
# `parse_pairwise_verdict` with RAM's rule (src/utils.py parse_judgement: both tags or neither
# is no verdict).
EVAL_PLAN_SYSTEM_PROMPT = ""
EVAL_PLAN_TEMPLATE = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. You should choose the assistant that follows "
    "the user's instructions and answers the user's question better. Begin your evaluation by "
    "first verifying whether each response contains any obvious or subtle errors. Then propose an "
    "appropriate evaluaiton rubric, e.g. 1-5 criteria that are important for evaluating responses "
    "to this specific user question. Continue your evaluation by checking each response carefully "
    "along those criteria. Based on the analysis in previous steps, choose which response is "
    "better overall. Avoid any position biases and ensure that the order in which the responses "
    "were presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Do not favor certain names of the assistants. Be as objective as "
    "possible. After providing your evaluation, output your final verdict by strictly following "
    "this format: \\\"[[A]]\\\" if assistant A is better, \\\"[[B]]\\\" if assistant B is better. \n"
    "\n"
) + PAIRWISE_TEMPLATE  # the question and the two answers, laid out as in the pairwise prompt

# The Self-Taught Evaluator's worse-response prompt, verbatim from the reference implementation
# (facebookresearch/RAM, projects/self_taught_evaluator/data/prompts/worse_response.prompt), with the
# project's placeholder names: {instruction} for the file's {input} and {response} for its
# {generation}. Everything else, the trailing space after "AI Assistant." included, is the file's.
WORSE_RESPONSE_TEMPLATE = (
    "Below is a conversation between a user and an AI Assistant. \n"
    "\n"
    "[User Question]\n"
    "{instruction}\n"
    "\n"
    "[The start of Assistant's Answer]\n"
    "{response}\n"
    "[The end of Assistant's Answer]\n"
    "\n"
    "Please first generate a modified instruction that is highly relevant but not semantically "
    "identical to the instruction above from the user. Then write a high-quality answer which is "
    "a good response to the modified instruction but not a good response to the original user "
    "question. IMPORTANT: Please strictly follow the following format:\n"
    "[User Question Modified]\n"
    "<provide a modified instruction here>\n"
    "\n"
    "[The start of Assistant's answer to the modified instruction]\n"
    "<provide a high-quality response to the modified instruction>\n"
    "[The end of Assistant's answer to the modified instruction]\n"
)

# The instruction-categorisation prompt of the STE paper's instruction selection (Wang et al. 2024,
# section 3.1 and appendix), as recalled when this was written: the paper's text was not at hand to
# check it word for word, so treat it as a close reconstruction, not a verbatim copy. It asks for
# `Category: <name>`, which `parse_category` reads; the pipeline keeps the instructions whose
# category is in `ste.categories`.
CATEGORY_TEMPLATE = (
    "I have an instruction below that I'd like you to perform three steps of analysis about the "
    "instruction:\n"
    "\n"
    "<instruction>{instruction}</instruction>\n"
    "\n"
    "Firstly, categorize the instruction above into one of the following categories:\n"
    "\n"
    "Coding\n"
    "Mathematical reasoning\n"
    "Asking for Advice\n"
    "Brainstorming\n"
    "Classification\n"
    "Closed Question Answering\n"
    "Creative Writing\n"
    "Extraction\n"
    "Inhabiting a Character/Persona\n"
    "Open Question Answering\n"
    "Rewriting\n"
    "Summarization\n"
    "Knowledge and Reasoning\n"
    "Humanity, History or Social Studies\n"
    "Other\n"
    "\n"
    "Secondly, score the instruction in terms of complexity: how complex you think it is to answer "
    "from 1-10 (where 10 is a complex question whereby first reasoning or breaking down the "
    "question into multiple subquestions for example might help improve the answer).\n"
    "\n"
    "Thirdly, indicate how long you think the response to the instruction should be, either (a) 1 "
    "sentence, (b) 1-3 sentences, (c) 1 paragraph, (d) 2 paragraphs, or (e) 3 paragraphs or "
    "more.\n"
    "\n"
    "Provide your final response in the following format:\n"
    "Category: <one of the categories above>\n"
    "Complexity: <score out of 10>\n"
    "Length: <length category>. Do not provide the actual response."
)

_PAIRWISE_SLOTS = ("{input}", "{response_a}", "{response_b}")
_PAIRWISE_RE = re.compile("|".join(re.escape(s) for s in _PAIRWISE_SLOTS))
_INSTRUCTION_RESPONSE_SLOTS = ("{instruction}", "{response}")
_INSTRUCTION_RESPONSE_RE = re.compile("|".join(re.escape(s) for s in _INSTRUCTION_RESPONSE_SLOTS))
_INSTRUCTION_RE = re.compile(re.escape("{instruction}"))


def _check_slots(template, slots, kind):
  if not isinstance(template, str):
    raise TypeError(f"{kind} template must be a str, got {type(template).__name__}")
  for slot in slots:
    if slot not in template:
      raise ValueError(f"{kind} template has no {slot} placeholder")


def validate_pairwise_template(template: str) -> None:
  """Raises ValueError naming the first missing placeholder ({input}, {response_a}, {response_b})."""
  _check_slots(template, _PAIRWISE_SLOTS, "pairwise judge")


def validate_worse_response_template(template: str) -> None:
  """Raises ValueError naming the first missing placeholder ({instruction}, {response})."""
  _check_slots(template, _INSTRUCTION_RESPONSE_SLOTS, "worse-response")


def validate_category_template(template: str) -> None:
  """Raises ValueError unless the template has an {instruction} placeholder."""
  _check_slots(template, ("{instruction}",), "categorisation")


def render_pairwise_prompt(template: str, instruction: str, response_a: str,
                           response_b: str) -> str:
  """The pairwise judge prompt (assistant A's answer first). One pass, like the other renderers:
  braces in the user's text stay as they are (`str.format` would choke on them)."""
  validate_pairwise_template(template)
  values = {"{input}": instruction, "{response_a}": response_a, "{response_b}": response_b}
  for name, value in values.items():
    _check_text(name.strip("{}"), value)
  return _PAIRWISE_RE.sub(lambda m: values[m.group(0)], template)


def render_worse_response_prompt(template: str, instruction: str, response: str) -> str:
  """The prompt asking for a modified instruction and a good answer to it (`WORSE_RESPONSE_TEMPLATE`)."""
  validate_worse_response_template(template)
  _check_text("instruction", instruction)
  _check_text("response", response)
  values = {"{instruction}": instruction, "{response}": response}
  return _INSTRUCTION_RESPONSE_RE.sub(lambda m: values[m.group(0)], template)


def render_category_prompt(template: str, instruction: str) -> str:
  """The instruction-categorisation prompt (`CATEGORY_TEMPLATE`)."""
  validate_category_template(template)
  _check_text("instruction", instruction)
  return _INSTRUCTION_RE.sub(lambda m: instruction, template)


# The worse-response prompt's output markers (matched case-insensitively, with any run of spaces).
_MODIFIED_MARK = re.compile(r"\[\s*User\s+Question\s+Modified\s*\]", re.IGNORECASE)
_ANSWER_START = re.compile(
    r"\[\s*The\s+start\s+of\s+Assistant'?s\s+answer\s+to\s+the\s+modified\s+instruction\s*\]",
    re.IGNORECASE)
_ANSWER_END = re.compile(
    r"\[\s*The\s+end\s+of\s+Assistant'?s\s+answer\s+to\s+the\s+modified\s+instruction\s*\]",
    re.IGNORECASE)


def parse_worse_response(text: str, *, require_end: bool = False) -> tuple[str, str] | None:
  """(modified instruction, its answer) from a reply to the worse-response prompt, else None.

  The modified instruction is the text between the first "[User Question Modified]" and the first
  "[The start of Assistant's answer to the modified instruction]" after it; the answer runs from
  there to the first "[The end of Assistant's answer to the modified instruction]". The end marker
  may be missing (a generation that stopped at EOS right after the answer is complete); with
  `require_end` (the caller's choice for a generation cut by the length limit, whose answer may be
  cut mid-sentence) its absence is a failure. Both parts must be non-empty after stripping.
  Markers are matched case-insensitively with any spacing; anything before the first marker
  (a preamble) is ignored.
  """
  if not isinstance(text, str):
    raise TypeError(f"worse-response reply must be a str, got {type(text).__name__}")
  modified = _MODIFIED_MARK.search(text)
  if modified is None:
    return None
  start = _ANSWER_START.search(text, modified.end())
  if start is None:
    return None
  end = _ANSWER_END.search(text, start.end())
  if end is None and require_end:
    return None
  instruction = text[modified.end():start.start()].strip()
  answer = text[start.end():end.start() if end else len(text)].strip()
  if not instruction or not answer:
    return None
  return instruction, answer


_CATEGORY_LINE = re.compile(r"^[ \t*_#>-]*category[ \t*_]*[:：][ \t*_]*(?P<name>[^\n]*?)[ \t*_.]*$",
                            re.IGNORECASE | re.MULTILINE)


def parse_category(text: str) -> str | None:
  """The category named by the last `Category: <name>` line of a categorisation reply (markdown
  bold and a trailing full stop tolerated, `<...>` brackets removed), else None."""
  if not isinstance(text, str):
    raise TypeError(f"categorisation reply must be a str, got {type(text).__name__}")
  names = [m.group("name").strip().strip("<>").strip() for m in _CATEGORY_LINE.finditer(text)]
  names = [n for n in names if n]
  return names[-1] if names else None


_COMPLEXITY_LINE = re.compile(
    r"^[ \t*_#>-]*complexity[ \t*_]*[:：][ \t*_<]*(?P<score>\d+(?:\.\d+)?)(?:[ \t]*(?:/|out of)"
    r"[ \t]*10)?[ \t*_>.]*$", re.IGNORECASE | re.MULTILINE)


def parse_complexity(text: str) -> float | None:
  """The score of the last `Complexity: <score>` line of a categorisation reply (`CATEGORY_TEMPLATE`
  asks for a score out of 10; "7/10" and "7 out of 10" are read as 7), else None."""
  if not isinstance(text, str):
    raise TypeError(f"categorisation reply must be a str, got {type(text).__name__}")
  scores = [float(m.group("score")) for m in _COMPLEXITY_LINE.finditer(text)]
  return scores[-1] if scores else None
