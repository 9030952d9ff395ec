"""config.json of published Llama-architecture checkpoints: each loads, means what transformers
takes it to mean, and what would change the computation is implemented or refused by name.

The dicts are the checkpoints' config.json files as published on the Hugging Face Hub (their model
pages and repositories), written out here so the tests run offline.
"""

import json
import logging as pylogging

import numpy as np
import pytest
import transformers

import community_models
from meta_rewarding import checkpoints
from meta_rewarding.model import LlamaConfig, UnsupportedConfigError, forward
from meta_rewarding.model import config as config_module

# meta-llama/Llama-2-7b-hf
LLAMA2_7B = {
    "_name_or_path": "meta-llama/Llama-2-7b-hf", "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 32, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.31.0.dev0",
    "use_cache": True, "vocab_size": 32000,
}
# meta-llama/Meta-Llama-3-8B
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 8192,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0.dev0", "use_cache": True, "vocab_size": 128256,
}
# meta-llama/Llama-3.1-8B
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
}
# meta-llama/Llama-3.2-1B
LLAMA32_1B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": True, "vocab_size": 128256,
}
# HuggingFaceTB/SmolLM2-135M-Instruct, and the GGUF-dequantized copy of the issue.
SMOLLM2 = community_models.SMOLLM2_135M_INSTRUCT
SMOLLM2_GGUF = {**SMOLLM2, **community_models.GGUF_EXTRA_KEYS}
# TinyLlama/TinyLlama-1.1B-Chat-v1.0
TINYLLAMA = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 1,
    "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 5632, "max_position_embeddings": 2048, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 22, "num_key_value_heads": 4,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.35.0",
    "use_cache": True, "vocab_size": 32000,
}

PUBLISHED = {"llama2_7b": LLAMA2_7B, "llama3_8b": LLAMA3_8B, "llama31_8b": LLAMA31_8B,
             "llama32_1b": LLAMA32_1B, "smollm2_135m_instruct": SMOLLM2,
             "smollm2_gguf_copy": SMOLLM2_GGUF, "tinyllama_1b": TINYLLAMA}

# name -> (head_dim, kv groups, tied, rope type or None, rope_theta, vocab)
EXPECTED = {
    "llama2_7b": (128, 1, False, None, 10000.0, 32000),
    "llama3_8b": (128, 4, False, None, 500000.0, 128256),
    "llama31_8b": (128, 4, False, "llama3", 500000.0, 128256),
    "llama32_1b": (64, 4, True, "llama3", 500000.0, 128256),
    "smollm2_135m_instruct": (64, 3, True, None, 100000.0, 49152),
    "smollm2_gguf_copy": (64, 3, True, None, 100000.0, 49152),
    "tinyllama_1b": (64, 8, False, None, 10000.0, 32000),
}


@pytest.fixture
def fresh_log(monkeypatch):
  """Forget which keys this process already logged, so a test sees its own log lines, and let
  absl emit INFO (parsed absl flags, e.g. from a CLI test earlier in the process, lower it)."""
  from absl import logging as absl_logging
  monkeypatch.setattr(config_module, "_LOGGED_KEYS", set())
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  yield
  absl_logging.set_verbosity(verbosity)


def _via_transformers(hf: dict) -> LlamaConfig:
  """What transformers makes of the same dict, read back through `from_hf`."""
  return LlamaConfig.from_hf(transformers.LlamaConfig(**hf).to_dict())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_config_loads_as_transformers_reads_it(name):
  hf = PUBLISHED[name]
  config = LlamaConfig.from_hf(hf)
  head_dim, groups, tied, rope_type, theta, vocab = EXPECTED[name]
  assert (config.head_dim, config.num_groups, config.tie_word_embeddings) == (head_dim, groups, tied)
  assert (config.rope_scaling.rope_type if config.rope_scaling else None) == rope_type
  assert (config.rope_theta, config.vocab_size) == (theta, vocab)
  assert config.max_position_embeddings == hf["max_position_embeddings"]
  assert config.eos_token_ids == (hf["eos_token_id"],)
  # Every field the forward pass uses agrees with transformers' reading of the same file.
  assert config == _via_transformers(hf)
  # Every key of a published config is accounted for: strict mode accepts them too.
  assert LlamaConfig.from_hf(hf, strict=True) == config


def test_smollm2_keys_of_the_issue_are_metadata(fresh_log, caplog):
  with caplog.at_level(pylogging.INFO):
    LlamaConfig.from_hf(SMOLLM2_GGUF)
    LlamaConfig.from_hf(SMOLLM2_GGUF)
  lines = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
  assert len(lines) == 1, lines  # each ignored key is logged once per process, not per load
  for key in ("_model_name_or_path", "unk_token_id", "is_llama_config", "transformers_version",
              "torch_dtype", "transformers.js_config"):
    assert repr(key) in lines[0]
  assert "rope_interleaved" not in lines[0]  # read and checked, not ignored


