"""Measuring a model against the testbed's oracle on held-out tasks: what a run's held-out
evaluation (`testbed.evaluate.heldout_evaluator`) and the seed's build report.

  `eval_task_list`   held-out tasks of the `eval` split (the development set, or a fresh one)
  `measure`          a model's oracle figures on them (actor, judge, meta-judge, and the
                     Self-Taught Evaluator's pairwise judge and worse responses)

jax comes in with the sampler, imported inside `measure`: the pipeline imports this module (through
`testbed.evaluate`) and must stay importable without jax.
"""

from __future__ import annotations

import random
from typing import Sequence

from meta_rewarding import prompts
from meta_rewarding.config import rules as config_rules
from meta_rewarding.testbed import judging, oracle, templates
from meta_rewarding.testbed.responses import (MODIFIED_ANSWER_END, MODIFIED_ANSWER_START,
                                              MODIFIED_QUESTION, meta_battle, plausible_mistake,
                                              right_answer, sample_response)
from meta_rewarding.testbed.settings import (ACTOR_MAX_NEW_TOKENS, JUDGE_MAX_NEW_TOKENS,
                                             META_MAX_NEW_TOKENS, PAIRWISE_MAX_NEW_TOKENS,
                                             PIPELINE_SAMPLING, WORSE_MAX_NEW_TOKENS)
from meta_rewarding.testbed.tasks import FAMILIES, Task, generate_tasks, task_from_instruction

EVAL_SEED = 99991          # held-out evaluation tasks (never in the demonstrations)
# The held-out draws the seeds v1-v6 and the benches were designed on (configs/local_cpu.py: 12 and
# 100; bench/testbed.py and the seed builder: 200; bench/testbed.py's example: 40): a development
# set, not a test set.
DEVELOPMENT_EVAL_SIZES = (12, 40, 100, 200)


def development_eval_instructions() -> set[str]:
  """Every instruction of the development held-out draws (`DEVELOPMENT_EVAL_SIZES`)."""
  return {t.instruction for size in DEVELOPMENT_EVAL_SIZES
          for t in generate_tasks(EVAL_SEED, size, split="eval")}


def eval_task_list(n: int, task_seed: int = 0) -> list[Task]:
  """`n` held-out evaluation tasks from the `eval` split, which no demonstration or pool draws from.

  `task_seed=0`: the development set (`EVAL_SEED`), on which the seeds were designed. `task_seed=K`
  (K > 0): a fresh set drawn with seed K that holds no instruction of any development draw, by
  construction, for results that no design choice has seen."""
  if task_seed == 0:
    return generate_tasks(EVAL_SEED, n, split="eval")
  if task_seed < 0:
    raise ValueError(f"task_seed must be >= 0, got {task_seed}")
  development = development_eval_instructions()
  # Drawn with room for the excluded ones, then cut to n: families stay balanced up to the few
  # tasks the exclusion removes (the draw interleaves families at random).
  drawn = generate_tasks(task_seed, n + len(development), split="eval")
  fresh = [t for t in drawn if t.instruction not in development][:n]
  return fresh


# ----------------------------------------------------------------------------------------------
# Measuring a model against the oracle (the seed's figures; bench/testbed.py reuses it).


def _mean(xs) -> float | None:
  xs = list(xs)
  return sum(xs) / len(xs) if xs else None


def _balanced(items) -> float | None:
  """Balanced accuracy of (task, response, score) judgments: the mean of the pass rate on right
  responses and the fail rate on the others, so an always-pass or always-fail judge scores 50%
  whatever the actor's accuracy. None when either side is empty."""
  right = [x >= oracle.PASS_THRESHOLD for t, r, x in items if oracle.is_correct(t, r)]
  other = [x < oracle.PASS_THRESHOLD for t, r, x in items if not oracle.is_correct(t, r)]
  return (_mean(right) + _mean(other)) / 2 if right and other else None


