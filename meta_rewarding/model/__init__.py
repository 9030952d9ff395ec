"""The Llama family: `LlamaConfig` (HF config exchange) and the Flax `Llama` module.

The names below load on first use (PEP 562), so `meta_rewarding.model.presets` and
`meta_rewarding.model.config` can be imported -- by config files, the planner -- without flax.
"""

import importlib

_EXPORTS = {
    "config": ("LlamaConfig", "RopeScaling", "UnsupportedConfigError", "tiny_config"),
    "llama": ("Llama", "causal_mask", "forward", "hidden_states", "init_cache", "init_params",
              "padded_forward", "param_logical_axes", "unembedding"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names]


def __getattr__(name):
  module = _MODULE_OF.get(name)
  if module is None:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
