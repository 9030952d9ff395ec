"""The testbed's compact templates, the seed builder's demonstrations and the shipped seed model.

Pure-Python checks on the demonstration generator (deterministic, noise rates as documented), then
a few seconds on the shipped checkpoint: it loads, is small, and its greedy judgments parse.
"""

import collections
import dataclasses
import json
import os
import random

import jax
import pytest

from meta_rewarding import prompts
from meta_rewarding.testbed import judging, measure, oracle, responses, seed, settings, templates
from meta_rewarding.testbed.tasks import FAMILIES, generate_tasks, task_from_instruction

SEED_DIR = os.path.join(os.path.dirname(seed.__file__), "seed")


# --------------------------------------------------------------------------------------------
# Templates.

def test_compact_templates_validate_and_render():
  prompts.validate_judge_template(templates.JUDGE_TEMPLATE)
  prompts.validate_meta_judge_template(templates.META_JUDGE_TEMPLATE)
  q = "Write a number from 30 to 59 whose digits add up to 9."
  judge = prompts.render_judge_prompt(templates.JUDGE_TEMPLATE, q, "The answer is 45.")
  assert judge.startswith(q + "\nResponse: The answer is 45.\n")
  assert "Score: <points>" in judge and "{" not in judge
  meta = prompts.render_meta_judge_prompt(templates.META_JUDGE_TEMPLATE, q,
                                          "The answer is 45.", "Check: x. Score: 5",
                                          "Check: y. Score: 1")
  assert "\nJudgment A: Check: x. Score: 5\nJudgment B: Check: y. Score: 1\n" in meta
  # The shared prefix (prefilled once per prompt) ends right before the judgments.
  prefix, suffix = prompts.render_meta_judge_prompt_parts(
      templates.META_JUDGE_TEMPLATE, q, "The answer is 45.", "x", "y")
  assert prefix == q + "\nResponse: The answer is 45.\n"
  assert suffix.startswith("Judgment A: x")
  # The format examples in the templates are not themselves verdicts a parser would pick up
  # from the model's output (the pipeline parses only the completion), but they must name the
  # exact formats the parsers accept.
  assert prompts.parse_winner("Winner: Judgment A") == "A"
  assert prompts.parse_score("Score: 4") == 4.0


# --------------------------------------------------------------------------------------------
# Demonstrations.

def test_demonstrations_are_deterministic_per_seed():
  for kind in seed.KINDS:
    a = seed.demonstrations(3, kind, 60)
    assert a == seed.demonstrations(3, kind, 60)
    assert a != seed.demonstrations(4, kind, 60)
    assert len(a) == 60 and {d.kind for d in a} == {kind}
  assert seed.tokenizer_corpus(0, n=20) == seed.tokenizer_corpus(0, n=20)


def test_demonstrations_come_from_the_sft_split_and_skip_excluded_tasks():
  from meta_rewarding.testbed.tasks import split_of
  some = {d.instruction for d in seed.demonstrations(0, "actor", 300)}
  excluded = set(list(some)[:50])
  for kind in seed.KINDS:
    demos = seed.demonstrations(0, kind, 300, excluded)
    assert not excluded & {d.instruction for d in demos}
    assert all(split_of(d.instruction) == "sft" for d in demos)


def test_mistakes_and_malformed_responses_are_what_they_claim():
  rng = random.Random(0)
  for task in generate_tasks(7, 400):
    mistake = responses.plausible_mistake(task, rng)
    assert oracle.oracle_score(task, f"The answer is {mistake}.") == oracle.SCORE_WRONG, task
    assert oracle.oracle_score(task, responses.malformed_response(task, rng)) == oracle.SCORE_INVALID
    response, kind = responses.sample_response(task, rng)
    expected = {"correct": (oracle.SCORE_CORRECT,), "wrong": (oracle.SCORE_WRONG,),
                "random": (oracle.SCORE_CORRECT, oracle.SCORE_WRONG),
                "malformed": (oracle.SCORE_INVALID,)}[kind]
    assert oracle.oracle_score(task, response) in expected
    # A random answer is well-formed whatever the constraints say.
    random_response = f"The answer is {responses.random_answer(task, rng)}."
    assert oracle.oracle_score(task, random_response) != oracle.SCORE_INVALID


