"""Checks every value of a config against its range before anything is written or loaded.

  check_pipeline_config(config)    # main and plan: the pipeline schema (defaults.get_base_config;
                                   # recipe='ste': also defaults.get_ste_config's ste section)
  check_train_config(config.train) # DPO / SFT hyper-parameters (defaults.train_config)
  check_train_dpo_config(config)   # train_dpo: mode, model, train and mesh of its own schema
  check_run_environment(config, n) # run.preflight: what n devices and the model's shape rule out

Each raises one `ConfigError` listing every failure, one line each, naming the key, the value and
what is allowed (`pipeline.rho[0]=2.0: must be a number in [0, 0.5)`); `ConfigError.problems`
holds the lines. Besides the ranges the code accepts, a few keys have an upper bound (a `Limit`,
declared below with its reason) past which a value is surely a mistake: `train.learning_rate=1e30`
trains to |w| = 5e29, `train.num_epochs=1e9` never ends. Why up front: a bad value otherwise surfaces only where it is first used, which
for `pipeline.rho` is after the actor and judge stages (hours at paper scale), and a failed start
has already recorded `workdir/config.json`, so the corrected rerun is refused as "a different
config". The ranges are those the code downstream accepts; where a module names its choices
(`train.DECAYS`, `losses.DPO_LOSS_TYPES`, ...) the check reads them from there.
"""

from __future__ import annotations

import ast
import math
import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

from meta_rewarding import data, losses, prompts, recipes, sampling, sharding, stages, tokenizer, train
from meta_rewarding.errors import UserError
from meta_rewarding.model.config import REMAT_POLICIES

DTYPES = ("float32", "bfloat16", "float16")
TRAIN_PAIRS = stages.TRAIN_PAIRS                   # stages.scheduled_pairs
LENGTH_UNITS = ("chars", "tokens")                 # stages.response_length
ORACLES = ("", "testbed")                          # run.run
META_JUDGE_ORACLES = ("", "verdict", "check")      # testbed/oracle_meta_judge.RULES, or off
RECIPES = tuple(recipes.RECIPES)
STE_ORDERS = ("both", "random")                    # ste.ORDERS
STE_TRAIN_ON = ("iteration", "accumulated")        # ste.TRAIN_ON
MODES = ("dpo", "sft")                             # train_dpo

_MISSING = object()


class Limit(NamedTuple):
  """An upper bound past which a value is surely a mistake (a typo, a unit slip, a lost comma),
  and why: the error prints both, so the user sees what the bound protects."""
  most: float
  reason: str


# Upper bounds. Each is far above every setting in use (the shipped configs, the papers), so it
# refuses only values no run can mean, before hours of work go into them.
LEARNING_RATE = Limit(1e-2, "Adam moves every weight by about the learning rate per step; above "
                      "1e-2 that overwrites a pretrained model (the configs use 5e-7 to 1e-4)")
NUM_EPOCHS = Limit(100, "DPO and SFT make 1-3 passes over their data; more than 100 only "
                   "memorises it, and a typo like 1e9 never ends")
NUM_RESPONSES = Limit(256, "the paper samples K=7 per prompt, and each response is judged N "
                      "times: 256 is already 256 x N generations per prompt")
NUM_JUDGMENTS = Limit(64, "the papers use N=11 (Meta-Rewarding) and 15 (STE); the meta-judge "
                      "battles every ordered pair of a response's judgments, 4032 at N=64")
HELDOUT_SAMPLES = Limit(256, "answers per held-out task, like actor.num_responses (the configs "
                        "use 2-4)")
NUM_ITERATIONS = Limit(100, "the papers run 4 (Meta-Rewarding) and 5 (STE) iterations, each "
                       "training a new model")
PROMPTS_PER_ITERATION = Limit(1_000_000, "the papers use 5,000 (Meta-Rewarding) and 20,000 "
                              "(STE); a million prompts is ~10^8 judgments at K=7, N=11")
TOKENS = Limit(131_072, "longer than the 128k-token context of every Llama 3 model")
SAMPLING_BATCH = Limit(65_536, "decode rows per batch: 128 per chip on the largest slice the "
                       "project targets (512 chips); the planner refuses smaller ones that do "
                       "not fit")
