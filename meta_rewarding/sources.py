"""The source strings a config or command names its data by, parsed in one place.

  "testbed:<n>"           the synthetic testbed's n (prompts of its pool split, or held-out
                          preference pairs)
  "hf:<name>[:<split>]"   a `datasets` dataset (the split as written; "" when not given)
  anything else           a file (JSONL / parquet, local or gs://)

`parse(source)` tells them apart; what each kind loads is the caller's (run.load_pool,
judge_eval.load_judge_pairs, judge_eval.load_preference_pairs). Pure Python.
"""

from __future__ import annotations

import dataclasses

TESTBED = "testbed"
HF = "hf"
FILE = "file"


@dataclasses.dataclass(frozen=True)
class Source:
  kind: str    # TESTBED | HF | FILE
  value: str   # testbed: the count as written; hf: the dataset name; file: the path
  split: str = ""  # hf: the split as written ("" when not given)

  def count(self) -> int | None:
    """The testbed count n >= 1, or None when it is not one (or this is no testbed source)."""
    if self.kind != TESTBED or not (self.value.isdigit() and int(self.value) >= 1):
      return None
    return int(self.value)


def parse(source: str) -> Source:
  """What `source` names (module doc)."""
  if source.startswith(TESTBED + ":"):
    return Source(TESTBED, source.split(":", 1)[1])
  if source.startswith(HF + ":"):
    name, _, split = source[3:].partition(":")
    return Source(HF, name, split)
  return Source(FILE, source)
