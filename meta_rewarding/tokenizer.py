"""Tokenizers, chat templates and stop ids: one small `Tokenizer` over two backends.

Backends
  * Hugging Face: a LOCAL directory with ``tokenizer.json`` (plus ``tokenizer_config.json`` with its
    special tokens and jinja ``chat_template``, and optionally ``chat_template.jinja`` and
    ``generation_config.json``), loaded with ``transformers.AutoTokenizer.from_pretrained(path,
    local_files_only=True)`` -- never ``trust_remote_code``, never the hub.
  * sentencepiece: a ``.model`` file (or a directory holding ``tokenizer.model`` / one ``*.model``
    and no ``tokenizer.json``), used through the ``sentencepiece`` library directly. This is what
    `train_sentencepiece` writes for the testbed, and what original Llama-2 checkpoints ship.

`load_tokenizer(path, chat_format="auto")` picks the backend. Anything wrong with the path raises
`TokenizerError` (a ``ValueError``) naming the path and what was expected.

Special tokens and ids
  * ``encode(text)`` is ``tokenizer(text)["input_ids"]``: the tokenizer's own rule decides BOS/EOS
    (Hugging Face: the post-processor, which ``add_bos_token`` configures -- SmolLM2 adds nothing,
    Llama 3 adds ``<|begin_of_text|>``; sentencepiece: ``add_bos_token``/``add_eos_token`` of a
    tokenizer_config.json next to the model, default BOS and no EOS as in Llama 2). ``add_bos`` /
    ``add_eos`` True or False override it. A BOS the text already starts with is never doubled.
    Special-token strings in the text (``<|eot_id|>``, ``<s>``, ...) are encoded as their special
    ids, as ``transformers`` does: this is for raw prompts written by the operator.
  * User content never yields control ids. `encode_chat`, `encode_prompt_response` and
    `encode_content` encode the messages' contents (instructions, responses, judgments) with
    special tokens split, as transformers' ``split_special_tokens=True`` does: a ``</s>`` or
    ``<|eot_id|>`` inside a response is text, and only the chat template adds control tokens. How:
    each special-token string in a content is replaced by a private-use marker character before
    the template renders, so the special strings in the rendered text are the template's own;
    the text between them is encoded with special tokens split, markers turned back first.
    Contents without special-token strings take the plain path, so their ids are exactly what
    they always were. The special tokens (`Tokenizer.special_tokens`) are the Hugging Face added
    tokens marked special, or the sentencepiece control pieces, plus the stop tokens (a
    sentencepiece user-defined ``<|eot_id|>`` stop symbol in content is encoded character by
    character).
  * ``pad_id``: the tokenizer's pad token; else ``eos_id``; else 0. Padding is always masked, so the
    fallback only has to be a valid id.
  * ``stop_ids``: EOS, then every end-of-turn token present in the vocabulary (``<|eot_id|>``,
    ``<|end_of_text|>``, ``<|eom_id|>`` of Llama 3/3.1, ``<|im_end|>`` of ChatML, ``<end_of_turn>``
    of Gemma), then the ``eos_token_id`` entries of a ``generation_config.json`` next to the
    tokenizer (an int or a list: Llama-3.1's [128001, 128008, 128009], Qwen2.5's ``<|im_end|>``
    and ``<|endoftext|>``, Gemma 2's [1, 107] and Gemma 3's [1, 106] with ``<end_of_turn>``).
    Deduplicated, in that order.
  * ``decode(ids, skip_special_tokens=True)`` drops special tokens. For sentencepiece the special
    ids are the control pieces (``<s>``, ``</s>``, ...) and the stop ids (so a user-defined
    ``<|eot_id|>`` used as a stop token is dropped too).

Chat formats (``chat_format``)
  * ``"llama3"``: Meta's Llama-3 template, character for character::

        {bos}<|start_header_id|>{role}<|end_header_id|>\\n\\n{content.strip()}<|eot_id|>...
        [<|start_header_id|>assistant<|end_header_id|>\\n\\n]   (the generation prompt)

    ``{bos}`` is the tokenizer's BOS string (``<|begin_of_text|>`` for Llama 3), as in Meta's jinja
    template which renders ``bos_token``; empty if the tokenizer has no BOS. Any role is allowed.
  * ``"llama2"``: Meta's ``chat_completion`` format: an optional leading system message is folded
    into the first user turn as ``<<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user}``; then every
    (user, assistant) pair is ``<s>[INST] {user.strip()} [/INST] {assistant.strip()} </s>`` and a
    final user turn is ``<s>[INST] {user.strip()} [/INST]`` (``<s>``/``</s>`` are the tokenizer's
    BOS/EOS strings). Roles must alternate user/assistant. The generation prompt is implicit, so
    ``add_generation_prompt`` changes nothing.
  * ``"hf"``: the tokenizer's own jinja ``chat_template``, rendered by ``transformers``
    (``apply_chat_template(..., tokenize=False)``). As in ``transformers``, the template owns BOS:
    `encode_chat` does not add one that the template left out. This is how Qwen's ChatML (Qwen2.5's
    template adds its default system message when there is none), Gemma's
    ``<start_of_turn>user\\n...<end_of_turn>\\n`` and Mistral's ``[INST] ... [/INST]`` are written:
    as their templates write them.
    Templates without a system role: when the template refuses a conversation that starts with a
    system message (it raises, e.g. Gemma 2's ``raise_exception('System role not supported')``,
    with an error that mentions "system") and a user message follows, the system text is put in
    the first user turn as Gemma 3's template does it (``system + "\\n\\n" + user content``) and
    the template renders that; a warning says so, once per process. Templates that accept the
    system message render exactly as before.
  * ``"raw"``: the messages' contents concatenated as-is, no separators, roles ignored, no
    generation prompt -- for plain models. `encode_chat` adds in front what the tokenizer itself
    adds (`adds_bos`); special-token strings in the contents stay text, as for every format.
  * ``"auto"`` (decided once, at load): ``"hf"`` if the tokenizer has a chat_template; else
    ``"llama3"`` if ``<|start_header_id|>``, ``<|end_header_id|>`` and ``<|eot_id|>`` are all in
    the vocabulary; else ``"llama2"`` if BOS/EOS are ``<s>``/``</s>`` (the Llama-2 / sentencepiece
    convention, which includes `train_sentencepiece` models); else ``"raw"``.

Sentencepiece and special strings: sentencepiece does not recognise control pieces (``<s>``,
``</s>``) in text, so the text is split on them and every piece between two special tokens is
encoded by its own sentencepiece call (with sentencepiece's dummy-prefix space). This is exactly how
Meta's Llama-2 code tokenizes a dialog (one ``encode`` call per turn, BOS/EOS as ids), and decoding
undoes it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from absl import logging

from meta_rewarding import artifacts
from meta_rewarding.choices import CHAT_FORMATS
from meta_rewarding.errors import UserError

__all__ = [
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "train_sentencepiece",
]

# BOS rule of `encode_chat` per format: built-in templates start with BOS, "hf" templates own it,
# "raw" text gets what the tokenizer itself adds (None).
_CHAT_BOS = {"llama3": True, "llama2": True, "hf": False, "raw": None}

# End-of-turn / end-of-text tokens of the common chat families; each is a stop id when present.
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<|im_end|>", "<end_of_turn>")

_LLAMA3_MARKERS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
_B_INST, _E_INST = "[INST]", "[/INST]"
_B_SYS, _E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"

_HF_FILE = "tokenizer.json"
_SP_FILE = "tokenizer.model"


class TokenizerError(UserError, ValueError):
  """A tokenizer could not be loaded, trained or applied; the message says which path and why."""


# ----------------------------------------------------------------------------------------------
# Backends: the minimal surface `Tokenizer` needs. Ids are plain Python ints throughout.


class _HFBackend:
  kind = "hf"

  def __init__(self, tok: Any, path: str):
    self.tok = tok
    self.path = path
    self._vocab: dict[str, int] | None = None

  @property
  def vocab(self) -> dict[str, int]:
    if self._vocab is None:  # get_vocab() builds a fresh dict (128k entries for Llama 3): cache it.
      self._vocab = dict(self.tok.get_vocab())
    return self._vocab

  def vocab_size(self) -> int:
    return len(self.tok)

  def token_to_id(self, token: str) -> int | None:
    return self.vocab.get(token)

  def id_to_token(self, i: int) -> str:
    return self.tok.convert_ids_to_tokens(int(i))

  def special_token(self, name: str) -> str | None:
    value = getattr(self.tok, f"{name}_token", None)
    return str(value) if value else None

  def chat_template(self) -> Any:
    return getattr(self.tok, "chat_template", None) or None

  def encode(self, text: str) -> list[int]:
    return list(self.tok.encode(text, add_special_tokens=False))

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    if not texts:
      return []
    return [list(x) for x in self.tok(texts, add_special_tokens=False)["input_ids"]]

  def decode(self, ids: Sequence[int], skip_special_tokens: bool, stop_ids: frozenset) -> str:
    del stop_ids  # transformers knows its own special tokens.
    return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens,
                           clean_up_tokenization_spaces=False)

  def render_template(self, messages: list[dict], add_generation_prompt: bool) -> str:
    return self.tok.apply_chat_template(messages, tokenize=False,
                                        add_generation_prompt=add_generation_prompt)

  def special_tokens(self) -> dict[str, int]:
    """The added tokens marked special: what `split_special_tokens=True` stops matching in text."""
    return {str(t.content): int(i) for i, t in self.tok.added_tokens_decoder.items() if t.special}

  def strip_flags(self, token: str) -> tuple[bool, bool]:
    """(lstrip, rstrip) of an added token: whether it swallows the whitespace beside it."""
    return self._strip_flags.get(token, (False, False))

  @functools.cached_property
  def _strip_flags(self) -> dict[str, tuple[bool, bool]]:
    return {str(t.content): (bool(t.lstrip), bool(t.rstrip))
            for t in self.tok.added_tokens_decoder.values()}

  def splits_at(self, token_id: int) -> bool:
    """Whether text is cut at this special token before encoding: tokenizers encodes the text
    between added tokens piece by piece, so always."""
    del token_id
    return True

  def encode_split(self, texts: list[str], restore: Mapping[int, str]) -> list[list[int]]:
    """Ids of each text (free of the template's special tokens) after `restore` turns its markers
    back into special-token strings, which are then encoded as text (split_special_tokens)."""
    if not texts:
      return []
    texts = [t.translate(restore) for t in texts]
    return [list(x) for x in self.tok(texts, add_special_tokens=False,
                                      split_special_tokens=True)["input_ids"]]

  def affixes(self, bos_id: int | None, eos_id: int | None) -> tuple[list[int], list[int]]:
    """(prefix, suffix) ids that `tokenizer(text)` adds around the text's own ids: the
    post-processor's (or `add_bos_token`/`add_eos_token`'s) choice, read off a probe."""
    del bos_id, eos_id
    probe = "Hello world"
    bare = list(self.tok(probe, add_special_tokens=False)["input_ids"])
    full = list(self.tok(probe, add_special_tokens=True)["input_ids"])
    for k in range(len(full) - len(bare) + 1):
      if full[k:k + len(bare)] == bare:
        return full[:k], full[k + len(bare):]
    raise TokenizerError(f"the tokenizer at {self.path!r} changes the text's own ids when it adds "
                         f"special tokens ({bare} -> {full}); cannot tell what it adds")


class _SPBackend:
  kind = "sentencepiece"

  def __init__(self, sp: Any, path: str, config: Mapping[str, Any], chat_template: Any):
    self.sp = sp
    self.path = path
    self.config = config
    self._chat_template = chat_template
    n = sp.get_piece_size()
    # Control pieces (<s>, </s>, <pad>, ...) are never produced from text by sentencepiece; find
    # them in the text ourselves (longest first so e.g. "</s>" wins over a hypothetical "</").
    self.control = {sp.id_to_piece(i): i for i in range(n) if sp.is_control(i)}
    self.control_ids = frozenset(self.control.values())
    self._split = (re.compile("(" + "|".join(re.escape(p) for p in sorted(self.control, key=len,
                                                                          reverse=True)) + ")")
                   if self.control else None)

  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def token_to_id(self, token: str) -> int | None:
    i = self.sp.piece_to_id(token)
    return i if 0 <= i < self.sp.get_piece_size() and self.sp.id_to_piece(i) == token else None

  def id_to_token(self, i: int) -> str:
    return self.sp.id_to_piece(int(i))

  def special_token(self, name: str) -> str | None:
    # tokenizer_config.json (when the .model sits in an HF-style directory) overrides the model.
    value = self.config.get(f"{name}_token")
    if isinstance(value, Mapping):  # {"content": "<s>", ...} form
      value = value.get("content")
    if value:
      return str(value)
    i = {"bos": self.sp.bos_id(), "eos": self.sp.eos_id(), "pad": self.sp.pad_id(),
         "unk": self.sp.unk_id()}[name]
    return self.sp.id_to_piece(i) if i >= 0 else None

  def chat_template(self) -> Any:
    return self._chat_template

  def encode(self, text: str) -> list[int]:
    if self._split is None:
      return list(self.sp.encode(text)) if text else []
    ids: list[int] = []
    for part in self._split.split(text):
      if not part:
        continue
      if part in self.control:
        ids.append(self.control[part])
      else:
        ids.extend(self.sp.encode(part))
    return ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def decode(self, ids: Sequence[int], skip_special_tokens: bool, stop_ids: frozenset) -> str:
    special = self.control_ids | stop_ids if skip_special_tokens else self.control_ids
    out: list[str] = []
    run: list[int] = []
    for i in ids:
      i = int(i)
      if i in special:
        if run:
          out.append(self.sp.decode(run))
          run = []
        if not skip_special_tokens:
          out.append(self.sp.id_to_piece(i))
      else:
        run.append(i)
    if run:
      out.append(self.sp.decode(run))
    return "".join(out)

  def render_template(self, messages: list[dict], add_generation_prompt: bool) -> str:
    # transformers: only hf chat templates need it (this module loads without it)
    from transformers.utils.chat_template_utils import render_jinja_template

    template = _select_template(self._chat_template)
    kwargs = {f"{n}_token": self.special_token(n) or "" for n in ("bos", "eos", "pad", "unk")}
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                        add_generation_prompt=add_generation_prompt, **kwargs)
    return rendered[0]

  def special_tokens(self) -> dict[str, int]:
    return dict(self.control)

  def strip_flags(self, token: str) -> tuple[bool, bool]:
    del token
    return False, False

  def splits_at(self, token_id: int) -> bool:
    """Whether text is cut at this special token before encoding: at control pieces, as `encode`
    does (one sentencepiece call per part, like Meta's code); a user-defined symbol is matched by
    sentencepiece inside the text, so the text around it stays one call."""
    return self.sp.is_control(token_id)

  def encode_split(self, texts: list[str], restore: Mapping[int, str]) -> list[list[int]]:
    """Ids of each text after `restore` turns its markers back into special-token strings, none
    of which becomes its special id: sentencepiece never matches control pieces (``</s>``) in
    text, so those are restored in place; it always matches user-defined symbols (a
    ``<|eot_id|>`` stop token), so those are encoded character by character."""
    controls = {m: t for m, t in restore.items() if t in self.control}
    symbols = {chr(m): t for m, t in restore.items() if m not in controls}
    out = []
    for text in texts:
      text = text.translate(controls)
      if not any(ch in text for ch in symbols):
        out.append(list(self.sp.encode(text)) if text else [])
        continue
      ids: list[int] = []
      pattern = "(" + "|".join(map(re.escape, symbols)) + ")"
      for k, part in enumerate(re.split(pattern, text)):  # odd positions: the symbols' markers
        if k % 2:  # one call per character: no call sees the whole symbol
          for c in symbols[part]:
            ids.extend(self._no_dummy_prefix.encode(c))
        elif part:  # the text's first call gets the dummy-prefix space, later ones do not
          ids.extend((self._no_dummy_prefix if k else self.sp).encode(part))
      out.append(ids)
    return out

  @functools.cached_property
  def _no_dummy_prefix(self) -> Any:
    """The same model without sentencepiece's leading-space dummy prefix, for text continued
    from an earlier encode call."""
    # sentencepiece: only sentencepiece tokenizers need it
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(self.sp.serialized_model_proto())
    proto.normalizer_spec.add_dummy_prefix = False
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto.SerializeToString())
    return sp

  def affixes(self, bos_id: int | None, eos_id: int | None) -> tuple[list[int], list[int]]:
    """Llama-2 convention (Meta's code, transformers' LlamaTokenizer): BOS first, no EOS, unless
    tokenizer_config.json's `add_bos_token` / `add_eos_token` say otherwise."""
    add_bos = self.config.get("add_bos_token", True)
    add_eos = self.config.get("add_eos_token", False)
    return ([bos_id] if add_bos and bos_id is not None else [],
            [eos_id] if add_eos and eos_id is not None else [])


def _select_template(template: Any) -> str:
  """tokenizer_config.json may hold one template or a list of named ones; use "default"."""
  if isinstance(template, str):
    return template
  if isinstance(template, Mapping):
    named = dict(template)
  else:
    named = {t["name"]: t["template"] for t in template}
  if "default" not in named:
    raise TokenizerError(f"chat_template has no 'default' entry (found {sorted(named)})")
  return named["default"]


# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """Text <-> ids, chat formatting and stop ids over a Hugging Face or sentencepiece tokenizer.

  Build it with `load_tokenizer`. Immutable; `with_chat_format` returns a copy sharing the backend.
  Special ids and `stop_ids` are computed once per instance (cached).
  """

  backend: Any
  chat_format: str
  extra_stop_ids: tuple[int, ...] = ()

  def __post_init__(self):
    if self.chat_format not in CHAT_FORMATS or self.chat_format == "auto":
      raise TokenizerError(f"chat_format must be one of {CHAT_FORMATS[1:]}, "
                           f"got {self.chat_format!r}")
    if self.chat_format == "hf" and not self.backend.chat_template():
      raise TokenizerError(f"chat_format='hf' but the tokenizer at {self.path} has no "
                           "chat_template (expected one in tokenizer_config.json or "
                           "chat_template.jinja)")

  # -- identity ---------------------------------------------------------------------------------

  @property
  def path(self) -> str:
    return self.backend.path

  @property
  def kind(self) -> str:
    """The backend: "hf" or "sentencepiece"."""
    return self.backend.kind

  def with_chat_format(self, chat_format: str) -> "Tokenizer":
    if chat_format == "auto":
      chat_format = _auto_chat_format(self.backend)
    return dataclasses.replace(self, chat_format=chat_format)

  def __repr__(self) -> str:
    return (f"Tokenizer(kind={self.kind!r}, path={self.path!r}, vocab_size={self.vocab_size}, "
            f"chat_format={self.chat_format!r}, bos_id={self.bos_id}, eos_id={self.eos_id}, "
            f"stop_ids={self.stop_ids})")

  # -- vocabulary and special tokens ------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    """Number of ids the tokenizer can produce (added tokens included). A model's embedding table
    may be larger (padded), never smaller."""
    return self.backend.vocab_size()

  def token_to_id(self, token: str) -> int | None:
    """The id of a token string (a vocabulary entry, not text to encode), None if absent."""
    return self.backend.token_to_id(token)

  def id_to_token(self, i: int) -> str:
    return self.backend.id_to_token(i)

  def _special_id(self, name: str) -> int | None:
    token = self.backend.special_token(name)
    return None if token is None else self.backend.token_to_id(token)

  @property
  def bos_token(self) -> str | None:
    return self.backend.special_token("bos") if self.bos_id is not None else None

  @property
  def eos_token(self) -> str | None:
    return self.backend.special_token("eos") if self.eos_id is not None else None

  @functools.cached_property
  def bos_id(self) -> int | None:
    return self._special_id("bos")

  @functools.cached_property
  def eos_id(self) -> int | None:
    return self._special_id("eos")

  @functools.cached_property
  def pad_id(self) -> int:
    """The pad token's id; without one, `eos_id`; without that, 0 (padding is masked anyway)."""
    for i in (self._special_id("pad"), self.eos_id):
      if i is not None:
        return i
    return 0

  @functools.cached_property
  def stop_ids(self) -> tuple[int, ...]:
    """EOS, the end-of-turn tokens present in the vocab, and generation_config eos ids."""
    ids = [self.eos_id] + [self.token_to_id(t) for t in END_OF_TURN_TOKENS]
    ids += list(self.extra_stop_ids)
    return tuple(dict.fromkeys(i for i in ids if i is not None))

  @functools.cached_property
  def special_tokens(self) -> dict[str, int]:
    """The control tokens user content must never produce, string -> id: the tokenizer's special
    tokens (Hugging Face: added tokens marked special; sentencepiece: control pieces such as
    ``<s>``) and the stop tokens."""
    out = dict(self.backend.special_tokens())
    for i in self.stop_ids:
      out.setdefault(self.id_to_token(i), i)
    return out

  @functools.cached_property
  def _special_pattern(self) -> re.Pattern | None:
    # Longest first, so at any position the longest special string wins (as tokenizers does).
    tokens = sorted(self.special_tokens, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, tokens))) if tokens else None

  @functools.cached_property
  def _affixes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
    prefix, suffix = self.backend.affixes(self.bos_id, self.eos_id)
    return tuple(prefix), tuple(suffix)

  @property
  def adds_bos(self) -> bool:
    """Whether ``tokenizer(text)`` starts with BOS (Hugging Face: its post-processor or
    ``add_bos_token``; sentencepiece: ``add_bos_token``, default true as in Llama 2)."""
    return self.bos_id is not None and self.bos_id in self._affixes[0]

  # -- plain text -------------------------------------------------------------------------------

  def encode(self, text: str, *, add_bos: bool | None = None,
             add_eos: bool | None = None) -> list[int]:
    """Token ids of `text`, special-token strings in it matched as their ids.

    `add_bos` / `add_eos` None: what the tokenizer itself adds, so `encode(text)` equals
    transformers' ``tokenizer(text)["input_ids"]`` (except that a BOS already at the start of the
    text is not doubled). True / False: BOS first / EOS last, or not, whatever the tokenizer does.
    """
    return self._finish(self.backend.encode(text), add_bos, add_eos)

  def encode_batch(self, texts: Iterable[str], *, add_bos: bool | None = None,
                   add_eos: bool | None = None) -> list[list[int]]:
    return [self._finish(ids, add_bos, add_eos) for ids in self.backend.encode_batch(list(texts))]

  def _finish(self, ids: list[int], add_bos: bool | None, add_eos: bool | None) -> list[int]:
    bos, eos = self.bos_id, self.eos_id
    if add_bos is None:
      prefix = list(self._affixes[0])
    else:
      prefix = [bos] if add_bos and bos is not None else []
    if add_eos is None:
      suffix = list(self._affixes[1])
    else:
      suffix = [eos] if add_eos and eos is not None else []
    if prefix and ids[:len(prefix)] == prefix:  # the text brought its own BOS: never doubled
      prefix = []
    return prefix + ids + suffix

  # -- user content: special-token strings stay text -----------------------------------------------

  def _protect(self, contents: Sequence[str]) -> tuple[list[str], dict[int, str]]:
    """Contents with every special-token string replaced by a private-use marker character, and
    the table (marker code point -> string) that undoes it. A template renders the marked
    contents, so every special-token string left in its output is the template's own.
    The table is empty when no content holds a special-token string."""
    pattern = self._special_pattern
    found = sorted({m for c in contents for m in pattern.findall(c)}) if pattern else []
    if not found:
      return list(contents), {}
    # Markers from plane 15's private-use area, skipping any character the contents use.
    used = {ord(ch) for c in contents for ch in c if ord(ch) >= 0xF0000}
    codes = (c for c in range(0xF0000, 0x10FFFE) if c not in used)
    table = {token: chr(next(codes)) for token in found}
    marked = [pattern.sub(lambda m: table[m.group()], c) for c in contents]
    return marked, {ord(ch): token for token, ch in table.items()}

  def _encode_protected(self, text: str, restore: Mapping[int, str], add_bos: bool | None,
                        add_eos: bool | None = False) -> list[int]:
    """Ids of rendered `text` whose contents went through `_protect`: the special-token strings
    still in `text` (the template's) become their ids; the pieces between them are encoded with
    special tokens split, as transformers' ``split_special_tokens=True`` does, after the markers
    are turned back into the contents' strings. Without markers this is `encode(text)`."""
    if not restore:
      return self.encode(text, add_bos=add_bos, add_eos=add_eos)
    specials = self.special_tokens
    pieces: list[str] = []
    between: list[int] = []
    start, strip_left = 0, False
    for m in self._special_pattern.finditer(text):
      if not self.backend.splits_at(specials[m.group()]):
        continue
      piece = text[start:m.start()]
      lstrip, rstrip = self.backend.strip_flags(m.group())
      # Added tokens with lstrip/rstrip swallow the whitespace beside them, as in tokenizers.
      piece = piece.lstrip() if strip_left else piece
      pieces.append(piece.rstrip() if lstrip else piece)
      between.append(specials[m.group()])
      start, strip_left = m.end(), rstrip
    last = text[start:]
    pieces.append(last.lstrip() if strip_left else last)
    encoded = iter(self.backend.encode_split([p for p in pieces if p], restore))
    ids: list[int] = []
    for k, piece in enumerate(pieces):
      if piece:
        ids.extend(next(encoded))
      if k < len(between):
        ids.append(between[k])
    return self._finish(ids, add_bos, add_eos)

  def encode_content(self, text: str) -> list[int]:
    """Ids of user content (an instruction, a response, a judgment) on its own: no BOS or EOS, and
    special-token strings in it encoded as text, never as control ids."""
    marked, restore = self._protect([text])
    return self._encode_protected(marked[0], restore, add_bos=False)

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    return self.backend.decode(list(ids), skip_special_tokens, frozenset(self.stop_ids))

  def decode_batch(self, list_of_ids: Iterable[Iterable[int]],
                   skip_special_tokens: bool = True) -> list[str]:
    return [self.decode(ids, skip_special_tokens) for ids in list_of_ids]

  # -- chat -------------------------------------------------------------------------------------

  def apply_chat_template(self, messages: Sequence[Mapping[str, str]], *,
                          add_generation_prompt: bool = True,
                          chat_format: str | None = None) -> str:
    """The conversation as text in `chat_format` (default: this tokenizer's); see module doc."""
    fmt = self._format(chat_format)
    msgs = _check_messages(messages)
    if fmt == "llama3":
      return _render_llama3(msgs, add_generation_prompt, self.bos_token or "")
    if fmt == "llama2":
      return _render_llama2(msgs, self.bos_token or "", self.eos_token or "")
    if fmt == "raw":
      return "".join(m["content"] for m in msgs)
    if not self.backend.chat_template():
      raise TokenizerError(f"chat_format='hf' but the tokenizer at {self.path} has no "
                           "chat_template")
    try:
      return self.backend.render_template(msgs, add_generation_prompt)
    except TokenizerError:
      raise
    except Exception as e:  # jinja raise_exception(...) and template errors
      failure = f"chat_template of {self.path} failed on these messages: {type(e).__name__}: {e}"
      folded = _fold_system(msgs) if "system" in str(e).lower() else None
      if folded is None:
        raise TokenizerError(failure) from e
      refusal = e
    try:  # a template without a system role (Gemma 2): the system text goes in the user turn
      text = self.backend.render_template(folded, add_generation_prompt)
    except TokenizerError:
      raise
    except Exception as e:
      raise TokenizerError(f"{failure} (and with the system message put in the first user turn: "
                           f"{type(e).__name__}: {e})") from refusal
    _warn_system_folded(self.path)
    return text

  def encode_chat(self, messages: Sequence[Mapping[str, str]], *,
                  add_generation_prompt: bool = True, chat_format: str | None = None) -> list[int]:
    """Ids of `apply_chat_template(...)`. Built-in formats start with BOS (never twice); "hf"
    leaves BOS to the template, exactly like transformers' `apply_chat_template(tokenize=True)`;
    "raw" adds what the tokenizer adds in front of a text (`adds_bos`). Only the template yields
    control tokens: special-token strings inside the messages stay text (see module doc)."""
    fmt = self._format(chat_format)
    msgs = _check_messages(messages)
    marked, restore = self._protect([m["content"] for m in msgs])
    text = self.apply_chat_template([{"role": m["role"], "content": c} for m, c in zip(msgs, marked)],
                                    add_generation_prompt=add_generation_prompt, chat_format=fmt)
    return self._encode_protected(text, restore, add_bos=_CHAT_BOS[fmt])

  def encode_prompt_response(self, prompt_messages: Sequence[Mapping[str, str]], response: str, *,
                             chat_format: str | None = None) -> tuple[list[int], list[int]]:
    """(prompt_ids, response_ids) of one training example.

    * ``prompt_ids == encode_chat(prompt_messages, add_generation_prompt=True)`` always -- the
      exact ids the sampler conditions on.
    * ``response_ids`` is the assistant turn, ending with its end-of-turn id (``<|eot_id|>`` for
      Llama 3, EOS for Llama 2 -- after Meta's ``" {answer} "``; anything the template writes after
      the last stop id, e.g. ChatML's trailing newline, is dropped; for "raw", EOS is appended).
    * ``prompt_ids + response_ids`` equals the ids of the whole conversation (prompt plus an
      assistant message with `response`) whenever the tokenizer does not merge tokens across the
      prompt/response boundary and the template renders the prompt as a prefix of the conversation.
      That holds for the Llama 2/3 formats (the boundary is a special token, ``\\n\\n`` before a
      word, or a space that sentencepiece splits on). Otherwise (e.g. "raw" prompts ending
      mid-word) the response text is encoded on its own: ids the model could have generated after
      the prompt, decoding to the same text. The template's own normalisation applies (Meta's
      formats strip the content).
    """
    fmt = self._format(chat_format)
    prompt = _check_messages(prompt_messages)
    if prompt[-1]["role"] == "assistant":
      raise TokenizerError("prompt_messages must not end with an assistant turn: the response is "
                           "the assistant turn")
    if not isinstance(response, str):
      raise TokenizerError(f"response must be a str, got {type(response).__name__}")
    prompt_ids = self.encode_chat(prompt, add_generation_prompt=True, chat_format=fmt)
    marked, restore = self._protect([m["content"] for m in prompt] + [response])
    marked_prompt = [{"role": m["role"], "content": c} for m, c in zip(prompt, marked)]
    prompt_text = self.apply_chat_template(marked_prompt, add_generation_prompt=True,
                                           chat_format=fmt)
    if fmt == "raw":
      full_text = prompt_text + marked[-1]
    else:
      full_text = self.apply_chat_template(
          marked_prompt + [{"role": "assistant", "content": marked[-1]}],
          add_generation_prompt=False, chat_format=fmt)
    full_ids = self._encode_protected(full_text, restore, add_bos=_CHAT_BOS[fmt])
    n = len(prompt_ids)
    if full_ids[:n] == prompt_ids:
      response_ids = full_ids[n:]
    elif full_text.startswith(prompt_text):
      response_ids = self._encode_protected(full_text[len(prompt_text):], restore, add_bos=False)
    else:  # the template rewrites earlier turns once an answer follows: keep the answer only
      response_ids = self._encode_protected(marked[-1], restore, add_bos=False)
    stops = set(self.stop_ids)
    last = max((k for k, i in enumerate(response_ids) if i in stops), default=-1)
    if last >= 0:
      response_ids = response_ids[:last + 1]
    elif self.eos_id is not None:
      response_ids = response_ids + [self.eos_id]
    return prompt_ids, response_ids

  def _format(self, chat_format: str | None) -> str:
    if chat_format is None:
      return self.chat_format
    if chat_format == "auto":
      return _auto_chat_format(self.backend)
    if chat_format not in CHAT_FORMATS:
      raise TokenizerError(f"chat_format must be one of {CHAT_FORMATS}, got {chat_format!r}")
    return chat_format


