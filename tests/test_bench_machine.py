"""bench/machine.py: a benchmark started on a loaded machine writes no results, or marked ones."""

import pytest

from bench import machine


def test_loaded_machine_is_refused_or_marked():
  quiet = machine.MachineState(cores=2, load_before=1.6, torch_threads=2)
  quiet.check(allow_loaded=False)
  assert "NOT COMPARABLE" not in quiet.describe() and "torch threads 2" in quiet.describe()
  loaded = machine.MachineState(cores=2, load_before=3.4, torch_threads=2)
  with pytest.raises(machine.LoadedMachineError, match="3.4 on 2 cores"):
    loaded.check(allow_loaded=False)
  loaded.check(allow_loaded=True)
  assert "NOT COMPARABLE" in loaded.finish().describe()


def test_torch_gets_one_thread_per_available_core():
  threads = machine.pin_torch_threads()
  assert threads is None or threads == machine.cores()
