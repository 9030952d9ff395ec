"""Checks every value of a config against its range before anything is written or loaded.

  check_pipeline_config(config)    # main and plan: the pipeline schema (defaults.get_base_config;
                                   # recipe='ste': also defaults.get_ste_config's ste section)
  check_train_config(config.train) # DPO / SFT hyper-parameters (defaults.train_config)
  check_train_dpo_config(config)   # train_dpo: mode, model, train and mesh of its own schema

Each raises one `ConfigError` listing every failure, one line each, naming the key, the value and
what is allowed (`pipeline.rho[0]=2.0: must be a number in [0, 0.5)`); `ConfigError.problems`
holds the lines. Why up front: a bad value otherwise surfaces only where it is first used, which
for `pipeline.rho` is after the actor and judge stages (hours at paper scale), and a failed start
has already recorded `workdir/config.json`, so the corrected rerun is refused as "a different
config". The ranges are those the code downstream accepts; where a module names its choices
(`train.DECAYS`, `losses.DPO_LOSS_TYPES`, ...) the check reads them from there.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from meta_rewarding import data, losses, prompts, sharding, stages, tokenizer, train
from meta_rewarding.errors import UserError
from meta_rewarding.model.config import REMAT_POLICIES

DTYPES = ("float32", "bfloat16", "float16")
TRAIN_PAIRS = stages.TRAIN_PAIRS                   # stages.scheduled_pairs
LENGTH_UNITS = ("chars", "tokens")                 # stages.response_length
ORACLES = ("", "testbed")                          # run.run
META_JUDGE_ORACLES = ("", "verdict", "check")      # testbed/oracle_meta_judge.RULES, or off
RECIPES = ("meta_rewarding", "ste")                # pipeline.recipe
MODES = ("dpo", "sft")                             # train_dpo

_MISSING = object()


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

  def integer(self, key: str, lo: int, why: str = "", *, value=_MISSING) -> Any:
    v = self.get(key) if value is _MISSING else value
    if v is not _MISSING and not (_is_int(v) and v >= lo):
      self.fail(key, v, f"must be an integer >= {lo}{why}")
    return v

  def number(self, key: str, lo: float | None = None, hi: float | None = None, *,
             lo_open: bool = False, hi_open: bool = False, value=_MISSING) -> Any:
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
  c.number("learning_rate", 0, None, lo_open=True)
  c.integer("warmup_steps", 0)
  c.choice("decay", train.DECAYS)
  c.number("end_learning_rate_ratio", 0, 1)
  c.number("weight_decay", 0, None)
  c.number("adam_b1", 0, 1, hi_open=True)
  c.number("adam_b2", 0, 1, hi_open=True)
  c.number("adam_eps", 0, None, lo_open=True)
  c.number("max_grad_norm", 0, None)  # 0 disables clipping
  c.integer("batch_size", 1)
  c.integer("grad_accum_steps", 1)
  c.integer("num_epochs", 1)
  c.integer("max_steps", 0, " (0 = all epochs)")
  c.integer("max_length", 1)
  buckets = c.get("length_buckets")
  if buckets is not _MISSING:
    if not _is_sequence(buckets):
      c.fail("length_buckets", buckets, "must be a list of positive lengths")
    else:
      for i, b in enumerate(buckets):
        c.integer(f"length_buckets[{i}]", 1, value=b)
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
  c.integer("reference_batch_size", 0, " (0 = 2 * batch_size)")


def _check_sampling(c: _Checks):
  c.number("sampling.temperature", 0, None)  # 0 = greedy
  c.number("sampling.top_p", 0, 1, lo_open=True)
  c.integer("sampling.top_k", 0, " (0 = no top-k)")
  c.integer("sampling.batch_size", 1)
  buckets = c.get("sampling.prompt_buckets")
  if buckets is not _MISSING:
    if not _is_sequence(buckets) or not buckets:
      c.fail("sampling.prompt_buckets", buckets, "must be a non-empty list of positive lengths")
    else:
      for i, b in enumerate(buckets):
        c.integer(f"sampling.prompt_buckets[{i}]", 1, value=b)
  c.integer("sampling.max_cache_length", 0, " (0 = the largest bucket + max_new_tokens)")
  if c.get("sampling.nucleus_candidates", None) is not None:
    c.integer("sampling.nucleus_candidates", 0)
  c.choice("sampling.batching", ("continuous", "static"))  # sampling.BATCHING
  c.integer("sampling.decode_block", 1)


def _uses_meta_judge(config_get, num_iterations, train_pairs) -> bool:
  if config_get("meta_judge.enabled", False) is not True:
    return False
  if config_get("meta_judge.run_when_unused", False) is True:
    return True
  if not _is_int(num_iterations) or not train_pairs:
    return False
  used = [train_pairs[min(t, len(train_pairs)) - 1] for t in range(1, num_iterations + 1)]
  return any(u in ("both", "judge") for u in used)


def _check_ste(c: _Checks):
  """The `ste` section of a `recipe = "ste"` config (defaults.ste_settings)."""
  if c.boolean("ste.categorize") is True:
    categories = c.get("ste.categories")
    if categories is not _MISSING and not (
        _is_sequence(categories) and categories
        and all(isinstance(x, str) and x.strip() for x in categories)):
      c.fail("ste.categories", categories, "must be a non-empty list of category names (the "
             "categorisation prompt's), e.g. ('Knowledge and Reasoning',)")
  for key in ("ste.category_max_new_tokens", "ste.worse_max_new_tokens", "ste.num_judgments",
              "ste.judge_max_new_tokens"):
    c.integer(key, 1)
  for key, validate in (("ste.category_template", prompts.validate_category_template),
                        ("ste.worse_response_template", prompts.validate_worse_response_template),
                        ("ste.pairwise_template", prompts.validate_pairwise_template)):
    c.template(key, validate)
  c.string("ste.system_prompt")
  c.boolean("ste.balance_labels")
  if c.get("evaluate.heldout_tasks", 0) != 0:
    c.fail("evaluate.heldout_tasks", c.get("evaluate.heldout_tasks"), "must be 0 with "
           "recipe='ste' (use evaluate.judge_pairs, e.g. 'testbed:200')")


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

  c.integer("actor.num_responses", 2, " (an actor pair needs two responses to one prompt)")
  c.integer("actor.max_new_tokens", 1)
  num_judgments = c.integer("judge.num_judgments", 1)
  c.integer("judge.max_new_tokens", 1)
  c.boolean("meta_judge.enabled")
  c.integer("meta_judge.max_new_tokens", 1)
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

  num_iterations = c.integer("pipeline.num_iterations", 1)
  c.integer("pipeline.prompts_per_iteration", 1)
  c.per_iteration("pipeline.rho",
                  lambda k, v: c.number(k, 0, 0.5, hi_open=True, value=v))
  train_pairs = c.per_iteration("pipeline.train_pairs",
                                lambda k, v: c.choice(k, TRAIN_PAIRS, value=v))
  c.choice("pipeline.length_unit", LENGTH_UNITS)
  c.integer("pipeline.chunk_size", 1)

  c.choice("evaluate.oracle", ORACLES)
  c.integer("evaluate.heldout_tasks", 0)
  c.integer("evaluate.heldout_samples", 1)
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

  # Across sections.
  if (recipe != "ste" and _is_int(num_judgments) and num_judgments == 1
      and _uses_meta_judge(lambda k, d: c.get(k, d), num_iterations,
                           [p for p in train_pairs if p in TRAIN_PAIRS])):
    c.fail("judge.num_judgments", num_judgments,
           "must be >= 2 when the meta-judge runs (it compares two judgments of one response)")
  cache = c.get("sampling.max_cache_length", 0)
  if _is_int(cache) and cache > 0:
    keys = ("actor.max_new_tokens", "judge.max_new_tokens", "meta_judge.max_new_tokens")
    if recipe == "ste":
      keys = ("actor.max_new_tokens", "ste.worse_max_new_tokens", "ste.judge_max_new_tokens") + (
          ("ste.category_max_new_tokens",) if c.get("ste.categorize", False) is True else ())
    lengths = {k: c.get(k, 0) for k in keys}
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
