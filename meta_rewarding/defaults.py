"""Every default of the project, as data: config files import only `ml_collections` and this module.

  get_base_config()      the method's defaults (docs/design.md#one-iteration) as one ml_collections config.
                         Paper scale: 4 iterations of 5000 prompts x 7 responses x 11 judgments,
                         temperature 0.8, top-p 0.95, rho schedule [0, 0.32, 0.32, 0.4], both pair
                         types in iterations 1-2 and actor pairs only in 3-4, beta 0.1. Model, data,
                         mesh and training sizes are placeholders each config file sets.
  train_config()         the trainer's hyper-parameters (DPO and SFT), `config.train`.
  TRAIN_RULES            the logical-axis rules (`config.mesh.rules`); decoding adds the KV cache's
                         (`decode_rules`).
  paper_scale_config()   what the TPU and GPU configs share (model presets, paper settings,
                         scan + remat, long buckets, a tensor width that divides the model) and
                         `apply_runlocal`, their tiny local variant.
  get_ste_config()       the Self-Taught Evaluator's base (`recipe = "ste"`, `ste_settings()`).
  testbed_settings()     the synthetic testbed's seed model, templates and generation lengths.
  parse_variants()       the one parser of `--config=<file>:<variants>` arguments.

Nothing here imports jax, flax or optax (a test checks it), so loading a config costs nothing.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import ml_collections

from meta_rewarding import prompts

# Logical axis -> mesh axes. Training: batch over data x fsdp, parameters sharded along embed (fsdp)
# and heads / mlp / vocab (tensor). The model names logical axes only (model/llama.py).
TRAIN_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_q_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
)
# Decoding keeps the parameters' layout (no resharding between stages); the KV cache follows batch
# and kv_heads like the activations do, and is never split along its length.
CACHE_RULES = (("cache_length", None),)


def normalize_rules(rules: Iterable) -> tuple:
  """Rules as flax wants them: a tuple of (name, mesh axis | tuple of axes | None). Config values
  that went through JSON or the command line hold lists instead of tuples."""
  return tuple((str(name), tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in rules)


# What paper-scale configs with tensor parallelism set as `mesh.decode_rules`: the sampler's
# (compute-dtype) copy of the weights is not sharded over fsdp, so a decode step reads each chip's
# weights where they lie instead of all-gathering every weight over fsdp in every step (the compile
# check found the gathers: bench/results/tpu_compile.md). The copy then takes 1/tensor of the
# weights per chip (2 GiB of Llama-3-8B's bf16 weights at tensor=8).
DECODE_WEIGHTS_NOT_OVER_FSDP = (("embed", None),)


def decode_rules(rules: Iterable, overrides: Iterable = ()) -> tuple:
  """The decode rules for parameter rules `rules`: the same with `overrides` (`mesh.decode_rules`)
  in place of the rules they name, plus the KV cache's unless given."""
  rules = normalize_rules(rules)
  overrides = dict(normalize_rules(overrides))
  rules = tuple((name, overrides.pop(name)) if name in overrides else (name, axes)
                for name, axes in rules) + tuple(overrides.items())
  named = {name for name, _ in rules}
  return rules + tuple(rule for rule in CACHE_RULES if rule[0] not in named)


