"""Every config file in configs/ loads with every variant it documents, is complete, and builds its
abstract (`jax.eval_shape`) sharded model, optimizer state and KV cache on the mesh it asks for.

Configs whose mesh needs more devices than this process has (tpu_v4.py: a 16-chip v4-32) are
checked in one subprocess started with `--xla_force_host_platform_device_count=<n>`. Nothing is
allocated: 8B parameters exist only as ShapeDtypeStructs.
"""

import functools
import glob
import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import jax
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))


def load_module(path):
  spec = importlib.util.spec_from_file_location(
      "_cfg_" + re.sub(r"\W", "_", os.path.basename(path)), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def documented_variants(module) -> list[str]:
  """`VARIANTS` when the file lists them, else the names in its docstring's Variants section."""
  if hasattr(module, "VARIANTS"):
    return list(module.VARIANTS)
  lines = (module.__doc__ or "").splitlines()
  start = next((i for i, l in enumerate(lines) if l.startswith("Variants")), None)
  if start is None:
    return []
  out = []
  for line in lines[start + 1:]:
    if not line.strip():
      break
    m = re.match(r"^  (\S+)\s{2,}", line)
    if m:
      out.append("" if m.group(1) == "(none)" else m.group(1))
  return out


def is_pipeline_config(module) -> bool:
  """Configs for `meta_rewarding.main` (the base-config schema); others (e.g. the DPO-only
  `train_dpo` example) have their own entry point and schema."""
  return "python -m meta_rewarding.main" in (module.__doc__ or "")


def _variants_or_default(module) -> list[str]:
  return documented_variants(module) or [""]


def _cases():
  for path in CONFIG_FILES:
    for variant in _variants_or_default(load_module(path)):
      yield pytest.param(path, variant, id=f"{os.path.basename(path)}:{variant}")


def _assert_has_schema(config, schema, where="config"):
  for key, value in schema.items():
    assert key in config, f"{where}.{key} is missing"
    if hasattr(value, "items") and not isinstance(value, dict):  # a section (ConfigDict)
      if key == "architecture":  # free-form LlamaConfig fields, checked by building the model
        continue
      _assert_has_schema(config[key], value, f"{where}.{key}")


def test_config_files_exist_and_document_variants():
  names = {os.path.basename(p) for p in CONFIG_FILES}
  assert {"local_cpu.py", "tpu_v4.py", "gpu.py"} <= names
  for path in CONFIG_FILES:
    module = load_module(path)
    assert "python -m meta_rewarding." in (module.__doc__ or ""), f"{path}: docstring has no command"
    if is_pipeline_config(module):
      assert documented_variants(module), f"{path} documents no variants"


@pytest.mark.parametrize("path,variant", list(_cases()))
def test_config_loads_complete(path, variant):
  from meta_rewarding import defaults, plan, sharding, train
  module = load_module(path)
  config = module.get_config(variant or None)
  _assert_has_schema(config.train, train.default_train_config(), "config.train")
  json.loads(config.to_json())  # the pipeline records it
  config.lock()
  if not is_pipeline_config(module):
    assert {"model", "mesh", "train"} <= set(config.keys())
    sharding.resolve_mesh_shape(dict(config.mesh.shape), 8)
    return
  _assert_has_schema(config, defaults.get_base_config())
  mc, _ = plan.model_config_from(config)  # a valid LlamaConfig
  assert mc.num_params() > 0
  n = int(config.mesh.get("num_devices") or 1)  # no count named: a laptop's one CPU device
  mesh = sharding.resolve_mesh_shape(dict(config.mesh.shape), n)
  assert config.train.batch_size % (mesh["data"] * mesh["fsdp"]) == 0, "batch not divisible"
  if config.get("recipe", "meta_rewarding") == "ste":  # the Self-Taught Evaluator's schema
    from meta_rewarding import config_check
    _assert_has_schema(config, defaults.get_ste_config())
    config_check.check_pipeline_config(config)
    return
  assert len(config.pipeline.rho) >= config.pipeline.num_iterations
  assert len(config.pipeline.train_pairs) >= config.pipeline.num_iterations


def test_loading_a_config_imports_neither_flax_nor_optax():
  # Config files are data: they import ml_collections and meta_rewarding.defaults only, so loading
  # one (every documented variant) in a tool or a launcher costs nothing and needs no accelerator
  # stack.
  code = (
      "import importlib.util, sys\n"
      f"for path in {CONFIG_FILES!r}:\n"
      "  spec = importlib.util.spec_from_file_location('cfg', path)\n"
      "  module = importlib.util.module_from_spec(spec)\n"
      "  spec.loader.exec_module(module)\n"
      "  for variant in getattr(module, 'VARIANTS', ('',)):\n"
      "    module.get_config(variant or None).to_json()\n"
      "bad = sorted(m for m in ('jax', 'flax', 'optax', 'orbax', 'transformers', 'torch')\n"
      "             if m in sys.modules)\n"
      "assert not bad, bad\n")
  env = dict(os.environ, PYTHONPATH=REPO)
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr


def test_config_files_import_only_ml_collections_and_defaults():
  for path in CONFIG_FILES:
    with open(path) as f:
      imports = {line.strip() for line in f if re.match(r"^(import|from) ", line)}
    assert imports <= {"import ml_collections", "from meta_rewarding import defaults"}, (path, imports)


def test_variant_parser_keeps_order_and_names_the_unknown():
  from meta_rewarding import defaults
  assert defaults.parse_variants("bench, seed=2,smoke", "x", ("smoke", "bench", "seed")) == \
      {"bench": True, "seed": "2", "smoke": True}
  assert list(defaults.parse_variants("smoke,bench", "x", ("bench", "smoke"))) == ["smoke", "bench"]
  with pytest.raises(ValueError, match=r"unknown local_cpu variant 'typo'; expected some of bench"):
    defaults.parse_variants("bench,typo", "local_cpu", ("bench",))
  with pytest.raises(ValueError, match=r"unknown gpu variants 'a', 'b'"):
    defaults.parse_variants("a,b", "gpu", ("model",))


def test_unknown_variant_is_refused():
  for path in CONFIG_FILES:
    module = load_module(path)
    if documented_variants(module):
      with pytest.raises(ValueError):
        module.get_config("no_such_variant")


def test_paper_defaults_in_pod_configs():
  for name in ("tpu_v4.py", "gpu.py"):
    c = load_module(os.path.join(REPO, "configs", name)).get_config()
    assert c.pipeline.num_iterations == 4 and c.pipeline.prompts_per_iteration == 5000
    assert c.actor.num_responses == 7 and c.judge.num_judgments == 11
    assert tuple(c.pipeline.rho) == (0.0, 0.32, 0.32, 0.4) and c.train.beta == 0.1
    assert c.model.dtype == "bfloat16" and c.model.scan_layers and c.model.remat_policy != "none"
    assert c.model.architecture.hidden_size == 4096 and c.model.architecture.num_hidden_layers == 32
  tpu = load_module(os.path.join(REPO, "configs", "tpu_v4.py"))
  assert tpu.get_config().mesh.num_devices == 16 and tpu.SLICE == "v4-32"


def test_tensor_width_divides_the_model():
  from meta_rewarding import defaults
  from meta_rewarding.model import presets
  widths = {name: defaults.tensor_width(presets.get(name), 8) for name in (
      "llama3_8b", "qwen2_5_7b_instruct", "qwen2_5_1_5b_instruct", "gemma_3_4b_it", "tiny")}
  assert widths == {"llama3_8b": 8, "qwen2_5_7b_instruct": 4, "qwen2_5_1_5b_instruct": 2,
                    "gemma_3_4b_it": 4, "tiny": 2}
  assert defaults.tensor_width({"num_attention_heads": 12, "num_key_value_heads": 12,
                                "intermediate_size": 96, "vocab_size": 600}, 6) == 6


def test_get_hyper_sweeps():
  if REPO not in sys.path:  # xm_launch is not an installed package: import it from the checkout
    sys.path.insert(0, REPO)
  from xm_launch import hyper
  for name in ("tpu_v4.py", "gpu.py"):
    module = load_module(os.path.join(REPO, "configs", name))
    settings = module.get_hyper(hyper)
    assert len(settings) == 2
    assert {s["config.meta_judge.enabled"] for s in settings} == {True, False}


# ------------------------------------------------------------------------------------------------
# Abstract sharded build.

def abstract_check(path: str, variant: str, devices) -> dict:
  """Builds params, train state and the worst KV cache abstractly with their shardings on a mesh
  over `devices`; returns per-device bytes (summed over leaves) and the planner's numbers."""
  from meta_rewarding import plan as plan_lib
  from meta_rewarding import sharding, train
  from meta_rewarding.model import llama

  config = load_module(path).get_config(variant or None)
  mesh = sharding.make_mesh(dict(config.mesh.shape), devices)
  mc, _ = plan_lib.model_config_from(config)
  rules = sharding.TRAIN_RULES
  sharding.check_divisibility(mc, mesh, rules)
  param_sh = sharding.param_shardings(mc, mesh, rules)
  optimizer = plan_lib.make_optimizer(config.train)
  state_sh = train.state_shardings(mc, optimizer, mesh, rules)
  with sharding.activate(mesh, rules):
    params = jax.eval_shape(jax.jit(lambda r: llama.init_params(mc, r), out_shardings=param_sh),
                            jax.random.key(0))
    state = jax.eval_shape(jax.jit(functools.partial(train.init_state, optimizer=optimizer),
                                   out_shardings=state_sh), params)

  def per_device(tree):
    total = 0
    for leaf in jax.tree.leaves(tree):
      assert leaf.sharding.mesh.shape == mesh.shape
      # math.prod: a shard may hold over 2**31 elements (Gemma 2's KV cache on 8 GPUs), past
      # what an int32 jnp.prod counts.
      total += math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
    return total

  p = plan_lib.plan(config, len(devices))
  stage = p.worst_stage
  cache_sh = sharding.cache_shardings(mc, mesh, sharding.DECODE_RULES)
  with sharding.activate(mesh, sharding.DECODE_RULES):
    cache = jax.eval_shape(jax.jit(lambda: llama.init_cache(mc, stage.rows, stage.cache_length),
                                   out_shardings=cache_sh))
  full_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  return {"params": per_device(params), "opt_state": per_device(state.opt_state),
          "state_params": per_device(state.params), "cache": per_device(cache),
          "full_param_bytes": int(full_bytes), "devices": len(devices),
          "plan_params": p.params, "plan_optimizer": p.optimizer, "plan_kv": p.kv_cache,
          "num_params": mc.num_params()}


def _check_result(r: dict):
  assert r["params"] == r["plan_params"] == r["state_params"]
  assert r["opt_state"] == r["plan_optimizer"]
  assert r["cache"] == r["plan_kv"]
  # Sharded, not replicated: only the (tiny) norm scales are whole on every device.
  assert r["params"] <= r["full_param_bytes"] / r["devices"] * 1.01 + 1e6


def _abstract_cases():
  """(path, variant, devices needed), one per distinct (mesh, model, train) setting."""
  seen = set()
  for path in CONFIG_FILES:
    module = load_module(path)
    if not is_pipeline_config(module):
      continue
    for variant in documented_variants(module):
      c = module.get_config(variant or None)
      n = int(c.mesh.get("num_devices") or jax.device_count())
      key = (json.dumps(c.mesh.to_dict(), sort_keys=True, default=str),
             json.dumps(c.model.to_dict(), sort_keys=True, default=str),
             json.dumps(c.train.to_dict(), sort_keys=True, default=str),
             json.dumps(c.sampling.to_dict(), sort_keys=True, default=str), n)
      if key not in seen:
        seen.add(key)
        yield path, variant, n


@pytest.mark.parametrize("path,variant,n", [
    pytest.param(*c, id=f"{os.path.basename(c[0])}:{c[1]}@{c[2]}")
    for c in _abstract_cases() if c[2] <= 8])
def test_abstract_sharded_state_here(path, variant, n):
  _check_result(abstract_check(path, variant, jax.devices()[:n]))


def test_abstract_sharded_state_on_larger_meshes():
  """Meshes needing more devices than this process has, in one subprocess per device count."""
  by_count = {}
  for path, variant, n in _abstract_cases():
    if n > len(jax.devices()):
      by_count.setdefault(n, []).append((path, variant))
  assert by_count, "expected tpu_v4.py to need more than 8 devices (a v4-32 has 16 chips)"
  for n, cases in sorted(by_count.items()):
    env = dict(os.environ)
    env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                              env.get("XLA_FLAGS", "")) + \
        f" --xla_force_host_platform_device_count={n}"
    env["JAX_PLATFORMS"] = "cpu"
    code = ("import json, sys; sys.path.insert(0, {tests!r}); sys.path.insert(0, {repo!r}); "
            "import jax, test_configs as t; "
            "print(json.dumps([t.abstract_check(p, v, jax.devices()) for p, v in {cases!r}]))"
            ).format(tests=os.path.dirname(__file__), repo=REPO, cases=cases)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(results) == len(cases)
    for (path, variant), r in zip(cases, results):
      assert r["devices"] == n
      _check_result(r)
