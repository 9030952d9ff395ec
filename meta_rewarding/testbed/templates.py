"""Compact judge / meta-judge templates for the synthetic testbed.

The papers' templates (``prompts.JUDGE_TEMPLATE``, ``prompts.META_JUDGE_TEMPLATE``) are ~900
tokens for the testbed's tiny tokenizer; a 1M-parameter seed model on a 2-core CPU can neither
afford to read them thousands of times during SFT nor usefully attend over them. These are the same
prompts reduced to what the testbed needs: the question, the response (and the two judgments), the
5-point scale and the exact verdict format the parsers read (``Score: <points>``,
``Winner: Judgment A|B``). They are ordinary config values (``judge.template``,
``meta_judge.template``): they pass ``prompts.validate_*_template`` and go through exactly the same
rendering, chat templating, sampling, parsing and pair-building code as the verbatim ones.

Both open with the instruction exactly as the actor sees it (the user turn starts with it). The
seed's judge writes a check of the response before its score and the meta-judge verifies the two
checks (formats: ``judging.py``), so neither has to solve the task itself. The meta-judge template puts the judgments after the question and the
response, so the sampler's shared-prefix prefill (``prompts.shared_prefix_split``) covers the
question and the response once per prompt, as with the paper's template.
"""

from __future__ import annotations

from meta_rewarding import prompts

JUDGE_TEMPLATE = (
    "{instruction}\n"
    "Response: {response}\n"
    "Check the response, then score it from 0 to 5 (5 right, 1 wrong, 0 unclear). "
    "End with \"Score: <points>\"."
)

META_JUDGE_TEMPLATE = (
    "{instruction}\n"
    "Response: {response}\n"
    "Judgment A: {judgment_a}\n"
    "Judgment B: {judgment_b}\n"
    "Verify each judgment's check and score. Which judgment is more accurate? "
    "End with \"Winner: Judgment A\" or \"Winner: Judgment B\"."
)

prompts.validate_judge_template(JUDGE_TEMPLATE)
prompts.validate_meta_judge_template(META_JUDGE_TEMPLATE)

# The Self-Taught Evaluator's two prompts, reduced the same way (``prompts.PAIRWISE_TEMPLATE`` and
# ``prompts.WORSE_RESPONSE_TEMPLATE`` are the verbatim ones). The pairwise judge checks both
# responses in the judge's format and ends with the verdict tag the shared parser reads
# (``prompts.parse_pairwise_verdict``); it takes no system prompt. The worse-response prompt keeps
# the paper's output markers, so one parser (``prompts.parse_worse_response``) reads both.
PAIRWISE_TEMPLATE = (
    "{input}\n"
    "Response A: {response_a}\n"
    "Response B: {response_b}\n"
    "Check both responses. Which one is better? End with \"[[A]]\" or \"[[B]]\"."
)

WORSE_RESPONSE_TEMPLATE = (
    "{instruction}\n"
    "Response: {response}\n"
    "Write a modified instruction, then a good answer to it that is not a good answer to the "
    "instruction above."
)
