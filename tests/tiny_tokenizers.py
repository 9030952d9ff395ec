"""Tiny tokenizers built on the spot (no hub): a Llama-3-style HF BPE, a sentencepiece model, and
Qwen 2.5 / Gemma 2 / Gemma 3 / Mistral v0.3 style HF tokenizers with their chat templates."""

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


# -- Chat families beyond Llama: Qwen 2.5 (ChatML), Gemma 2, Gemma 3, Mistral v0.3 ----------------
#
# Each builder trains a tiny tokenizer on CORPUS with the family's tokenization pipeline and special
# tokens, and writes the family's published chat template (tool-calling branches left out: the role
# handling, BOS handling and generation prompt are as published) and the family's
# generation_config.json eos list, with the tiny vocabulary's ids, and the published
# tokenizer_class (transformers' Qwen2Tokenizer, GemmaTokenizer and LlamaTokenizer load the
# tokenizer.json as it is). Real vocabularies put the
# specials elsewhere (Qwen's after its 151k BPE tokens, Gemma's <end_of_turn> at 106/107): what
# matters here is which tokens they are, not their ids.

# Every printable ASCII character is in each vocabulary, so any ASCII text (special-token strings
# included) encodes without <unk>.
_ASCII = [chr(c) for c in range(32, 127)] + ["\n", "\t"]

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2/Qwen2.5: single digits).
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen/Qwen2.5-7B-Instruct's chat_template (tokenizer_config.json) without its `tools` branch and
# its assistant tool_calls / "tool" message branches; the rest as published: a default system
# message when the conversation has none, every turn `<|im_start|>{role}\n{content}<|im_end|>\n`
# (content not stripped), no BOS, generation prompt `<|im_start|>assistant\n`.
QWEN25_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\n" + QWEN_DEFAULT_SYSTEM + "<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + "
    "'\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n")

GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]

# google/gemma-2-9b-it's chat_template (tokenizer_config.json), verbatim: BOS, no system role
# (raise_exception), roles alternating user/model, contents trimmed, generation prompt
# `<start_of_turn>model\n`.
GEMMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")

# google/gemma-3-4b-it's chat_template (tokenizer_config.json) with the image items of list
# contents left out; the rest as published: BOS, a system message folded into the first user turn
# as `system + "\n\n"` before the (trimmed) user content, roles alternating user/model,
# generation prompt `<start_of_turn>model\n`.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate "
    "user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n")

MISTRAL_SPECIAL = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]",
                   "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]

# mistralai/Mistral-7B-Instruct-v0.3's chat_template (tokenizer_config.json, Mistral's "v3"
# template) without its tools / tool_calls / tool-results branches; the rest as published: an
# optional system message put in front of the LAST user turn, roles alternating, BOS once, user
# turns `[INST] {content}[/INST]`, assistant turns ` {content|trim}</s>`, no generation prompt.
MISTRAL_V3_CHAT_TEMPLATE = (
    "{%- if messages[0][\"role\"] == \"system\" %}\n"
    "    {%- set system_message = messages[0][\"content\"] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{%- set ns = namespace() %}\n"
    "{%- set ns.index = 0 %}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or "
    "(message.tool_calls is defined and message.tool_calls is not none)) %}\n"
    "        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n"
    "            {{- raise_exception(\"After the optional system message, conversation roles "
    "must alternate user/assistant/user/assistant/...\") }}\n"
    "        {%- endif %}\n"
    "        {%- set ns.index = ns.index + 1 %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if message[\"role\"] == \"user\" %}\n"
    "        {%- if loop.last and system_message is defined %}\n"
    "            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + "
    "\"[/INST]\" }}\n"
    "        {%- else %}\n"
    "            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n"
    "        {%- endif %}\n"
    "    {%- elif message[\"role\"] == \"assistant\" %}\n"
    "        {{- \" \" + message[\"content\"]|trim + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception(\"Only user and assistant roles are supported, with the exception "
    "of an initial optional system message!\") }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n")


def _save_family(directory, tok, config, generation_config):
  tok.save(os.path.join(directory, "tokenizer.json"))
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(directory, "generation_config.json"), "w") as f:
    json.dump(generation_config, f)
  return str(directory)