TRAIN_BATCH = Limit(4096, "pairs (SFT: sequences) per microbatch; DPO and SFT steps use 16-512 "
                    "in all")
REFERENCE_BATCH = Limit(8192, "pairs per reference batch: twice the largest train.batch_size "
                        "(its default)")
GRAD_ACCUM_STEPS = Limit(1024, "microbatches per step; 1024 makes a step of at least 1024 "
                         "pairs, above any DPO or SFT batch in use (16-512)")


class ConfigError(UserError, ValueError):
  """Config values out of range. `problems`: one line per failure (key, value, allowed values)."""

  def __init__(self, problems):
    self.problems = tuple(problems)
    super().__init__("\n".join(self.problems))


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
  # Finite only: NaN fails every range and would print as a confusing "nan: must be >= 0".
  return (isinstance(v, numbers.Real) and not isinstance(v, bool)
          and math.isfinite(float(v)))


def _is_sequence(v) -> bool:
  return isinstance(v, (list, tuple))


def _show(v) -> str:
  text = repr(v)
  return text if len(text) <= 60 else text[:57] + "..."


def _literal(node: ast.AST, text: str):
  """The value of one entry of a list written on the command line: a Python literal, nan / inf
  and float('nan') as floats, a nested list as a tuple, anything else as its own text."""
  try:
    return ast.literal_eval(node)
  except (ValueError, TypeError, SyntaxError):
    pass
  if isinstance(node, ast.Name) and node.id.lower() in ("nan", "inf", "infinity"):
    return float(node.id)
  if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
      and isinstance(_literal(node.operand, text), float)):
    return -_literal(node.operand, text)
  if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float"
      and len(node.args) == 1 and not node.keywords):
    try:
      return float(ast.literal_eval(node.args[0]))
    except (ValueError, TypeError, SyntaxError):
      pass
  if isinstance(node, (ast.Tuple, ast.List)):
    return tuple(_literal(e, text) for e in node.elts)
  return ast.get_source_segment(text, node)


def _unparsed_list(v) -> list | None:
  """The entries of a one-string list whose string is a list's text (what ml_collections keeps
  when a command-line tuple holds something ast.literal_eval cannot read); None otherwise."""
  if len(v) != 1 or not isinstance(v[0], str):
    return None
  text = v[0].strip()
  try:
    node = ast.parse(text, mode="eval").body
  except SyntaxError:
    return None
  if isinstance(node, (ast.Tuple, ast.List)):
    return [_literal(e, text) for e in node.elts]
  value = _literal(node, text)
  return [value] if isinstance(value, float) else None  # "nan" alone: one number


def _options(choices) -> str:
  return "|".join(repr(c) if c == "" else str(c) for c in choices)