def test_demonstration_texts_parse_to_their_labels():
  from meta_rewarding.testbed import judging
  for d in seed.demonstrations(1, "judge", 200):
    assert prompts.parse_score(d.response) == d.info["score"]
    task = task_from_instruction(d.instruction)
    response = d.prompt.split("Response: ", 1)[1].split("\n", 1)[0]
    # The check written is the true one unless the demonstration slipped.
    assert judging.check_is_true(task, response, d.response) == (not d.info["slipped"])
  for d in seed.demonstrations(1, "meta", 200):
    assert prompts.parse_winner(d.response) == d.info["winner"]
    # The scores copied first are the judgments' own, and each subtraction is right and works
    # on them (judging.meta_text).
    a = d.prompt.split("Judgment A: ", 1)[1].split("\nJudgment B: ", 1)[0]
    b = d.prompt.split("Judgment B: ", 1)[1].split("\n", 1)[0]
    score_a, score_b = int(prompts.parse_score(a)), int(prompts.parse_score(b))
    assert d.response.startswith(f"A: score {score_a}. B: score {score_b}. Check: ")
    want = int(d.response.split(", want ", 1)[1].split(".", 1)[0])
    assert want in judging.VERDICT_SCORE.values()
    assert f"A: {want}-{score_a}={want - score_a}. B: {want}-{score_b}={want - score_b}." in (
        d.response)
  for d in seed.demonstrations(1, "actor", 200):
    task = task_from_instruction(d.prompt)
    assert oracle.is_correct(task, d.response) == d.correct
  for d in seed.demonstrations(1, "pairwise", 200):
    assert prompts.parse_pairwise_verdict(d.response) == d.info["winner"]
    task = task_from_instruction(d.instruction)
    a = d.prompt.split("Response A: ", 1)[1].split("\n", 1)[0]
    b = d.prompt.split("Response B: ", 1)[1].split("\n", 1)[0]
    # One right response, one wrong, and the oracle's better one is the one recorded.
    assert oracle.is_correct(task, a) != oracle.is_correct(task, b)
    assert d.info["better"] == ("A" if oracle.is_correct(task, a) else "B")
  for d in seed.demonstrations(1, "worse", 200):
    # A modified task of the same family, from the sft split too, with an answer right for it
    # and wrong for the original: what the Self-Taught Evaluator's worse response should be.
    from meta_rewarding.testbed.tasks import split_of
    task = task_from_instruction(d.instruction)
    assert measure._valid_worse_response(task, d.response)
    assert split_of(d.info["modified"]) == "sft"
    assert d.response.startswith(responses.MODIFIED_QUESTION + "\n" + d.info["modified"] + "\n")


def test_noise_rates_are_as_documented():
  n = 3000
  report = seed.demo_noise_report([d for kind in ("actor", "judge", "meta", "pairwise")
                                   for d in seed.demonstrations(11, kind, n)])
  # Binomial standard errors at n=3000 are <= 0.009; allow ~3.5 of them.
  assert report["actor_correct"] == pytest.approx(1 - seed.ACTOR_WRONG, abs=0.03)
  # Malformed responses (15%) have nothing to slip on.
  slip = seed.JUDGE_SLIP * (1 - dict(responses.RESPONSE_MIX)["malformed"])
  assert report["judge_slipped"] == pytest.approx(slip, abs=0.02)
  assert report["judge_miscalibrated"] == pytest.approx(seed.JUDGE_MISCALIBRATED, abs=0.015)
  # What the docstring states for the consequences of the noise.
  assert 0.85 <= report["judge_agrees"] <= 0.93
  assert report["meta_label_correct"] == pytest.approx(1 - seed.META_FLIP, abs=0.03)
  # No position bias and no score bias in the meta-judge's labels (module docstring): naming
  # Judgment A, or the higher-scored judgment, is right half the time.
  assert report["meta_first_position"] == pytest.approx(0.5, abs=0.03)
  assert report["meta_picks_higher_score"] == pytest.approx(0.5, abs=0.035)
  # Pairwise labels: right unless a slipped check turned the call, and no position bias.
  assert report["pairwise_first_position"] == pytest.approx(0.5, abs=0.03)
  assert 0.88 <= report["pairwise_label_correct"] <= 0.96
  judge = seed.demonstrations(11, "judge", n)
  mix = {k: sum(d.info["response_kind"] == k for d in judge) / n for k, _ in responses.RESPONSE_MIX}
  for kind, p in responses.RESPONSE_MIX:
    assert mix[kind] == pytest.approx(p, abs=0.03)
  families = {f: sum(task_from_instruction(d.instruction).family == f for d in judge)
              for f in FAMILIES}
  assert min(families.values()) > n / len(FAMILIES) * 0.9