def build_qwen25_hf(directory, *, vocab_size=400):
  """A Qwen2.5-Instruct-style tokenizer: byte-level BPE with Qwen2's split pattern, the ChatML
  specials added after the BPE vocabulary (as in Qwen), no BOS, EOS `<|im_end|>`, pad
  `<|endoftext|>`, Qwen2.5's chat template, and generation_config eos [<|im_end|>, <|endoftext|>]
  (Qwen2.5-Instruct: [151645, 151643])."""
  from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

  os.makedirs(directory, exist_ok=True)
  tok = Tokenizer(models.BPE())
  tok.normalizer = None
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(CORPUS * 4, trainer=trainer)
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL])
  config = {"tokenizer_class": "Qwen2Tokenizer", "add_prefix_space": False,
            "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "unk_token": None, "clean_up_tokenization_spaces": False, "errors": "replace",
            "model_max_length": 131072, "split_special_tokens": False,
            "chat_template": QWEN25_CHAT_TEMPLATE}
  ids = [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]
  return _save_family(directory, tok, config,
                      {"bos_token_id": ids[1], "eos_token_id": ids, "pad_token_id": ids[1]})


def _sentencepiece_bpe(special, *, metaspace, bos, vocab_size):
  """A sentencepiece-style BPE (the `tokenizer.json` transformers makes of a sentencepiece model):
  spaces as `▁`, `<unk>` for what the vocabulary lacks, BOS put in front by the post-processor.
  `metaspace`: Llama / Mistral's Metaspace pre-tokenizer (a `▁` in front of the text, none after
  a special token); else Gemma's: spaces replaced by `▁`, nothing prepended (pieces split before
  each `▁`, as sentencepiece splits on whitespace)."""
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
  from tokenizers import trainers

  tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
  if metaspace:
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                 split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
  else:
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse()])
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                initial_alphabet=_ASCII + ["▁"], show_progress=False)
  tok.train_from_iterator(CORPUS * 4, trainer=trainer)
  tok.post_processor = processors.TemplateProcessing(
      single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, tok.token_to_id(bos))])
  return tok


def build_gemma_hf(directory, *, version=3, vocab_size=400):
  """A Gemma-style tokenizer (`version` 2 or 3): sentencepiece-style BPE without a dummy prefix,
  `<pad>`/`<eos>`/`<bos>`/`<unk>` at ids 0-3 as in Gemma, `<start_of_turn>`/`<end_of_turn>`,
  BOS added by the post-processor (add_bos_token), the version's chat template, and
  generation_config eos [<eos>, <end_of_turn>] (Gemma 2: [1, 107]; Gemma 3: [1, 106])."""
  if version not in (2, 3):
    raise ValueError(f"version must be 2 or 3, got {version!r}")
  os.makedirs(directory, exist_ok=True)
  tok = _sentencepiece_bpe(GEMMA_SPECIAL, metaspace=False, bos="<bos>", vocab_size=vocab_size)
  config = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": True,
            "add_eos_token": False, "bos_token": "<bos>", "eos_token": "<eos>",
            "pad_token": "<pad>", "unk_token": "<unk>",
            "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
            "clean_up_tokenization_spaces": False, "spaces_between_special_tokens": False,
            "model_max_length": 8192 if version == 2 else 131072,
            "chat_template": GEMMA2_CHAT_TEMPLATE if version == 2 else GEMMA3_CHAT_TEMPLATE}
  eos, eot = tok.token_to_id("<eos>"), tok.token_to_id("<end_of_turn>")
  return _save_family(directory, tok, config, {"bos_token_id": tok.token_to_id("<bos>"),
                                               "eos_token_id": [eos, eot],
                                               "pad_token_id": tok.token_to_id("<pad>")})


def build_mistral_v3_hf(directory, *, vocab_size=400):
  """A Mistral-7B-Instruct-v0.3-style tokenizer: sentencepiece-style BPE with the Metaspace
  pre-tokenizer (prepend_scheme "first"), `<unk>`/`<s>`/`</s>` at 0-2 and the v3 control tokens
  (`[INST]`, `[/INST]`, tool markers) after them, BOS added by the post-processor, the v3 chat
  template, and generation_config eos `</s>` (2, as in Mistral)."""
  os.makedirs(directory, exist_ok=True)
  tok = _sentencepiece_bpe(MISTRAL_SPECIAL, metaspace=True, bos="<s>", vocab_size=vocab_size)
  config = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
            "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "legacy": False, "clean_up_tokenization_spaces": False,
            "model_max_length": 1000000000000000019884624838656,
            "chat_template": MISTRAL_V3_CHAT_TEMPLATE}
  return _save_family(directory, tok, config, {"bos_token_id": tok.token_to_id("<s>"),
                                               "eos_token_id": tok.token_to_id("</s>")})
