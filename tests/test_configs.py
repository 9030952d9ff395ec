"""Every config file in configs/ loads with every variant it documents, is complete, and builds its
abstract (`jax.eval_shape`) sharded model, optimizer state and KV cache on the mesh it asks for.

Configs whose mesh needs more devices than this process has (tpu_v4.py: a 16-chip v4-32) are
checked in one subprocess started with `--xla_force_host_platform_device_count=<n>`. Nothing is
allocated: 8B parameters exist only as ShapeDtypeStructs.
"""

import functools
import json
import math
import os
import re
import subprocess
import sys

import jax
import pytest

import configs
from configs import common
from meta_rewarding.config import base as config_base, rules as config_rules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "configs")


def path_of(name: str) -> str:
  return os.path.join(CONFIG_DIR, name + ".py")


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
  for name in configs.NAMES:
    for variant in _variants_or_default(configs.module(name)):
      yield pytest.param(name, variant, id=f"{name}.py:{variant}")


def _assert_has_schema(config, schema, where="config"):
  for key, value in schema.items():
    assert key in config, f"{where}.{key} is missing"
    if hasattr(value, "items") and not isinstance(value, dict):  # a section (ConfigDict)
      if key == "architecture":  # free-form LlamaConfig fields, checked by building the model
        continue
      _assert_has_schema(config[key], value, f"{where}.{key}")


def test_config_files_exist_and_document_variants():
  files = {f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py")} - {"__init__", "common"}
  assert set(configs.NAMES) == files  # every config file is loaded by the tests below
  assert {"local_cpu", "tpu_v4", "gpu"} <= set(configs.NAMES)
  for name in configs.NAMES:
    module = configs.module(name)
    assert "python -m meta_rewarding." in (module.__doc__ or ""), f"{name}: docstring has no command"
    if is_pipeline_config(module):
      assert documented_variants(module), f"{name} documents no variants"


def test_load_is_what_the_config_flag_gives():
  # --config=configs/X.py -> get_config(); --config=configs/X.py:arg -> get_config(arg).
  for spelling in ("tpu_v4", "tpu_v4.py", "configs/tpu_v4.py", path_of("tpu_v4")):
    assert configs.load(spelling).to_dict() == configs.module("tpu_v4").get_config().to_dict()
  want = configs.module("tpu_v4").get_config("mesh=fsdp").to_dict()
  assert configs.load("tpu_v4", "mesh=fsdp").to_dict() == want
  assert configs.load("configs/tpu_v4.py:mesh=fsdp").to_dict() == want
  assert configs.split(path_of("gpu") + ":runlocal") == ("gpu", "runlocal")
  with pytest.raises(ValueError, match="give one"):
    configs.load("tpu_v4.py:mesh=fsdp", "runlocal")


def test_unknown_config_names_the_configs():
  for bad in ("no_such", "configs/no_such.py", "common", "/elsewhere/tpu_v4.py"):
    with pytest.raises(configs.UnknownConfigError, match="local_cpu, .*tpu_v4"):
      configs.load(bad)


@pytest.mark.parametrize("name,variant", list(_cases()))
def test_config_loads_complete(name, variant):
  from meta_rewarding import plan, sharding, train
  module = configs.module(name)
  config = configs.load(name, variant)
  _assert_has_schema(config.train, config_base.train_config(), "config.train")
  json.loads(config.to_json())  # the pipeline records it
  config.lock()
  if not is_pipeline_config(module):
    assert {"model", "mesh", "train"} <= set(config.keys())
    sharding.resolve_mesh_shape(dict(config.mesh.shape), 8)
    return
  _assert_has_schema(config, config_base.get_base_config())
  mc, _ = plan.model_config_from(config)  # a valid LlamaConfig
  assert mc.num_params() > 0
  n = int(config.mesh.get("num_devices") or 1)  # no count named: a laptop's one CPU device
  mesh = sharding.resolve_mesh_shape(dict(config.mesh.shape), n)
  assert config.train.batch_size % (mesh["data"] * mesh["fsdp"]) == 0, "batch not divisible"
  if config.get("recipe", "meta_rewarding") == "ste":  # the Self-Taught Evaluator's schema
    from meta_rewarding import config_check
    _assert_has_schema(config, config_base.get_ste_config())
    config_check.check_pipeline_config(config)
    return
  assert len(config.pipeline.rho) >= config.pipeline.num_iterations
  assert len(config.pipeline.train_pairs) >= config.pipeline.num_iterations


def test_loading_a_config_imports_neither_flax_nor_optax():
  # Config files are data: they import ml_collections, configs.common and meta_rewarding.config
  # only, so loading one (every documented variant) in a tool or a launcher costs nothing and
  # needs no accelerator stack.
  code = (
      "import sys, configs\n"
      "for name in configs.NAMES:\n"
      "  for variant in getattr(configs.module(name), 'VARIANTS', ('',)):\n"
      "    configs.load(name, variant).to_json()\n"
      "bad = sorted(m for m in ('jax', 'flax', 'optax', 'orbax', 'transformers', 'torch')\n"
      "             if m in sys.modules)\n"
      "assert not bad, bad\n")
  env = dict(os.environ, PYTHONPATH=REPO)
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=120)
  assert r.returncode == 0, r.stderr