def _check_messages(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
  if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
    raise TokenizerError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
  out = []
  for k, m in enumerate(messages):
    if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) \
        or not isinstance(m.get("content"), str):
      raise TokenizerError(f"message {k} must be a dict with str 'role' and 'content', got {m!r}")
    out.append({"role": m["role"], "content": m["content"]})
  return out


def _fold_system(msgs: list[dict[str, str]]) -> list[dict[str, str]] | None:
  """A conversation opening with a system message then a user message, with the system text put
  in front of the first user content as Gemma 3's template does (``system + "\\n\\n" + user``);
  None for any other conversation."""
  if len(msgs) < 2 or msgs[0]["role"] != "system" or msgs[1]["role"] != "user":
    return None
  first = {"role": "user", "content": msgs[0]["content"] + "\n\n" + msgs[1]["content"]}
  return [first] + msgs[2:]


_warned_system_folded = False


def _warn_system_folded(path: str) -> None:
  global _warned_system_folded
  if not _warned_system_folded:
    _warned_system_folded = True
    logging.warning("the chat template of %s has no system role: the system message was put in "
                    "the first user turn, as Gemma 3's template does", path)


def _render_llama3(msgs: list[dict[str, str]], add_generation_prompt: bool, bos: str) -> str:
  # Meta's Llama-3 chat template (tokenizer_config.json of Meta-Llama-3-*-Instruct).
  parts = [bos]
  for m in msgs:
    parts.append(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n"
                 f"{m['content'].strip()}<|eot_id|>")
  if add_generation_prompt:
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
  return "".join(parts)