def test_training_schedule_interleaves_kinds_and_run_sft_sees_them_in_order():
  from meta_rewarding import data
  cfg = seed.BuildConfig(steps=300)
  kinds = seed.step_kinds(cfg)
  assert kinds == seed.step_kinds(cfg) and len(kinds) == 300
  start = 0
  for fraction, shares in cfg.phases:
    n = round(fraction * cfg.steps)
    phase = kinds[start:start + n]
    for kind, share in shares:
      assert phase.count(kind) == pytest.approx(share * n, abs=1)
      # Evenly spread: every stretch of 20 steps of the phase holds each of its kinds.
      assert all(kind in phase[i:i + 20] for i in range(0, n - 19, 20))
    start += n
  batches = [[{"id": (s, j)} for j in range(4)] for s in range(25)]
  examples = seed.order_for_run_sft(batches, seed=7)
  seed.check_order(examples, batches, seed=7)
  for s in range(25):
    _, idx = data.step_indices(7, s, len(examples), 4)
    assert [examples[i]["id"] for i in idx] == [(s, j) for j in range(4)]
  with pytest.raises(RuntimeError):
    seed.check_order(examples, batches, seed=8)


# --------------------------------------------------------------------------------------------
# The shipped seed.

def test_judge_miscalibrated_sets_the_rate_and_the_build_command():
  # The v6 build's third call raises the share of judgments whose score does not fit their own
  # verdict (BuildConfig.judge_miscalibrated); the demonstrations realise it, the other noise
  # stays, and the recorded command carries the flag that rebuilds it.
  demos = seed.demonstrations(11, "judge", 3000, judge_miscalibrated=0.2)
  report = seed.demo_noise_report(demos)
  assert report["judge_miscalibrated"] == pytest.approx(0.2, abs=0.025)
  slip = seed.JUDGE_SLIP * (1 - dict(responses.RESPONSE_MIX)["malformed"])
  assert report["judge_slipped"] == pytest.approx(slip, abs=0.02)
  # As written: a miscalibrated demonstration's score does not fit its own written verdict (what
  # the held-out judge_score_fits_verdict_rate reads), every other one's does.
  for d in demos[:600]:
    fits = judging.score_fits_written_verdict(d.response, prompts.parse_score(d.response))
    assert fits is (not d.info["miscalibrated"]), d.response
  assert seed.command(seed.BuildConfig()) == seed.COMMAND
  assert seed.command(seed.BuildConfig(judge_miscalibrated=0.2)) == (
      seed.COMMAND + " --judge_miscalibrated=0.2")
  # The build's README says so only when the rate was raised.
  assert "on purpose" not in seed._miscalibration_note({"build_config": {
      "judge_miscalibrated": seed.JUDGE_MISCALIBRATED}})
  assert "set 0.2 on purpose" in seed._miscalibration_note({"build_config": {
      "judge_miscalibrated": 0.2}})
  # A share that leaves no room for the slipped demonstrations is refused.
  for bad in (-0.1, 1.0 - seed.JUDGE_SLIP + 0.01):
    with pytest.raises(ValueError, match="judge_miscalibrated"):
      seed.BuildConfig(judge_miscalibrated=bad)