class _Checks:
  """Collects problems; `prefix` is prepended to every key ("" for a whole config)."""

  def __init__(self, config, prefix: str = ""):
    self.config = config
    self.prefix = prefix
    self.problems: list[str] = []

  def key(self, key: str) -> str:
    return f"{self.prefix}{key}"

  def get(self, key: str, default=_MISSING):
    node = self.config
    for part in key.split("."):
      if isinstance(node, Mapping) or hasattr(node, "keys"):
        node = node[part] if part in node else _MISSING
      else:
        node = _MISSING
      if node is _MISSING:
        break
    if node is _MISSING and default is _MISSING:
      self.problems.append(f"{self.key(key)} is missing from the config")
    return default if node is _MISSING else node

  def fail(self, key: str, value, allowed: str):
    self.problems.append(f"{self.key(key)}={_show(value)}: {allowed}")

  def integer(self, key: str, lo: int, why: str = "", *, limit: Limit | None = None,
              value=_MISSING) -> Any:
    v = self.get(key) if value is _MISSING else value
    if v is not _MISSING and not (_is_int(v) and v >= lo):
      self.fail(key, v, f"must be an integer >= {lo}{why}")
    elif v is not _MISSING:
      self.within(key, v, limit)
    return v

  def within(self, key: str, v, limit: Limit | None) -> None:
    """Refuses an in-range value above `limit` (one line: key, value, bound and reason)."""
    if limit is not None and v > limit.most:
      self.fail(key, v, f"must be <= {limit.most:g}: {limit.reason}")

  def number(self, key: str, lo: float | None = None, hi: float | None = None, *,
             lo_open: bool = False, hi_open: bool = False, limit: Limit | None = None,
             value=_MISSING) -> Any:
    v = self.get(key) if value is _MISSING else value
    if v is _MISSING:
      return v
    ok = _is_real(v)
    if ok and lo is not None:
      ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
      ok = v < hi if hi_open else v <= hi
    if not ok:
      if lo is not None and hi is not None:
        allowed = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
      elif lo is not None:
        allowed = f"{'>' if lo_open else '>='} {lo:g}"
      else:
        allowed = f"{'<' if hi_open else '<='} {hi:g}"
      self.fail(key, v, f"must be a number {allowed}")
    else:
      self.within(key, v, limit)
    return v

  def choice(self, key: str, choices, *, value=_MISSING) -> Any:
    v = self.get(key) if value is _MISSING else value
    if v is not _MISSING and v not in tuple(choices):
      self.fail(key, v, f"must be one of {_options(choices)}")
    return v

  def boolean(self, key: str) -> Any:
    v = self.get(key)
    if v is not _MISSING and not isinstance(v, bool):
      self.fail(key, v, "must be True or False")
    return v

  def template(self, key: str, validate) -> Any:
    """A prompt template, checked by its `prompts.validate_*` function."""
    v = self.get(key)
    if v is not _MISSING:
      try:
        validate(v)
      except (TypeError, ValueError) as e:
        self.problems.append(f"{key}: {e}")
    return v

  def string(self, key: str, *, nonempty: bool = False, why: str = "") -> Any:
    v = self.get(key)
    if v is not _MISSING and not (isinstance(v, str) and (v or not nonempty)):
      self.fail(key, v, f"must be a {'non-empty ' if nonempty else ''}string{why}")
    return v

  def per_iteration(self, key: str, check_entry) -> list:
    """A non-empty list with one value per iteration (the last one repeats); `check_entry(key, v)`
    checks each entry."""
    v = self.get(key)
    if v is _MISSING:
      return []
    if not _is_sequence(v) or not v:
      self.fail(key, v, "must be a non-empty list, one value per iteration (the last repeats)")
      return []
    unparsed = _unparsed_list(v)
    if unparsed is not None:
      # `--config.pipeline.rho="(0.1, nan)"`: nan is no Python literal, so ml_collections kept the
      # text as the tuple's one string. Naming that string as entry [0] points at the wrong
      # element; the entries the text holds are checked instead, and the text is refused whole
      # when they all pass (the pipeline would still read one string).
      before = len(self.problems)
      for i, entry in enumerate(unparsed):
        check_entry(f"{key}[{i}]", entry)
      if len(self.problems) == before:
        self.fail(key, v[0], "was read as one string, not a list (an entry is not a Python "
                  "literal); write literals, e.g. (0.0, 0.3) or ('both', 'actor')")
      return []
    for i, entry in enumerate(v):
      check_entry(f"{key}[{i}]", entry)
    return list(v)

  def raise_if_any(self):
    if self.problems:
      raise ConfigError(self.problems)


# ------------------------------------------------------------------------------------------------
# Sections.

def _check_model(c: _Checks, *, random_init: bool):
  checkpoint = c.string("model.checkpoint")
  c.string("model.tokenizer")
  c.choice("model.chat_format", tokenizer.CHAT_FORMATS)
  c.choice("model.dtype", DTYPES)
  c.choice("model.param_dtype", DTYPES)
  c.boolean("model.scan_layers")
  c.choice("model.remat_policy", REMAT_POLICIES)
  if c.get("model.strict_config", False) is not False:
    c.boolean("model.strict_config")
  if random_init and checkpoint == "":
    arch = c.get("model.architecture", {})
    if not arch:
      c.fail("model.checkpoint", checkpoint, "must name a Hugging Face Llama directory when "
             "model.architecture is empty (the architecture of a random init)")