def train_config() -> ml_collections.ConfigDict:
  """Training hyper-parameters shared by DPO and SFT (`train.py`'s docstring says why these)."""
  return ml_collections.ConfigDict(dict(
      learning_rate=5e-7,
      warmup_steps=10,            # linear warmup: step s (0-based) uses lr*(s+1)/warmup_steps
      decay="cosine",             # cosine | linear | constant, after warmup, over the whole run
      end_learning_rate_ratio=0.1,  # final lr = ratio * learning_rate (cosine / linear)
      weight_decay=0.0,           # AdamW, matrices only (norm scales are never decayed)
      adam_b1=0.9,
      adam_b2=0.95,
      adam_eps=1e-8,
      max_grad_norm=1.0,          # global-norm clipping; 0 disables
      batch_size=4,               # pairs (DPO) / sequences (SFT) per microbatch
      grad_accum_steps=4,         # microbatches per optimizer step
      num_epochs=1,
      max_steps=0,                # stop after this many optimizer steps (0 = all epochs)
      max_length=2048,            # prompt + response tokens, per response
      # Padded lengths of packed rows (prompt + chosen + rejected) and of their response tokens;
      # each distinct length compiles once. Longer rows use 2 * max_length (SFT: max_length).
      length_buckets=(512, 1024, 2048, 3072),
      truncation="skip",          # skip | truncate_response | error (see data.truncate_examples)
      beta=0.1,
      loss_type="sigmoid",        # sigmoid | robust | hinge | ipo
      label_smoothing=0.0,
      nll_scale=0.0,              # > 0 adds nll_scale * (chosen response mean token NLL)
      checkpoint_every=100,       # optimizer steps between train-state saves
      keep_checkpoints=3,
      async_checkpointing=True,
      log_every=10,
      logps_chunk_size=0,         # > 0: response log-probs this many tokens at a time, never
                                  # all [rows, Tr, V] float32 logits at once (128k vocabularies)
      reference_batch_size=0,     # pairs per reference-pass batch (0 = 2 * batch_size)
  ))


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
  """
  t = train_config()
  t.learning_rate = 5.5e-6
  t.decay = "cosine"
  t.end_learning_rate_ratio = 0.2     # 5.5e-6 -> 1.1e-6
  t.batch_size = 4                    # x grad_accum_steps 4 = 16 sequences per step
  t.grad_accum_steps = 4
  t.num_epochs = 1
  return ml_collections.ConfigDict(dict(
      # JSONL / parquet: {"prompt": str or chat messages, <response_field>: str} records, or chat
      # records {"messages": [..., {"role": "assistant", "content": ...}]} (the last message is
      # the target, those before it the prompt). "" = no stage 0.
      data="",
      response_field="completion",
      system_prompt="",               # before every prompt that has no system message; "" = none
      train=t,
  ))


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.allow_config_change = False

  c.model = ml_collections.ConfigDict()
  c.model.checkpoint = ""          # a local HF Llama directory; "" = random init from `architecture`
  c.model.tokenizer = ""           # "" = the checkpoint's tokenizer; or a path; or "train:<vocab>"
  c.model.chat_format = "auto"     # auto | llama3 | llama2 | hf | raw
  c.model.architecture = ml_collections.ConfigDict()  # LlamaConfig fields for random init
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.scan_layers = False
  c.model.remat_policy = "none"
  c.model.strict_config = False    # True: refuse unknown keys in the checkpoint's config.json
  c.model.export_hf = True         # each iteration's model as HF safetensors (else orbax params)

  c.data = ml_collections.ConfigDict()
  c.data.prompts = ""              # JSONL / parquet path, "hf:<name>[:<split>]", or "testbed:<n>"
  c.data.field = "prompt"
  c.data.skip_long_prompts = True  # counted in metrics as skipped/long_prompts

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
  c.mesh.distributed = False       # jax.distributed.initialize (multi-host)
  c.mesh.rules = TRAIN_RULES       # logical axis -> mesh axes; decoding adds the KV cache's
  c.mesh.decode_rules = ()         # rules that replace mesh.rules' while sampling (the sampler's
                                   # weight copy and KV cache), e.g. DECODE_WEIGHTS_NOT_OVER_FSDP

  c.sampling = ml_collections.ConfigDict()
  c.sampling.temperature = 0.8
  c.sampling.top_p = 0.95
  c.sampling.top_k = 64            # candidates considered before nucleus filtering (0: off)
  c.sampling.batch_size = 16
  c.sampling.prompt_buckets = (64, 128, 256, 512, 1024, 2048)
  c.sampling.max_cache_length = 0  # 0 = largest bucket + max_new_tokens
  c.sampling.batching = "continuous"  # finished rows refilled between blocks; "static": per batch
  c.sampling.decode_block = 32     # continuous: the most decode steps between two refills

  c.actor = ml_collections.ConfigDict()
  c.actor.num_responses = 7        # K
  c.actor.max_new_tokens = 512

  c.judge = ml_collections.ConfigDict()
  c.judge.num_judgments = 11       # N
  c.judge.max_new_tokens = 256
  c.judge.template = prompts.JUDGE_TEMPLATE

  c.meta_judge = ml_collections.ConfigDict()
  c.meta_judge.enabled = True      # False = the Self-Rewarding baseline
  c.meta_judge.max_new_tokens = 256
  c.meta_judge.template = prompts.META_JUDGE_TEMPLATE
  c.meta_judge.max_chosen_chars = 1200  # judge pairs whose chosen judgment is longer are dropped
  c.meta_judge.elo_l2 = 1e-3
  c.meta_judge.run_when_unused = False  # meta-judge iterations that train on actor pairs only?
  # Battles only between judgments with different scores? False = every pair (the paper). For a
  # meta-judge that cannot prefer one of two same-score judgments (the testbed's: configs/local_cpu.py).
  c.meta_judge.skip_same_score = False
  # A diagnostic for the testbed only: the oracle answers the meta-judge prompts, by rule
  # "verdict" or "check" (meta_rewarding/testbed/oracle_meta_judge.py); "" = the model (the method).
  c.meta_judge.testbed_oracle = ""

  c.train = train_config()
  c.sft = sft_settings()              # stage 0 (off: sft.data = "")

  c.pipeline = ml_collections.ConfigDict()
  c.pipeline.num_iterations = 4
  c.pipeline.prompts_per_iteration = 5000
  c.pipeline.rho = (0.0, 0.32, 0.32, 0.4)                    # length control, per iteration
  c.pipeline.train_pairs = ("both", "both", "actor", "actor")  # both | actor | judge | none
  c.pipeline.length_unit = "chars"  # response length for length control: chars | tokens
  c.pipeline.chunk_size = 64        # prompts per artifact chunk (the unit of resume)

  c.evaluate = ml_collections.ConfigDict()
  c.evaluate.oracle = ""            # "testbed": add oracle metrics (the synthetic testbed)
  c.evaluate.heldout_tasks = 0      # testbed: evaluate M_0 ... M_T on this many held-out tasks
  # testbed: which held-out tasks. 0: the development set the seeds were designed on; K > 0: a
  # fresh set drawn with seed K, disjoint from it by construction (testbed.measure.eval_task_list).
  c.evaluate.heldout_task_seed = 0
  c.evaluate.heldout_every_iteration = True  # False: only M_0 and the last iteration's M_T
  c.evaluate.heldout_samples = 4    # testbed: actor samples per held-out task
  # The held-out extras: greedy actor accuracy and the judge on a fixed response set (comparable
  # across models). False skips their two sampling passes.
  c.evaluate.heldout_diagnostics = True
  # Preference pairs (RewardBench format: judge_eval.py) every model M_0 ... M_T is judged on;
  # "" = none. judge_eval/* metrics: score, per-subset accuracy, position consistency, parse rate.
  c.evaluate.judge_pairs = ""
  c.evaluate.judge_protocol = "pairwise"  # pairwise (the STE prompt) | pointwise (judge.template)
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
  return ml_collections.ConfigDict(dict(
      # Instruction selection: off by default. On, it runs once before iteration 1 with the seed
      # (workdir/ste_selection/) and every iteration draws its prompts from the selected set. The
      # paper categorises its WildChat instructions and keeps those in the "reasoning" category;
      # the names here are the reasoning ones of prompts.CATEGORY_TEMPLATE, matched
      # case-insensitively. The paper's "challenging and balanced": min_complexity (the
      # categoriser's 1-10 complexity score; 0 = off) and max_per_category (0 = no cap) are this
      # project's reading of it (docs/design.md#the-self-taught-evaluator-as-built).
      categorize=False,
      category_template=prompts.CATEGORY_TEMPLATE,
      categories=("Knowledge and Reasoning", "Mathematical reasoning"),
      category_max_new_tokens=128,
      selection_candidates=0,  # pool instructions categorised, in stream order; 0 = the whole pool
      min_complexity=0,
      max_per_category=0,
      # y_l: the model's answer to a modified instruction x' (the paper's prompt, verbatim).
      worse_response_template=prompts.WORSE_RESPONSE_TEMPLATE,
      worse_max_new_tokens=4096,
      # The judge: N pairwise judgments per (x, y_w, y_l) and order. orders="both": y_w as A and
      # y_w as B, N each, one judgment kept per order (RAM's recipe); "random": one seeded random
      # order per pair. The paper-scale config uses RAM's evaluation-plan prompt
      # (prompts.EVAL_PLAN_TEMPLATE, no system prompt); this base keeps the RewardBench one.
      orders="both",
      pairwise_template=prompts.PAIRWISE_TEMPLATE,
      system_prompt=prompts.PAIRWISE_SYSTEM_PROMPT,  # "" = no system message
      num_judgments=15,
      judge_max_new_tokens=4096,
      # Keep as many label-A as label-B examples (the reference implementation does).
      balance_labels=True,
      # What M_t's SFT trains on: "iteration" (iteration t's judgments) or "accumulated"
      # (iterations 1..t's).
      train_on="iteration",
  ))


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


# ------------------------------------------------------------------------------------------------
# Variants: `--config=configs/<file>.py:<arg>`.

def parse_variants(arg: str | None, config_name: str, known: Iterable[str],
                   example: str = "") -> dict[str, str | bool]:
  """'model=llama3_1b,runlocal' -> {'model': 'llama3_1b', 'runlocal': True}, in the order given.

  Raises ValueError naming the config file, the unknown variants and the known ones (a config's
  `get_config` is called by ml_collections' flag parser, which reports it with the file name)."""
  out: dict[str, str | bool] = {}
  for item in filter(None, (part.strip() for part in (arg or "").split(","))):
    key, sep, value = item.partition("=")
    out[key.strip()] = value.strip() if sep else True
  known = tuple(known)
  unknown = [k for k in out if k not in known]
  if unknown:
    hint = f" (e.g. {example!r})" if example else ""
    names = ", ".join(repr(k) for k in unknown)
    raise ValueError(f"unknown {config_name} variant{'s' if len(unknown) > 1 else ''} {names}; "
                     f"expected some of {', '.join(known)}{hint}")
  return out


# ------------------------------------------------------------------------------------------------
# Paper scale: what configs/tpu_v4.py and configs/gpu.py share.

PAPER_SCALE_VARIANTS = ("model", "mesh", "self_rewarding", "runlocal")


def model_preset(name: str) -> dict[str, Any]:
  """{"name": the preset key, "architecture": its DecoderConfig fields, "hf_repo": the checkpoint
  it describes or None, "checkpoint_name": the directory name placeholder paths give it} for a
  preset name or alias of `model/presets.py` (KeyError lists them)."""
  from meta_rewarding.model import presets  # plain dicts; the model package loads flax lazily
  key = presets.canonical(name)
  repo = presets.HF_REPOS.get(key)
  return {"name": key, "architecture": presets.get(key), "hf_repo": repo,
          "checkpoint_name": presets.CHECKPOINT_NAMES.get(key, repo and repo.split("/")[1])}


def paper_scale_config(variants: Mapping[str, Any], *, checkpoint: str, checkpoint_dir: str,
                       prompts_path: str, mesh_shape: Mapping[str, int], num_devices: int,
                       device_memory_gb: float, distributed: bool, remat_policy: str,
                       mesh_names: tuple[str, str], fsdp_batch: tuple[int, int]
                       ) -> ml_collections.ConfigDict:
  """A preset model (`variants["model"]`, default Llama-3-8B-Instruct) with the paper's method
  settings on a pod or node: scan + remat for training, 3072-token pairs in 4 x 4 microbatches,
  512-token log-prob chunks, 64 decode rows, prompt buckets up to 3072.

  mesh_shape's `tensor` is the widest tensor parallelism: a model whose heads, kv heads, MLP or
  vocabulary it does not divide runs at the widest divisor of it that divides them all
  (`tensor_width`), the other devices going to fsdp; where the batch shards then outnumber the
  4 pairs per microbatch, the microbatch grows to them with fewer microbatches (16 pairs a step).

  checkpoint: the 8B checkpoint's placeholder path; other presets get `checkpoint_dir/<repo name>`
  (`presets.CHECKPOINT_NAMES` where the directory that runs is not the repo's: Gemma 3's text model).
  mesh_names: (the default mesh's variant name, the pure-FSDP one's), e.g. ("tensor", "fsdp").
  fsdp_batch: (pairs per microbatch, microbatches) under pure FSDP: the batch shards must divide
  the microbatch.
  """
  c = get_base_config()
  c.seed = 0
  preset = model_preset(str(variants.get("model", "llama3_8b")))
  name = preset["checkpoint_name"]
  c.model.checkpoint = checkpoint if preset["name"] == "llama3_8b" else (
      f"{checkpoint_dir}/{name}" if name else "")
  c.model.tokenizer = ""              # the checkpoint's own tokenizer and chat template
  c.model.chat_format = "auto"
  c.model.architecture = ml_collections.ConfigDict(preset["architecture"])  # planning / random init
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.scan_layers = True
  c.model.remat_policy = remat_policy

  c.data.prompts = prompts_path
  c.data.field = "prompt"

  t = c.train
  # learning rate, warmup, cosine decay, AdamW betas, clipping, beta=0.1: train_config()'s.
  t.batch_size = 4                    # pairs per microbatch (a multiple of the batch shards)
  t.grad_accum_steps = 4              # 16 pairs per optimizer step
  t.num_epochs = 1
  t.max_length = 3072
  t.length_buckets = (512, 1024, 2048, 3072)
  t.logps_chunk_size = 512
  t.checkpoint_every = 50
  # Stage 0 (SFT on the EFT set; off until sft.data names the file): the same lengths.
  c.sft.train.max_length = t.max_length
  c.sft.train.length_buckets = t.length_buckets
  c.sft.train.logps_chunk_size = t.logps_chunk_size
  c.sft.train.checkpoint_every = t.checkpoint_every

  c.mesh.shape = ml_collections.ConfigDict(dict(mesh_shape))
  c.mesh.distributed = distributed
  c.mesh.num_devices = num_devices    # the device count the planner assumes by default
  c.mesh.device_memory_gb = device_memory_gb
  mesh = variants.get("mesh")
  if mesh == mesh_names[1]:
    c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    t.batch_size, t.grad_accum_steps = fsdp_batch
    c.sft.train.batch_size, c.sft.train.grad_accum_steps = fsdp_batch
  elif mesh not in (None, mesh_names[0]):
    raise ValueError(f"mesh={mesh!r}; expected {mesh_names[1]} or {mesh_names[0]}")
  elif mesh_shape.get("tensor", 1) > 1:
    # The tensor axis shards heads, kv heads, MLP and vocabulary: a model whose widths it does not
    # divide (Qwen2.5-7B's 28 heads / 4 kv heads at tensor=8) gets the widest degree that does,
    # and the devices left over go to fsdp.
    width = tensor_width(preset["architecture"], int(mesh_shape["tensor"]))
    if width != mesh_shape["tensor"]:
      c.mesh.shape.tensor = width
      shards = num_devices // width   # data x fsdp: the batch shards
      if t.batch_size % shards:   # pairs per microbatch: a multiple of the batch shards
        pairs = t.batch_size * t.grad_accum_steps
        t.batch_size = -(-t.batch_size // shards) * shards
        t.grad_accum_steps = max(1, pairs // t.batch_size)
        c.sft.train.batch_size, c.sft.train.grad_accum_steps = t.batch_size, t.grad_accum_steps

  # The paper's method settings (4 iterations, 5000 prompts, K=7, N=11, rho schedule, beta 0.1,
  # temperature 0.8, top-p 0.95) are the defaults; only lengths and batching are set here.
  c.sampling.batch_size = 64
  c.sampling.prompt_buckets = (128, 256, 512, 1024, 2048, 3072)
  c.sampling.top_k = 64
  c.sampling.max_cache_length = 0
  c.actor.max_new_tokens = 1024
  c.judge.max_new_tokens = 256
  c.meta_judge.max_new_tokens = 256
  c.evaluate.oracle = ""

  if c.mesh.shape.get("tensor", 1) != 1:
    c.mesh.decode_rules = DECODE_WEIGHTS_NOT_OVER_FSDP
  if variants.get("self_rewarding"):
    c.meta_judge.enabled = False      # no judge pairs: "both" trains on actor pairs only
  if variants.get("runlocal"):
    apply_runlocal(c, variants)
  return c


def tensor_width(architecture: Mapping[str, Any], widest: int) -> int:
  """The widest tensor-parallel degree, a divisor of `widest`, that divides every width the
  `tensor` mesh axis shards (TRAIN_RULES): query heads, kv heads, the MLP and the vocabulary.
  E.g. 8 for Llama-3-8B (32 / 8 heads), 4 for Qwen2.5-7B (28 / 4) and Gemma-3-4B (8 / 4), 2 for
  Qwen2.5-1.5B (12 / 2)."""
  heads = int(architecture["num_attention_heads"])
  widths = (heads, int(architecture.get("num_key_value_heads") or heads),
            int(architecture["intermediate_size"]), int(architecture["vocab_size"]))
  return max(d for d in range(1, widest + 1)
             if widest % d == 0 and all(w % d == 0 for w in widths))


def method_sweep(h):
  """The sweep the paper-scale configs' `get_hyper` returns: Meta-Rewarding against its
  Self-Rewarding baseline (meta-judge on / off), one work unit each. `h` is `xm_launch.hyper`."""
  return h.product([
      h.sweep("config.seed", [0]),
      h.sweep("config.meta_judge.enabled", [True, False]),
  ])


def apply_runlocal(c: ml_collections.ConfigDict, variants: Mapping[str, Any]) -> None:
  """Tiny and local: the same structure (scan, remat, a mesh) at a size a CPU runs in a minute."""
  if variants.get("model", "tiny") != "tiny":
    raise ValueError("runlocal uses the tiny model; drop model=")
  c.model.checkpoint = ""
  c.model.tokenizer = "train:512"
  c.model.chat_format = "llama2"
  c.model.architecture = ml_collections.ConfigDict(model_preset("tiny")["architecture"])
  c.model.dtype = "float32"
  c.data.prompts = "testbed:2000"
  c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
  c.mesh.distributed = False
  c.mesh.num_devices = 0              # plan for the devices present
  c.mesh.device_memory_gb = 0.0       # unknown on CPU: the planner budgets the host's RAM
  c.sampling.batch_size = 8
  c.sampling.prompt_buckets = (128, 512, 1024)  # the judge and meta-judge prompts fit
  c.sampling.top_k = 32
  c.actor.num_responses = 2
  c.judge.num_judgments = 3
  c.actor.max_new_tokens = c.judge.max_new_tokens = c.meta_judge.max_new_tokens = 8
  c.pipeline.num_iterations = 1
  c.pipeline.prompts_per_iteration = 4
  c.pipeline.rho = (0.0,)
  c.pipeline.train_pairs = ("both",)
  c.pipeline.chunk_size = 4
  c.train.learning_rate = 1e-4
  c.train.warmup_steps = 1
  c.train.batch_size = 8              # divisible by 1, 2, 4 or 8 devices
  c.train.grad_accum_steps = 1
  c.train.max_length = 512
  c.train.length_buckets = (128, 256, 512)
  c.train.logps_chunk_size = 0
  for key in ("learning_rate", "warmup_steps", "batch_size", "grad_accum_steps", "max_length",
              "length_buckets", "logps_chunk_size"):
    c.sft.train[key] = c.train[key]
  c.evaluate.oracle = "testbed"


# ------------------------------------------------------------------------------------------------
# The synthetic testbed.

def use_testbed_seed(c: ml_collections.ConfigDict) -> None:
  """Points `c.model` at the shipped testbed seed (its tokenizer and chat format; the
  architecture only for planning before the seed exists: its config.json is what runs), in
  float32 (bf16 matmuls are slower than f32 on CPU)."""
  testbed = testbed_settings()
  c.model.checkpoint = testbed.seed_dir
  c.model.tokenizer = ""           # the checkpoint's tokenizer.model
  c.model.chat_format = testbed.chat_format
  c.model.architecture = ml_collections.ConfigDict(testbed.architecture.to_dict())
  c.model.dtype = "float32"
  c.model.param_dtype = "float32"


def testbed_settings() -> ml_collections.ConfigDict:
  """The testbed's seed model (directory, architecture, chat format), its compact judge,
  meta-judge and STE templates, the generation lengths and the sampling settings it is measured
  at."""
  from meta_rewarding.testbed import settings, templates  # pure Python, no model code
  return ml_collections.ConfigDict(dict(
      seed_dir=settings.seed_dir(),
      architecture=dict(settings.ARCHITECTURE),
      chat_format=settings.CHAT_FORMAT,
      judge_template=templates.JUDGE_TEMPLATE,
      meta_judge_template=templates.META_JUDGE_TEMPLATE,
      # The Self-Taught Evaluator's compact prompts (no system prompt on the testbed).
      pairwise_template=templates.PAIRWISE_TEMPLATE,
      worse_response_template=templates.WORSE_RESPONSE_TEMPLATE,
      actor_max_new_tokens=settings.ACTOR_MAX_NEW_TOKENS,
      judge_max_new_tokens=settings.JUDGE_MAX_NEW_TOKENS,
      meta_judge_max_new_tokens=settings.META_MAX_NEW_TOKENS,
      pairwise_max_new_tokens=settings.PAIRWISE_MAX_NEW_TOKENS,
      worse_max_new_tokens=settings.WORSE_MAX_NEW_TOKENS,
      sampling=dict(settings.PIPELINE_SAMPLING),
  ))
