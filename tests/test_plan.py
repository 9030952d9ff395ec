"""The memory planner: exact numbers against real arrays for a tiny model, the estimates against
XLA's compiled memory, the sampler's batching, and the refusal."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import configs
from meta_rewarding.config import rules as config_rules
from meta_rewarding import losses, plan, sharding, train, train_step
from meta_rewarding.model import llama, presets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(mesh_shape, **changes):
  c = configs.load("tpu_v4", "runlocal")
  c.mesh.shape = ml_collections.ConfigDict(mesh_shape)
  c.sampling.batch_size = 12
  c.sampling.prompt_buckets = (32, 64, 128)
  c.actor.num_responses, c.judge.num_judgments = 3, 5
  c.actor.max_new_tokens, c.judge.max_new_tokens, c.meta_judge.max_new_tokens = 16, 8, 4
  for k, v in changes.items():
    section, key = k.split(".")
    c[section][key] = v
  return c


def device_bytes(tree) -> int:
  """The most bytes any one device holds of `tree` (sum of its addressable shards)."""
  per = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      per[shard.device] = per.get(shard.device, 0) + shard.data.nbytes
  return max(per.values())


# (mesh, scan_layers, check gradients): both parameter layouts (stacked by scan or per layer).
CASES = [({"data": 1, "fsdp": 8, "tensor": 1}, True, True),
         ({"data": 2, "fsdp": 2, "tensor": 2}, False, False)]


@pytest.mark.parametrize("mesh_shape,scan,check_grads", CASES,
                         ids=lambda x: "x".join(map(str, x.values())) if isinstance(x, dict) else
                         str(x))
def test_plan_matches_real_arrays(mesh_shape, scan, check_grads):
  config = tiny_config(mesh_shape, **{"model.scan_layers": scan})
  p = plan.plan(config, 8)
  mc, _ = plan.model_config_from(config)
  mesh = sharding.make_mesh(mesh_shape, jax.devices()[:8])
  rules = config_rules.TRAIN_RULES
  params = sharding.init_sharded_params(mc, jax.random.key(0), mesh, rules)
  assert device_bytes(params) == p.params

  optimizer = plan.make_optimizer(config.train)
  state_sh = train.state_shardings(mc, optimizer, mesh, rules)
  with sharding.activate(mesh, rules):
    state = jax.jit(functools.partial(train_step.init_state, optimizer=optimizer),
                    out_shardings=state_sh)(params)
  assert device_bytes(state.opt_state) == p.optimizer
  assert device_bytes(state.params) == p.train_params

  # Gradients: one real gradient tree in the parameters' shardings; the plan holds two
  # (the accumulator and the microbatch's gradient).
  tokens = jnp.ones((8, 8), jnp.int32)

  def loss(prm):
    return jnp.mean(llama.forward(mc, prm, tokens))

  if check_grads:
    with sharding.activate(mesh, rules):
      grads = jax.jit(jax.grad(loss), out_shardings=sharding.param_shardings(mc, mesh, rules))(
          params)
    assert 2 * device_bytes(grads) == p.gradients
  else:
    assert p.gradients == 2 * p.params

  # KV cache of every stage at its planned rows and length, sharded by the decode rules.
  cache_sh = sharding.cache_shardings(mc, mesh, config_rules.DECODE_RULES)
  with sharding.activate(mesh, config_rules.DECODE_RULES):
    caches = jax.jit(lambda: [llama.init_cache(mc, st.rows, st.cache_length) for st in p.stages],
                     out_shardings=[cache_sh] * len(p.stages))()
  for stage, cache in zip(p.stages, caches):
    assert device_bytes(cache) == stage.kv_cache, stage.name
  assert p.kv_cache == max(p.stages, key=lambda s: s.peak).kv_cache


def test_stage_batching_matches_the_sampler():
  """The planner's rows and worst-case lengths are what `Sampler` would build."""
  from meta_rewarding import sampling
  config = tiny_config({"data": 1, "fsdp": 4, "tensor": 2})
  p = plan.plan(config, 8)
  mc, _ = plan.model_config_from(config)
  mesh = sharding.make_mesh(dict(config.mesh.shape), jax.devices()[:8])
  params = jax.eval_shape(lambda: llama.init_params(mc, jax.random.key(0)))
  s = config.sampling
  sampler = sampling.Sampler(mc, None, mesh=None, batch_size=s.batch_size,
                             prompt_buckets=s.prompt_buckets,
                             max_cache_length=s.max_cache_length or None)
  sampler._batch_multiple = 4  # what a mesh with 4 batch shards gives (data x fsdp)
  del params, mesh
  stages = {st.name: st for st in p.stages}
  rng = np.random.default_rng(0)

  # Unshared (actor): many prompts of the longest accepted length.
  actor = stages["actor"]
  buckets = sampler._buckets(actor.max_new_tokens)
  longest = buckets[-1]
  ids = [list(rng.integers(3, 500, longest)) for _ in range(40)]
  plans = sampler._plans(ids, actor.n, buckets, share_prefix=False)
  assert max(q.batch for q in plans) * actor.n == actor.rows
  assert max(q.length for q in plans) == actor.prompt_length

  # Shared (judge): a group whose prefix and own parts land in the worst bucket pair.
  judge = stages["judge"]
  buckets = sampler._buckets(judge.max_new_tokens)
  lo = {b: prev + 1 for prev, b in zip((0,) + buckets, buckets)}
  a, b = max(lo[judge.prefix_length], 16), lo[judge.prompt_length]
  prefix = list(rng.integers(3, 500, a))
  ids = [prefix + list(rng.integers(3, 500, b)) for _ in range(3)]
  plans = sampler._plans(ids, judge.n, buckets, share_prefix=True)
  assert (plans[0].prefix_length, plans[0].length) == (judge.prefix_length, judge.prompt_length)
  assert judge.cache_length == judge.prefix_length + judge.prompt_length + judge.max_new_tokens


