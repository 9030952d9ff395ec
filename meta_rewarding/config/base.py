"""The base configs every config file starts from: the method's defaults as ml_collections configs.

  get_base_config()   Meta-Rewarding (docs/design.md#one-iteration). Paper scale: 4 iterations of
                      5000 prompts x 7 responses x 11 judgments, temperature 0.8, top-p 0.95, rho
                      schedule [0, 0.32, 0.32, 0.4], both pair types in iterations 1-2 and actor
                      pairs only in 3-4, beta 0.1. Model, data, mesh and training sizes are
                      placeholders each config file sets.
  train_config()      the trainer's hyper-parameters (DPO and SFT): `config.train`, `sft.train`.
  sft_settings()      `config.sft`: stage 0.
  get_ste_config()    the Self-Taught Evaluator's base (`recipe = "ste"`, `ste_settings()`).

Nothing here imports jax, flax or optax (a test checks it), so loading a config costs nothing.
"""

from __future__ import annotations

import ml_collections

from meta_rewarding import prompts
from meta_rewarding.config import declarations


def _section(keys) -> ml_collections.ConfigDict:
  """A section's defaults (declarations.py) as a config; dicts become nested configs."""
  return ml_collections.ConfigDict({
      name: ml_collections.ConfigDict(dict(value)) if isinstance(value, dict) else value
      for name, value in declarations.defaults(keys).items()})


def train_config() -> ml_collections.ConfigDict:
  """Training hyper-parameters shared by DPO and SFT (`declarations.TRAIN`; `train.py`'s
  docstring says why these)."""
  return _section(declarations.TRAIN)


def sft_settings() -> ml_collections.ConfigDict:
  """`config.sft`: stage 0, SFT of the loaded checkpoint (or random init) into M_0 before
  iteration 1 (pipeline.py, "Stage 0"); `data = ""` (the default) runs no stage 0.

  The Meta-Rewarding paper's iteration 1 starts from an SFT model: the seed fine-tuned on
  Self-Rewarding's evaluation fine-tuning (EFT) set so that it can judge
  (docs/scale.md#3-the-eft-file-and-an-eft-trained-starting-model).
  `train` is a whole `train_config()` of its own (the DPO-only keys are unused), so stage 0's
  learning rate, epochs, batch and lengths are set apart from the iterations' DPO. Its values are
  Self-Rewarding's SFT recipe as this project reads it (lr 5.5e-6 decaying to 1.1e-6, 16 sequences
  per step); not confirmed against the paper's text here: check them before a paper-scale run.
  `data`: JSONL / parquet {"prompt": str or chat messages, <response_field>: str} records, or chat
  records {"messages": [..., {"role": "assistant", "content": ...}]} (the last message is the
  target, those before it the prompt).
  """
  t = train_config()
  t.learning_rate = 5.5e-6
  t.decay = "cosine"
  t.end_learning_rate_ratio = 0.2     # 5.5e-6 -> 1.1e-6
  t.batch_size = 4                    # x grad_accum_steps 4 = 16 sequences per step
  t.grad_accum_steps = 4
  t.num_epochs = 1
  c = _section(declarations.SFT)
  c.train = t
  return c


def get_base_config() -> ml_collections.ConfigDict:
  """Meta-Rewarding's defaults: every section of `declarations.SECTIONS` (the module doc)."""
  c = ml_collections.ConfigDict()
  for name, keys in declarations.SECTIONS.items():
    if name == "":
      for key, value in declarations.defaults(keys).items():
        c[key] = value
    elif name == "train":
      c.train = train_config()
    elif name == "sft":
      c.sft = sft_settings()
    else:
      c[name] = _section(keys)
  return c


# ------------------------------------------------------------------------------------------------
# The Self-Taught Evaluator (Wang et al. 2024, arXiv 2408.02666): `recipe = "ste"`.

