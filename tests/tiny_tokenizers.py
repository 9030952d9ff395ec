"""Tiny tokenizers built on the spot (no hub): a Llama-3-style HF BPE and a sentencepiece model."""

import json
import os

from meta_rewarding.tokenizer import train_sentencepiece

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is 12 + 7? The answer is 19.",
    "Reverse the list [1, 2, 3] and print it.",
    "Hello world! How are you today?",
    "Please write a short poem about the sea.",
    "Sure, here is a short poem:\n\nThe sea is wide and blue.",
    "You are a helpful assistant.",
    "Count the letters in the word banana.",
]

LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>"]

# Meta-Llama-3-8B-Instruct's tokenizer_config.json chat_template, verbatim.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")

# Llama 3's pre-tokenizer split pattern (tokenizer.json of Meta-Llama-3).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def build_llama3_hf(directory, *, chat_template=True, vocab_size=400, generation_eos=None):
  """A byte-level BPE with Llama 3's pre-tokenizer and special tokens, saved as an HF directory."""
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

  os.makedirs(directory, exist_ok=True)
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=LLAMA3_SPECIAL,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(CORPUS * 4, trainer=trainer)
  tok.save(os.path.join(directory, "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
            "eos_token": "<|end_of_text|>", "model_max_length": 8192}
  if chat_template:
    config["chat_template"] = LLAMA3_CHAT_TEMPLATE
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump(config, f)
  if generation_eos is not None:
    with open(os.path.join(directory, "generation_config.json"), "w") as f:
      json.dump({"eos_token_id": generation_eos}, f)
  return str(directory)


def build_sentencepiece(directory, *, vocab_size=400, user_defined_symbols=()):
  """A tiny byte-fallback BPE sentencepiece model trained with `train_sentencepiece`."""
  return train_sentencepiece(CORPUS * 4, os.path.join(directory, "tiny_sp"), vocab_size,
                             user_defined_symbols=user_defined_symbols)