@pytest.mark.parametrize("name", ["smollm2_gguf_copy", "llama31_8b", "tinyllama_1b"])
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("key, value, message", [
    ("rope_interleaved", True, r"rope_interleaved=True is not supported: .*interleaved"),
    ("attention_bias", True, r"attention_bias=True is not supported: .*bias"),
    ("mlp_bias", True, r"mlp_bias=True is not supported: .*bias"),
    ("hidden_act", "gelu", r"hidden_act='gelu' is not supported: .*silu"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192},
     r"rope_scaling: rope type 'yarn' is not implemented"),
    ("rope_scaling", {"type": "dynamic", "factor": 2.0}, r"rope_scaling: rope type 'dynamic'"),
    ("rope_scaling", {"rope_type": "longrope", "factor": 2.0}, r"rope_scaling: rope type 'longrope'"),
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4},
     r"rope_parameters: rope type 'yarn'"),
    ("quantization_config", {"quant_method": "gptq", "bits": 4}, r"quantization_config .*'gptq'"),
])
def test_computation_changing_keys_are_refused_by_name(name, strict, key, value, message):
  with pytest.raises(UnsupportedConfigError, match=message):
    LlamaConfig.from_hf({**PUBLISHED[name], key: value}, strict=strict)


def test_accepted_values_of_checked_keys():
  base = LlamaConfig.from_hf(SMOLLM2)
  for key, value in [("rope_interleaved", False), ("attention_bias", False), ("mlp_bias", False),
                     ("hidden_act", "swish"), ("hidden_act", "silu"), ("attention_bias", None)]:
    assert LlamaConfig.from_hf({**SMOLLM2, key: value}, strict=True) == base
  # head_dim is read (transformers honours it), so an explicit one different from hidden/heads is
  # a different model, not an inconsistency.
  assert LlamaConfig.from_hf({**SMOLLM2, "head_dim": 128}).head_dim == 128


def test_unknown_keys_ignored_with_a_warning_or_refused_when_strict(fresh_log, caplog):
  hf = {**LLAMA3_8B, "sliding_window": 4096, "my_flag": 1}
  with caplog.at_level(pylogging.WARNING):
    config = LlamaConfig.from_hf(hf)
  assert config == LlamaConfig.from_hf(LLAMA3_8B)  # as transformers' Llama: not read
  warnings = [r.getMessage() for r in caplog.records if r.levelno == pylogging.WARNING]
  assert len(warnings) == 1 and "['my_flag', 'sliding_window']" in warnings[0]
  with pytest.raises(UnsupportedConfigError,
                     match=r"unknown Llama config fields \['my_flag', 'sliding_window'\].*strict"):
    LlamaConfig.from_hf(hf, strict=True)


def test_absent_keys_take_transformers_defaults():
  sparse = {"model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4}
  config = LlamaConfig.from_hf(sparse)
  assert config.num_key_value_heads == 4 and config.rms_norm_eps == 1e-6
  assert config == _via_transformers(sparse)


def test_strict_goes_through_read_hf_config_and_load_hf(tmp_path):
  model = community_models.tiny_smollm2(str(tmp_path))
  hf = json.loads((tmp_path / "config.json").read_text())
  for key in ("_model_name_or_path", "unk_token_id", "is_llama_config", "rope_interleaved"):
    assert key in hf  # the keys that used to stop the load
  hf["my_flag"] = True
  (tmp_path / "config.json").write_text(json.dumps(hf))
  assert checkpoints.read_hf_config(str(tmp_path)).tie_word_embeddings
  with pytest.raises(UnsupportedConfigError, match=r"config\.json: unknown Llama config fields \['my_flag'\]"):
    checkpoints.read_hf_config(str(tmp_path), strict=True)
  with pytest.raises(UnsupportedConfigError, match=r"\['my_flag'\]"):
    checkpoints.load_hf(str(tmp_path), strict=True)
  # Loaded (tied embeddings, no lm_head tensor), its logits are transformers'.
  config, params = checkpoints.load_hf(str(tmp_path), dtype="float32", param_dtype="float32")
  tokens = np.array([[1, 5, 17, 42, 99, 250, 3, 7]])
  import torch
  with torch.no_grad():
    want = model(torch.as_tensor(tokens)).logits.numpy()
  got = np.asarray(forward(config, params, tokens))
  np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


def test_presets_are_strict_about_hand_written_fields():
  from meta_rewarding.model import presets
  for name in presets.PRESETS:
    presets.llama_config(presets.get(name))
  with pytest.raises(UnsupportedConfigError, match=r"unknown Llama config fields \['hiden_size'\]"):
    presets.llama_config({**presets.get("tiny"), "hiden_size": 128})
