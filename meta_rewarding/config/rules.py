"""The logical-axis rules: which mesh axes each logical axis the model names is sharded over.

  TRAIN_RULES                   the default `mesh.rules` (training, the reference pass, and the
                                parameters' layout everywhere)
  CACHE_RULES                   what decoding adds for the KV cache
  DECODE_WEIGHTS_NOT_OVER_FSDP  the `mesh.decode_rules` the pod configs set with tensor parallelism
  rules_for(config)             (train rules, decode rules) of a config: what the run, the planner
                                and the compile check all use
  tensor_width(architecture, widest)   the widest tensor degree that divides a model

Rules are config data: the libraries (`sharding`, `train`, `decode`, `sampling`) take them as
arguments and never import this package. Pure data and Python; no jax.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

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

# What paper-scale configs with tensor parallelism set as `mesh.decode_rules`: the sampler's
# (compute-dtype) copy of the weights is not sharded over fsdp, so a decode step reads each chip's
# weights where they lie instead of all-gathering every weight over fsdp in every step (the compile
# check found the gathers: bench/results/tpu_compile.md). The copy then takes 1/tensor of the
# weights per chip (2 GiB of Llama-3-8B's bf16 weights at tensor=8).
DECODE_WEIGHTS_NOT_OVER_FSDP = (("embed", None),)


def normalize_rules(rules: Iterable) -> tuple:
  """Rules as flax wants them: a tuple of (name, mesh axis | tuple of axes | None). Config values
  that went through JSON or the command line hold lists instead of tuples."""
  return tuple((str(name), tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in rules)


def decode_rules(rules: Iterable, overrides: Iterable = ()) -> tuple:
  """The decode rules for parameter rules `rules`: the same with `overrides` (`mesh.decode_rules`)
  in place of the rules they name, plus the KV cache's unless given."""
  rules = normalize_rules(rules)
  overrides = dict(normalize_rules(overrides))
  rules = tuple((name, overrides.pop(name)) if name in overrides else (name, axes)
                for name, axes in rules) + tuple(overrides.items())
  named = {name for name, _ in rules}
  return rules + tuple(rule for rule in CACHE_RULES if rule[0] not in named)


# The decode rules of the default training rules (no `mesh.decode_rules`).
DECODE_RULES = decode_rules(TRAIN_RULES)


def rules_for(config) -> tuple[tuple, tuple]:
  """(train rules, decode rules) of `config`: `config.mesh.rules`, else `TRAIN_RULES`; decoding
  replaces the rules `config.mesh.decode_rules` names and adds the KV cache's. Needs no devices
  (the planner calls it)."""
  mesh = config.get("mesh") if hasattr(config, "get") else None
  configured = mesh.get("rules") if mesh is not None else None
  train_rules = normalize_rules(configured or TRAIN_RULES)
  overrides = (mesh.get("decode_rules") if mesh is not None else None) or ()
  return train_rules, decode_rules(train_rules, overrides)


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