def _xla_temp_bytes(mc, rows, length) -> int:
  params = jax.eval_shape(lambda: llama.init_params(mc, jax.random.key(0)))
  tokens = jax.ShapeDtypeStruct((rows, length), jnp.int32)

  def loss(prm, tok):
    valid = jnp.ones(tok.shape, jnp.bool_)
    logits = llama.padded_forward(mc, prm, tok, valid)
    return jnp.sum(losses.sequence_logps(logits[:, :-1], tok[:, 1:], valid[:, 1:]))

  compiled = jax.jit(jax.grad(loss)).lower(params, tokens).compile()
  return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("policy, chunk", [("none", 0), ("dots", 0), ("dots_no_batch", 0),
                                           ("full", 0), ("full", 64), ("dots", 64)])
def test_activation_estimate_against_xla(policy, chunk):
  """The activation + logits estimate is within a small factor of what XLA allocates, with the
  attention in query blocks too (`model.attention_chunk`)."""
  arch = dict(presets.get("tiny"), hidden_size=128, intermediate_size=384, num_attention_heads=8,
              num_key_value_heads=4, head_dim=16, num_hidden_layers=3)
  config = tiny_config({"data": 1, "fsdp": 1, "tensor": 1})
  config.model.architecture = ml_collections.ConfigDict(arch)
  config.model.remat_policy = policy
  config.model.attention_chunk = chunk
  config.model.dtype = "float32"
  config.train.batch_size, config.train.max_length, config.train.logps_chunk_size = 4, 192, 0
  p = plan.plan(config, 1)
  mc, _ = plan.model_config_from(config)
  # 4 pairs are 4 packed rows of up to 2 x 192 tokens (data.collate).
  measured = _xla_temp_bytes(mc, rows=4, length=384)
  estimate = p.activations + p.train_logits
  assert 0.5 <= estimate / measured <= 2.5, (policy, chunk, estimate, measured)


def test_attention_chunk_shrinks_the_scores_and_the_advice_names_it():
  """A long packed row on a chip without tensor parallelism: the [T, T] scores dominate the
  activations, the refusal says to attend in blocks, and in blocks the estimate falls by the
  scores' share (the other activations do not change)."""
  config = configs.load("tpu_v4", "mesh=fsdp")
  config.model.attention_chunk = 0
  whole = plan.plan(config)
  assert not whole.fits()
  assert "set model.attention_chunk=1024 (now 0)" in whole.refusal()
  config.model.attention_chunk = 1024
  blocked = plan.plan(config)
  assert blocked.fits()
  scores = whole.settings["attention_score_bytes"]
  assert blocked.settings["attention_score_bytes"] == scores * 1024 // whole.train_length
  assert whole.activations - blocked.activations == (
      scores - blocked.settings["attention_score_bytes"])


_POD_VARIANTS = [(name, v) for name in ("tpu_v4", "tpu_v5e", "gpu")
                 for v in configs.module(name).VARIANTS if "runlocal" not in v]


@pytest.mark.parametrize("name, variant", _POD_VARIANTS)
def test_every_pod_config_variant_fits_its_devices(name, variant):
  """Every variant a pod config ships plans within its devices' memory (`plan` exits 1 otherwise;
  the TPU ones are compiled for their slice in bench/results/tpu_compile_runs.md)."""
  p = plan.plan(configs.load(name, variant))
  assert p.fits(), p.table()