def test_shipped_seed_files_and_figures():
  names = set(os.listdir(SEED_DIR))
  assert {"config.json", "model.safetensors", "tokenizer.model", "README.md",
          "build_info.json"} <= names
  total = sum(os.path.getsize(os.path.join(SEED_DIR, n)) for n in names)
  assert total <= 16 * 2**20
  with open(os.path.join(SEED_DIR, "build_info.json")) as f:
    info = json.load(f)
  assert info["command"].startswith(seed.COMMAND)
  # v6's fault of judging, on purpose (bench/results/seed_diagnosis.md, "v6"): the last build call
  # taught a score that does not fit the judgment's own verdict in 20% of judge demonstrations.
  assert info["build_config"]["judge_miscalibrated"] == 0.2
  assert "--judge_miscalibrated=0.2" in info["command"]
  fig = info["figures"]
  # What issue 13 asks of the seed, on held-out tasks: actor 35-75%, judge balanced accuracy on
  # its own answers >= 80%, meta-judge >= 70% on battles where the oracle prefers one judgment
  # (this build, v6: 64.9%, 87.7%, 96.5%; build_info.json). On battles between its own judgments
  # the meta-judge is weaker (85.1%; v3, before the own-battle demonstrations: 56.8%).
  assert fig["judge_parse_rate"] >= 0.9 and fig["meta_parse_rate"] >= 0.9
  assert fig["tasks"] >= 200
  assert 0.35 <= fig["actor_accuracy"] <= 0.75
  assert 0.8 <= fig["judge_balanced_accuracy"] < 1.0
  assert 0.7 <= fig["meta_accuracy"] < 1.0
  assert fig["meta_accuracy_own"] >= 0.7
  assert 0.35 <= fig["meta_first_position_rate"] <= 0.65
  assert 0.35 <= fig["meta_picks_higher_rate"] <= 0.65


def test_shipped_seed_loads_and_its_greedy_judgments_parse():
  from meta_rewarding import checkpoints, sampling, strategies
  from meta_rewarding.tokenizer import load_tokenizer

  config, params = checkpoints.load_hf(SEED_DIR, dtype="float32")
  tokenizer = load_tokenizer(SEED_DIR, chat_format=settings.CHAT_FORMAT)
  assert tokenizer.vocab_size <= config.vocab_size
  assert config.hidden_size == settings.ARCHITECTURE["hidden_size"]
  assert config.num_hidden_layers == settings.ARCHITECTURE["num_hidden_layers"]
  rng = random.Random(5)
  tasks = measure.eval_task_list(6)
  judge_prompts = [prompts.render_judge_prompt(templates.JUDGE_TEMPLATE, t.instruction,
                                               responses.sample_response(t, rng)[0]) for t in tasks]
  sampler = sampling.Sampler(config, params, tokenizer, batch_size=8, prompt_buckets=(128,))
  out = sampler.generate(judge_prompts, n=1, strategy=strategies.Greedy(),
                         max_new_tokens=settings.JUDGE_MAX_NEW_TOKENS, progress=False)
  texts = [row[0].text for row in out]
  scores = [prompts.parse_score(t) for t in texts]
  assert sum(s is not None for s in scores) >= 5, texts
  assert all(t.startswith("Check: ") for t in texts), texts


