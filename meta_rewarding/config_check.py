"""Checks every value of a config against its range before anything is written or loaded.

  check_pipeline_config(config)    # main and plan: the pipeline schema (config/declarations.py's
                                   # SECTIONS; recipe='ste': also its STE section)
  check_train_config(config.train) # DPO / SFT hyper-parameters (declarations.TRAIN)
  check_train_dpo_config(config)   # train_dpo: mode, model, train and mesh of its own schema
  check_run_environment(config, n) # run.preflight: what n devices and the model's shape rule out

Each raises one `ConfigError` listing every failure, one line each, naming the key, the value and
what is allowed (`pipeline.rho[0]=2.0: must be a number in [0, 0.5)`); `ConfigError.problems`
holds the lines. Each key's range (and its upper bound past which a value is surely a mistake, a
`declarations.Limit` with its reason) is declared once, in `meta_rewarding/config/declarations.py`;
this module applies them and adds what involves several keys. Why up front: a bad value otherwise
surfaces only where it is first used, which for `pipeline.rho` is after the actor and judge stages
(hours at paper scale), and a failed start has already recorded `workdir/config.json`, so the
corrected rerun is refused as "a different config".
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping

from meta_rewarding import choices, prompt_length, runtime, sources
from meta_rewarding.config import declarations as decl
from meta_rewarding.config import rules as config_rules
from meta_rewarding.errors import UserError

# The bounds tests and messages name.
LEARNING_RATE, NUM_EPOCHS, TOKENS = decl.LEARNING_RATE, decl.NUM_EPOCHS, decl.TOKENS
_MISSING = decl.MISSING
_is_int, _is_sequence = decl.is_int, decl.is_sequence


class ConfigError(UserError, ValueError):
  """Config values out of range. `problems`: one line per failure (key, value, allowed values)."""

  def __init__(self, problems):
    self.problems = tuple(problems)
    super().__init__("\n".join(self.problems))


class _Checks(decl.Failures):
  """The problems found in `config`; `prefix` is prepended to every key ("" for a whole config)."""

  def __init__(self, config, prefix: str = ""):
    super().__init__()
    self.config = config
    self.prefix = prefix

  def lookup(self, key: str):
    """The value at dotted `key`, or `_MISSING`."""
    node = self.config
    for part in key.split("."):
      if not (isinstance(node, Mapping) or hasattr(node, "keys")) or part not in node:
        return _MISSING
      node = node[part]
    return node

  def get(self, key: str, default=_MISSING):
    """The value at `key`; `default` when absent (no default: a missing key is a problem)."""
    node = self.lookup(key)
    if node is _MISSING and default is _MISSING:
      self.note(f"{self.prefix}{key} is missing from the config")
    return default if node is _MISSING else node

  def section(self, name: str, keys, *, kind: str = "dpo") -> dict:
    """Checks the declared `keys` of section `name` ("" = top level); {key: value} found."""
    where = f"{name}." if name else ""
    return decl.check_section(lambda key, _: self.lookup(where + key), self, keys,
                              self.prefix + where, kind=kind)

  def raise_if_any(self):
    if self.problems:
      raise ConfigError(self.problems)


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


def _schema(recipe) -> decl.RecipeSchema:
  """The recipe's rules (an unknown recipe is the `recipe` key's problem: checked as the default)."""
  return decl.RECIPES.get(recipe, decl.RECIPES[choices.DEFAULT_RECIPE])


def _generation_keys(c: _Checks, recipe, *, static: bool = False) -> tuple[str, ...]:
  """The `max_new_tokens` keys of the stages a run samples (`static`: for the static cache check,
  which also counts the stages it has always counted when off)."""
  return tuple(g.key for g in _schema(recipe).generation_keys
               if g.enabled_by is None or (static and g.counted_when_off)
               or c.get(g.enabled_by, decl.default_of(g.enabled_by)) is True)


def _check_random_init(c: _Checks, model: dict) -> None:
  if model.get("checkpoint") == "" and not c.get("model.architecture", {}):
    c.fail("model.checkpoint", "", "must name a Hugging Face Llama directory when "
           "model.architecture is empty (the architecture of a random init)")


def _check_source(c: _Checks, key: str, source, *, recipe) -> None:
  """`testbed:<n>` and `hf:<name>` sources (`sources.parse`, the one parser) need their parts."""
  if not isinstance(source, str):
    return
  parsed = sources.parse(source)
  if parsed.kind == sources.TESTBED:
    if key == "evaluate.judge_pairs" and not _schema(recipe).testbed_judge_pairs:
      c.fail(key, source, "'testbed:<n>' is read by recipe='ste' only; give a file (e.g. written "
             "by testbed.evaluate.preference_pairs)")
    elif parsed.count() is None:
      what = "a count" if key == "evaluate.judge_pairs" else "a pool size"
      c.fail(key, source, f"'testbed:<n>' needs {what} n >= 1")
  elif key == "data.prompts" and parsed.kind == sources.HF and not parsed.value:
    c.fail(key, source, "'hf:<dataset>[:<split>]' needs a dataset name")


def _check_train(c: _Checks, name: str, kind: str) -> None:
  """A `train` section (`declarations.TRAIN`) at `name` ("train", "sft.train"), if present."""
  if c.get(name, None) is not None:
    c.section(name, decl.TRAIN, kind=kind)


def _check_recipe_sections(c: _Checks, recipe) -> None:
  """The recipe's own sections (the Self-Taught Evaluator's `ste`), and what it leaves off."""
  schema = _schema(recipe)
  found = {name: c.section(name, keys) for name, keys in schema.sections}
  if found.get("ste", {}).get("categorize") is True:
    categories = c.get("ste.categories")
    if categories is not _MISSING and not (
        _is_sequence(categories) and categories
        and all(isinstance(x, str) and x.strip() for x in categories)):
      c.fail("ste.categories", categories, "must be a non-empty list of category names (the "
             "categorisation prompt's), e.g. ('Knowledge and Reasoning',)")
  if not schema.heldout_tasks and c.get("evaluate.heldout_tasks", 0) != 0:
    c.fail("evaluate.heldout_tasks", c.get("evaluate.heldout_tasks"), f"must be 0 with "
           f"recipe={recipe!r} (use evaluate.judge_pairs, e.g. 'testbed:200')")


def _check_sft(c: _Checks, recipe) -> None:
  """The `sft` section: stage 0's file and its own training hyper-parameters `sft.train`, checked
  like `train` (same ranges and bounds), named `sft.train.*`."""
  if c.get("sft", None) is None:
    return  # a config written before stage 0 existed: no stage 0
  found = c.section("sft", decl.SECTIONS["sft"])
  path = found.get("data")
  if not _schema(recipe).stage0 and isinstance(path, str) and path:
    c.fail("sft.data", path, f"must be '' with recipe={recipe!r}: the Self-Taught Evaluator "
           "trains from its seed every iteration; point model.checkpoint at the SFT model instead")
  sub = _Checks(c.get("sft.train", {}), "sft.train.")
  sub.section("", decl.TRAIN, kind="sft")
  c.problems.extend(sub.problems)


def check_pipeline_config(config) -> None:
  """Raises `ConfigError` listing every out-of-range value of a `meta_rewarding.main` config
  (with `recipe = "ste"`, also the Self-Taught Evaluator's `ste` section)."""
  c = _Checks(config)
  top = c.section("", decl.SECTIONS[""])
  recipe = top.get("recipe", choices.DEFAULT_RECIPE)
  model = c.section("model", decl.SECTIONS["model"])
  _check_random_init(c, model)
  data = c.section("data", decl.SECTIONS["data"])
  _check_source(c, "data.prompts", data.get("prompts"), recipe=recipe)
  c.section("mesh", decl.SECTIONS["mesh"])
  c.section("sampling", decl.SECTIONS["sampling"])
  c.section("actor", decl.SECTIONS["actor"])
  num_judgments = c.section("judge", decl.SECTIONS["judge"]).get("num_judgments")
  meta = c.section("meta_judge", decl.SECTIONS["meta_judge"])
  oracle = meta.get("testbed_oracle", "")
  if oracle in choices.META_JUDGE_ORACLES[1:] and c.get("evaluate.oracle", "") != "testbed":
    c.fail("meta_judge.testbed_oracle", oracle,
           "needs evaluate.oracle='testbed' (the oracle knows the testbed's tasks only)")
  pipeline = c.section("pipeline", decl.SECTIONS["pipeline"])
  num_iterations = pipeline.get("num_iterations")
  train_pairs = pipeline.get("train_pairs") or ()
  evaluate = c.section("evaluate", decl.SECTIONS["evaluate"])
  _check_source(c, "evaluate.judge_pairs", evaluate.get("judge_pairs", ""), recipe=recipe)
  _check_recipe_sections(c, recipe)
  _check_sft(c, recipe)

  # Across sections.
  if (_schema(recipe).meta_judge and _is_int(num_judgments) and num_judgments == 1
      and _is_sequence(train_pairs)
      and _uses_meta_judge(lambda k, d: c.get(k, d), num_iterations,
                           [p for p in train_pairs if p in choices.TRAIN_PAIRS])):
    c.fail("judge.num_judgments", num_judgments,
           "must be >= 2 when the meta-judge runs (it compares two judgments of one response)")
  cache = c.get("sampling.max_cache_length", 0)
  if _is_int(cache) and cache > 0:
    lengths = {k: c.get(k, 0) for k in _generation_keys(c, recipe, static=True)}
    key, longest = max(((k, v) for k, v in lengths.items() if _is_int(v)),
                       key=lambda kv: kv[1], default=(None, 0))
    if key is not None and cache <= longest:
      c.fail("sampling.max_cache_length", cache, f"must be 0 (automatic) or larger than the "
             f"longest generation ({key}={longest}), leaving room for the prompt")

  _check_train(c, "train", _schema(recipe).trains)
  c.raise_if_any()


def check_train_config(train_config, kind: str = "dpo", prefix: str = "train.") -> None:
  """Raises `ConfigError` listing every out-of-range value of a `config.base.train_config()`
  section (`kind`: "dpo" also checks loss_type; keys are named `{prefix}{key}`)."""
  c = _Checks(train_config, prefix)
  c.section("", decl.TRAIN, kind=kind)
  c.raise_if_any()


def check_train_dpo_config(config) -> None:
  """Raises `ConfigError` listing every out-of-range value of a `train_dpo` config
  (configs/dpo_example.py): mode, model, training and mesh values."""
  c = _Checks(config)
  mode = c.section("", decl.TRAIN_DPO_TOP).get("mode")
  c.section("model", decl.TRAIN_DPO_MODEL)
  c.section("mesh", decl.SECTIONS["mesh"])
  _check_train(c, "train", mode if mode in choices.TRAIN_MODES else "dpo")
  c.raise_if_any()


# ------------------------------------------------------------------------------------------------
# The run's environment: what needs the device count and the model's shape, not the values alone.

def _devices(n: int) -> str:
  return f"{n} device{'' if n == 1 else 's'}"


def _tensor_hint(model, mesh) -> str:
  """What tensor width would divide `model`, when the mesh's does not (e.g. tensor=8 for
  Qwen2.5-7B's 28 heads / 4 kv heads)."""
  tensor = int(mesh.get("tensor", 1))
  widths = (model.num_attention_heads, model.num_key_value_heads, model.intermediate_size,
            model.vocab_size)
  if tensor <= 1 or not any(w % tensor for w in widths):
    return ""
  fit = config_rules.tensor_width(dict(num_attention_heads=model.num_attention_heads,
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
  # jax (sharding traces the model's shapes): only this check needs it; the value checks above
  # load without it.
  from meta_rewarding import sharding

  c = _Checks(config)
  shape = c.get("mesh.shape", None)
  sizes = dict(shape.items()) if shape is not None and hasattr(shape, "items") else None
  mesh = None
  # A malformed shape (an unknown axis, a size 0) is check_pipeline_config's to name.
  if sizes is not None and all(a in choices.MESH_AXES and _is_int(s) and (s >= 1 or s == -1)
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
  recipe = c.get("recipe", choices.DEFAULT_RECIPE)
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
    train_rules, decode_rules = config_rules.rules_for(config)
    # Tracing the model's shapes takes a second; on a mesh of one device there is nothing to divide.
    if model is not None and math.prod(mesh.values()) > 1:
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