def _render_llama2(msgs: list[dict[str, str]], bos: str, eos: str) -> str:
  # Meta's llama/generation.py `chat_completion`, as text.
  if msgs[0]["role"] == "system":
    if len(msgs) < 2:
      raise TokenizerError("llama2 format: a system message must be followed by a user message")
    first = msgs[1]
    msgs = [{"role": first["role"],
             "content": _B_SYS + msgs[0]["content"] + _E_SYS + first["content"]}] + msgs[2:]
  for k, m in enumerate(msgs):
    want = "user" if k % 2 == 0 else "assistant"
    if m["role"] != want:
      raise TokenizerError("llama2 format: roles must be an optional system message, then user and "
                           f"assistant alternating starting with user; message {k} is "
                           f"{m['role']!r}, expected {want!r}")
  parts = []
  for k in range(0, len(msgs), 2):
    user = msgs[k]["content"].strip()
    if k + 1 < len(msgs):
      answer = msgs[k + 1]["content"].strip()
      parts.append(f"{bos}{_B_INST} {user} {_E_INST} {answer} {eos}")
    else:
      parts.append(f"{bos}{_B_INST} {user} {_E_INST}")
  return "".join(parts)


def _auto_chat_format(backend: Any) -> str:
  if backend.chat_template():
    return "hf"
  if all(backend.token_to_id(t) is not None for t in _LLAMA3_MARKERS):
    return "llama3"
  if backend.special_token("bos") == "<s>" and backend.special_token("eos") == "</s>":
    return "llama2"
  return "raw"


