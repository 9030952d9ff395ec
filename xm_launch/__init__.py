"""XManager launcher for meta_rewarding (see `launch.py`) and the sweep helpers config files use.

A config file may define `get_hyper(h)` returning a list of override dicts built with the helpers
below (the big_vision / XManager convention):

  def get_hyper(h):
    return h.product([h.sweep("config.seed", [0, 1]),
                      h.sweep("config.meta_judge.enabled", [True, False])])

Each dict becomes one work unit, its items `--config.seed=0 --config.meta_judge.enabled=True`.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Sequence

Setting = dict[str, Any]


class hyper:  # pylint: disable=invalid-name
  """Sweep builders: each returns a list of settings (dicts of flag name -> value)."""

  @staticmethod
  def sweep(name: str, values: Iterable[Any]) -> list[Setting]:
    """One setting per value of `name`."""
    return [{name: v} for v in values]

  @staticmethod
  def fixed(name: str, value: Any) -> list[Setting]:
    return [{name: value}]

  @staticmethod
  def product(sweeps: Sequence[list[Setting]]) -> list[Setting]:
    """Every combination (the last sweep varies fastest)."""
    out = []
    for combo in itertools.product(*sweeps):
      merged: Setting = {}
      for s in combo:
        _merge(merged, s)
      out.append(merged)
    return out

  @staticmethod
  def zipit(sweeps: Sequence[list[Setting]]) -> list[Setting]:
    """Element-wise combination of equally long sweeps."""
    lengths = {len(s) for s in sweeps}
    if len(lengths) > 1:
      raise ValueError(f"zipit needs sweeps of one length, got lengths {sorted(lengths)}")
    out = []
    for combo in zip(*sweeps):
      merged: Setting = {}
      for s in combo:
        _merge(merged, s)
      out.append(merged)
    return out

  @staticmethod
  def chainit(sweeps: Sequence[list[Setting]]) -> list[Setting]:
    """One sweep after the other."""
    return [dict(s) for sweep in sweeps for s in sweep]


def _merge(into: Setting, setting: Setting):
  for k, v in setting.items():
    if k in into and into[k] != v:
      raise ValueError(f"sweep sets {k!r} twice ({into[k]!r} and {v!r})")
    into[k] = v
