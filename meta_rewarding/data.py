"""Prompts and preference pairs: reading, chat-template tokenization, truncation, batching.

Reading (`load_prompts`, `load_pairs`, `load_sft`) accepts
  * a local JSON-lines file (``.jsonl``, or ``.json`` holding JSON lines or one JSON array),
  * a local parquet file (``.parquet``),
  * an in-memory `datasets.Dataset`, or
  * a `datasets` hub name (``"owner/name"``; needs network, ``split`` defaults to "train").
Every problem raises `DataError` naming where it is: ``pairs.jsonl:17: ...`` for a JSONL line,
``data.parquet row 3: ...`` for a parquet/dataset row.

Pair records hold ``prompt`` (a string, or a list of chat messages), ``chosen`` and ``rejected``
(strings, or TRL's conversational form: a list holding one assistant message), and optionally
``ref_chosen_logp`` / ``ref_rejected_logp`` (precomputed reference log-probs).

Tokenized examples are plain dicts of numpy int32 arrays (pure data, no tokenizer inside):
  pairs: ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` [+ ``ref_chosen_logp``,
         ``ref_rejected_logp`` floats] [+ ``source``: where the record came from]
  SFT:   ``prompt_ids``, ``response_ids`` [+ ``source``]
Prompts are rendered with the chat template (a user message, optionally after a system message)
and end with the generation prompt; responses are the assistant turn and end with its
end-of-turn id (`Tokenizer.encode_prompt_response`).

Truncation (``truncation`` = "skip" | "truncate_response" | "error") applies when
prompt + response exceeds ``max_length``; every dropped or shortened example is counted in a
`TruncationReport` -- nothing is dropped silently.

Batching is pure and deterministic: the data order of epoch e is a permutation drawn from
(seed, e), so the batch of any global step can be rebuilt after a restart (exact resume). A batch
holds ``grad_accum_steps`` microbatches, padded on the right to length buckets; the last step of an
epoch is filled with weight-0 padding rows instead of dropping examples.

Batch layout: one PACKED row per example, A microbatches of M rows (arrays [A, M, ...]):
  tokens, positions, segment [A,M,T]: ``prompt | chosen | rejected | pad`` (SFT: ``prompt |
      response | pad``). The prompt is processed once for both responses: each response's
      positions continue the prompt's (P, P+1, ...), and `segment` (0 prompt, 1 chosen,
      2 rejected, -1 pad) builds the attention mask (causal, and rejected never sees chosen), so
      every response's log-probs equal those of a separate prompt+response sequence.
  resp_src, resp_tgt, resp_seg [A,M,Tr]: for each response token, the row position whose hidden
      state predicts it (the last prompt token for a response's first token), the token, and its
      segment (0 = padding). Logits are computed only there: [M, Tr, V], not [2M, T, V].
  weight [A,M]: 1 for a real example, 0 for padding; DPO adds ref_chosen, ref_rejected [A,M].
T and Tr are the smallest `length_buckets` entries that fit (up to max_length per response).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from meta_rewarding.choices import TRUNCATION_POLICIES
from meta_rewarding.errors import UserError

REF_FIELDS = ("ref_chosen_logp", "ref_rejected_logp")


class DataError(UserError, ValueError):
  """Malformed or unusable input data; the message names the file and line (or row)."""


# ------------------------------------------------------------------------------------------------
# Reading records.

def _is_dataset(obj) -> bool:
  return type(obj).__name__ in ("Dataset", "IterableDataset") and hasattr(obj, "column_names")


def iter_records(source, *, split: str | None = None) -> Iterator[tuple[str, dict]]:
  """Yields (where, record) for each record of `source` (see module doc for what it may be)."""
  if _is_dataset(source):
    yield from _iter_rows(source, "dataset")
    return
  if not isinstance(source, (str, os.PathLike)):
    raise DataError(f"data source must be a file path, a hub name or a datasets.Dataset, "
                    f"got {type(source).__name__}")
  path = os.path.expanduser(os.fspath(source))
  if os.path.isfile(path):
    if path.endswith(".parquet"):
      yield from _iter_parquet(path)
    else:
      yield from _iter_json(path)
    return
  if os.path.isdir(path):
    raise DataError(f"{path} is a directory; expected a .jsonl or .parquet file")
  looks_local = path.endswith((".jsonl", ".json", ".parquet")) or path.startswith((".", "/", "~"))
  if looks_local:
    raise DataError(f"{path}: no such file")
  yield from _iter_hub(path, split or "train")


def _iter_json(path: str) -> Iterator[tuple[str, dict]]:
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
  if path.endswith(".json") and text.lstrip().startswith("["):
    try:
      items = json.loads(text)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno})") from e
    for k, item in enumerate(items):
      where = f"{path} item {k}"
      if not isinstance(item, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}")
      yield where, item
    return
  for lineno, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    where = f"{path}:{lineno}"
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{where}: malformed JSON ({e.msg}, column {e.colno})") from e
    if not isinstance(record, dict):
      raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    yield where, record


def _iter_parquet(path: str) -> Iterator[tuple[str, dict]]:
  import pyarrow.parquet as pq  # pyarrow: only parquet files need it

  try:
    table = pq.read_table(path)
  except Exception as e:
    raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from e
  for k, record in enumerate(table.to_pylist()):
    yield f"{path} row {k}", record


def _iter_rows(dataset, name: str) -> Iterator[tuple[str, dict]]:
  for k, record in enumerate(dataset):
    yield f"{name} row {k}", dict(record)


def _iter_hub(name: str, split: str) -> Iterator[tuple[str, dict]]:
  try:
    import datasets  # datasets: only Hub data sets need it (slow to import)
    dataset = datasets.load_dataset(name, split=split)
  except Exception as e:
    raise DataError(f"could not load dataset {name!r} (split {split!r}) with datasets.load_dataset"
                    f" -- not a local file, and the hub is unreachable or has no such dataset: "
                    f"{type(e).__name__}: {e}") from e
  yield from _iter_rows(dataset, f"{name}[{split}]")


def _field(where: str, record: Mapping, name: str):
  if name not in record or record[name] is None:
    raise DataError(f"{where}: missing field {name!r} (the record has: {sorted(record)})")
  return record[name]


def _text(where: str, record: Mapping, name: str) -> str:
  value = _field(where, record, name)
  if isinstance(value, list):  # TRL conversational form: [{"role": "assistant", "content": ...}]
    if (len(value) == 1 and isinstance(value[0], Mapping)
        and isinstance(value[0].get("content"), str)):
      value = value[0]["content"]
    else:
      raise DataError(f"{where}: field {name!r} must be a string or a list holding one message "
                      f"dict with a 'content' string")
  if not isinstance(value, str):
    raise DataError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
  return value


def _prompt(where: str, record: Mapping, name: str):
  value = _field(where, record, name)
  if isinstance(value, str):
    if not value.strip():
      raise DataError(f"{where}: field {name!r} is empty")
    return value
  if (isinstance(value, list) and value and all(
      isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
      for m in value)):
    return [{"role": m["role"], "content": m["content"]} for m in value]
  raise DataError(f"{where}: field {name!r} must be a string or a list of "
                  f"{{'role', 'content'}} messages")


def load_prompts(source, *, field: str = "prompt", split: str | None = None) -> list[str]:
  """The `field` string of every record of `source`; raises `DataError` naming file and line."""
  out = []
  for where, record in iter_records(source, split=split):
    value = _field(where, record, field)
    if not isinstance(value, str) or not value.strip():
      raise DataError(f"{where}: field {field!r} must be a non-empty string, got {value!r:.60}")
    out.append(value)
  if not out:
    raise DataError(f"{source}: no records")
  return out


def load_pairs(source, *, split: str | None = None, keep: Sequence[str] = ()) -> list[dict]:
  """Preference pairs: dicts with prompt, chosen, rejected [, ref logps], source (where), and the
  fields named in `keep` where a record has them (e.g. RewardBench's id and subset)."""
  out = []
  for where, record in iter_records(source, split=split):
    pair = {"prompt": _prompt(where, record, "prompt"),
            "chosen": _text(where, record, "chosen"),
            "rejected": _text(where, record, "rejected"),
            "source": where}
    pair.update({k: record[k] for k in keep if k in record})
    present = [k for k in REF_FIELDS if record.get(k) is not None]
    if present and len(present) != 2:
      raise DataError(f"{where}: has {present[0]!r} but not the other of {REF_FIELDS}")
    for k in present:
      value = record[k]
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: field {k!r} must be a finite number, got {value!r}")
      pair[k] = float(value)
    out.append(pair)
  if not out:
    raise DataError(f"{source}: no records")
  return out


def load_sft(source, *, response_field: str = "response", split: str | None = None) -> list[dict]:
  """SFT examples: dicts with prompt, response (read from `response_field`), source. A record
  without a prompt may be a chat record instead: ``messages``, a list of {role, content} ending
  with the assistant's message (the response); the messages before it are the prompt."""
  out = []
  for where, record in iter_records(source, split=split):
    if "prompt" not in record and "messages" in record:
      messages = _prompt(where, record, "messages")
      if (isinstance(messages, str) or len(messages) < 2
          or messages[-1]["role"] != "assistant" or messages[-2]["role"] == "assistant"):
        raise DataError(f"{where}: field 'messages' must be a list of {{'role', 'content'}} "
                        "messages ending with one assistant message (the response)")
      out.append({"prompt": messages[:-1], "response": messages[-1]["content"],
                  "source": where})
      continue
    out.append({"prompt": _prompt(where, record, "prompt"),
                "response": _text(where, record, response_field), "source": where})
  if not out:
    raise DataError(f"{source}: no records")
  return out


# ------------------------------------------------------------------------------------------------
# Tokenization and truncation.

@dataclasses.dataclass
class TruncationReport:
  """What the length policy did. `kept` includes `truncated`; `skipped` were dropped."""
  policy: str
  max_length: int
  total: int = 0
  kept: int = 0
  truncated: int = 0
  skipped: int = 0
  ref_logps_dropped: int = 0  # truncated pairs whose precomputed reference log-probs were invalid

  def __str__(self) -> str:
    s = (f"{self.total} examples, max_length {self.max_length}, policy {self.policy!r}: "
         f"{self.kept} kept ({self.truncated} with truncated responses), {self.skipped} skipped")
    if self.ref_logps_dropped:
      s += f", {self.ref_logps_dropped} reference log-probs to recompute"
    return s


def prompt_messages(prompt, system_prompt: str | None = None) -> list[dict]:
  """A prompt string -> [system?, user] messages; a message list is used as given."""
  if isinstance(prompt, str):
    messages = [{"role": "user", "content": prompt}]
  else:
    messages = [dict(m) for m in prompt]
  if system_prompt and messages[0]["role"] != "system":
    messages = [{"role": "system", "content": system_prompt}] + messages
  return messages


def _ids(x) -> np.ndarray:
  return np.asarray(x, dtype=np.int32).reshape(-1)


def response_keys(example: Mapping) -> tuple[str, ...]:
  return ("chosen_ids", "rejected_ids") if "chosen_ids" in example else ("response_ids",)


def truncate_examples(examples: Sequence[Mapping], *, max_length: int, policy: str
                      ) -> tuple[list[dict], TruncationReport]:
  """Applies the length policy to tokenized examples (pairs or SFT); pure.

  An example is too long when prompt + its longest response exceeds `max_length`.
    skip:               drop it (counted);
    truncate_response:  cut the responses to fit (a pair's precomputed reference log-probs, now
                        wrong, are removed so they get recomputed); a prompt that leaves no room
                        for one response token is dropped (counted as skipped);
    error:              raise `DataError` naming the example.
  """
  if policy not in TRUNCATION_POLICIES:
    raise DataError(f"truncation must be one of {TRUNCATION_POLICIES}, got {policy!r}")
  if max_length < 2:
    raise DataError(f"max_length must be at least 2, got {max_length}")
  report = TruncationReport(policy=policy, max_length=max_length, total=len(examples))
  out = []
  for k, ex in enumerate(examples):
    keys = response_keys(ex)
    plen = len(ex["prompt_ids"])
    longest = plen + max(len(ex[key]) for key in keys)
    if longest <= max_length:
      out.append(dict(ex))
      continue
    if policy == "error":
      where = ex.get("source", f"example {k}")
      raise DataError(f"{where}: {longest} tokens (prompt {plen}) exceed max_length={max_length}"
                      " (truncation='error'; use 'skip' or 'truncate_response')")
    if policy == "skip" or plen >= max_length:
      report.skipped += 1
      continue
    ex = dict(ex)
    for key in keys:
      ex[key] = _ids(ex[key])[:max_length - plen]
    if any(r in ex for r in REF_FIELDS):
      report.ref_logps_dropped += 1
      for r in REF_FIELDS:
        ex.pop(r, None)
    report.truncated += 1
    out.append(ex)
  report.kept = len(out)
  return out, report


def tokenize_pairs(pairs: Iterable[Mapping], tokenizer, *, max_length: int,
                   truncation: str = "skip", system_prompt: str | None = None
                   ) -> tuple[list[dict], TruncationReport]:
  """Pair records -> tokenized pair examples (chat template), after the truncation policy."""
  examples = []
  for pair in pairs:
    messages = prompt_messages(pair["prompt"], system_prompt)
    prompt_ids, chosen_ids = tokenizer.encode_prompt_response(messages, pair["chosen"])
    prompt_ids2, rejected_ids = tokenizer.encode_prompt_response(messages, pair["rejected"])
    assert prompt_ids == prompt_ids2, "encode_prompt_response must not depend on the response"
    ex = {"prompt_ids": _ids(prompt_ids), "chosen_ids": _ids(chosen_ids),
          "rejected_ids": _ids(rejected_ids)}
    for k in REF_FIELDS:
      if k in pair:
        ex[k] = float(pair[k])
    if "source" in pair:
      ex["source"] = pair["source"]
    examples.append(ex)
  return truncate_examples(examples, max_length=max_length, policy=truncation)


def tokenize_sft(records: Iterable[Mapping], tokenizer, *, max_length: int,
                 truncation: str = "skip", system_prompt: str | None = None
                 ) -> tuple[list[dict], TruncationReport]:
  """SFT records (prompt, response) -> tokenized SFT examples, after the truncation policy."""
  examples = []
  for record in records:
    prompt_ids, response_ids = tokenizer.encode_prompt_response(
        prompt_messages(record["prompt"], system_prompt), record["response"])
    ex = {"prompt_ids": _ids(prompt_ids), "response_ids": _ids(response_ids)}
    if "source" in record:
      ex["source"] = record["source"]
    examples.append(ex)
  return truncate_examples(examples, max_length=max_length, policy=truncation)


def validate_examples(examples: Sequence[Mapping], *, kind: str, vocab_size: int | None = None):
  """Raises DataError unless every example has the fields of `kind` ("dpo" | "sft") and valid ids."""
  needed = ("prompt_ids", "chosen_ids", "rejected_ids") if kind == "dpo" else (
      "prompt_ids", "response_ids")
  if not examples:
    raise DataError("no training examples")
  for k, ex in enumerate(examples):
    where = ex.get("source", f"example {k}")
    missing = [f for f in needed if f not in ex]
    if missing:
      raise DataError(f"{where}: missing {missing} (a {kind} example needs {list(needed)})")
    for f in needed[1:]:
      if len(ex[f]) == 0:
        raise DataError(f"{where}: empty {f}")
    if vocab_size is not None:
      top = max(int(np.max(ex[f])) for f in needed if len(ex[f]))
      if top >= vocab_size:
        raise DataError(f"{where}: token id {top} is outside the model's vocabulary "
                        f"({vocab_size}); tokenizer and checkpoint do not match")


def fingerprint(examples: Sequence[Mapping]) -> str:
  """A short hash of the token ids (not the reference log-probs): detects a changed dataset."""
  h = hashlib.sha256()
  for ex in examples:
    for key in ("prompt_ids",) + response_keys(ex):
      a = _ids(ex[key])
      h.update(np.int64(a.size).tobytes())
      h.update(a.tobytes())
  return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# Ordering and batching (pure; the batch of any step is a function of (examples, seed, step)).

def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The example order of `epoch`: a permutation of range(n) drawn from (seed, epoch)."""
  return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def steps_per_epoch(n: int, global_batch: int) -> int:
  return -(-n // global_batch)


def step_indices(seed: int, step: int, n: int, global_batch: int) -> tuple[int, np.ndarray]:
  """(epoch, the `global_batch` example indices of global `step`, -1 marking padding rows)."""
  spe = steps_per_epoch(n, global_batch)
  epoch, k = divmod(step, spe)
  idx = epoch_order(seed, epoch, n)[k * global_batch:(k + 1) * global_batch]
  pad = np.full(global_batch - len(idx), -1, np.int64)
  return epoch, np.concatenate([idx, pad])


def bucket_length(length: int, buckets: Sequence[int], limit: int) -> int:
  """The smallest bucket that holds `length`; `limit` closes the list (and bounds it)."""
  for b in sorted(int(b) for b in buckets):
    if length <= b <= limit:
      return b
  if length > limit:
    raise DataError(f"a sequence of {length} tokens exceeds the length limit {limit}")
  return limit


def example_length(ex: Mapping) -> int:
  return len(ex["prompt_ids"]) + max(len(ex[k]) for k in response_keys(ex))


def row_length(ex: Mapping) -> int:
  """Length of the packed row: the prompt once, then every response."""
  return len(ex["prompt_ids"]) + sum(len(ex[k]) for k in response_keys(ex))


def response_length(ex: Mapping) -> int:
  return sum(len(ex[k]) for k in response_keys(ex))


def collate(examples: Sequence[Mapping], indices: np.ndarray, *, kind: str, num_micro: int,
            length_buckets: Sequence[int], max_length: int, pad_id: int = 0
            ) -> dict[str, np.ndarray]:
  """Builds one step's batch from `indices` (-1 = padding row); see the module doc for layout.

  Also returns the host-side scalar ``num_tokens`` (non-pad prompt + response tokens, each prompt
  counted once) for throughput.
  """
  indices = np.asarray(indices)
  if len(indices) % num_micro:
    raise ValueError(f"{len(indices)} rows do not split into {num_micro} microbatches")
  keys = ("chosen_ids", "rejected_ids") if kind == "dpo" else ("response_ids",)
  limit = max_length * len(keys)  # each response may fill max_length with the prompt
  real = [examples[i] for i in indices if i >= 0]
  T = bucket_length(max((row_length(ex) for ex in real), default=1), length_buckets, limit)
  Tr = bucket_length(max((response_length(ex) for ex in real), default=1), length_buckets, limit)
  N = len(indices)
  tokens = np.full((N, T), pad_id, np.int32)
  positions = np.zeros((N, T), np.int32)
  segment = np.full((N, T), -1, np.int32)
  resp_src = np.zeros((N, Tr), np.int32)
  resp_tgt = np.zeros((N, Tr), np.int32)
  resp_seg = np.zeros((N, Tr), np.int32)
  weight = np.zeros((N,), np.float32)
  ref = np.zeros((N, 2), np.float32)
  num_tokens = 0
  for j, i in enumerate(indices):
    if i < 0:
      continue
    ex = examples[i]
    prompt = _ids(ex["prompt_ids"])
    P = len(prompt)
    tokens[j, :P], positions[j, :P], segment[j, :P] = prompt, np.arange(P), 0
    off, k = P, 0
    for s, key in enumerate(keys, start=1):
      resp = _ids(ex[key])
      L = len(resp)
      tokens[j, off:off + L] = resp
      positions[j, off:off + L] = np.arange(P, P + L)  # every response continues the prompt
      segment[j, off:off + L] = s
      resp_src[j, k] = P - 1                               # its first token follows the prompt
      resp_src[j, k + 1:k + L] = np.arange(off, off + L - 1)
      resp_tgt[j, k:k + L] = resp
      resp_seg[j, k:k + L] = s
      off, k = off + L, k + L
    num_tokens += off
    weight[j] = 1.0
    if kind == "dpo" and all(r in ex for r in REF_FIELDS):  # absent in the reference pass itself
      ref[j] = (ex["ref_chosen_logp"], ex["ref_rejected_logp"])
  M = N // num_micro
  batch = {name: a.reshape(num_micro, M, -1) for name, a in (
      ("tokens", tokens), ("positions", positions), ("segment", segment),
      ("resp_src", resp_src), ("resp_tgt", resp_tgt), ("resp_seg", resp_seg))}
  batch["weight"] = weight.reshape(num_micro, M)
  if kind == "dpo":
    batch["ref_chosen"] = ref[:, 0].reshape(num_micro, M)
    batch["ref_rejected"] = ref[:, 1].reshape(num_micro, M)
  batch["num_tokens"] = np.int64(num_tokens)
  return batch
