"""Multi-host execution: 2 local JAX processes (CPU backend, gloo collectives, coordinator on
127.0.0.1) run one pipeline iteration of the tiny random-weight model, direct sampling (both
batchings, sampled and greedy, fsdp and fsdp x tensor meshes) and a DPO run on the global mesh;
their artifacts must equal those of one process with the same total device count, and sampling
must never gather the parameters onto a process."""

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
# Seconds per run: a hang fails the test instead of blocking CI. A 2-core machine also running a
# bench took over 240 s.
TIMEOUT = 480

WORKER = r'''
import gc, json, os, sys
sys.path[:0] = [sys.argv[2], os.path.dirname(sys.argv[2])]  # tests/ and the checkout, installed or not
import jax
import numpy as np
from jax.experimental import multihost_utils
from meta_rewarding import artifacts, run, sharding, strategies
from meta_rewarding.policy import JaxPolicy
from test_run import tiny_config

# Host-side all-gathers are recorded (leaf shapes) from the direct sampling below on: sampling must
# never send a weight through one (saving a model does, to write it from process 0).
gathered_shapes = []
_process_allgather = multihost_utils.process_allgather
def recording_allgather(tree, *args, **kwargs):
  gathered_shapes.extend(tuple(np.shape(x)) for x in jax.tree.leaves(tree))
  return _process_allgather(tree, *args, **kwargs)
multihost_utils.process_allgather = recording_allgather

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

# Direct sampling on the runtime's mesh: n > 1, shared prefixes, a prompt count that divides neither
# the process count nor the rows, and blocks short enough that continuous batching refills rows.
# Every process passes the same prompts and gets every prompt's completions.
prefix = "Read the task below carefully, then answer it in one short line. "
prompts = [prefix + pool[i] for i in range(5)] + [pool[i] for i in range(5, 8)]
config.sampling.decode_block = 3
gathered_shapes.clear()
def sample_all(policy, batchings, strategies):
  out = {}
  for batching in batchings:
    policy.config.sampling.batching = batching  # read when the sampler is made
    policy._sampler = None
    for name, strategy in strategies:
      rows = policy.sampler.generate(prompts, n=3, strategy=strategy, max_new_tokens=8, seed=5,
                                     share_prefix=True, progress=False)
      out[f"{batching}/{name}"] = [[[list(c.token_ids), c.logprob, c.finish_reason] for c in row]
                                   for row in rows]
  return out
samples = sample_all(policy, ("continuous", "static"),
                     (("sampled", strategies.Sampling(temperature=0.9, top_p=0.95)),
                      ("greedy", strategies.Greedy())))
sampler = policy.sampler
assert sampler.mesh.devices.size == jax.device_count() == 4
assert sampler.spans_processes == (jax.process_count() > 1)
if jax.process_count() > 1:
  # No process holds an entire weight matrix that the mesh shards: not in the sampler's params (each
  # process has its shards only), not in any live array, and none went through a host all-gather.
  sharded = {jax.tree_util.keystr(path): x for path, x in
             jax.tree_util.tree_leaves_with_path(sampler.params) if not x.sharding.is_fully_replicated}
  assert sharded, "the mesh shards no parameter"
  for name, x in sharded.items():
    assert not x.is_fully_addressable, name
    assert all(shard.data.shape != x.shape for shard in x.addressable_shards), name
  whole = {(x.shape, x.dtype) for x in sharded.values()}
  assert not [s for s in gathered_shapes if s in {shape for shape, _ in whole}], gathered_shapes
  gc.collect()
  local_whole = [(a.shape, a.dtype) for a in jax.live_arrays() for shard in a.addressable_shards
                 if (shard.data.shape, a.dtype) in whole]
  assert not local_whole, local_whole
  # Processes that pass different prompts fail at once (the host-side decisions would diverge).
  try:
    sampler.generate(prompts[:2 + jax.process_index()], n=1, max_new_tokens=4, progress=False)
  except ValueError as e:
    assert "same prompts" in str(e), e
  else:
    raise AssertionError("different prompts per process were accepted")

# Tensor parallelism within each process, fsdp across them (the decode rules' heads / mlp / vocab).
tensor_config = tiny_config(num_iterations=1)
tensor_config.mesh.distributed = config.mesh.distributed
tensor_config.model.architecture.num_hidden_layers = 1
tensor_config.mesh.shape.update(fsdp=2, tensor=2)  # fsdp across the processes
tensor_config.sampling.decode_block = 3
tensor_policy = JaxPolicy.from_config(tensor_config, workdir, pool)
tensor_policy.load(os.path.join(workdir, "iter_1", "model"))
samples.update({f"tensor/{k}": v for k, v in sample_all(
    tensor_policy, ("continuous",),
    (("sampled", strategies.Sampling(temperature=0.9, top_p=0.95)),)).items()})
if jax.process_index() == 0:
  with open(os.path.join(workdir, "samples.json"), "w") as f:
    json.dump(samples, f)
del tensor_policy

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


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The worker's directories after one process with 4 devices and 2 processes with 2 each."""
  tmp_path = tmp_path_factory.mktemp("multihost")
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  single, multi = tmp_path / "single", tmp_path / "multi"
  _launch(script, single, num_processes=1, devices_per_process=4)
  _launch(script, multi, num_processes=2, devices_per_process=2)
  return single, multi


def test_two_processes_produce_the_artifacts_of_one(runs):
  single, multi = runs
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


def _assert_same_samples(a, b, what):
  """Same token ids and finish reasons; log-probs up to the reduction order of the collectives."""
  assert len(a) == len(b), what
  for i, (row_a, row_b) in enumerate(zip(a, b)):
    assert [c[0] for c in row_a] == [c[0] for c in row_b], (what, i)
    assert [c[2] for c in row_a] == [c[2] for c in row_b], (what, i)
    np.testing.assert_allclose([c[1] for c in row_a], [c[1] for c in row_b], rtol=1e-5, atol=1e-5,
                               err_msg=f"{what} row {i}")


def test_two_processes_sample_on_the_global_mesh_as_one_does(runs):
  """The worker's direct sampling: the 2-process run decodes on the global mesh (the worker asserts
  that no process held a whole sharded weight) and gets the single process's completions."""
  single, multi = runs
  a = json.loads((single / "samples.json").read_text())
  b = json.loads((multi / "samples.json").read_text())
  assert a.keys() == b.keys() == {"continuous/sampled", "continuous/greedy", "static/sampled",
                                  "static/greedy", "tensor/continuous/sampled"}
  for key in a:
    _assert_same_samples(a[key], b[key], key)
  for run in (a, b):  # the switch and the mesh do not change what is sampled
    for name in ("sampled", "greedy"):
      _assert_same_samples(run[f"continuous/{name}"], run[f"static/{name}"], name)
    _assert_same_samples(run["continuous/sampled"], run["tensor/continuous/sampled"], "tensor")
  assert any(len(c[0]) > 1 for row in a["continuous/sampled"] for c in row)
