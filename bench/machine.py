"""What the machine was doing during a benchmark, and whether its figures can be compared.

A loaded machine slows PyTorch's thread pool far more than XLA (measured here: ratios inflated 2-3x
when other jobs ran), so the CPU benches side by side with PyTorch:
  * give torch one thread per available core (`pin_torch_threads`), and record it;
  * read the 1-minute load average before the run (`MachineState.before`) and after it;
  * refuse to write a results file when the load before the run exceeds the core count, unless
    --allow_loaded, which writes it marked NOT COMPARABLE (`MachineState.check`).
"""

from __future__ import annotations

import dataclasses
import os


class LoadedMachineError(RuntimeError):
  """The machine was busy before the benchmark started."""


def cores() -> int:
  """Cores this process may run on (the affinity mask, not the host's count)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # macOS
    return os.cpu_count() or 1


def load_average() -> float:
  return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def pin_torch_threads() -> int | None:
  """torch's intra-op threads = the available cores (its default can differ in containers)."""
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(cores())
  return torch.get_num_threads()


@dataclasses.dataclass
class MachineState:
  cores: int
  load_before: float
  torch_threads: int | None
  load_after: float | None = None

  @classmethod
  def before(cls) -> "MachineState":
    """Read before any work starts (the benchmark's own load would count otherwise)."""
    return cls(cores=cores(), load_before=load_average(), torch_threads=pin_torch_threads())

  @property
  def quiet(self) -> bool:
    return not self.load_before > self.cores

  def finish(self) -> "MachineState":
    self.load_after = load_average()
    return self

  def check(self, allow_loaded: bool) -> None:
    """Raises LoadedMachineError when the run started on a loaded machine, unless allowed."""
    if not self.quiet and not allow_loaded:
      raise LoadedMachineError(
          f"the 1-minute load average was {self.load_before:.1f} on {self.cores} cores before the "
          "run: the figures would not be comparable, so no results file is written (stop the "
          "other jobs, or pass --allow_loaded to write it marked NOT COMPARABLE)")

  def describe(self) -> str:
    """One line for the results file."""
    after = "" if self.load_after is None else f", {self.load_after:.1f} at the end"
    threads = "-" if self.torch_threads is None else str(self.torch_threads)
    text = (f"machine: {self.cores} cores available; 1-minute load average {self.load_before:.1f} "
            f"before the run{after}; torch threads {threads}")
    if not self.quiet:
      text += (" -- NOT COMPARABLE: the machine was loaded before the run (load above the core "
               "count slows PyTorch far more than XLA)")
    return text