def test_own_answer_judge_demos_judge_the_models_sampled_answers():
  from meta_rewarding import checkpoints, sharding
  from meta_rewarding.tokenizer import load_tokenizer

  config, params = checkpoints.load_hf(SEED_DIR, dtype="float32")
  tokenizer = load_tokenizer(SEED_DIR, chat_format=settings.CHAT_FORMAT)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  cfg = seed.own_judge_stage(seed.BuildConfig())
  assert cfg.steps == seed.BuildConfig().own_judge_steps and cfg.own_judge_steps == 0
  exclude = {t.instruction for t in measure.eval_task_list(200)}
  demos = seed.own_answer_judge_demos(config, params, tokenizer, cfg, 10, mesh=mesh,
                                      exclude=exclude)
  again = seed.own_answer_judge_demos(config, params, tokenizer, cfg, 10, mesh=mesh,
                                      exclude=exclude)
  assert [d.record() for d in demos] == [d.record() for d in again]  # deterministic
  assert len(demos) == 10 and all(d.kind == "judge" for d in demos)
  assert all(d.info["response_kind"] == "own" for d in demos)
  assert not exclude & {d.instruction for d in demos}
  # Each task's own_judge_samples answers come from the model: the prompt holds the answer the
  # judgment works against, and the judgment's label follows the oracle rules on it.
  for d in demos:
    task = task_from_instruction(d.instruction)
    response = d.prompt.split("Response: ", 1)[1].split("\n", 1)[0]
    assert d.prompt == prompts.render_judge_prompt(templates.JUDGE_TEMPLATE, d.instruction,
                                                   response)
    assert d.correct == oracle.judgment_agrees(task, response, prompts.parse_score(d.response))
  assert len({d.instruction for d in demos}) == -(-10 // cfg.own_judge_samples)


def test_own_answer_judge_demos_follow_the_builds_miscalibration_rate():
  from meta_rewarding import checkpoints, sharding
  from meta_rewarding.tokenizer import load_tokenizer

  config, params = checkpoints.load_hf(SEED_DIR, dtype="float32")
  tokenizer = load_tokenizer(SEED_DIR, chat_format=settings.CHAT_FORMAT)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  rates = {}
  for rate in (0.0, 1.0 - seed.JUDGE_SLIP):
    cfg = seed.own_judge_stage(seed.BuildConfig(judge_miscalibrated=rate))
    assert cfg.judge_miscalibrated == rate              # the stage keeps the build's rate
    demos = seed.own_answer_judge_demos(config, params, tokenizer, cfg, 12, mesh=mesh)
    rates[rate] = sum(d.info["miscalibrated"] for d in demos) / len(demos)
  # Every own-answer demonstration that is not slipped is miscalibrated at the top rate, none at 0.
  assert rates[0.0] == 0.0 and rates[1.0 - seed.JUDGE_SLIP] >= 0.75, rates


def test_own_answer_judge_demos_can_draw_half_from_answers_that_are_not_right():
  from meta_rewarding import checkpoints, sharding
  from meta_rewarding.tokenizer import load_tokenizer

  config, params = checkpoints.load_hf(SEED_DIR, dtype="float32")
  tokenizer = load_tokenizer(SEED_DIR, chat_format=settings.CHAT_FORMAT)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  cfg = dataclasses.replace(seed.own_judge_stage(seed.BuildConfig()),
                            own_judge_not_right_share=0.5)
  logged = []
  demos = seed.own_answer_judge_demos(config, params, tokenizer, cfg, 12, mesh=mesh,
                                      log=logged.append)
  right = []
  for d in demos:
    response = d.prompt.split("Response: ", 1)[1].split("\n", 1)[0]
    right.append(oracle.is_correct(task_from_instruction(d.instruction), response))
  assert len(demos) == 12 and sum(right) == 6, right  # the seed's actor is right ~78% as sampled
  assert "6 right and 6 not right" in logged[0]


def test_measure_without_diagnostics_gives_the_same_figures_minus_two_passes():
  # The default testbed run skips the greedy and fixed-response passes for time; the figures it
  # does report (the battles included, which share the fixed set's random stream) must not change.
  from meta_rewarding import checkpoints
  from meta_rewarding.tokenizer import load_tokenizer
  config, params = checkpoints.load_hf(SEED_DIR, dtype="float32")
  tokenizer = load_tokenizer(SEED_DIR, chat_format=settings.CHAT_FORMAT)
  tasks = measure.eval_task_list(4)
  full, lean = (measure.measure(config, params, tokenizer, tasks, samples=2, batch_size=8,
                                self_taught=False, diagnostics=d) for d in (True, False))
  extras = {"actor_accuracy_greedy", "judge_parse_rate_fixed", "judge_accuracy_fixed",
            "judge_balanced_accuracy_fixed"}
  assert extras <= set(full) and not extras & set(lean)
  assert {k: v for k, v in full.items() if k not in extras} == lean
  assert 0.0 <= lean["judge_score_fits_verdict_rate"] <= 1.0


def test_build_command_names_every_flag_that_differs_from_the_default():
  assert seed.command(seed.BuildConfig()) == seed.COMMAND
  cfg = seed.BuildConfig(init="/models/v1", steps=0, judge_steps=600, judge_learning_rate=1e-3,
                         own_judge_not_right_share=0.5, own_battle_share=0.0)
  assert seed.command(cfg) == (seed.COMMAND + " --init=/models/v1 --steps=0 --judge_steps=600 "
                               "--judge_learning_rate=0.001 --own_judge_not_right_share=0.5 "
                               "--own_battle_share=0.0")


# --------------------------------------------------------------------------------------------
# Meta-judge demonstrations of battles between the model's own judgments.

LETTER = task_from_instruction("Write a letter from q, b, f, a, t that comes after m.")
RIGHT = "Check: t in q, b, f, a, t: 20-20=0: ok; t after m: 20>=14: 2-1=1: ok. So the response " \
        "is right. Score: 5"
# A judgment of the kind the model writes when it slips: a list copied short, a wrong subtraction.
STRICT = "Check: t in q, b, f: 20-6=14: no; t after m: 20>=14: 2-1=1: ok. So the response is " \
         "wrong. Score: 1"


def test_own_battles_take_a_pair_the_oracle_tells_apart_else_the_true_judgment():
  # Two own judgments the oracle tells apart: that pair, in the order given.
  decisive, same = seed.own_battles(LETTER, "The answer is t.", [STRICT, RIGHT])
  assert decisive == (STRICT, 1, RIGHT, 5, "B") and same is None
  # Both wrong the same way: the first against the true judgment (its text is RIGHT exactly),
  # and the two make a same-score battle.
  decisive, same = seed.own_battles(LETTER, "The answer is t.", [STRICT, STRICT + " "])
  assert decisive == (STRICT, 1, RIGHT, 5, "B")
  assert same == (STRICT, 1, STRICT + " ", 1, None)
  # Both right: no decisive battle; an unparsable or fractional score takes no part.
  decisive, same = seed.own_battles(LETTER, "The answer is t.", [RIGHT, RIGHT])
  assert decisive is None and same == (RIGHT, 5, RIGHT, 5, None)
  assert seed.own_battles(LETTER, "The answer is t.", [RIGHT, "Check: t. Score: 4.5"]) == (
      None, None)
  assert seed.own_battles(LETTER, "The answer is t.", ["no score", STRICT])[1] is None


def test_own_battle_meta_demos_are_balanced_in_position_and_right_by_the_true_check():
  rng = random.Random(0)
  response = "The answer is t."
  decisive = [seed.own_battle_meta_demo(LETTER, response, (STRICT, 1, RIGHT, 5, "B"), rng)
              for _ in range(600)]
  for d in decisive:
    a = d.prompt.split("Judgment A: ", 1)[1].split("\nJudgment B: ", 1)[0]
    assert d.response.startswith(f"A: score {prompts.parse_score(a):.0f}. B: score ")
    assert d.info["better"] == ("A" if a == RIGHT else "B")
    assert d.correct == (not d.info["flip"]) == (d.info["winner"] == d.info["better"])
    if not d.info["flip"]:
      assert f"{RIGHT.split('. Score:')[0]}, want 5." in d.response
  assert 0.44 < sum(d.info["better"] == "A" for d in decisive) / 600 < 0.56
  assert 0.02 < sum(d.info["flip"] for d in decisive) / 600 < 0.11   # META_FLIP
  # Same score: the subtractions cannot decide, and the winner is drawn at random.
  same = [seed.own_battle_meta_demo(LETTER, response, (RIGHT, 5, RIGHT, 5, None), rng)
          for _ in range(600)]
  assert all(d.info["same_score"] and d.correct for d in same)
  assert all("A: 5-5=0. B: 5-5=0. Winner: Judgment " in d.response for d in same
             if not d.info["flip"])
  assert 0.44 < sum(d.info["winner"] == "A" for d in same) / 600 < 0.56
  # The noise report counts the higher-score rate over battles whose scores differ only.
  report = seed.demo_noise_report(decisive + same)
  assert 0.9 < report["meta_picks_higher_score"] < 0.98
  assert 0.44 < report["meta_first_position"] < 0.56


def test_interleave_spreads_one_list_through_the_other_in_order():
  # Each own demonstration goes where its share of the prefix first reaches its count: 3 in 10
  # at positions 4, 7, 10.
  assert "".join(seed.interleave(list("abc"), list("1234567"))) == "123a45b67c"
  assert "".join(seed.interleave(list("ab"), list("12"))) == "1a2b"
  assert seed.interleave([], list("12")) == list("12") and seed.interleave(list("a"), []) == ["a"]


def test_own_battle_meta_demos_from_the_shipped_seed():
  from meta_rewarding import checkpoints, sharding
  from meta_rewarding.tokenizer import load_tokenizer

  config, params = checkpoints.load_hf(SEED_DIR, dtype="float32")
  tokenizer = load_tokenizer(SEED_DIR, chat_format=settings.CHAT_FORMAT)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  cfg = seed.own_judge_stage(seed.BuildConfig())
  exclude = {t.instruction for t in measure.eval_task_list(200)}
  logged = []
  demos = seed.own_battle_meta_demos(config, params, tokenizer, cfg, 20, mesh=mesh,
                                     exclude=exclude, log=logged.append)
  again = seed.own_battle_meta_demos(config, params, tokenizer, cfg, 20, mesh=mesh,
                                     exclude=exclude, log=lambda _: None)
  assert [d.record() for d in demos] == [d.record() for d in again]  # deterministic
  assert 0 < len(demos) <= 20 and not exclude & {d.instruction for d in demos}
  same = [d for d in demos if d.info["same_score"]]
  decisive = [d for d in demos if not d.info["same_score"]]
  assert len(same) <= round(20 * seed.OWN_BATTLE_SAME_SCORE)
  # As many decisive battles where the better judgment has the higher score as the lower.
  higher = sum((d.info["winner"] == d.info["better"]) == d.info["winner_higher"] for d in decisive)
  assert 2 * higher == len(decisive), logged
  assert f"demonstrations from {len(decisive) // 2} + {len(decisive) // 2} decisive and " \
         f"{len(same)} same-score" in logged[0]
  for d in demos:
    task = task_from_instruction(d.instruction)
    response = d.prompt.split("Response: ", 1)[1].split("\n", 1)[0]
    a = d.prompt.split("Judgment A: ", 1)[1].split("\nJudgment B: ", 1)[0]
    b = d.prompt.split("Judgment B: ", 1)[1].split("\nVerify", 1)[0]
    assert d.prompt == prompts.render_meta_judge_prompt(templates.META_JUDGE_TEMPLATE,
                                                        d.instruction, response, a, b)
    score_a, score_b = prompts.parse_score(a), prompts.parse_score(b)
    assert d.response.startswith(f"A: score {score_a:.0f}. B: score {score_b:.0f}. Check: ")
    assert d.info["better"] == oracle.better_judgment(task, response, score_a, score_b)
    assert prompts.parse_winner(d.response) == d.info["winner"]


def test_a_fresh_held_out_set_is_disjoint_from_the_development_set():
  from meta_rewarding.testbed import measure as seed_lib
  from meta_rewarding.testbed.tasks import generate_tasks, split_of
  development = seed_lib.development_eval_instructions()
  assert {t.instruction for t in seed_lib.eval_task_list(200)} <= development
  assert seed_lib.eval_task_list(100) == generate_tasks(seed_lib.EVAL_SEED, 100, split="eval")
  fresh = seed_lib.eval_task_list(400, task_seed=7)
  assert len(fresh) == 400 and len({t.instruction for t in fresh}) == 400
  assert not {t.instruction for t in fresh} & development  # by construction
  assert all(split_of(t.instruction) == "eval" for t in fresh)
  assert fresh == seed_lib.eval_task_list(400, task_seed=7)  # deterministic
  other = seed_lib.eval_task_list(400, task_seed=8)
  assert {t.instruction for t in other} != {t.instruction for t in fresh}
  families = collections.Counter(t.family for t in fresh)
  assert max(families.values()) - min(families.values()) <= 0.1 * len(fresh), families
