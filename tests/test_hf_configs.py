"""config.json of published checkpoints (Llama-architecture ones, and the file of each other
family's preset: Qwen2.5, Qwen3, Mistral, Gemma 2, Gemma 3): each loads, means what transformers
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
from meta_rewarding.model.config import LlamaConfig, UnsupportedConfigError
from meta_rewarding.model.llama import forward
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


# ------------------------------------------------------------------------------------------------
# The other families' presets (model/presets.py): each one's published config.json, written out in
# full (metadata keys included), as on the Hub. Where each was checked: model/presets.py's comment.

# Qwen/Qwen2.5-7B-Instruct
QWEN25_7B_INSTRUCT = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
    "intermediate_size": 18944, "max_position_embeddings": 32768, "max_window_layers": 28,
    "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 152064,
}
# Qwen/Qwen2.5-1.5B-Instruct
QWEN25_1_5B_INSTRUCT = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 1536, "initializer_range": 0.02,
    "intermediate_size": 8960, "max_position_embeddings": 32768, "max_window_layers": 21,
    "model_type": "qwen2", "num_attention_heads": 12, "num_hidden_layers": 28,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}
# Qwen/Qwen3-8B (transformers_version not confirmed: metadata, ignored either way)
QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 12288,
    "max_position_embeddings": 40960, "max_window_layers": 36, "model_type": "qwen3",
    "num_attention_heads": 32, "num_hidden_layers": 36, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
    "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}
# mistralai/Mistral-7B-Instruct-v0.3
MISTRAL_7B_INSTRUCT_V03 = {
    "architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
    "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.42.0.dev0",
    "use_cache": True, "vocab_size": 32768,
}
# google/gemma-2-9b-it: with the legacy keys hidden_act, sliding_window_size, cache_implementation.
GEMMA2_9B_IT = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": 1, "final_logit_softcapping": 30.0, "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 3584, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 16,
    "num_hidden_layers": 42, "num_key_value_heads": 8, "pad_token_id": 0,
    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "sliding_window": 4096, "sliding_window_size": 4096, "torch_dtype": "bfloat16",
    "transformers_version": "4.42.0.dev0", "use_cache": True, "vocab_size": 256000,
}
# google/gemma-3-4b-it: the multimodal checkpoint. Its text_config names six keys; transformers'
# Gemma3TextConfig defaults fill in the rest.
GEMMA3_4B_IT = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
    "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
    "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
    "text_config": {
        "hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
        "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
    "vision_config": {
        "hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
        "model_type": "siglip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 27,
        "patch_size": 14, "vision_use_head": False,
    },
}

# preset -> (its published config.json as a decoder: Gemma 3's text_config; the Instruct EOS ids
# the preset stops on, from generation_config.json; published parameter count, billions)
FAMILY_PRESETS = {
    "qwen2_5_7b_instruct": (QWEN25_7B_INSTRUCT, (151645, 151643), 7.62),
    "qwen2_5_1_5b_instruct": (QWEN25_1_5B_INSTRUCT, (151645, 151643), 1.54),
    "qwen3_8b": (QWEN3_8B, (151645, 151643), 8.19),
    "mistral_7b_instruct_v0_3": (MISTRAL_7B_INSTRUCT_V03, 2, 7.25),
    "gemma_2_9b_it": (GEMMA2_9B_IT, (1, 107), 9.24),
    "gemma_3_4b_it": (GEMMA3_4B_IT["text_config"], (1, 106), 3.88),
}


def _transformers_config(hf: dict):
  """transformers' own config class for the dict's model_type, built from the same dict."""
  return transformers.AutoConfig.for_model(**json.loads(json.dumps(hf)))


@pytest.mark.parametrize("name", sorted(FAMILY_PRESETS))
def test_family_preset_is_its_published_config_as_transformers_reads_it(name):
  from meta_rewarding.model import presets
  hf, instruct_eos, billions = FAMILY_PRESETS[name]
  # Every key of the published file is accounted for (strict), and it means what transformers'
  # config class for that model_type takes it to mean (read back through from_hf).
  config = LlamaConfig.from_hf(hf, strict=True)
  assert config.model_type == hf["model_type"]
  assert config == LlamaConfig.from_hf(_transformers_config(hf).to_dict())
  # The preset is that file, but for the EOS ids the Instruct model stops on.
  preset = presets.llama_config(presets.get(name))
  assert preset == config.replace(eos_token_id=instruct_eos)
  assert presets.HF_REPOS[name] and presets.canonical(name) == name
  # Its size is the published one, and transformers' model of that config has exactly as many
  # parameters (built on the meta device: no memory, no download).
  assert config.num_params() == pytest.approx(billions * 1e9, rel=0.02)
  import torch
  with torch.device("meta"):
    model = transformers.AutoModelForCausalLM.from_config(_transformers_config(hf))
  assert sum(p.numel() for p in model.parameters()) == config.num_params()


def test_family_presets_read_their_family_fields():
  from meta_rewarding.model import presets
  get = lambda name: presets.llama_config(presets.get(name))
  qwen25, qwen3 = get("qwen2_5_7b_instruct"), get("qwen3_8b")
  assert qwen25.attention_bias and not qwen25.qk_norm and not qwen25.has_sliding_layers
  assert qwen3.qk_norm and not qwen3.attention_bias and qwen3.head_dim == 128
  assert get("qwen2_5_1_5b_instruct").tie_word_embeddings
  assert not get("mistral_7b_instruct_v0_3").has_sliding_layers  # v0.3: sliding_window null
  gemma2 = get("gemma_2_9b_it")
  assert gemma2.sliding_layers == (True, False) * 21 and gemma2.sliding_window == 4096
  assert (gemma2.attn_logit_softcapping, gemma2.final_logit_softcapping) == (50.0, 30.0)
  assert gemma2.norm_style == "gemma" and gemma2.hidden_act == "gelu_pytorch_tanh"
  assert gemma2.attention_scale == 256 ** -0.5 and gemma2.scale_embeddings
  gemma3 = get("gemma_3_4b_it")
  assert gemma3.sliding_layers == ((True,) * 5 + (False,)) * 5 + (True,) * 4
  assert gemma3.sliding_window == 1024 and gemma3.qk_norm
  assert (gemma3.rope_theta, gemma3.rope_local_theta) == (1e6, 1e4)
  assert gemma3.rope_scaling.rope_type == "linear" and gemma3.rope_scaling.factor == 8.0
  assert gemma3.final_logit_softcapping is None and gemma3.attn_logit_softcapping is None


def test_gemma3_multimodal_checkpoint_is_refused_with_the_way_out():
  with pytest.raises(UnsupportedConfigError,
                     match=r"model_type='gemma3' is the multimodal Gemma 3.*gemma3_text"):
    LlamaConfig.from_hf(GEMMA3_4B_IT)
  # What the refusal says to do: the text model saved with its text_config (as save_pretrained
  # writes it, every field filled in) is the preset's model.
  from meta_rewarding.model import presets
  text = _transformers_config(GEMMA3_4B_IT).text_config.to_dict()
  assert (LlamaConfig.from_hf(text).replace(eos_token_id=(1, 106))
          == presets.llama_config(presets.get("gemma_3_4b_it")))
