"""The default config: Meta-Rewarding on the synthetic testbed, on a CPU, in minutes.

  python -m meta_rewarding.main --config=configs/local_cpu.py --workdir=/tmp/mr_local

Starts from the shipped seed model (meta_rewarding/testbed/seed/: a 0.9M-parameter Llama taught by
SFT to act, judge and meta-judge on the testbed, imperfectly, its judge's score on purpose at odds
with its own verdict in about 10% of judgments, a fault actor pairs do not train; rebuild it with
the command in meta_rewarding/testbed/seed/README.md) and runs 3 iterations
of 24 testbed prompts x 4 responses x 4 judgments with the compact testbed templates
(meta_rewarding/testbed/templates.py) on the paper's pair schedule: actor and judge pairs in
iterations 1-2, actor pairs only in iteration 3 (Meta-Rewarding trains iterations 1-2 on both
and 3-4 on actor pairs; with 3 iterations the third is the first actor-only one). It departs
once from the paper: the meta-judge gets only battles between judgments with different scores
(`meta_judge.skip_same_score`; the paper sends every pair), because the testbed's meta-judge
cannot order two judgments with one score (the comment at the setting says more). Before the first
iteration and after each one the model is evaluated on 100 held-out testbed tasks (the `eval`
split: never in the seed's SFT data or the prompt pool).
Measured on a 2-core CPU: see README.md for the time (at most 5 minutes).

Variants (`--config=configs/local_cpu.py:<arg>`; several may be joined with commas, e.g.
`:bench,self_rewarding,seed=2`):
  (none)             3 iterations, judge pairs in 1-2 (the paper's schedule), rho 0 / 0.32 / 0.32.
  smoke              1 iteration, 4 prompts, K=4, N=2: the whole loop in about a minute.
  self_rewarding     the Self-Rewarding baseline (no meta-judge, actor pairs only).
  judge_pairs_every  judge pairs in every iteration (not the paper's schedule).
  no_length_control  rho = 0 in every iteration (plain best-vs-worst actor pairs).
  bench              the per-run size of bench/testbed.py (3 iterations, 32 prompts; held-out
                     evaluation of M_0 and M_3 only).
  oracle_meta=verdict|check
                     a diagnostic, not the method: the testbed's oracle answers the meta-judge
                     prompts (meta_rewarding/testbed/oracle_meta_judge.py); "check" also reads
                     the judgments' checks, so it decides same-score battles too (and sends them).
  seed=1             another run seed (prompt sampling, generation, DPO data order).

What it prints: a progress bar per stage and, after each iteration, a table of the docs/design.md#what-each-iteration-reports
metrics plus two kinds of oracle metrics: `heldout/*` (column t = the model M_t that iteration t
trained, column 0 = the seed M_0: actor accuracy, the judge's balanced accuracy on the model's own
answers, its mean score, meta-judge accuracy) and `oracle/*` (measured on what iteration t
generated, i.e. on the model entering iteration t); metrics.jsonl, TensorBoard events and
plots/*.png (plots/heldout.png: M_0 ... M_T) in the workdir.
"""

import ml_collections

from configs import common
from meta_rewarding.config import base

VARIANTS = ("", "smoke", "self_rewarding", "judge_pairs_every", "no_length_control", "bench",
            "bench,self_rewarding,no_length_control", "bench,judge_pairs_every", "seed=1",
            "bench,oracle_meta=verdict", "bench,oracle_meta=check")
KNOWN = ("smoke", "self_rewarding", "judge_pairs_every", "no_length_control", "bench", "seed",
         "oracle_meta")


