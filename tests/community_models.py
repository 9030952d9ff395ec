"""Community Llama checkpoints in miniature, built offline: SmolLM2-style ChatML tokenizers, a
Llama-3 tokenizer whose post-processor adds BOS, and a transformers-saved SmolLM2-style model.

SmolLM2-135M-Instruct (HuggingFaceTB) is a LlamaForCausalLM with tied embeddings, vocab 49152, a
ChatML chat template and a GPT-2 style byte-level BPE whose `tokenizer(text)` adds no BOS
(`add_bos_token` false; its BOS is `<|im_start|>`). Its config.json carries keys transformers'
Llama does not read (`is_llama_config`, `rope_interleaved`, `transformers.js_config`); a copy
dequantized from a GGUF and saved with `save_pretrained` also carries `_model_name_or_path` and
`unk_token_id`.
"""

import json
import os

import tiny_tokenizers

# The first special tokens of SmolLM2's vocabulary, in its order (ids 0, 1, 2).
CHATML_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# SmolLM2-Instruct's chat_template (tokenizer_config.json), verbatim.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")

# HuggingFaceTB/SmolLM2-135M-Instruct config.json, as published (sizes shrunk by `tiny_smollm2`).
SMOLLM2_135M_INSTRUCT = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 1, "eos_token_id": 2, "head_dim": 64, "hidden_act": "silu", "hidden_size": 576,
    "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "is_llama_config": True,
    "max_position_embeddings": 8192, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "pad_token_id": 2,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": False, "rope_scaling": None,
    "rope_theta": 100000, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}},
    "transformers_version": "4.42.3", "use_cache": True, "vocab_size": 49152,
}
# What the GGUF-dequantized copy of the issue added on top.
GGUF_EXTRA_KEYS = {"_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "unk_token_id": 0}


def build_chatml_hf(directory, *, add_bos_token=False, vocab_size=400):
  """A SmolLM2-style tokenizer: GPT-2 byte-level BPE, ChatML specials at ids 0-2, no
  post-processor, `add_bos_token` as given (SmolLM2: false), SmolLM2's chat template."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  os.makedirs(directory, exist_ok=True)
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=CHATML_SPECIAL,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(tiny_tokenizers.CORPUS * 4, trainer=trainer)
  tok.save(os.path.join(directory, "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": add_bos_token,
            "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
            "pad_token": "<|im_end|>", "model_max_length": 8192,
            "chat_template": SMOLLM2_CHAT_TEMPLATE}
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump(config, f)
  return str(directory)


def build_llama3_bos_hf(directory, **kwargs):
  """The tiny Llama-3 tokenizer with Llama 3's TemplateProcessing post-processor, which puts
  `<|begin_of_text|>` in front of every `tokenizer(text)`."""
  from tokenizers import Tokenizer, processors

  tiny_tokenizers.build_llama3_hf(directory, **kwargs)
  path = os.path.join(directory, "tokenizer.json")
  tok = Tokenizer.from_file(path)
  bos = tok.token_to_id("<|begin_of_text|>")
  tok.post_processor = processors.TemplateProcessing(
      single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
      special_tokens=[("<|begin_of_text|>", bos)])
  tok.save(path)
  return str(directory)


def tiny_smollm2(directory, *, extra=GGUF_EXTRA_KEYS, seed=0):
  """A transformers-saved SmolLM2-style checkpoint with its ChatML tokenizer: SmolLM2's config
  keys (metadata included) with the sizes shrunk, saved by `LlamaForCausalLM.save_pretrained`.
  Returns the model (float32, eval mode)."""
  import torch
  import transformers

  build_chatml_hf(directory)
  fields = {**SMOLLM2_135M_INSTRUCT, **extra, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "vocab_size": 400, "max_position_embeddings": 256,
            "torch_dtype": "float32"}
  torch.manual_seed(seed)
  config = transformers.LlamaConfig(**fields)
  model = transformers.LlamaForCausalLM(config).float().eval()
  with torch.no_grad():  # larger weights than the default init: sharper, less uniform logits
    for p in model.parameters():
      if p.dim() > 1:
        p.mul_(4.0)
  model.save_pretrained(str(directory), safe_serialization=True)
  # save_pretrained writes what transformers' LlamaConfig holds; put back the community keys it
  # may have dropped, so the directory carries every key of the published config.json.
  path = os.path.join(directory, "config.json")
  with open(path) as f:
    saved = json.load(f)
  for key in ("is_llama_config", "rope_interleaved", "transformers.js_config", *extra):
    saved.setdefault(key, fields[key])
  with open(path, "w") as f:
    json.dump(saved, f, indent=2)
  return model