# What a config file may import: ml_collections, the shared helpers (configs/common.py), the config
# floor (meta_rewarding/config/) and light pure-Python project modules.
_CONFIG_IMPORTS = re.compile(
    r"import ml_collections|from configs import common"
    r"|from meta_rewarding\.config(\.\w+)? import \w+(, \w+)*"
    r"|from meta_rewarding(\.testbed)? import (settings|choices|prompts)")


def test_config_files_import_only_ml_collections_common_and_the_config_floor():
  for name in configs.NAMES:
    with open(path_of(name)) as f:
      imports = {line.strip() for line in f if re.match(r"^(import|from) ", line)}
    assert all(_CONFIG_IMPORTS.fullmatch(i) for i in imports), (name, imports)


def test_variant_parser_keeps_order_and_names_the_unknown():
  assert common.parse_variants("bench, seed=2,smoke", "x", ("smoke", "bench", "seed")) == \
      {"bench": True, "seed": "2", "smoke": True}
  assert list(common.parse_variants("smoke,bench", "x", ("bench", "smoke"))) == ["smoke", "bench"]
  with pytest.raises(ValueError, match=r"unknown local_cpu variant 'typo'; expected some of bench"):
    common.parse_variants("bench,typo", "local_cpu", ("bench",))
  with pytest.raises(ValueError, match=r"unknown gpu variants 'a', 'b'"):
    common.parse_variants("a,b", "gpu", ("model",))


def test_unknown_variant_is_refused():
  for name in configs.NAMES:
    if documented_variants(configs.module(name)):
      with pytest.raises(ValueError):
        configs.load(name, "no_such_variant")


def test_paper_defaults_in_pod_configs():
  for name in ("tpu_v4", "gpu"):
    c = configs.load(name)
    assert c.pipeline.num_iterations == 4 and c.pipeline.prompts_per_iteration == 5000
    assert c.actor.num_responses == 7 and c.judge.num_judgments == 11
    assert tuple(c.pipeline.rho) == (0.0, 0.32, 0.32, 0.4) and c.train.beta == 0.1
    assert c.model.dtype == "bfloat16" and c.model.scan_layers and c.model.remat_policy != "none"
    assert c.model.architecture.hidden_size == 4096 and c.model.architecture.num_hidden_layers == 32
  assert configs.load("tpu_v4").mesh.num_devices == 16 and configs.module("tpu_v4").SLICE == "v4-32"


def test_tensor_width_divides_the_model():
  from meta_rewarding.model import presets
  widths = {name: config_rules.tensor_width(presets.get(name), 8) for name in (
      "llama3_8b", "qwen2_5_7b_instruct", "qwen2_5_1_5b_instruct", "gemma_3_4b_it", "tiny")}
  assert widths == {"llama3_8b": 8, "qwen2_5_7b_instruct": 4, "qwen2_5_1_5b_instruct": 2,
                    "gemma_3_4b_it": 4, "tiny": 2}
  assert config_rules.tensor_width({"num_attention_heads": 12, "num_key_value_heads": 12,
                             "intermediate_size": 96, "vocab_size": 600}, 6) == 6


