"""Multi-host execution: 2 local JAX processes (CPU backend, gloo collectives, coordinator on
127.0.0.1) run one pipeline iteration of the tiny random-weight model plus a DPO run on the global
mesh; their artifacts must equal those of one process with the same total device count."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from meta_rewarding import artifacts

TESTS = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 240  # seconds per run: a hang fails the test instead of blocking CI

WORKER = r'''
import json, os, sys
sys.path.insert(0, sys.argv[2])
import jax
from meta_rewarding import artifacts, run, sharding
from meta_rewarding.policy import JaxPolicy
from test_run import tiny_config

workdir = sys.argv[1]
config = tiny_config(num_iterations=1)
config.mesh.distributed = int(os.environ.get("JAX_NUM_PROCESSES", "1")) > 1
config.model.architecture.num_hidden_layers = 1  # fewer/smaller programs to compile
config.train.batch_size = 4
config.train.max_length = 128
run.run(config, workdir)
assert jax.device_count() == 4, jax.devices()
# The random model writes no parseable judgment, so the iteration has no pairs: train on fixed ones
# to exercise DPO on the global mesh, orbax checkpoints and the collective HF export.
pool = run.load_pool(config)
policy = JaxPolicy.from_config(config, workdir, pool)
policy.load(os.path.join(workdir, "iter_1", "model"))
pairs = [{"prompt": pool[i], "chosen": "The answer is 7.", "rejected": "no", "kind": "actor"}
         for i in range(8)]
steps = policy.train_dpo(pairs, checkpoint_dir=os.path.join(workdir, "dpo_ckpt"), seed=3)
policy.save(os.path.join(workdir, "trained"))
if jax.process_index() == 0:
  artifacts.write_jsonl(os.path.join(workdir, "trained_steps.jsonl"), steps)
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(script, workdir, num_processes, devices_per_process):
  # No JAX_ settings of this process leak in (its 8 devices, a coordinator), but the on-disk
  # compilation cache of the test run (conftest.py) is shared.
  env = {k: v for k, v in os.environ.items()
         if not k.startswith("JAX_") or "CACHE" in k}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
             TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
  port = _free_port()
  procs, logs = [], []
  for i in range(num_processes):
    e = dict(env)
    if num_processes > 1:
      e.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(num_processes),
               JAX_PROCESS_ID=str(i))
    logs.append(f"{workdir}.process{i}.log")
    with open(logs[-1], "w") as log:
      procs.append(subprocess.Popen([sys.executable, str(script), str(workdir), TESTS], env=e,
                                    stdout=log, stderr=subprocess.STDOUT))
  # A crashed process leaves the others waiting in a collective: stop them all then, or at TIMEOUT.
  deadline = time.time() + TIMEOUT
  while (any(p.poll() is None for p in procs) and time.time() < deadline
         and not any(p.poll() not in (None, 0) for p in procs)):
    time.sleep(0.5)
  for p in procs:
    if p.poll() is None:
      p.kill()
    p.wait()
  for i, (p, log) in enumerate(zip(procs, logs)):
    with open(log) as f:
      out = f.read()
    assert p.returncode == 0, (f"process {i} of {num_processes} failed (exit {p.returncode}; "
                               f"killed after {TIMEOUT}s if -9):\n{out[-4000:]}")


TIMINGS = ("wall_seconds", "tokens_per_second", "tokens/s")


def _strip(metrics):
  return {k: v for k, v in metrics.items() if not any(t in k for t in TIMINGS)}


def test_two_processes_produce_the_artifacts_of_one(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  single, multi = tmp_path / "single", tmp_path / "multi"
  _launch(script, single, num_processes=1, devices_per_process=4)
  _launch(script, multi, num_processes=2, devices_per_process=2)

  for name in ("prompts", "actor", "judge", "actor_pairs", "dpo"):
    a = artifacts.read_jsonl(str(single / "iter_1" / f"{name}.jsonl"))
    b = artifacts.read_jsonl(str(multi / "iter_1" / f"{name}.jsonl"))
    assert a == b, name
  assert artifacts.read_jsonl(str(multi / "iter_1" / "actor.jsonl"))  # something was generated
  assert not (multi / "iter_1" / "actor.jsonl.chunks").exists()
  assert _strip(artifacts.read_json(str(single / "iter_1" / "metrics.json"))) == _strip(
      artifacts.read_json(str(multi / "iter_1" / "metrics.json")))
  assert [_strip(m) for m in artifacts.read_jsonl(str(single / "metrics.jsonl"))] == [
      _strip(m) for m in artifacts.read_jsonl(str(multi / "metrics.jsonl"))]
  config_of = lambda d: {**json.loads((d / "config.json").read_text()), "mesh": None}
  assert config_of(single) == config_of(multi)

  # DPO across processes: same losses and the same trained weights (up to reduction order).
  steps_a = [_strip(s) for s in artifacts.read_jsonl(str(single / "trained_steps.jsonl"))]
  steps_b = [_strip(s) for s in artifacts.read_jsonl(str(multi / "trained_steps.jsonl"))]
  assert steps_a and len(steps_a) == len(steps_b)
  for x, y in zip(steps_a, steps_b):
    assert x.keys() == y.keys()
    for k in x:
      assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-6), k
  from safetensors.numpy import load_file
  wa = load_file(str(single / "trained" / "model.safetensors"))
  wb = load_file(str(multi / "trained" / "model.safetensors"))
  assert wa.keys() == wb.keys()
  for k in wa:
    np.testing.assert_allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6, err_msg=k)
  assert (multi / "trained" / "tokenizer.model").exists()