def _check_mesh(c: _Checks):
  shape = c.get("mesh.shape")
  if shape is not _MISSING:
    if not (isinstance(shape, Mapping) or hasattr(shape, "items")):
      c.fail("mesh.shape", shape, f"must map the axes {'|'.join(sharding.MESH_AXES)} to sizes")
    else:
      for axis, size in shape.items():
        if axis not in sharding.MESH_AXES:
          c.fail(f"mesh.shape.{axis}", size, f"unknown axis; the axes are "
                 f"{'|'.join(sharding.MESH_AXES)}")
        elif not (_is_int(size) and (size >= 1 or size == -1)):
          c.fail(f"mesh.shape.{axis}", size, "must be a positive integer, or -1 for the devices "
                 "left over")
      fill = [a for a, s in shape.items() if _is_int(s) and s == -1]
      if len(fill) > 1:
        c.fail("mesh.shape", dict(shape.items()), f"at most one axis may be -1, got {fill}")
  if c.get("mesh.distributed", None) is not None:
    c.boolean("mesh.distributed")
  if c.get("mesh.num_devices", None) is not None:
    c.integer("mesh.num_devices", 0, " (0 = the devices present)")
  if c.get("mesh.device_memory_gb", None) is not None:
    c.number("mesh.device_memory_gb", 0, None)


def _check_train(c: _Checks, kind: str = "dpo"):
  """The keys of `defaults.train_config()` under `c.prefix` (e.g. "train.")."""
  c.number("learning_rate", 0, None, lo_open=True, limit=LEARNING_RATE)
  c.integer("warmup_steps", 0)
  c.choice("decay", train.DECAYS)
  c.number("end_learning_rate_ratio", 0, 1)
  c.number("weight_decay", 0, None)
  c.number("adam_b1", 0, 1, hi_open=True)
  c.number("adam_b2", 0, 1, hi_open=True)
  c.number("adam_eps", 0, None, lo_open=True)
  c.number("max_grad_norm", 0, None)  # 0 disables clipping
  c.integer("batch_size", 1, limit=TRAIN_BATCH)
  c.integer("grad_accum_steps", 1, limit=GRAD_ACCUM_STEPS)
  c.integer("num_epochs", 1, limit=NUM_EPOCHS)
  c.integer("max_steps", 0, " (0 = all epochs)")
  c.integer("max_length", 1, limit=TOKENS)
  buckets = c.get("length_buckets")
  if buckets is not _MISSING:
    if not _is_sequence(buckets):
      c.fail("length_buckets", buckets, "must be a list of positive lengths")
    else:
      for i, b in enumerate(buckets):
        c.integer(f"length_buckets[{i}]", 1, limit=TOKENS, value=b)
  c.choice("truncation", data.TRUNCATION_POLICIES)
  c.number("beta", 0, None, lo_open=True)
  if kind == "dpo":
    c.choice("loss_type", losses.DPO_LOSS_TYPES)
  # Conservative / robust DPO divide by (1 - 2 label_smoothing).
  c.number("label_smoothing", 0, 0.5, hi_open=True)
  c.number("nll_scale", 0, None)
  c.integer("checkpoint_every", 1)
  c.integer("keep_checkpoints", 1)
  c.boolean("async_checkpointing")
  c.integer("log_every", 1)
  c.integer("logps_chunk_size", 0, " (0 = no chunking)")
  c.integer("reference_batch_size", 0, " (0 = 2 * batch_size)", limit=REFERENCE_BATCH)


def _check_sampling(c: _Checks):
  c.number("sampling.temperature", 0, None)  # 0 = greedy
  c.number("sampling.top_p", 0, 1, lo_open=True)
  c.integer("sampling.top_k", 0, " (0 = no top-k)")
  c.integer("sampling.batch_size", 1, limit=SAMPLING_BATCH)
  buckets = c.get("sampling.prompt_buckets")
  if buckets is not _MISSING:
    if not _is_sequence(buckets) or not buckets:
      c.fail("sampling.prompt_buckets", buckets, "must be a non-empty list of positive lengths")
    else:
      for i, b in enumerate(buckets):
        c.integer(f"sampling.prompt_buckets[{i}]", 1, limit=TOKENS, value=b)
  c.integer("sampling.max_cache_length", 0, " (0 = the largest bucket + max_new_tokens)")
  if c.get("sampling.nucleus_candidates", None) is not None:
    c.integer("sampling.nucleus_candidates", 0)
  c.choice("sampling.batching", sampling.BATCHING)
  c.integer("sampling.decode_block", 1)