def test_get_hyper_sweeps():
  from xm_launch import hyper
  for name in ("tpu_v4", "gpu"):
    settings = configs.module(name).get_hyper(hyper)
    assert len(settings) == 2
    assert {s["config.meta_judge.enabled"] for s in settings} == {True, False}


# ------------------------------------------------------------------------------------------------
# Abstract sharded build.

def abstract_check(name: str, variant: str, devices) -> dict:
  """Builds params, train state and the worst KV cache abstractly with their shardings on a mesh
  over `devices`; returns per-device bytes (summed over leaves) and the planner's numbers."""
  from meta_rewarding import plan as plan_lib
  from meta_rewarding import sharding, train, train_step
  from meta_rewarding.model import llama

  config = configs.load(name, variant)
  mesh = sharding.make_mesh(dict(config.mesh.shape), devices)
  mc, _ = plan_lib.model_config_from(config)
  rules = config_rules.TRAIN_RULES
  sharding.check_divisibility(mc, mesh, rules)
  param_sh = sharding.param_shardings(mc, mesh, rules)
  optimizer = plan_lib.make_optimizer(config.train)
  state_sh = train.state_shardings(mc, optimizer, mesh, rules)
  with sharding.activate(mesh, rules):
    params = jax.eval_shape(jax.jit(lambda r: llama.init_params(mc, r), out_shardings=param_sh),
                            jax.random.key(0))
    state = jax.eval_shape(jax.jit(functools.partial(train_step.init_state, optimizer=optimizer),
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
  cache_sh = sharding.cache_shardings(mc, mesh, config_rules.DECODE_RULES)
  with sharding.activate(mesh, config_rules.DECODE_RULES):
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
  """(name, variant, devices needed), one per distinct (mesh, model, train) setting."""
  seen = set()
  for name in configs.NAMES:
    module = configs.module(name)
    if not is_pipeline_config(module):
      continue
    for variant in documented_variants(module):
      c = configs.load(name, variant)
      n = int(c.mesh.get("num_devices") or jax.device_count())
      key = (json.dumps(c.mesh.to_dict(), sort_keys=True, default=str),
             json.dumps(c.model.to_dict(), sort_keys=True, default=str),
             json.dumps(c.train.to_dict(), sort_keys=True, default=str),
             json.dumps(c.sampling.to_dict(), sort_keys=True, default=str), n)
      if key not in seen:
        seen.add(key)
        yield name, variant, n


@pytest.mark.parametrize("name,variant,n", [
    pytest.param(*c, id=f"{c[0]}.py:{c[1]}@{c[2]}") for c in _abstract_cases() if c[2] <= 8])
def test_abstract_sharded_state_here(name, variant, n):
  _check_result(abstract_check(name, variant, jax.devices()[:n]))


def test_abstract_sharded_state_on_larger_meshes():
  """Meshes needing more devices than this process has, in one subprocess per device count."""
  by_count = {}
  for name, variant, n in _abstract_cases():
    if n > len(jax.devices()):
      by_count.setdefault(n, []).append((name, variant))
  assert by_count, "expected tpu_v4.py to need more than 8 devices (a v4-32 has 16 chips)"
  for n, cases in sorted(by_count.items()):
    env = dict(os.environ)
    env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                              env.get("XLA_FLAGS", "")) + \
        f" --xla_force_host_platform_device_count={n}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(  # test_configs and the checkout
        filter(None, [os.path.dirname(__file__), REPO, env.get("PYTHONPATH")]))
    code = ("import json, jax, test_configs as t; "
            "print(json.dumps([t.abstract_check(c, v, jax.devices()) for c, v in {cases!r}]))"
            ).format(cases=cases)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(results) == len(cases)
    for (name, variant), r in zip(cases, results):
      assert r["devices"] == n
      _check_result(r)
