"""Architecture presets: `DecoderConfig` fields of published checkpoints, as plain dicts.

Llama 3 / 3.1 / 3.2, Qwen2.5, Qwen3, Mistral v0.3, Gemma 2 and Gemma 3 (text). The values are
those of the checkpoints' Hugging Face `config.json`, under its key names and with its
`model_type` (Instruct variants: the EOS ids they stop on, i.e. generation_config.json's list where
it has one), so a config file can plan memory, build an abstract model or random-initialise one
without the weights at hand. A checkpoint named in `config.model.checkpoint` always wins over a
preset. tests/test_hf_configs.py checks each against the published config.json it describes.

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

# Where the published values were checked (tests/test_hf_configs.py holds the files): Qwen2.5-7B/
# 1.5B-Instruct, Mistral-7B-Instruct-v0.3, gemma-2-9b-it and gemma-3-4b-it's config.json against
# verbatim copies quoted in public code; Qwen3-8B's against copies of Qwen3-8B-derived files
# (same architecture keys) and sibling Qwen3 files, not a verbatim copy of its own. The Instruct
# EOS lists are those of the generation_config.json files (Qwen2.5: [151645, 151643], checked for
# the 1.5B; Qwen3-8B, Gemma 2 [1, 107] and Gemma 3 [1, 106] from the model cards' files, not
# re-checked here).
_QWEN_EOS = [151645, 151643]   # <|im_end|>, <|endoftext|>

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
    # Qwen/Qwen2.5-7B-Instruct: q/k/v biases, untied, no sliding window in use.
    "qwen2_5_7b_instruct": dict(
        model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
        num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6,
        rope_theta=1000000.0, rope_scaling=None, max_position_embeddings=32768,
        tie_word_embeddings=False, bos_token_id=151643, eos_token_id=list(_QWEN_EOS),
        use_sliding_window=False, sliding_window=131072, max_window_layers=28),
    # Qwen/Qwen2.5-1.5B-Instruct: tied embeddings.
    "qwen2_5_1_5b_instruct": dict(
        model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
        num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, rms_norm_eps=1e-6,
        rope_theta=1000000.0, rope_scaling=None, max_position_embeddings=32768,
        tie_word_embeddings=True, bos_token_id=151643, eos_token_id=list(_QWEN_EOS),
        use_sliding_window=False, sliding_window=32768, max_window_layers=21),
    # Qwen/Qwen3-8B (post-trained: thinking and non-thinking chat): q/k norms, head_dim 128.
    "qwen3_8b": dict(
        model_type="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
        num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        rms_norm_eps=1e-6, rope_theta=1000000.0, rope_scaling=None, max_position_embeddings=40960,
        tie_word_embeddings=False, bos_token_id=151643, eos_token_id=list(_QWEN_EOS),
        attention_bias=False, use_sliding_window=False, sliding_window=None, max_window_layers=36),
    # mistralai/Mistral-7B-Instruct-v0.3: 32768-token vocabulary, no sliding window (v0.2+).
    "mistral_7b_instruct_v0_3": dict(
        model_type="mistral", vocab_size=32768, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5,
        rope_theta=1000000.0, rope_scaling=None, max_position_embeddings=32768,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, sliding_window=None),
    # google/gemma-2-9b-it: sliding (4096) and global layers alternating, soft-capped logits.
    "gemma_2_9b_it": dict(
        model_type="gemma2", vocab_size=256000, hidden_size=3584, intermediate_size=14336,
        num_hidden_layers=42, num_attention_heads=16, num_key_value_heads=8, head_dim=256,
        rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None, max_position_embeddings=8192,
        tie_word_embeddings=True, bos_token_id=2, eos_token_id=[1, 107], pad_token_id=0,
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=256,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=4096),
    # google/gemma-3-4b-it's text model (its config.json's text_config, filled with transformers'
    # Gemma3TextConfig defaults, run as Gemma3ForCausalLM / `gemma3_text`): 5 sliding (1024) :
    # 1 global layers, local rope base 1e4, global 1e6 with linear scaling x8.
    "gemma_3_4b_it": dict(
        model_type="gemma3_text", vocab_size=262208, hidden_size=2560, intermediate_size=10240,
        num_hidden_layers=34, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
        rms_norm_eps=1e-6, rope_theta=1000000.0, rope_local_base_freq=10000.0,
        rope_scaling={"rope_type": "linear", "factor": 8.0}, max_position_embeddings=131072,
        tie_word_embeddings=True, bos_token_id=2, eos_token_id=[1, 106], pad_token_id=0,
        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=256,
        attn_logit_softcapping=None, final_logit_softcapping=None, sliding_window=1024,
        sliding_window_pattern=6),
    # A few-hundred-KB model for CPU runs and tests (vocab sized for a "train:512" tokenizer).
    "tiny": dict(
        vocab_size=512, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
        rope_theta=10000.0, rope_scaling=None, max_position_embeddings=1024,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
}

# Short names accepted by the config files' `model=` argument.
ALIASES = {"llama3_70b_instruct": "llama3_70b", "llama3_1b": "llama3_2_1b", "llama3_3b": "llama3_2_3b", "llama3_8b_instruct": "llama3_8b",
           "llama3.2-1b": "llama3_2_1b", "llama3.2-3b": "llama3_2_3b", "llama3.1-8b": "llama3_1_8b",
           "qwen2_5_7b": "qwen2_5_7b_instruct", "qwen2.5-7b": "qwen2_5_7b_instruct",
           "qwen2_5_1_5b": "qwen2_5_1_5b_instruct", "qwen2.5-1.5b": "qwen2_5_1_5b_instruct",
           "qwen3-8b": "qwen3_8b", "mistral_7b": "mistral_7b_instruct_v0_3",
           "mistral-7b-v0.3": "mistral_7b_instruct_v0_3", "gemma2_9b": "gemma_2_9b_it",
           "gemma-2-9b": "gemma_2_9b_it", "gemma3_4b": "gemma_3_4b_it", "gemma-3-4b": "gemma_3_4b_it"}

# The Hugging Face repository each preset describes (for documentation and download hints).
HF_REPOS = {"llama3_8b": "meta-llama/Meta-Llama-3-8B-Instruct",
            "llama3_70b": "meta-llama/Meta-Llama-3-70B-Instruct",
            "llama3_1_8b": "meta-llama/Llama-3.1-8B-Instruct",
            "llama3_2_3b": "meta-llama/Llama-3.2-3B-Instruct",
            "llama3_2_1b": "meta-llama/Llama-3.2-1B-Instruct",
            "qwen2_5_7b_instruct": "Qwen/Qwen2.5-7B-Instruct",
            "qwen2_5_1_5b_instruct": "Qwen/Qwen2.5-1.5B-Instruct",
            "qwen3_8b": "Qwen/Qwen3-8B",
            "mistral_7b_instruct_v0_3": "mistralai/Mistral-7B-Instruct-v0.3",
            "gemma_2_9b_it": "google/gemma-2-9b-it",
            # The multimodal checkpoint: run its text model (README, "Model families").
            "gemma_3_4b_it": "google/gemma-3-4b-it",
            "tiny": None}

# The directory the config files' placeholder checkpoint paths name, where it is not the repo's:
# Gemma 3's published checkpoint is multimodal, and what runs is its text model saved apart
# (README, "Model families").
CHECKPOINT_NAMES = {"gemma_3_4b_it": "gemma-3-4b-it-text"}


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