def _uses_meta_judge(config_get, num_iterations, train_pairs) -> bool:
  if config_get("meta_judge.enabled", False) is not True:
    return False
  if config_get("meta_judge.run_when_unused", False) is True:
    return True
  if not _is_int(num_iterations) or not train_pairs:
    return False
  # Iteration t uses entry min(t, len) - 1: the first num_iterations entries, not one per iteration
  # (pipeline.num_iterations=1e9 is refused by its bound, and must not take a billion steps here).
  return any(u in ("both", "judge") for u in train_pairs[:num_iterations])


def _check_ste(c: _Checks):
  """The `ste` section of a `recipe = "ste"` config (defaults.ste_settings)."""
  if c.boolean("ste.categorize") is True:
    categories = c.get("ste.categories")
    if categories is not _MISSING and not (
        _is_sequence(categories) and categories
        and all(isinstance(x, str) and x.strip() for x in categories)):
      c.fail("ste.categories", categories, "must be a non-empty list of category names (the "
             "categorisation prompt's), e.g. ('Knowledge and Reasoning',)")
  for key in ("ste.category_max_new_tokens", "ste.worse_max_new_tokens",
              "ste.judge_max_new_tokens"):
    c.integer(key, 1, limit=TOKENS)
  c.integer("ste.num_judgments", 1, limit=NUM_JUDGMENTS)
  for key, validate in (("ste.category_template", prompts.validate_category_template),
                        ("ste.worse_response_template", prompts.validate_worse_response_template),
                        ("ste.pairwise_template", prompts.validate_pairwise_template)):
    c.template(key, validate)
  c.string("ste.system_prompt")
  c.boolean("ste.balance_labels")
  c.choice("ste.orders", STE_ORDERS)
  c.choice("ste.train_on", STE_TRAIN_ON)
  c.integer("ste.selection_candidates", 0, " (0 = the whole pool)", limit=PROMPTS_PER_ITERATION)
  c.integer("ste.max_per_category", 0, " (0 = no cap)", limit=PROMPTS_PER_ITERATION)
  c.number("ste.min_complexity", 0, 10)  # 0 = off; the categorisation prompt's 1-10 scale
  if c.get("evaluate.heldout_tasks", 0) != 0:
    c.fail("evaluate.heldout_tasks", c.get("evaluate.heldout_tasks"), "must be 0 with "
           "recipe='ste' (use evaluate.judge_pairs, e.g. 'testbed:200')")


def _check_sft(c: _Checks, recipe) -> None:
  """The `sft` section (defaults.sft_settings): stage 0's file and its own training
  hyper-parameters `sft.train`, checked like `train` (same ranges and bounds), named `sft.train.*`."""
  if c.get("sft", None) is None:
    return  # a config written before stage 0 existed: no stage 0
  path = c.string("sft.data", why=" (a JSONL/parquet file of SFT records; '' = no stage 0)")
  if recipe == "ste" and isinstance(path, str) and path:
    c.fail("sft.data", path, "must be '' with recipe='ste': the Self-Taught Evaluator trains from "
           "its seed every iteration; point model.checkpoint at the SFT model instead")
  c.string("sft.response_field", nonempty=True)
  c.string("sft.system_prompt")
  sub = _Checks(c.get("sft.train", {}), "sft.train.")
  _check_train(sub, "sft")
  c.problems.extend(sub.problems)


def _generation_keys(c: _Checks, recipe, *, every: bool = False) -> tuple[str, ...]:
  """The `max_new_tokens` keys of the stages a run samples (`every`: the meta-judge's too when it
  is off, as the static cache check has always counted it)."""
  if recipe == "ste":
    return ("actor.max_new_tokens", "ste.worse_max_new_tokens", "ste.judge_max_new_tokens") + (
        ("ste.category_max_new_tokens",) if c.get("ste.categorize", False) is True else ())
  meta_judge = every or c.get("meta_judge.enabled", True) is True
  return ("actor.max_new_tokens", "judge.max_new_tokens") + (
      ("meta_judge.max_new_tokens",) if meta_judge else ())