def ste_settings() -> ml_collections.ConfigDict:
  """`config.ste`: the STE loop's prompts, N and lengths (pipeline.py, ste.py).

  From the paper's reference implementation (facebookresearch/RAM, self_taught_evaluator): the
  worse-response prompt (verbatim), the pairwise judge prompt (RewardBench's / MT-Bench's, without
  the tie option), rejection sampling that shuffles the N judgments and keeps the first matching
  one, label balancing, and generation at temperature 0.7, top-p 0.9, max_tokens 4096 (its
  README). From the maintainers' answers (RAM issues #21, #22): SFT starts from the seed every
  iteration; the paper kept the "over 20,000" WildChat instructions its categoriser called
  "reasoning". Not confirmed (the paper's text was not at hand when these were set; check them
  before a paper-scale run): N = 15 judgments per example, 5 iterations, the categorisation
  prompt's exact wording (prompts.CATEGORY_TEMPLATE) and so the names `ste.categories` must match.
  Differs from the paper: its first iteration's judgments came from Mixtral 8x22B-Instruct (RAM
  issue #21), here from the seed itself.
  """
  # Instruction selection is off by default. On, it runs once before iteration 1 with the seed
  # (workdir/ste_selection/) and every iteration draws its prompts from the selected set. The
  # paper categorises its WildChat instructions and keeps those in the "reasoning" category; the
  # `categories` are the reasoning ones of prompts.CATEGORY_TEMPLATE, matched case-insensitively.
  # The paper's "challenging and balanced": min_complexity and max_per_category are this project's
  # reading of it (docs/design.md#the-self-taught-evaluator-as-built). The paper-scale config uses
  # RAM's evaluation-plan judge prompt (use_eval_plan_judge); this base keeps RewardBench's.
  return _section(declarations.STE)


def use_eval_plan_judge(c: ml_collections.ConfigDict) -> None:
  """The STE judge RAM generates its judgments with: the evaluation-plan prompt
  (prompts.EVAL_PLAN_TEMPLATE, verbatim from RAM's data/prompts/eval_plan.prompt), one user
  message, no system prompt (configs/ste_tpu_v4.py)."""
  c.ste.pairwise_template = prompts.EVAL_PLAN_TEMPLATE
  c.ste.system_prompt = prompts.EVAL_PLAN_SYSTEM_PROMPT


def get_ste_config() -> ml_collections.ConfigDict:
  """The Self-Taught Evaluator's base config: `get_base_config()` with `recipe = "ste"`, the `ste`
  section and the paper's generation settings. Sections it reads from the base: seed, model, data,
  mesh, sampling, actor.max_new_tokens (y_w), train (the SFT), pipeline.num_iterations /
  prompts_per_iteration / chunk_size, evaluate.judge_pairs (scored with the ste templates). The
  Meta-Rewarding sections (judge, meta_judge, actor.num_responses, pipeline.rho / train_pairs)
  are unused; meta_judge.enabled is False so the memory plan leaves it out."""
  c = get_base_config()
  c.recipe = "ste"
  c.ste = ste_settings()
  c.meta_judge.enabled = False
  c.sampling.temperature = 0.7       # the reference implementation's README
  c.sampling.top_p = 0.9
  c.actor.max_new_tokens = 4096
  c.pipeline.num_iterations = 5      # not confirmed here (see ste_settings)
  c.pipeline.prompts_per_iteration = 20000  # the paper's "over 20,000" selected instructions
  c.pipeline.rho = (0.0,)
  c.pipeline.train_pairs = ("none",)
  # SFT (the judge's training, from the seed every iteration): the reference implementation's
  # sft_training.yaml (fairseq2; for its released Llama-3.1-70B judge): AdamW lr 1e-6, betas
  # (0.9, 0.95), weight decay 0.1, 100 warmup steps, cosine to 1e-7, no gradient clipping, 4096
  # tokens. Batch and epochs are not given there (it trains by token budget with early stopping):
  # 16 sequences per step and 1 epoch are this project's choice.
  t = c.train
  t.learning_rate = 1e-6
  t.warmup_steps = 100
  t.decay = "cosine"
  t.end_learning_rate_ratio = 0.1
  t.weight_decay = 0.1
  t.adam_b1, t.adam_b2 = 0.9, 0.95
  t.max_grad_norm = 0.0
  t.max_length = 4096
  t.length_buckets = (1024, 2048, 3072, 4096)
  t.num_epochs = 1
  return c
