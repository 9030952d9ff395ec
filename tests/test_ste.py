"""The Self-Taught Evaluator: its prompts and parsers, rejection sampling and the SFT data on a
scripted stand-in model, resume, the SFT data's token split, and a smoke run of
configs/ste_testbed.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import configs
from bench import ste as bench_ste
from meta_rewarding import artifacts, pipeline, prompts, stages, ste
from meta_rewarding.config.base import get_ste_config
from meta_rewarding.recipe_types import Generation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

START = "[The start of Assistant's answer to the modified instruction]"
END = "[The end of Assistant's answer to the modified instruction]"

# ---------------------------------------------------------------------------------------------
# Prompts and parsers.

# facebookresearch/RAM projects/self_taught_evaluator/data/prompts/worse_response.prompt, as
# published (its own placeholder names).
RAM_WORSE_RESPONSE = (
    "Below is a conversation between a user and an AI Assistant. \n\n[User Question]\n{input}\n\n"
    "[The start of Assistant's Answer]\n{generation}\n[The end of Assistant's Answer]\n\n"
    "Please first generate a modified instruction that is highly relevant but not semantically "
    "identical to the instruction above from the user. Then write a high-quality answer which is a "
    "good response to the modified instruction but not a good response to the original user "
    "question. IMPORTANT: Please strictly follow the following format:\n[User Question Modified]\n"
    "<provide a modified instruction here>\n\n[The start of Assistant's answer to the modified "
    "instruction]\n<provide a high-quality response to the modified instruction>\n[The end of "
    "Assistant's answer to the modified instruction]\n")


def test_worse_response_template_is_the_reference_prompt_with_our_placeholders():
  assert prompts.WORSE_RESPONSE_TEMPLATE == RAM_WORSE_RESPONSE.replace(
      "{input}", "{instruction}").replace("{generation}", "{response}")
  rendered = prompts.render_worse_response_prompt(prompts.WORSE_RESPONSE_TEMPLATE,
                                                  "Sum {a} and 2", "It is {response}")
  assert "[User Question]\nSum {a} and 2\n" in rendered  # braces in user text stay as they are
  assert "[The start of Assistant's Answer]\nIt is {response}\n" in rendered
  with pytest.raises(ValueError, match=r"\{response\}"):
    prompts.render_worse_response_prompt("{instruction} only", "x", "y")


def _reply(instruction, answer, end=True, preamble=""):
  return (f"{preamble}[User Question Modified]\n{instruction}\n\n{START}\n{answer}\n"
          + (f"{END}\n" if end else ""))


@pytest.mark.parametrize("text,require_end,want", [
    (_reply("What is 2+3?", "5."), False, ("What is 2+3?", "5.")),
    (_reply("What is 2+3?", "5.", preamble="Sure! Here it is.\n\n"), False, ("What is 2+3?", "5.")),
    # The end marker is optional for a reply that stopped at EOS, required for one cut by length.
    (_reply("What is 2+3?", "The sum is 5.", end=False), False, ("What is 2+3?", "The sum is 5.")),
    (_reply("What is 2+3?", "The sum is", end=False), True, None),
    (_reply("Q?", "A.", end=True), True, ("Q?", "A.")),
    # Any case, any spacing, no apostrophe.
    ("[user question modified] Q2?\n[The Start of Assistants answer to the MODIFIED  instruction] "
     "A2\n[the end of assistant's answer to the modified instruction]", False, ("Q2?", "A2")),
    # Multi-line parts are kept whole; text after the end marker is ignored.
    (_reply("Line one\nline two", "Para 1\n\nPara 2") + "trailing chatter", False,
     ("Line one\nline two", "Para 1\n\nPara 2")),
    # Missing markers, empty parts, or the markers out of order: no pair.
    ("What is 2+3?\n\nThe answer is 5.", False, None),
    ("[User Question Modified]\nWhat is 2+3?\nThe answer is 5.", False, None),
    (f"{START}\n5\n{END}\n[User Question Modified]\nQ?", False, None),
    (_reply("   ", "5."), False, None),
    (_reply("Q?", "  \n "), False, None),
    ("", False, None),
])
def test_parse_worse_response(text, require_end, want):
  assert prompts.parse_worse_response(text, require_end=require_end) == want


def test_parse_worse_response_rejects_non_strings():
  with pytest.raises(TypeError):
    prompts.parse_worse_response(None)


def test_pairwise_rendering_and_category_parsing():
  rendered = prompts.render_pairwise_prompt(prompts.PAIRWISE_TEMPLATE, "Q {x}", "a {response_b}",
                                            "b")
  assert "[User Question]\nQ {x}\n" in rendered
  assert "[The Start of Assistant A's Answer]\na {response_b}\n" in rendered  # one pass
  assert "[The Start of Assistant B's Answer]\nb\n" in rendered
  with pytest.raises(ValueError, match=r"\{response_b\}"):
    prompts.validate_pairwise_template("{input} {response_a}")
  assert prompts.parse_category("Category: Coding\nComplexity: 3") == "Coding"
  assert prompts.parse_category("**Category:** **Knowledge and Reasoning**.") == (
      "Knowledge and Reasoning")
  assert prompts.parse_category("Category: <Other>\nCategory: Rewriting") == "Rewriting"
  assert prompts.parse_category("no category here") is None
  assert "{instruction}" in prompts.CATEGORY_TEMPLATE


# ---------------------------------------------------------------------------------------------
# Rejection sampling (pure).

def _judged(uid, position, verdicts, cut=()):
  return {"uid": uid, "id": uid, "chosen_position": position, "judge_prompt": f"J{uid}",
          "too_long": False,
          "judgments": [{"text": f"t{k} [[{v}]]" if v else f"t{k}", "num_tokens": 3,
                         "verdict": v, "finish_reason": "length" if k in cut else "stop"}
                        for k, v in enumerate(verdicts)]}


def test_rejection_sampling_keeps_one_matching_judgment_and_drops_the_rest():
  record = _judged(0, "A", ["B", None, "A", "A"])
  picks = {ste.rejection_sample(record, seed) for seed in range(40)}
  assert picks == {2, 3}  # a random matching one (the N samples are shuffled), never another
  assert ste.rejection_sample(record, 7) == ste.rejection_sample(record, 7)  # seeded
  assert ste.rejection_sample(_judged(1, "B", ["A", None, "A"]), 0) is None
  # A judgment cut by the length limit is never kept.
  assert ste.rejection_sample(_judged(2, "B", ["B", "A"], cut=(0,)), 0) is None


def test_label_balancing_keeps_min_of_each_label():
  judged = [_judged(0, "A", ["A"]), _judged(1, "A", ["A"]), _judged(2, "A", ["A", "B"]),
            _judged(3, "B", ["B"]), _judged(4, "B", ["A"]), {**_judged(5, "B", []),
                                                              "too_long": True}]
  data = ste.sft_records(judged, seed=3, balance=True)
  assert sorted(e["label"] for e in data) == ["A", "B"]
  assert [e for e in data if e["label"] == "B"][0]["uid"] == 3
  unbalanced = ste.sft_records(judged, seed=3, balance=False)
  assert [e["uid"] for e in unbalanced] == [0, 1, 2, 3]
  assert all(e["response"].endswith(f"[[{e['label']}]]") for e in unbalanced)


# ---------------------------------------------------------------------------------------------
# The loop on a scripted stand-in model.

POOL = [f"Task {k}: add {k} and {k + 1}." for k in range(8)]
UNPARSEABLE = {POOL[1]}             # the model's worse-response reply has no markers
NO_MATCH = {POOL[2]}                # the judge never names y_w


class ScriptedSTEPolicy:
  """Canned actor, worse-response writer and pairwise judge; SFT records what it is given."""

  def __init__(self, fail_after_judge_calls=None):
    self.version = 0
    self.trained = []              # (the version SFT started from, its records)
    self.judge_calls = 0
    self.fail_after_judge_calls = fail_after_judge_calls
    self.requests = []
    self.generated_by = set()      # the versions that generated

  def generate(self, batch, *, n, max_new_tokens, seed, share_prefix, desc):
    self.generated_by.add(self.version)
    out = []
    for request in batch:
      self.requests.append(request)
      if isinstance(request, list):  # [system, user] messages
        assert request[0]["role"] == "system"
        request = request[-1]["content"]
      if "[User Question Modified]" in request:  # the worse-response prompt
        instruction = request.split("[User Question]\n")[1].split("\n")[0]
        text = ("I cannot do that." if instruction in UNPARSEABLE else
                _reply(f"Multiply the numbers of: {instruction}", "The product is 42."))
        out.append([Generation(text, 20, "stop")])
      elif "[The Start of Assistant A's Answer]" in request:  # the pairwise judge
        if (self.fail_after_judge_calls is not None
            and self.judge_calls >= self.fail_after_judge_calls):
          raise KeyboardInterrupt("simulated kill during judging")
        self.judge_calls += 1
        question = request.split("[User Question]\n")[1].split("\n")[0]
        a = request.split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
        good = "A" if a.startswith("Good answer") else "B"
        bad = "B" if good == "A" else "A"
        # Two judgments name y_w, one the other response, one gives no verdict; a question in
        # NO_MATCH gets none naming y_w.
        verdicts = [bad, None, bad, bad] if question in NO_MATCH else [good, bad, None, good]
        out.append([Generation(f"Compared both. [[{v}]]" if v else "Hmm.", 5, "stop")
                    for v in verdicts[:n]])
      else:  # the actor
        out.append([Generation(f"Good answer to {request}", 6, "stop")])
    return out

  def train_sft(self, records, *, checkpoint_dir, seed, system_prompt=""):
    self.trained.append((self.version, list(records), system_prompt))
    self.version += 10
    return [{"step": 1, "loss": 1.5, "grad_norm": 2.0, "learning_rate": 1e-4,
             "tokens_per_second": 50.0}]

  def train_dpo(self, pairs, *, checkpoint_dir, seed):
    raise AssertionError("the STE loop trains by SFT only")

  def save(self, path):
    os.makedirs(path + ".tmp", exist_ok=True)
    with open(os.path.join(path + ".tmp", "version.json"), "w") as f:
      json.dump({"version": self.version}, f)
    os.replace(path + ".tmp", path)

  def load(self, path):
    with open(os.path.join(path, "version.json")) as f:
      self.version = json.load(f)["version"]


def make_config(**ste_overrides):
  c = get_ste_config()
  c.seed = 5                       # y_w lands in both positions among the matched examples
  c.model.checkpoint = ""          # the driver keeps the seed in workdir/seed_model
  c.pipeline.num_iterations = 1
  c.pipeline.prompts_per_iteration = 6
  c.pipeline.chunk_size = 2
  c.ste.num_judgments = 4
  for k, v in ste_overrides.items():
    setattr(c.ste, k, v)
  return c


def _run(workdir, config, policy=None, **kwargs):
  policy = policy or ScriptedSTEPolicy()
  return pipeline.run(config, str(workdir), policy, POOL, **kwargs), policy


def test_one_iteration_on_a_scripted_model(tmp_path):
  """ste.orders="random": one seeded random order per pair (tests/test_ste_recipe.py: "both")."""
  (metrics,), policy = _run(tmp_path, make_config(orders="random"))
  it = tmp_path / "iter_1"
  prompt_records = artifacts.read_jsonl(str(it / "prompts.jsonl"))
  assert len(prompt_records) == 6
  worse = artifacts.read_jsonl(str(it / "worse.jsonl"))
  expected_unparseable = sum(r["prompt"] in UNPARSEABLE for r in prompt_records)
  assert [w["status"] for w in worse].count("unparseable") == expected_unparseable
  for w in worse:
    if w["status"] == "ok":
      assert w["chosen"] == f"Good answer to {w['prompt']}"
      assert w["rejected"] == "The product is 42."
      assert w["modified_instruction"] == f"Multiply the numbers of: {w['prompt']}"
  judged = artifacts.read_jsonl(str(it / "judge.jsonl"))
  assert len(judged) == len(worse) - expected_unparseable
  # The order is randomised per example, seeded and recorded; y_w sits where it says.
  order_seed = stages.stage_seed(5, 1, "ste_order")
  for r in judged:
    assert r["chosen_position"] == ste.chosen_position(order_seed, r["uid"])
    a = r["judge_prompt"].split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0]
    assert a.startswith("Good answer") == (r["chosen_position"] == "A")
    assert len(r["judgments"]) == 4
  # The system prompt went with every judge request (the reference prompt has one).
  judge_requests = [q for q in policy.requests if isinstance(q, list)]
  assert len(judge_requests) == len(judged)
  assert all(q[0]["content"] == prompts.PAIRWISE_SYSTEM_PROMPT for q in judge_requests)
  # Rejection sampling: one judgment naming y_w per example with a match, labels balanced.
  data = artifacts.read_jsonl(str(it / "sft_data.jsonl"))
  with_match = [r for r in judged if r["id"] not in {POOL.index(p) for p in NO_MATCH}]
  labels = [r["chosen_position"] for r in with_match]
  assert len(data) == 2 * min(labels.count("A"), labels.count("B")) > 0
  assert [e["label"] for e in data].count("A") == [e["label"] for e in data].count("B")
  by_uid = {r["uid"]: r for r in judged}
  for e in data:
    source = by_uid[e["uid"]]
    assert e["label"] == source["chosen_position"]
    assert e["prompt"] == source["judge_prompt"]
    assert e["response"] == source["judgments"][e["judgment_index"]]["text"]
    assert prompts.parse_pairwise_verdict(e["response"]) == e["label"]
  # SFT from the seed, on exactly those records, with the system prompt.
  assert len(policy.trained) == 1
  start_version, records, system_prompt = policy.trained[0]
  assert start_version == 0 and records == data
  assert system_prompt == prompts.PAIRWISE_SYSTEM_PROMPT
  # Counted: every drop has its number.
  assert metrics["prompts"] == 6
  assert metrics["ste/worse_unparseable"] == expected_unparseable
  assert metrics["ste/pairs"] == len(judged)
  assert metrics["ste/dropped_no_match"] == len(judged) - len(with_match)
  assert metrics["ste/with_match"] == len(with_match)
  assert metrics["ste/dropped_balance"] == len(with_match) - len(data)
  assert metrics["ste/kept"] == len(data)
  assert metrics["ste/kept_label_a_share"] == (0.5 if data else None)
  assert metrics["ste/verdict_rate"] == pytest.approx(0.75)
  assert metrics["sft/steps"] == 1 and metrics["sft/loss"] == 1.5
  assert "tokens_per_second" not in json.dumps(metrics)  # timings are not results
  assert (tmp_path / "iter_1" / "model" / "version.json").exists()
  assert (tmp_path / "plots" / "ste_counts.png").exists()


def test_every_iteration_trains_from_the_seed_on_data_from_the_previous_model(tmp_path):
  config = make_config()
  config.pipeline.num_iterations = 3
  metrics, policy = _run(tmp_path, config)
  assert [m["iteration"] for m in metrics] == [1, 2, 3]
  # M_t = SFT(seed, data_t): each SFT starts from version 0 (the seed) ...
  assert [v for v, _, _ in policy.trained] == [0, 0, 0]
  # ... and the model each iteration saved is one SFT away from the seed.
  for t in (1, 2, 3):
    with open(tmp_path / f"iter_{t}" / "model" / "version.json") as f:
      assert json.load(f)["version"] == 10
  # The data of iterations 2 and 3 was made by the trained models (version 10), not the seed.
  assert policy.generated_by == {0, 10}


def test_no_kept_example_means_no_sft_and_no_crash(tmp_path):
  global NO_MATCH
  saved, NO_MATCH = NO_MATCH, set(POOL)
  try:
    (metrics,), policy = _run(tmp_path, make_config())
  finally:
    NO_MATCH = saved
  assert policy.trained == []
  assert metrics["ste/kept"] == 0 and metrics["sft/steps"] == 0
  assert metrics["ste/dropped_no_match"] == metrics["ste/judged"] > 0
  assert artifacts.read_jsonl(str(tmp_path / "iter_1" / "sft_data.jsonl")) == []
  # M_1 is the seed.
  with open(tmp_path / "iter_1" / "model" / "version.json") as f:
    assert json.load(f)["version"] == 0


def test_categorisation_filters_instructions_and_counts_them(tmp_path):
  class Categorising(ScriptedSTEPolicy):
    def generate(self, batch, **kwargs):
      if batch and isinstance(batch[0], str) and batch[0].startswith("I have an instruction"):
        out = []
        for request in batch:
          task = request.split("<instruction>")[1].split("</instruction>")[0]
          kind = "Mathematical reasoning" if int(task.split()[1].rstrip(":")) % 2 else "Coding"
          out.append([Generation(f"Category: {kind}\nComplexity: 3\nLength: (a)", 9, "stop")])
        return out
      return super().generate(batch, **kwargs)

  config = make_config(categorize=True)
  config.pipeline.prompts_per_iteration = 4
  (metrics,), _ = _run(tmp_path, config, Categorising())
  categories = artifacts.read_jsonl(str(tmp_path / "ste_selection" / "categorize.jsonl"))
  selected = artifacts.read_jsonl(str(tmp_path / "ste_selection" / "selected.jsonl"))
  assert len(categories) == len(POOL)  # ste.selection_candidates=0: the whole pool
  assert selected and all(c["category"] == "Mathematical reasoning" for c in selected)
  assert all(c["complexity"] == 3 for c in categories)
  actor = artifacts.read_jsonl(str(tmp_path / "iter_1" / "actor.jsonl"))
  assert sorted(a["id"] for a in actor) == sorted(c["id"] for c in selected)
  assert metrics["ste/selected"] == len(selected) == 4
  assert metrics["ste/selection_other_category"] == len(categories) - len(selected)
  assert not (tmp_path / "iter_1" / "categorize.jsonl").exists()


def test_kill_during_judging_then_resume_equals_uninterrupted(tmp_path):
  config = make_config()
  config.pipeline.num_iterations = 2
  _run(tmp_path / "clean", config)
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path / "killed", config, ScriptedSTEPolicy(fail_after_judge_calls=2))
  chunks = tmp_path / "killed" / "iter_1" / "judge.jsonl.chunks"
  assert chunks.exists() and not (tmp_path / "killed" / "iter_1" / "judge.jsonl").exists()
  resumed = ScriptedSTEPolicy()
  _run(tmp_path / "killed", config, resumed)
  clean_calls = ScriptedSTEPolicy()
  _run(tmp_path / "count", config, clean_calls)
  assert resumed.judge_calls == clean_calls.judge_calls - 2  # the finished chunk was kept
  for name in ("prompts", "actor", "worse", "judge", "sft_data", "sft"):
    for t in (1, 2):
      a = (tmp_path / "clean" / f"iter_{t}" / f"{name}.jsonl").read_bytes()
      b = (tmp_path / "killed" / f"iter_{t}" / f"{name}.jsonl").read_bytes()
      assert a == b, (name, t)
  assert ((tmp_path / "clean" / "metrics.jsonl").read_bytes() ==
          (tmp_path / "killed" / "metrics.jsonl").read_bytes())
  # A finished run is not run again.
  again = ScriptedSTEPolicy()
  _run(tmp_path / "killed", config, again)
  assert again.requests == [] and again.trained == []


def test_judge_pairs_hook_scores_m0_and_each_model(tmp_path):
  calls = []

  def evaluate_model(policy, label):
    calls.append((label, policy.version))
    return {"judge_eval/score": 0.5 + policy.version / 100}

  metrics, _ = _run(tmp_path, make_config(), evaluate_model=evaluate_model)
  assert calls == [("M_0", 0), ("M_1", 10)]
  assert [m["judge_eval/score"] for m in metrics] == [0.5, 0.6]


def test_ste_config_values_are_checked():
  from meta_rewarding import config_check
  c = make_config()
  c.model.architecture = {"vocab_size": 8}
  c.data.prompts = "testbed:10"
  c.ste.num_judgments = 0
  c.ste.pairwise_template = "{input} {response_a}"
  c.ste.categorize = True
  c.ste.categories = ()
  c.evaluate.judge_pairs = "testbed:x"
  with pytest.raises(config_check.ConfigError) as e:
    config_check.check_pipeline_config(c)
  problems = "\n".join(e.value.problems)
  for key in ("ste.num_judgments=0", "ste.pairwise_template", "ste.categories",
              "evaluate.judge_pairs='testbed:x'"):
    assert key in problems, problems


def test_testbed_oracle_says_how_often_labels_and_verdicts_are_right():
  from meta_rewarding.testbed.tasks import generate_tasks, reference_response
  t0, t1, t2 = generate_tasks(0, 3, split="pool")
  wrong = "The answer is zzz."

  def pair(uid, task, chosen, rejected, status="ok"):
    return {"uid": uid, "id": uid, "prompt": task.instruction, "chosen": chosen,
            "rejected": rejected, "status": status}
  worse = [pair(0, t0, reference_response(t0), wrong),             # label true
           pair(1, t1, wrong, reference_response(t1)),             # label false
           pair(2, t2, reference_response(t2), reference_response(t2), "identical"),
           pair(3, t0, "x", "y", "unparseable") | {"prompt": "not a testbed task"}]
  judge = [_judged(0, "A", ["A", "B", None]), _judged(1, "B", ["B", "A"])]
  sft_data = [{"uid": 0, "label": "A"}, {"uid": 1, "label": "B"}]
  m = ste.testbed_oracle_metrics({"worse": worse, "judge": judge, "sft_data": sft_data})
  assert m["oracle/unknown_prompts"] == 1
  assert m["oracle/ste_chosen_correct"] == 0.5 and m["oracle/ste_rejected_correct"] == 0.5
  assert m["oracle/ste_label_right"] == 0.5
  # Pair 0: the right answer is at A; pair 1 (y_w at B is wrong): the right answer is at A.
  assert m["oracle/ste_judgment_right"] == pytest.approx(2 / 4)  # A, B | B, A
  assert m["oracle/ste_kept_right"] == 0.5


# ---------------------------------------------------------------------------------------------
# The real model: SFT data's token split, and the loop on the shipped seed.

def test_sft_loss_is_on_the_judgment_tokens_only(tmp_path, monkeypatch):
  """The loop with the real model (the shipped seed) for loading, SFT and saving, and the scripted
  stand-in for generation (the seed was not taught the STE formats): the SFT data reaches
  `train.run_sft` with the judge prompt (after the system prompt, in the chat template) as prompt
  tokens and exactly the kept judgment as response tokens, the only ones its loss counts."""
  from meta_rewarding import run, train
  from meta_rewarding.model_files import missing_files as missing_model_files
  from meta_rewarding.policy import JaxPolicy
  config = configs.load("ste_testbed", "smoke")
  config.seed = 5
  config.pipeline.prompts_per_iteration = 6
  config.ste.pairwise_template = prompts.PAIRWISE_TEMPLATE      # what the stand-in reads
  config.ste.worse_response_template = prompts.WORSE_RESPONSE_TEMPLATE
  config.ste.system_prompt = "Judge well."
  config.ste.num_judgments = 4
  config.evaluate.oracle = ""
  config.train.max_steps = 1
  policy = JaxPolicy.from_config(config, str(tmp_path), run.load_pool(config))
  scripted = ScriptedSTEPolicy()
  policy.generate = scripted.generate
  seen = []
  real = train.run_sft

  def capture(model_config, params, examples, cfg, **kwargs):
    seen.extend(examples)
    return real(model_config, params, examples, cfg, **kwargs)
  monkeypatch.setattr(train, "run_sft", capture)
  (metrics,) = pipeline.run(config, str(tmp_path), policy, POOL)
  data = artifacts.read_jsonl(str(tmp_path / "iter_1" / "sft_data.jsonl"))
  assert data and len(seen) == len(data) == metrics["ste/kept"]
  assert metrics["sft/steps"] == 1 and np.isfinite(metrics["sft/loss"])
  assert missing_model_files(str(tmp_path / "iter_1" / "model")) == []
  tok = policy.tokenizer
  for ex, record in zip(seen, data):
    assert tok.decode(list(ex["response_ids"])).strip() == record["response"]
    prompt_text = tok.decode(list(ex["prompt_ids"]))
    assert "Judge well." in prompt_text
    assert prompt_text.index("Judge well.") < prompt_text.index("[User Question]")
    assert record["response"] not in prompt_text


def test_smoke_run_of_the_ste_testbed_config(tmp_path):
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if not f.startswith("--xla_force_host_platform_device_count"))
  env["JAX_PLATFORMS"] = "cpu"
  workdir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, "-m", "meta_rewarding.main", "--config=configs/ste_testbed.py:smoke",
       f"--workdir={workdir}", "--config.pipeline.prompts_per_iteration=4",
       "--config.evaluate.judge_pairs=testbed:4"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  metrics = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["iteration"] for m in metrics] == [0, 1]
  assert 0.0 <= metrics[0]["judge_eval/score"] <= 1.0
  m = metrics[1]
  assert m["prompts"] == 4 and m["ste/responses"] + m["skipped/long_prompts"] == 4
  # Whatever the seed manages, every example is accounted for.
  assert m["ste/pairs"] + m["ste/worse_unparseable"] + m["ste/worse_identical"] + \
      m["ste/empty_responses"] + m["skipped/long_worse_prompts"] == m["ste/responses"]
  assert m["ste/with_match"] + m["ste/dropped_no_match"] == m["ste/judged"]
  assert m["ste/kept"] + m["ste/dropped_balance"] == m["ste/with_match"]
  assert (m["sft/steps"] > 0) == (m["ste/kept"] > 0)
  it = workdir / "iter_1"
  for name in ("prompts.jsonl", "actor.jsonl", "worse.jsonl", "judge.jsonl", "sft_data.jsonl",
               "sft.jsonl", "metrics.json", "model/config.json", "model/model.safetensors"):
    assert (it / name).exists(), name
  assert "ste/kept" in out.stdout and "judge_eval/score" in out.stdout
  assert "oracle/ste_label_right" in m and m["oracle/unknown_prompts"] == 0


def test_bench_report_pairs_each_model_with_the_seed():
  runs = {s: {0: {"iteration": 0, "judge_eval/score": 0.50 + d},
              1: {"iteration": 1, "judge_eval/score": 0.60 + d, "ste/kept": 10 + s,
                  "oracle/ste_label_right": 0.9}}
          for s, d in enumerate((0.0, 0.02, -0.01))}
  text, results = bench_ste.build_report(runs, 1, ["    python -m bench.ste"])
  assert results["paired"]["M_1"]["mean"] == pytest.approx(0.10)
  assert results["paired"]["M_1"]["verdict"] == "M_1 > M_0"
  assert "STE raises the judge's pairwise accuracy above the seed's; +10.0 points" in text
  assert "| M_0 (seed) | 50.3 ± " in text and "| kept for SFT (`ste/kept`) | 11.0 ± " in text