def measure(model_config, params, tokenizer, tasks: Sequence[Task], *, samples: int = 4,
            seed: int = 0, mesh=None, judge_template: str = templates.JUDGE_TEMPLATE,
            meta_template: str = templates.META_JUDGE_TEMPLATE,
            temperature: float = PIPELINE_SAMPLING["temperature"],
            top_p: float = PIPELINE_SAMPLING["top_p"], top_k: int = PIPELINE_SAMPLING["top_k"],
            batch_size: int = 32, judgments: int = 2, progress: bool = False,
            desc: str = "measure", self_taught: bool = True, diagnostics: bool = True) -> dict:
  """Oracle figures of one model on held-out `tasks`, at the pipeline's sampling settings.

    actor_accuracy          share of `samples` sampled responses per task that are right
    actor_accuracy_greedy   the same for one greedy response per task
    judge_parse_rate        judgments (`judgments` per sampled response) with a valid `Score:`
    judge_balanced_accuracy mean of the pass rate (score >= 3) on right and the fail rate on the
                            other responses, over valid judgments of the model's OWN responses:
                            the judge's headline (chance, always-pass, always-fail: 50%)
    judge_accuracy          valid judgments agreeing with the oracle (compare with
                            actor_accuracy = always-pass, 1 - actor_accuracy = always-fail)
    judge_score_mean        mean valid score (drift: a lenient judge's rises)
    judge_check_true_rate   judgments whose written check (judging.py) is all true, where the
                            response has a well-formed answer and the check can be read
    judge_score_fits_verdict_rate
                            valid judgments whose score is the one their own written verdict
                            implies (`judging.score_fits_written_verdict`; the v6 seed on the
                            default run's 100 held-out tasks: 90.5%)
    judge_balanced_accuracy_fixed, judge_accuracy_fixed
                            the same on a fixed response set (RESPONSE_MIX: 45% right, 40%
                            plausible mistakes, 15% malformed) -- comparable across models
    meta_parse_rate, meta_accuracy, meta_first_position_rate, meta_picks_higher_rate
                            on fixed battles (`meta_battle`: one sound and one unsound judgment,
                            both orders; the sound one has the higher score in half of them):
                            valid verdicts, share naming the oracle's better judgment, share
                            naming Judgment A, share naming the higher-scored judgment (a
                            perfect meta-judge: ~50%; a lenient one: more)
    meta_accuracy_own, meta_battles_own
                            the same accuracy on battles between the model's own two judgments
                            of a response, where the oracle prefers one (both orders)
    pairwise_accuracy, pairwise_first_position_rate (only with `self_taught`)
                            the Self-Taught Evaluator's pairwise judge (templates.PAIRWISE_TEMPLATE)
                            on a right answer against a plausible mistake, both orders; a missing
                            or double tag counts 0.5 (RewardBench's tie); the share of verdicts
                            naming Response A
    worse_valid_rate        (only with `self_taught`) worse responses (templates.WORSE_RESPONSE_TEMPLATE about a right
                            answer) naming a different task of the same family and an answer that
                            is right for it and wrong for the original
  `diagnostics=False` skips actor_accuracy_greedy and the *_fixed figures (two sampling passes;
  the others are unchanged, the battles included). Deterministic in `seed`.
  """
  from meta_rewarding import sampling, strategies  # jax: see the module doc
  sampler = sampling.Sampler(model_config, params, tokenizer, mesh=mesh,
                             rules=config_rules.DECODE_RULES, batch_size=batch_size,
                             prompt_buckets=(48, 96, 128, 192, 256))
  strategy = strategies.Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
  gen = lambda xs, n, m, s, strat=strategy, share=False: sampler.generate(
      xs, n=n, strategy=strat, max_new_tokens=m, seed=s, share_prefix=share, progress=progress,
      desc=desc)
  tasks = list(tasks)
  out: dict = {"tasks": len(tasks)}

  actor = gen([t.instruction for t in tasks], samples, ACTOR_MAX_NEW_TOKENS, seed)
  own = [(t, c.text.strip()) for t, row in zip(tasks, actor) for c in row]  # as policy.generate
  out["actor_accuracy"] = _mean(oracle.is_correct(t, r) for t, r in own)
  if diagnostics:
    greedy = gen([t.instruction for t in tasks], 1, ACTOR_MAX_NEW_TOKENS, seed, strategies.Greedy())
    out["actor_accuracy_greedy"] = _mean(oracle.is_correct(t, row[0].text)
                                         for t, row in zip(tasks, greedy))
  for family in FAMILIES:
    hits = [oracle.is_correct(t, r) for t, r in own if t.family == family]
    if hits:
      out[f"actor_accuracy/{family}"] = _mean(hits)

  def judge(items, n, s):
    rows = gen([prompts.render_judge_prompt(judge_template, t.instruction, r) for t, r in items],
               n, JUDGE_MAX_NEW_TOKENS, s, share=True)
    texts = [[c.text for c in row] for row in rows]
    scores = [[prompts.parse_score(x) for x in row] for row in texts]
    flat = [(t, r, x) for (t, r), row in zip(items, scores) for x in row]
    valid = [(t, r, x) for t, r, x in flat if x is not None]
    figures = {"parse_rate": _mean(x is not None for _, _, x in flat),
               "accuracy": _mean(oracle.judgment_agrees(t, r, x) for t, r, x in valid),
               "balanced_accuracy": _balanced(valid),
               "score_mean": _mean(x for _, _, x in valid)}
    return figures, texts, scores

  own_figures, judged, own_scores = judge(own, judgments, seed + 1)
  out.update({f"judge_{k}": v for k, v in own_figures.items()})
  truths = [judging.check_is_true(t, r, x) for (t, r), row in zip(own, judged) for x in row]
  out["judge_check_true_rate"] = _mean(x for x in truths if x is not None)
  fits = [judging.score_fits_written_verdict(x, score)
          for row, scores in zip(judged, own_scores) for x, score in zip(row, scores)]
  out["judge_score_fits_verdict_rate"] = _mean(x for x in fits if x is not None)
  rng = random.Random(f"measure/{seed}")
  fixed = [(t, sample_response(t, rng)[0]) for t in tasks]  # drawn either way: rng feeds the battles
  if diagnostics:
    fixed_figures, _, _ = judge(fixed, 1, seed + 2)
    out.update({f"judge_{k}_fixed": v for k, v in fixed_figures.items()
                if k in ("parse_rate", "accuracy", "balanced_accuracy")})

  # Battles: fixed ones (comparable across models, balanced in position and in score), then the
  # model's own pairs of judgments of one response where the oracle prefers one.
  battles = []   # (task, response, text A, text B, score A, score B, oracle's better, own?)
  for t in tasks:
    response, _, a, bb, better = meta_battle(t, rng)
    battles.append((t, response, a.text(), bb.text(), a.score, bb.score, better, False))
  for (t, r), texts, scores in zip(own, judged, own_scores):
    if len(texts) >= 2:
      better = oracle.better_judgment(t, r, scores[0], scores[1])
      if better is not None and scores[0] is not None and scores[1] is not None:
        battles.append((t, r, texts[0], texts[1], scores[0], scores[1], better, True))
  meta_prompts, truth = [], []
  for t, response, ta, tb, sa, sb, better, is_own in battles:
    for first, second, s1, s2, best in ((ta, tb, sa, sb, better),
                                        (tb, ta, sb, sa, "A" if better == "B" else "B")):
      meta_prompts.append(prompts.render_meta_judge_prompt(meta_template, t.instruction, response,
                                                           first, second))
      higher = None if s1 == s2 else ("A" if s1 > s2 else "B")
      truth.append((best, higher, is_own))
  verdicts = [prompts.parse_winner(row[0].text)
              for row in gen(meta_prompts, 1, META_MAX_NEW_TOKENS, seed + 3, share=True)]
  fixed_v = [(v, w) for v, w in zip(verdicts, truth) if not w[2]]
  own_v = [(v, w) for v, w in zip(verdicts, truth) if w[2] and v is not None]
  out["meta_parse_rate"] = _mean(v is not None for v, _ in fixed_v)
  out["meta_accuracy"] = _mean(v == w[0] for v, w in fixed_v if v is not None)
  out["meta_first_position_rate"] = _mean(v == "A" for v, _ in fixed_v if v is not None)
  out["meta_picks_higher_rate"] = _mean(v == w[1] for v, w in fixed_v
                                        if v is not None and w[1] is not None)
  out["meta_accuracy_own"] = _mean(v == w[0] for v, w in own_v)
  out["meta_battles_own"] = len([1 for w in truth if w[2]])

  out["examples"] = {"actor": own[0][1], "judge": judged[0][0],
                     "meta_prompt_count": len(meta_prompts)}
  if self_taught:
    out.update(_self_taught_figures(tasks, gen, rng, seed))
  return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def _self_taught_figures(tasks: Sequence[Task], gen, rng: random.Random, seed: int) -> dict:
  """The Self-Taught Evaluator's tasks: the pairwise judge on right-vs-wrong pairs in both orders
  (a verdict tied or missing counts as half, as RewardBench scores it), and worse responses: the
  share that name a modified task of the same family with an answer right for it and wrong for
  the original (what the STE loop needs from its generator)."""
  out = {}
  pairs = []
  for t in tasks:
    good = f"The answer is {right_answer(t, rng)}."
    bad = f"The answer is {plausible_mistake(t, rng)}."
    pairs += [(templates.PAIRWISE_TEMPLATE.format(input=t.instruction, response_a=good,
                                                  response_b=bad), "A"),
              (templates.PAIRWISE_TEMPLATE.format(input=t.instruction, response_a=bad,
                                                  response_b=good), "B")]
  verdicts = [prompts.parse_pairwise_verdict(row[0].text) for row in
              gen([x for x, _ in pairs], 1, PAIRWISE_MAX_NEW_TOKENS, seed + 4, share=True)]
  out["pairwise_accuracy"] = _mean(1.0 if v == want else 0.5 if v is None else 0.0
                                   for v, (_, want) in zip(verdicts, pairs))
  out["pairwise_first_position_rate"] = _mean(v == "A" for v in verdicts if v is not None)
  worse_prompts = [templates.WORSE_RESPONSE_TEMPLATE.format(
      instruction=t.instruction, response=f"The answer is {right_answer(t, rng)}.") for t in tasks]
  worse = [row[0].text for row in gen(worse_prompts, 1, WORSE_MAX_NEW_TOKENS, seed + 5)]
  out["worse_valid_rate"] = _mean(_valid_worse_response(t, x) for t, x in zip(tasks, worse))
  return out


def _valid_worse_response(task: Task, text: str) -> bool:
  """Whether a worse-response answer names a modified task of `task`'s family (a different one)
  and an answer that is right for it and wrong for `task`."""
  head, sep, rest = text.partition(MODIFIED_ANSWER_START)
  if not sep or MODIFIED_QUESTION not in head:
    return False
  new = task_from_instruction(head.split(MODIFIED_QUESTION, 1)[1].strip())
  answer = rest.split(MODIFIED_ANSWER_END, 1)[0].strip()
  return (new is not None and new.family == task.family and new != task
          and oracle.is_correct(new, answer) and not oracle.is_correct(task, answer))
