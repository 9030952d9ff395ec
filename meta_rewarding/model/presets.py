"""Architecture presets: `LlamaConfig` fields of published Llama checkpoints, as plain dicts.

The values are those of the checkpoints' Hugging Face `config.json` (Instruct variants: their EOS
ids), so a config file can plan memory, build an abstract model or random-initialise one without
the weights at hand. A checkpoint named in `config.model.checkpoint` always wins over a preset.

  fields = presets.get("llama3_8b")                 # dict, JSON-able (rope_scaling is a dict)
  cfg = presets.llama_config(fields, dtype="bfloat16", scan_layers=True)   # -> LlamaConfig

`rope_scaling` is kept as a dict (the HF form) so the presets can live in an `ml_collections`
config and be written to JSON; `llama_config` goes through `LlamaConfig.from_hf`, which turns it
into a `RopeScaling`.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from meta_rewarding.model.config import LlamaConfig

_LLAMA3_VOCAB = 128256
_LLAMA32_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
_LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}

PRESETS: dict[str, dict[str, Any]] = {
    # meta-llama/Meta-Llama-3-8B-Instruct: the paper's seed model.
    "llama3_8b": dict(
        vocab_size=_LLAMA3_VOCAB, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
        rope_theta=500000.0, rope_scaling=None, max_position_embeddings=8192,
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128009),
    # meta-llama/Meta-Llama-3-70B-Instruct: the Self-Taught Evaluator paper's seed model.
    "llama3_70b": dict(
        vocab_size=_LLAMA3_VOCAB, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
        rope_theta=500000.0, rope_scaling=None, max_position_embeddings=8192,
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128009),
    # meta-llama/Llama-3.1-8B-Instruct.
    "llama3_1_8b": dict(
        vocab_size=_LLAMA3_VOCAB, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
        rope_theta=500000.0, rope_scaling=dict(_LLAMA31_ROPE), max_position_embeddings=131072,
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=[128001, 128008, 128009]),
    # meta-llama/Llama-3.2-3B-Instruct.
    "llama3_2_3b": dict(
        vocab_size=_LLAMA3_VOCAB, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
        num_attention_heads=24, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
        rope_theta=500000.0, rope_scaling=dict(_LLAMA32_ROPE), max_position_embeddings=131072,
        tie_word_embeddings=True, bos_token_id=128000, eos_token_id=[128001, 128008, 128009]),
    # meta-llama/Llama-3.2-1B-Instruct.
    "llama3_2_1b": dict(
        vocab_size=_LLAMA3_VOCAB, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
        rope_theta=500000.0, rope_scaling=dict(_LLAMA32_ROPE), max_position_embeddings=131072,
        tie_word_embeddings=True, bos_token_id=128000, eos_token_id=[128001, 128008, 128009]),
    # A few-hundred-KB model for CPU runs and tests (vocab sized for a "train:512" tokenizer).
    "tiny": dict(
        vocab_size=512, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
        rope_theta=10000.0, rope_scaling=None, max_position_embeddings=1024,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
}

# Short names accepted by the config files' `model=` argument.
ALIASES = {"llama3_70b_instruct": "llama3_70b", "llama3_1b": "llama3_2_1b", "llama3_3b": "llama3_2_3b", "llama3_8b_instruct": "llama3_8b",
           "llama3.2-1b": "llama3_2_1b", "llama3.2-3b": "llama3_2_3b", "llama3.1-8b": "llama3_1_8b"}

# The Hugging Face repository each preset describes (for documentation and download hints).
HF_REPOS = {"llama3_8b": "meta-llama/Meta-Llama-3-8B-Instruct",
            "llama3_70b": "meta-llama/Meta-Llama-3-70B-Instruct",
            "llama3_1_8b": "meta-llama/Llama-3.1-8B-Instruct",
            "llama3_2_3b": "meta-llama/Llama-3.2-3B-Instruct",
            "llama3_2_1b": "meta-llama/Llama-3.2-1B-Instruct",
            "tiny": None}


def canonical(name: str) -> str:
  """The preset key for `name` (aliases resolved); raises KeyError listing the known names."""
  key = ALIASES.get(name, name)
  if key not in PRESETS:
    raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)} "
                   f"(aliases: {sorted(ALIASES)})")
  return key


def get(name: str) -> dict[str, Any]:
  """A fresh copy of the preset's `LlamaConfig` fields (HF names; rope_scaling as a dict)."""
  return copy.deepcopy(PRESETS[canonical(name)])


def llama_config(fields: Mapping[str, Any], *, strict: bool = True, **run_options) -> LlamaConfig:
  """`LlamaConfig` from preset-style fields (also a config's `model.architecture`), via `from_hf`
  so a dict `rope_scaling` becomes a `RopeScaling`. `run_options`: dtype, param_dtype, ...

  Strict by default: these fields are written by hand, so a misspelt key is refused rather than
  silently ignored as an unknown config.json key would be."""
  def plain(v):
    if hasattr(v, "to_dict"):  # ml_collections.ConfigDict
      v = v.to_dict()
    if isinstance(v, Mapping):
      return {k: plain(x) for k, x in v.items()}
    return list(v) if isinstance(v, tuple) else v
  fields = fields.to_dict() if hasattr(fields, "to_dict") else dict(fields)
  hf = {k: plain(v) for k, v in fields.items() if not (k == "rope_scaling" and v is None)}
  return LlamaConfig.from_hf(hf, strict=strict, **run_options)