def check_pipeline_config(config) -> None:
  """Raises `ConfigError` listing every out-of-range value of a `meta_rewarding.main` config
  (with `recipe = "ste"`, also the Self-Taught Evaluator's `ste` section)."""
  c = _Checks(config)
  recipe = c.choice("recipe", RECIPES, value=c.get("recipe", "meta_rewarding"))
  c.integer("seed", 0)
  c.boolean("allow_config_change")
  _check_model(c, random_init=True)
  c.boolean("model.export_hf")

  source = c.string("data.prompts", nonempty=True,
                    why=" (a JSONL/parquet file, 'hf:<dataset>[:<split>]' or 'testbed:<n>')")
  if isinstance(source, str) and source.startswith("testbed:"):
    n = source.split(":", 1)[1]
    if not (n.isdigit() and int(n) >= 1):
      c.fail("data.prompts", source, "'testbed:<n>' needs a pool size n >= 1")
  elif isinstance(source, str) and source.startswith("hf:") and not source[3:].partition(":")[0]:
    c.fail("data.prompts", source, "'hf:<dataset>[:<split>]' needs a dataset name")
  c.string("data.field", nonempty=True)
  c.boolean("data.skip_long_prompts")

  _check_mesh(c)
  _check_sampling(c)

  c.integer("actor.num_responses", 2, " (an actor pair needs two responses to one prompt)",
            limit=NUM_RESPONSES)
  c.integer("actor.max_new_tokens", 1, limit=TOKENS)
  num_judgments = c.integer("judge.num_judgments", 1, limit=NUM_JUDGMENTS)
  c.integer("judge.max_new_tokens", 1, limit=TOKENS)
  c.boolean("meta_judge.enabled")
  c.integer("meta_judge.max_new_tokens", 1, limit=TOKENS)
  max_chosen = c.get("meta_judge.max_chosen_chars")
  if max_chosen is not None:
    c.integer("meta_judge.max_chosen_chars", 1, " (or None for no limit)", value=max_chosen)
  c.number("meta_judge.elo_l2", 0, None, lo_open=True)
  c.boolean("meta_judge.run_when_unused")
  c.boolean("meta_judge.skip_same_score")
  c.choice("meta_judge.testbed_oracle", META_JUDGE_ORACLES)
  testbed_oracle = c.get("meta_judge.testbed_oracle", "")
  if testbed_oracle in META_JUDGE_ORACLES[1:] and c.get("evaluate.oracle", "") != "testbed":
    c.fail("meta_judge.testbed_oracle", testbed_oracle,
           "needs evaluate.oracle='testbed' (the oracle knows the testbed's tasks only)")
  for key, validate in (("judge.template", prompts.validate_judge_template),
                        ("meta_judge.template", prompts.validate_meta_judge_template)):
    c.template(key, validate)

  num_iterations = c.integer("pipeline.num_iterations", 1, limit=NUM_ITERATIONS)
  c.integer("pipeline.prompts_per_iteration", 1, limit=PROMPTS_PER_ITERATION)
  c.per_iteration("pipeline.rho",
                  lambda k, v: c.number(k, 0, 0.5, hi_open=True, value=v))
  train_pairs = c.per_iteration("pipeline.train_pairs",
                                lambda k, v: c.choice(k, TRAIN_PAIRS, value=v))
  c.choice("pipeline.length_unit", LENGTH_UNITS)
  c.integer("pipeline.chunk_size", 1)

  c.choice("evaluate.oracle", ORACLES)
  c.integer("evaluate.heldout_tasks", 0)
  c.integer("evaluate.heldout_task_seed", 0, " (0 = the development set)")
  c.integer("evaluate.heldout_samples", 1, limit=HELDOUT_SAMPLES)
  for key in ("evaluate.heldout_every_iteration", "evaluate.heldout_diagnostics"):
    if c.get(key, True) is not True:
      c.boolean(key)
  if c.get("evaluate.judge_protocol", "pairwise") != "pairwise":
    c.choice("evaluate.judge_protocol", ("pairwise", "pointwise"))

  judge_pairs = c.get("evaluate.judge_pairs", "")
  if isinstance(judge_pairs, str) and judge_pairs.startswith("testbed:"):
    n = judge_pairs.split(":", 1)[1]
    if recipe != "ste":
      c.fail("evaluate.judge_pairs", judge_pairs, "'testbed:<n>' is read by recipe='ste' only; "
             "give a file (e.g. written by testbed.evaluate.preference_pairs)")
    elif not (n.isdigit() and int(n) >= 1):
      c.fail("evaluate.judge_pairs", judge_pairs, "'testbed:<n>' needs a count n >= 1")
  if recipe == "ste":
    _check_ste(c)
  _check_sft(c, recipe)

  # Across sections.
  if (recipe != "ste" and _is_int(num_judgments) and num_judgments == 1
      and _uses_meta_judge(lambda k, d: c.get(k, d), num_iterations,
                           [p for p in train_pairs if p in TRAIN_PAIRS])):
    c.fail("judge.num_judgments", num_judgments,
           "must be >= 2 when the meta-judge runs (it compares two judgments of one response)")
  cache = c.get("sampling.max_cache_length", 0)
  if _is_int(cache) and cache > 0:
    lengths = {k: c.get(k, 0) for k in _generation_keys(c, recipe, every=True)}
    key, longest = max(((k, v) for k, v in lengths.items() if _is_int(v)),
                       key=lambda kv: kv[1], default=(None, 0))
    if key is not None and cache <= longest:
      c.fail("sampling.max_cache_length", cache, f"must be 0 (automatic) or larger than the "
             f"longest generation ({key}={longest}), leaving room for the prompt")

  sub = _Checks(c.get("train", {}), "train.")
  if c.get("train", None) is not None:
    _check_train(sub, "sft" if recipe == "ste" else "dpo")
  c.problems.extend(sub.problems)
  c.raise_if_any()


