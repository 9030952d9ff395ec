"""One way from a config to what runs it: the model config, the mesh, the rules and the parameters.

  rt = runtime.build(config, tokenizer)                    # params loaded / created in their shards
  rt.model_config, rt.mesh, rt.train_rules, rt.decode_rules, rt.params
  model_config, source = runtime.model_config(config, planning=True)

The pipeline's policy (`policy.py`), the memory planner (`plan.py`), `train_dpo`, `sample` and the
testbed's seed builder all go through here, so the layout a run uses is the one the planner
planned: the rules are `config.rules.rules_for(config)` (`config.mesh.rules`, default
`TRAIN_RULES`; decoding uses the same parameter layout plus the KV cache's rule).

The config sections read: `model` (checkpoint, architecture, dtype, param_dtype, scan_layers,
remat_policy, strict_config), `mesh` (shape, rules) and `seed` (random initialisation).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections
from absl import logging

from meta_rewarding.config import rules as config_rules
from meta_rewarding.errors import UserError
from meta_rewarding.model import presets


class RuntimeConfigError(UserError, ValueError):
  """The config's model, tokenizer and mesh do not fit together (the message says which field)."""


def run_options(config) -> dict:
  """The `LlamaConfig` run fields the config sets (how to compute, not what the model is)."""
  m = config.model
  return dict(dtype=m.dtype, param_dtype=m.param_dtype, scan_layers=bool(m.get("scan_layers", False)),
              remat_policy=m.get("remat_policy", "none"),
              attention_chunk=int(m.get("attention_chunk", 0)))


def model_config(config, tokenizer=None, *, planning: bool = False):
  """(LlamaConfig, where it came from) for `config`.

  With `model.checkpoint` set, its config.json (local or remote) is the model; `planning=True`
  instead falls back to `model.architecture` when the checkpoint is not readable here (the
  planner runs before the weights are at hand). Without a checkpoint, `model.architecture`, whose
  missing vocab_size / bos / eos ids come from `tokenizer`. A tokenizer with more tokens than the
  model's vocabulary is refused: they do not belong together."""
  # jax, here and below: config_check imports this module without it (tests/test_layering.py)
  from meta_rewarding import checkpoints
  m = config.model
  options = run_options(config)
  strict = bool(m.get("strict_config", False))
  local_config = bool(m.checkpoint) and os.path.isfile(os.path.join(m.checkpoint, "config.json"))
  if m.checkpoint and (local_config or not planning):
    mc = checkpoints.read_hf_config(m.checkpoint, strict=strict, **options)
    source = f"{m.checkpoint}/config.json"
  else:
    arch = m.architecture.to_dict() if hasattr(m.architecture, "to_dict") else dict(m.architecture)
    if not arch and tokenizer is None:
      raise RuntimeConfigError("model.checkpoint is not readable here and model.architecture is "
                               "empty: set one of them")
    if tokenizer is not None:
      arch.setdefault("vocab_size", tokenizer.vocab_size)
      if not arch["vocab_size"]:
        arch["vocab_size"] = tokenizer.vocab_size
      arch.setdefault("bos_token_id", tokenizer.bos_id)
      arch.setdefault("eos_token_id", tokenizer.eos_id)
    mc = presets.llama_config(arch, **options)
    source = "model.architecture"
  if tokenizer is not None and tokenizer.vocab_size > mc.vocab_size:
    raise RuntimeConfigError(
        f"the tokenizer has {tokenizer.vocab_size} tokens but the model ({source}) only "
        f"{mc.vocab_size} (vocab_size): they do not belong together")
  return mc, source


def make_mesh(config, devices=None):
  """The mesh `config.mesh.shape` asks for, over `devices` (default: every global device)."""
  from meta_rewarding import sharding  # jax: see model_config
  return sharding.make_mesh(dict(config.mesh.shape), devices)


@dataclasses.dataclass
class Runtime:
  """What runs a config: its model config, mesh, rules and (sharded) parameters."""
  model_config: Any
  mesh: Any
  train_rules: tuple
  decode_rules: tuple
  params: Any = None
  source: str = ""

  def param_shardings(self, rules: tuple | None = None):
    """The parameters' shardings (the train rules' layout, which decoding shares)."""
    from meta_rewarding import sharding  # jax: see model_config
    return sharding.param_shardings(self.model_config, self.mesh, rules or self.train_rules)

  def load_params(self, path: str, **load_options):
    """The HF checkpoint at `path`, each tensor straight into its shard."""
    from meta_rewarding import checkpoints  # jax: see model_config
    _, params = checkpoints.load_hf(path, config=self.model_config,
                                    shardings=self.param_shardings(), **load_options)
    return params

  def init_params(self, seed: int):
    """Random parameters created in their shards (never whole on one device)."""
    import jax  # jax (and sharding): see model_config
    from meta_rewarding import sharding
    return sharding.init_sharded_params(self.model_config, jax.random.key(seed), self.mesh,
                                        self.train_rules)


def build(config, tokenizer=None, *, devices=None, params: bool = True,
          seed: int | None = None) -> Runtime:
  """The runtime of `config`: model config (checked against `tokenizer`), mesh over `devices`,
  rules (checked to divide the model's dimensions), and, with `params`, the parameters: the
  checkpoint's when `model.checkpoint` is set, else random from `seed` (default `config.seed`)."""
  from meta_rewarding import sharding  # jax: see model_config
  mc, source = model_config(config, tokenizer)
  mesh = make_mesh(config, devices)
  train_rules, decode_rules = config_rules.rules_for(config)
  sharding.check_divisibility(mc, mesh, train_rules)
  rt = Runtime(mc, mesh, train_rules, decode_rules, source=source)
  if params:
    if config.model.checkpoint:
      rt.params = rt.load_params(config.model.checkpoint)
    else:
      logging.info("random-weight model: %s", mc)
      rt.params = rt.init_params(int(config.get("seed", 0) if seed is None else seed))
  return rt


def build_for_checkpoint(checkpoint: str, tokenizer, *, dtype: str, mesh_shape=None,
                         strict: bool = False, seed: int = 0) -> Runtime:
  """`build` for the command-line tools that take a checkpoint and flags, not a config file
  (`sample`, `judge_eval`): the checkpoint in `dtype` (compute and parameters), the default rules,
  on a mesh of `mesh_shape` over every device, or on the first device alone when it is None."""
  import jax  # jax: see model_config
  config = ml_collections.ConfigDict(dict(
      seed=seed,
      model=dict(checkpoint=checkpoint, architecture={}, dtype=dtype, param_dtype=dtype,
                 scan_layers=False, remat_policy="none", strict_config=strict),
      mesh=dict(shape=dict(mesh_shape or {"data": 1, "fsdp": 1, "tensor": 1}),
                rules=config_rules.TRAIN_RULES)))
  return build(config, tokenizer, devices=None if mesh_shape else jax.devices()[:1])
