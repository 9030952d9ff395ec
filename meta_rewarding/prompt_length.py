"""The prompt-length rule: which prompts a generation can take, in one pure function.

A sequence holds its prompt and up to `max_new_tokens` generated tokens within the cache, whose
length is `max_cache_length` (0: the model's `max_position_embeddings`, and never more than
that). Prompts are padded up to one of the sampler's `prompt_buckets`; buckets longer than the
room the cache leaves are clipped to it, and the longest clipped bucket is the longest prompt a
generation accepts. The sampler (`sampling.Sampler`), which reports longer prompts as
`finish_reason="too_long"`, and the memory planner (`plan.py`) both use `limits`, so a prompt the
planner plans for is a prompt the run samples, and no other code measures prompts.

No jax, no tokenizer: lengths are token counts.
"""

from __future__ import annotations

from typing import Sequence

from meta_rewarding.errors import UserError


class PromptLengthError(UserError, ValueError):
  """`max_new_tokens` leaves no room for any prompt in the cache."""


def cache_length(max_cache_length: int, max_position_embeddings: int) -> int:
  """The most tokens (prompt + generated) one sequence may hold."""
  limit = int(max_position_embeddings)
  return min(int(max_cache_length), limit) if max_cache_length else limit


def limits(prompt_buckets: Sequence[int], max_new_tokens: int, max_cache_length: int,
           max_position_embeddings: int, *, key: str = "max_new_tokens",
           cache_key: str = "max_cache_length") -> tuple[tuple[int, ...], int]:
  """(the prompt buckets clipped to the room the cache leaves, the longest prompt accepted).

  `key` and `cache_key` name the two settings in the error (a config passes its own keys, e.g.
  "judge.max_new_tokens" and "sampling.max_cache_length", so the message says what to change)."""
  cache = cache_length(max_cache_length, max_position_embeddings)
  room = cache - int(max_new_tokens)
  if room < 1:
    if max_cache_length and int(max_cache_length) <= int(max_position_embeddings):
      where, remedy = f"a cache of {cache_key}={max_cache_length} tokens", f" or raise {cache_key}"
    else:  # the model's context is the limit: only a shorter generation helps
      clipped = f" ({cache_key}={max_cache_length} is clipped to it)" if max_cache_length else ""
      where = (f"the model's context of max_position_embeddings={max_position_embeddings} "
               f"tokens{clipped}")
      remedy = ""
    raise PromptLengthError(f"{key}={max_new_tokens} leaves no room for a prompt in {where}; "
                            f"lower {key}{remedy}")
  buckets = tuple(sorted({min(int(b), room) for b in prompt_buckets}))
  return buckets, buckets[-1]


def fits(length: int, longest: int) -> bool:
  """Whether a prompt of `length` tokens can be generated from (empty prompts cannot)."""
  return 0 < length <= longest