# ----------------------------------------------------------------------------------------------
# Loading


def _is_tokenizer_file(name: str) -> bool:
  """The files of a (remote) directory `load_tokenizer` copies locally before loading."""
  return name.endswith((".model", ".jinja")) or name in (
      _HF_FILE, "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
      "added_tokens.json", "vocab.json", "merges.txt")


def load_tokenizer(path: str | os.PathLike, *, chat_format: str = "auto") -> Tokenizer:
  """Load a tokenizer from a local directory or file (see module doc for what is accepted)."""
  if chat_format not in CHAT_FORMATS:
    raise TokenizerError(f"chat_format must be one of {CHAT_FORMATS}, got {chat_format!r}")
  path = os.fspath(path)
  if artifacts.is_remote(path):  # gs://, s3://: load from a local copy of the tokenizer files
    try:
      path = artifacts.localize(path, _is_tokenizer_file)
    except (OSError, ValueError) as e:
      raise TokenizerError(f"could not copy tokenizer {path!r} to a local cache: {e}") from e
  path = os.path.expanduser(path)
  expected = ("a directory with tokenizer.json (Hugging Face tokenizer, with tokenizer_config.json)"
              " or a sentencepiece .model file / a directory holding one")
  if not os.path.exists(path):
    raise TokenizerError(f"tokenizer path {path!r} does not exist; expected {expected}")
  if os.path.isdir(path):
    names = sorted(os.listdir(path))
    if _HF_FILE in names:
      backend = _load_hf_dir(path)
    elif _SP_FILE in names:
      backend = _load_sp(os.path.join(path, _SP_FILE), config_dir=path)
    else:
      models = [n for n in names if n.endswith(".model")]
      if len(models) == 1:
        backend = _load_sp(os.path.join(path, models[0]), config_dir=path)
      elif models:
        raise TokenizerError(f"directory {path!r} holds several sentencepiece models {models}; "
                             "pass the path of the one to use")
      else:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") or "nothing"
        raise TokenizerError(f"no tokenizer files in directory {path!r} (it holds: {shown}); "
                             f"expected {expected}")
  elif os.path.basename(path) == _HF_FILE:
    backend = _load_hf_dir(os.path.dirname(path) or ".")
  elif path.endswith(".json"):
    backend = _load_hf_file(path)
  else:
    backend = _load_sp(path, config_dir=None)
  extra = _generation_config_eos(os.path.dirname(backend.path) if os.path.isfile(backend.path)
                                 else backend.path)
  fmt = _auto_chat_format(backend) if chat_format == "auto" else chat_format
  return Tokenizer(backend=backend, chat_format=fmt, extra_stop_ids=extra)


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise TokenizerError(f"could not read {path!r} as JSON: {type(e).__name__}: {e}") from e
  if not isinstance(value, dict):
    raise TokenizerError(f"{path!r} must hold a JSON object, got {type(value).__name__}")
  return value