def check_train_config(train_config, kind: str = "dpo", prefix: str = "train.") -> None:
  """Raises `ConfigError` listing every out-of-range value of a `defaults.train_config()`
  section (`kind`: "dpo" also checks loss_type; keys are named `{prefix}{key}`)."""
  c = _Checks(train_config, prefix)
  _check_train(c, kind)
  c.raise_if_any()


def check_train_dpo_config(config) -> None:
  """Raises `ConfigError` listing every out-of-range value of a `train_dpo` config
  (configs/dpo_example.py): mode, model, training and mesh values."""
  c = _Checks(config)
  mode = c.choice("mode", MODES)
  c.integer("seed", 0)
  c.boolean("progress")
  c.boolean("export_hf")
  c.choice("export_dtype", ("",) + DTYPES)
  if c.get("distributed", None) is not None:
    c.boolean("distributed")
  _check_model(c, random_init=False)
  _check_mesh(c)
  sub = _Checks(c.get("train", {}), "train.")
  if c.get("train", None) is not None:
    _check_train(sub, mode if mode in MODES else "dpo")
  c.problems.extend(sub.problems)
  c.raise_if_any()


# ------------------------------------------------------------------------------------------------
# The run's environment: what needs the device count and the model's shape, not the values alone.

def _devices(n: int) -> str:
  return f"{n} device{'' if n == 1 else 's'}"


def _tensor_hint(model, mesh) -> str:
  """What tensor width would divide `model`, when the mesh's does not (e.g. tensor=8 for
  Qwen2.5-7B's 28 heads / 4 kv heads)."""
  from meta_rewarding import defaults
  tensor = int(mesh.get("tensor", 1))
  widths = (model.num_attention_heads, model.num_key_value_heads, model.intermediate_size,
            model.vocab_size)
  if tensor <= 1 or not any(w % tensor for w in widths):
    return ""
  fit = defaults.tensor_width(dict(num_attention_heads=model.num_attention_heads,
                                   num_key_value_heads=model.num_key_value_heads,
                                   intermediate_size=model.intermediate_size,
                                   vocab_size=model.vocab_size), tensor)
  return (f"; tensor={fit} divides it (--config.mesh.shape.tensor={fit}; the pod configs' "
          "model=<preset> variants pick such a mesh, README.md#model-families)")