def seed_dir() -> str:
  """The shipped seed model this config starts from."""
  return common.testbed_settings().seed_dir


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variants = common.parse_variants(arg, "local_cpu", KNOWN, "bench,self_rewarding,seed=2")
  testbed = common.testbed_settings()

  c = base.get_base_config()
  c.seed = 0
  common.use_testbed_seed(c)

  c.data.prompts = "testbed:2000"

  c.sampling.batch_size = 32
  c.sampling.prompt_buckets = (48, 96, 128, 192, 256, 288)  # meta-judge prompts: up to ~265 tokens
  c.sampling.top_k = 32

  c.actor.num_responses = 4
  c.actor.max_new_tokens = testbed.actor_max_new_tokens
  c.judge.num_judgments = 4
  c.judge.max_new_tokens = testbed.judge_max_new_tokens
  c.judge.template = testbed.judge_template
  c.meta_judge.max_new_tokens = testbed.meta_judge_max_new_tokens
  c.meta_judge.template = testbed.meta_judge_template
  c.meta_judge.max_chosen_chars = 200
  # The testbed's meta-judge re-checks the response and prefers the judgment whose score fits its
  # own verdict; two judgments with one score fit equally, so the seed was taught a coin-flip
  # winner there, and such battles only turned into judge pairs of no better against no worse
  # (40% of the judge pairs on seed v4: bench/results/seed_diagnosis.md, "v5").
  c.meta_judge.skip_same_score = True

  c.pipeline.num_iterations = 3
  # 24 prompts (the bench: 32) keep the default run within 5 minutes on 2 cores now that the
  # meta-judge writes its own check before its verdict (32 prompts: 5m06s-5m12s).
  c.pipeline.prompts_per_iteration = 24
  c.pipeline.rho = (0.0, 0.32, 0.32)
  c.pipeline.train_pairs = ("both", "both", "actor")   # the paper's schedule, cut at 3
  c.pipeline.chunk_size = 16

  _set_train_config(c.train)
  c.evaluate.oracle = "testbed"
  # 100 held-out tasks, 2 answers each, without the greedy and fixed-response passes, keep the
  # default run within 5 minutes on 2 cores (with 4 answers each: 6m12s, the meta-judge writing its
  # own check); bench/testbed.py evaluates on 200 tasks, 4 answers each, with them.
  c.evaluate.heldout_tasks = 100
  c.evaluate.heldout_samples = 2
  c.evaluate.heldout_diagnostics = False

  for name, value in variants.items():  # in the order given
    if name == "smoke":
      c.pipeline.num_iterations = 1
      c.pipeline.prompts_per_iteration = 4
      # K=4: with the v6 seed, 4 prompts x 2 answers often leave no pair (duplicates, equal
      # scores), and the smoke run should train.
      c.actor.num_responses = 4
      c.judge.num_judgments = 2
      c.sampling.batch_size = 8
      c.train.batch_size = 4
      c.train.num_epochs = 1
      c.evaluate.heldout_tasks = 12
    elif name == "self_rewarding":
      c.meta_judge.enabled = False
    elif name == "judge_pairs_every":
      c.pipeline.train_pairs = ("both",) * len(c.pipeline.train_pairs)
    elif name == "no_length_control":
      c.pipeline.rho = tuple(0.0 for _ in c.pipeline.rho)
    elif name == "bench":
      c.pipeline.num_iterations = 3
      c.pipeline.prompts_per_iteration = 32
      c.evaluate.heldout_every_iteration = False  # the bench compares M_3 with M_0
      c.evaluate.heldout_diagnostics = True       # it reports greedy actor accuracy too
      c.evaluate.heldout_samples = 4
    elif name == "oracle_meta":
      if value not in ("verdict", "check"):
        raise ValueError(f"local_cpu variant oracle_meta={value!r}: expected verdict or check")
      c.meta_judge.testbed_oracle = value
      # The "check" oracle reads the checks, so it can decide same-score battles: send them.
      c.meta_judge.skip_same_score = value == "verdict"
    elif name == "seed":
      try:
        c.seed = int(value)
      except (TypeError, ValueError):
        raise ValueError(f"local_cpu variant seed={value!r}: expected an integer, e.g. seed=2")
  return c


def _set_train_config(t: ml_collections.ConfigDict) -> None:
  # DPO for a 0.9M-parameter model on ~60 pairs per iteration: a much larger learning rate than
  # the 8B defaults (5e-7), a few epochs, the paper's beta.
  t.learning_rate = 1e-4
  t.warmup_steps = 2
  t.decay = "cosine"
  t.batch_size = 8
  t.grad_accum_steps = 1
  t.num_epochs = 3
  t.beta = 0.1
  t.max_length = 192      # a judge pair's prompt and judgment: up to ~175 tokens
  t.length_buckets = (48, 96, 128, 192)
  t.checkpoint_every = 1000
  t.log_every = 5