def _load_hf_dir(path: str) -> _HFBackend:
  # Fail early with a clear message on the files we can check ourselves.
  _read_json(os.path.join(path, _HF_FILE))
  config_path = os.path.join(path, "tokenizer_config.json")
  if os.path.exists(config_path):
    _read_json(config_path)
  # transformers: sample, judge_eval and the pipeline import this module without it
  from transformers import AutoTokenizer, PreTrainedTokenizerFast

  try:
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
  except Exception as first:  # e.g. an unknown tokenizer_class: the tokenizer.json itself may do.
    try:
      tok = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    except Exception:
      raise TokenizerError(f"could not load the Hugging Face tokenizer in {path!r} "
                           f"(tokenizer.json + tokenizer_config.json): "
                           f"{type(first).__name__}: {first}") from first
  return _HFBackend(tok, path)


def _load_hf_file(path: str) -> _HFBackend:
  _read_json(path)
  from transformers import PreTrainedTokenizerFast  # transformers: see _load_hf_dir

  try:
    tok = PreTrainedTokenizerFast(tokenizer_file=path)
  except Exception as e:
    raise TokenizerError(f"could not load {path!r} as a Hugging Face tokenizer.json: "
                         f"{type(e).__name__}: {e}") from e
  return _HFBackend(tok, path)


