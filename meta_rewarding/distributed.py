"""Multi-host helpers: start-up, which process leads, barriers and small host-side collectives.

Every process runs the same driver (pipeline.py) and holds the same records. Process 0 decides the
state of shared files and writes them; the others wait at a barrier (`sync`) and agree through
`main_process_decides` / `allgather_objects`. On one process every helper is a plain local answer.

jax is imported inside each function, not at module level: the pipeline driver calls these helpers
and must stay importable without jax (a scripted policy, tests, tools that only read artifacts;
tests/test_layering.py).
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import logging


def maybe_initialize_distributed(enabled: bool, coordinator_address: str | None = None,
                                 num_processes: int | None = None, process_id: int | None = None):
  """Calls `jax.distributed.initialize` once when enabled.

  TPU pods (and SLURM / Open MPI jobs) discover the rest themselves. Elsewhere pass the coordinator
  explicitly or set the environment: JAX_COORDINATOR_ADDRESS (host:port of process 0),
  JAX_NUM_PROCESSES and JAX_PROCESS_ID. On the CPU backend the cross-process collectives use gloo.
  """
  if not enabled or getattr(maybe_initialize_distributed, "_done", False):
    return
  import jax  # jax: see the module doc
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = int(os.environ["JAX_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = int(os.environ["JAX_PROCESS_ID"])
  kwargs = {}
  if coordinator_address:
    kwargs.update(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # (jax 0.10's default)
  jax.distributed.initialize(**kwargs)
  maybe_initialize_distributed._done = True
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def is_main_process() -> bool:
  import jax  # jax: see the module doc
  return jax.process_index() == 0


def sync(name: str):
  """A barrier across processes (no-op on one process): e.g. after process 0 wrote a file."""
  import jax  # jax: see the module doc
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # jax: see the module doc
    multihost_utils.sync_global_devices(name)


def main_process_decides(value: bool) -> bool:
  """Process 0's `value` on every process (e.g. whether a file exists), so all take the same branch."""
  import jax  # jax: see the module doc
  if jax.process_count() == 1:
    return bool(value)
  from jax.experimental import multihost_utils  # jax: see the module doc
  return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(value))))


def allgather_objects(obj) -> list:
  """Every process's JSON-serialisable `obj`, in process order, on every process."""
  import jax  # jax: see the module doc
  if jax.process_count() == 1:
    return [obj]
  from jax.experimental import multihost_utils  # jax: see the module doc
  data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.int32(len(data)))).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(data)] = data
  gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
  return [json.loads(bytes(row[:n]).decode()) for row, n in zip(gathered, lengths)]