def check_run_environment(config, num_devices: int) -> None:
  """Raises `ConfigError` listing, one line each, what stops `config` from running on
  `num_devices` devices: a `mesh.shape` the count does not fill, a mesh that does not divide the
  model or `train.batch_size`, a stage whose `max_new_tokens` leaves no room for a prompt in the
  sampler's cache. Reads the model's config.json when `model.checkpoint` is a local directory
  (else `model.architecture`, as the planner does) and writes nothing, so `run.preflight` can call
  it before the workdir is touched. On a mesh of several devices it traces the model's shapes
  (`jax.eval_shape`), which starts jax's backend: call it after `jax.distributed.initialize`, as
  the device count it takes needs anyway. Expects a config that passed `check_pipeline_config`
  (values out of range are that check's to name)."""
  from meta_rewarding import prompt_length, runtime  # runtime: the model's shape, as the run reads it

  c = _Checks(config)
  shape = c.get("mesh.shape", None)
  sizes = dict(shape.items()) if shape is not None and hasattr(shape, "items") else None
  mesh = None
  # A malformed shape (an unknown axis, a size 0) is check_pipeline_config's to name.
  if sizes is not None and all(a in sharding.MESH_AXES and _is_int(s) and (s >= 1 or s == -1)
                               for a, s in sizes.items()):
    try:
      mesh = sharding.resolve_mesh_shape(sizes, int(num_devices))
    except sharding.MeshError:
      fixed = math.prod(s for s in sizes.values() if _is_int(s) and s > 0)
      if any(s == -1 for s in sizes.values()):
        need = f"the fixed axes need a multiple of {_devices(fixed)}"
      else:
        need = f"it needs {_devices(fixed)}"
      c.fail("mesh.shape", sizes, f"{need}, but this run has {_devices(num_devices)}; change the "
             "fixed axes or set one axis to -1 (the devices left over)")

  try:
    model, source = runtime.model_config(config, planning=True)
  except (UserError, ValueError, OSError, KeyError, TypeError):
    # An unreadable checkpoint or an empty architecture is the checkpoint check's to report
    # (run.preflight) and the planner's after it; the checks below need the model's shape.
    model = None
  recipe = c.get("recipe", "meta_rewarding")
  buckets = c.get("sampling.prompt_buckets", None)
  cache = c.get("sampling.max_cache_length", 0) or 0
  if (model is not None and _is_sequence(buckets) and buckets and all(_is_int(b) for b in buckets)
      and _is_int(cache)):
    for key in _generation_keys(c, recipe):
      max_new_tokens = c.get(key, None)
      if not _is_int(max_new_tokens):
        continue
      try:
        prompt_length.limits(buckets, max_new_tokens, cache, model.max_position_embeddings,
                             key=key, cache_key="sampling.max_cache_length")
      except prompt_length.PromptLengthError as e:
        c.problems.append(str(e))

  if mesh is not None:
    train_rules, decode_rules = runtime.rules(config)
    # Tracing the model's shapes takes a second; on a mesh of one device there is nothing to divide.
    if model is not None and math.prod(mesh.values()) > 1:
      import types
      seen = set()
      for rules in (train_rules, decode_rules):
        try:
          sharding.check_divisibility(model, types.SimpleNamespace(shape=mesh), rules)
        except sharding.MeshError as e:
          if str(e) not in seen:
            seen.add(str(e))
            c.fail("mesh.shape", mesh, f"{e} (the model from {source}){_tensor_hint(model, mesh)}")
    batch_axes = dict(train_rules).get("batch")
    batch_axes = (() if batch_axes is None else
                  (batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes))
    shards = math.prod(mesh[a] for a in batch_axes if a in mesh)
    batch_keys = ["train.batch_size"]
    sft_path = c.get("sft.data", "")
    if isinstance(sft_path, str) and sft_path:
      batch_keys.append("sft.train.batch_size")  # stage 0's
    for batch_key in batch_keys:
      batch = c.get(batch_key, None)
      if _is_int(batch) and batch % shards:
        # Found only when training starts otherwise: after every sampling stage of an iteration.
        c.fail(batch_key, batch, f"must be a multiple of the {shards} batch shards of "
               f"mesh.shape={mesh} on {_devices(num_devices)}")
  c.raise_if_any()