def _load_sp(path: str, config_dir: str | None) -> _SPBackend:
  import sentencepiece as spm  # sentencepiece: only sentencepiece tokenizers need it

  if os.path.isdir(path) or not os.access(path, os.R_OK):
    raise TokenizerError(f"cannot read sentencepiece model file {path!r}")
  sp = spm.SentencePieceProcessor()
  try:
    with open(path, "rb") as f:
      proto = f.read()
    if not proto:
      raise ValueError("the file is empty")
    sp.LoadFromSerializedProto(proto)
  except Exception as e:
    raise TokenizerError(f"could not load {path!r} as a sentencepiece model (expected a .model "
                         f"file written by sentencepiece, or a directory with tokenizer.json): "
                         f"{type(e).__name__}: {e}") from e
  config: dict = {}
  template = None
  if config_dir is not None:
    config_path = os.path.join(config_dir, "tokenizer_config.json")
    if os.path.exists(config_path):
      config = _read_json(config_path)
      template = config.get("chat_template")
    jinja_path = os.path.join(config_dir, "chat_template.jinja")
    if os.path.exists(jinja_path):
      with open(jinja_path, encoding="utf-8") as f:
        template = f.read()
  return _SPBackend(sp, path, config, template)


def _generation_config_eos(directory: str) -> tuple[int, ...]:
  path = os.path.join(directory, "generation_config.json")
  if not os.path.exists(path):
    return ()
  value = _read_json(path).get("eos_token_id")
  if value is None:
    return ()
  values = value if isinstance(value, list) else [value]
  if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
    raise TokenizerError(f"{path!r}: eos_token_id must be an int or a list of ints, got {value!r}")
  return tuple(values)