def test_fits_and_refusal():
  config = tiny_config({"data": 1, "fsdp": 8, "tensor": 1})
  p = plan.plan(config, 8)
  assert p.device_memory is None and p.fits()          # unknown memory (CPU): never refuses
  assert p.fits(p.total) and not p.fits(p.total - 1)
  assert p.total == max(p.sampling_total, p.reference_total, p.training_total)

  small = plan.plan(config, 8, device_memory=p.total // 2)
  assert not small.fits()
  message = small.refusal()
  assert "does not fit" in message and "To fit" in message
  with config.unlocked() if hasattr(config, "unlocked") else _nullcontext():
    config.mesh.device_memory_gb = small.device_memory / plan.GiB
  with pytest.raises(plan.DoesNotFitError, match="To fit"):
    plan.check_fits(config, 8, log=False)
  assert issubclass(plan.DoesNotFitError, ValueError)


class _nullcontext:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


def test_advice_names_the_problem():
  # Sampling dominated: a huge decode batch.
  c = tiny_config({"data": 1, "fsdp": 8, "tensor": 1}, **{"sampling.batch_size": 4096})
  p = plan.plan(c, 8)
  tight = plan.plan(c, 8, device_memory=int(max(p.training_total, p.reference_total) * 1.2))
  assert not tight.fits() and any("sampling.batch_size" in a for a in tight.advice())
  # Training dominated by full logits and no remat.
  c = tiny_config({"data": 1, "fsdp": 8, "tensor": 1})
  c.train.batch_size, c.train.max_length, c.train.logps_chunk_size = 64, 512, 0
  c.model.remat_policy = "none"
  p = plan.plan(c, 8)
  tight = plan.plan(c, 8, device_memory=int(p.sampling_total * 1.2))
  advice = " ".join(tight.advice())
  assert not tight.fits()
  assert "train.logps_chunk_size" in advice and "remat_policy='full'" in advice
  assert "train.batch_size" in advice


def test_pod_configs_fit_their_targets():
  """The shipped 8B configs fit the devices they name (the README shows these tables)."""
  for name in ("tpu_v4", "gpu"):
    config = configs.load(name)
    p = plan.plan(config)
    assert p.num_devices == config.mesh.num_devices
    assert p.fits(), p.table()
    assert 7.9e9 < p.num_params < 8.1e9
    # float32 params sharded over every device; AdamW's two moments are twice that.
    assert p.params == pytest.approx(p.num_params * 4 / p.num_devices, rel=0.01)
    assert p.optimizer == pytest.approx(2 * p.params, rel=0.01)


def test_cli_prints_plan_and_refuses():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  ok = subprocess.run([sys.executable, "-m", "meta_rewarding.plan", "--config=configs/tpu_v4.py"],
                      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "16 devices" in ok.stdout and "fits" in ok.stdout and "kv cache" in ok.stdout
  bad = subprocess.run([sys.executable, "-m", "meta_rewarding.plan", "--config=configs/tpu_v4.py",
                        "--config.sampling.batch_size=1024"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 1
  assert "DOES NOT FIT" in bad.stdout and "lower sampling.batch_size" in bad.stderr
  # Out-of-range values are refused before planning, one line each (config_check).
  wrong = subprocess.run([sys.executable, "-m", "meta_rewarding.plan", "--config=configs/tpu_v4.py",
                          "--config.pipeline.rho=(2.0,)", "--config.train.batch_size=0"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert wrong.returncode == 2 and wrong.stdout == ""
  assert wrong.stderr.splitlines() == [
      "error: pipeline.rho[0]=2.0: must be a number in [0, 0.5)",
      "error: train.batch_size=0: must be an integer >= 1"], wrong.stderr


def test_mesh_that_does_not_divide_the_model_is_a_mesh_error():
  config = tiny_config({"data": 1, "fsdp": 2, "tensor": 4})  # tiny has 2 kv heads
  with pytest.raises(sharding.MeshError, match="kv_heads"):
    plan.plan(config, 8)



# Each other family's preset -> the widest tensor parallelism its heads / kv heads allow, up to
# the pod configs' 8.
FAMILY_TENSOR = {"qwen2_5_7b_instruct": 4, "qwen2_5_1_5b_instruct": 2, "qwen3_8b": 8,
                 "mistral_7b_instruct_v0_3": 8, "gemma_2_9b_it": 8, "gemma_3_4b_it": 4}


@pytest.mark.parametrize("preset", sorted(FAMILY_TENSOR))
@pytest.mark.parametrize("name", ["tpu_v4", "gpu"])
def test_family_presets_plan_on_a_mesh_they_divide(name, preset):
  """Each other family's preset variant (`model=<preset>`) is planned on its config's devices: the
  tensor width divides its heads and kv heads, the parameters are counted exactly (biases, q/k
  norms, Gemma's four norms a layer), and it fits. No compile: arithmetic on abstract shapes."""
  assert f"model={preset}" in configs.module(name).VARIANTS
  config = configs.load(name, f"model={preset}")
  mc = presets.llama_config(presets.get(preset))
  p = plan.plan(config)
  assert p.model == preset and p.num_params == mc.num_params()
  assert p.mesh["tensor"] == FAMILY_TENSOR[preset]
  assert mc.num_attention_heads % p.mesh["tensor"] == 0
  assert mc.num_key_value_heads % p.mesh["tensor"] == 0
  assert config.train.batch_size % (p.mesh["data"] * p.mesh["fsdp"]) == 0
  assert config.train.batch_size * config.train.grad_accum_steps == 16
  # float32 parameters sharded over every device (norm scales replicated: within a percent).
  assert p.params == pytest.approx(mc.num_params() * 4 / p.num_devices, rel=0.01)
  assert p.fits(), p.table()