# ----------------------------------------------------------------------------------------------
# Training a tiny sentencepiece model (the testbed's tokenizer)


def train_sentencepiece(texts: Iterable[str], model_prefix: str | os.PathLike, vocab_size: int, *,
                        user_defined_symbols: Sequence[str] = (), model_type: str = "bpe",
                        character_coverage: float = 1.0) -> str:
  """Train a sentencepiece model on `texts`; returns the path of ``{model_prefix}.model``.

  Llama-2-like, deterministic settings: BPE, ``byte_fallback=True`` (any text encodes, through
  byte pieces ``<0x..>`` where no piece fits), identity normalisation and no whitespace collapsing
  (decode(encode(x)) == x for every string), digits split, ids unk=0 / bos=1 (``<s>``) /
  eos=2 (``</s>``) and no pad piece (`Tokenizer.pad_id` falls back to EOS), one thread, no input
  sampling or shuffling -- the same texts give a byte-identical model.

  ``vocab_size`` is a soft limit (``hard_vocab_limit=False``): a corpus too small to fill it gives
  a smaller vocabulary (read `Tokenizer.vocab_size`). It must hold at least 259 (256 byte pieces
  + 3 control pieces) + the number of distinct characters + ``len(user_defined_symbols)``.
  ``user_defined_symbols`` are always single pieces and are matched in text (e.g. role markers or
  ``<|eot_id|>``); a user-defined symbol that is a stop token is dropped by ``decode``.
  """
  import sentencepiece as spm  # sentencepiece: only the trainer and sentencepiece tokenizers

  model_prefix = os.fspath(model_prefix)
  parent = os.path.dirname(model_prefix)
  if parent:
    os.makedirs(parent, exist_ok=True)
  symbols = [str(s) for s in user_defined_symbols]
  if any(not s for s in symbols):
    raise TokenizerError("user_defined_symbols must be non-empty strings")
  count = 0

  def sentences():
    nonlocal count
    for t in texts:
      if not isinstance(t, str):
        raise TokenizerError(f"train_sentencepiece: texts must be str, got {type(t).__name__}")
      if t:
        count += 1
        yield t

  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences(), model_prefix=model_prefix, vocab_size=int(vocab_size),
        model_type=model_type, byte_fallback=True, character_coverage=character_coverage,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        split_digits=True, allow_whitespace_only_pieces=True, user_defined_symbols=symbols,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False, num_threads=1,
        input_sentence_size=0, shuffle_input_sentence=False, max_sentence_length=1 << 20,
        minloglevel=2)
  except TokenizerError:
    raise
  except Exception as e:
    if count == 0:
      raise TokenizerError("train_sentencepiece: no (non-empty) training texts") from e
    raise TokenizerError(
        f"sentencepiece training failed for {model_prefix!r} (vocab_size={vocab_size}; with "
        "byte_fallback the vocabulary needs 259 + distinct characters + user_defined_symbols "
        f"pieces): {type(e).__name__}: {e}") from e
  return model_prefix + ".model"
