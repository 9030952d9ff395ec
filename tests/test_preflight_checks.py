"""What is refused before anything is written: values no run can mean (the real command, one line),
what the device count and the model's shape rule out (`config_check.check_run_environment`), a CPU
config that does not fit the host's RAM (`plan.check_fits`), and `plan --config=<missing file>`."""

import os
import subprocess
import sys

import jax
import pytest

import configs
from meta_rewarding import config_check, plan, prompt_length
from meta_rewarding.config_check import ConfigError

import test_configs
from test_main import _env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GiB = 1 << 30
SMALL_CI_MACHINE = 4 * GiB  # the least RAM the CPU configs must fit in




def _config(name, variant=""):
  return configs.load(name, variant)


def _set(config, key, value):
  *parents, last = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[last] = value


# ------------------------------------------------------------------------------------------------
# The real command.

def test_main_refuses_a_learning_rate_no_run_can_mean(tmp_path):
  workdir = tmp_path / "work"
  out = subprocess.run([sys.executable, "-m", "meta_rewarding.main",
                        "--config=configs/local_cpu.py:smoke", f"--workdir={workdir}",
                        "--config.train.learning_rate=1e30"],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  assert out.stderr.splitlines() == [
      "error: train.learning_rate=1e+30: must be <= 0.01: " + config_check.LEARNING_RATE.reason]
  assert not workdir.exists()  # refused before the workdir (logs/, config.json) is made


def _plan_cli(*args):
  return subprocess.run([sys.executable, "-m", "meta_rewarding.plan", *args], cwd=REPO,
                        env=_env(), capture_output=True, text=True, timeout=300)


def test_plan_with_a_missing_config_file_is_one_line():
  out = _plan_cli("--config=configs/nope.py")
  assert out.returncode == 2
  assert out.stdout == ""
  assert out.stderr.splitlines() == [
      "error: --config: cannot load the config file: [Errno 2] No such file or directory: "
      "'configs/nope.py'"]


def test_plan_with_no_room_for_a_prompt_is_one_line():
  out = _plan_cli("--config=configs/local_cpu.py:smoke", "--config.judge.max_new_tokens=600")
  assert out.returncode == 2 and out.stdout == ""
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [
      "error: judge.max_new_tokens=600 leaves no room for a prompt in the model's context of "
      "max_position_embeddings=512 tokens; lower judge.max_new_tokens"]


# ------------------------------------------------------------------------------------------------
# check_run_environment.

def test_shipped_configs_pass_on_the_devices_they_name():
  config_check.check_run_environment(_config("local_cpu.py"), 1)
  config_check.check_run_environment(_config("local_cpu.py", "smoke"), 1)
  config_check.check_run_environment(_config("tpu_v4.py"), 16)      # a v4-32: 8B, K=7, N=11
  config_check.check_run_environment(_config("ste_tpu_v4.py"), 16)
  config_check.check_run_environment(_config("tpu_v4.py", "runlocal"), 8)


@pytest.mark.parametrize("shape,devices,expected", [
    ({"data": 1, "fsdp": -1, "tensor": 8}, 4,
     "mesh.shape={'data': 1, 'fsdp': -1, 'tensor': 8}: the fixed axes need a multiple of 8 "
     "devices, but this run has 4 devices; change the fixed axes or set one axis to -1 (the "
     "devices left over)"),
    ({"data": 2, "fsdp": 2, "tensor": 1}, 1,
     "mesh.shape={'data': 2, 'fsdp': 2, 'tensor': 1}: it needs 4 devices, but this run has 1 "
     "device; change the fixed axes or set one axis to -1 (the devices left over)"),
])
def test_a_mesh_the_devices_do_not_fill(shape, devices, expected):
  config = _config("local_cpu.py", "smoke")
  config.mesh.shape = shape
  with pytest.raises(ConfigError) as info:
    config_check.check_run_environment(config, devices)
  assert list(info.value.problems) == [expected]


def test_a_mesh_that_does_not_divide_the_model():
  config = _config("local_cpu.py", "smoke")  # the seed model has 2 kv heads
  config.mesh.shape = {"data": 1, "fsdp": 1, "tensor": 4}
  with pytest.raises(ConfigError) as info:
    config_check.check_run_environment(config, 4)
  (problem,) = info.value.problems
  assert problem.startswith("mesh.shape={'data': 1, 'fsdp': 1, 'tensor': 4}: mesh does not "
                            "divide the model: ")
  assert "'kv_heads'=2" in problem


def test_a_train_batch_the_batch_shards_do_not_divide():
  config = _config("local_cpu.py", "smoke")  # train.batch_size=4 over fsdp=-1
  config_check.check_run_environment(config, 4)
  with pytest.raises(ConfigError) as info:
    config_check.check_run_environment(config, 8)
  assert list(info.value.problems) == [
      "train.batch_size=4: must be a multiple of the 8 batch shards of mesh.shape={'data': 1, "
      "'fsdp': 8, 'tensor': 1} on 8 devices"]


@pytest.mark.parametrize("key", ["actor.max_new_tokens", "judge.max_new_tokens",
                                 "meta_judge.max_new_tokens"])
def test_each_stage_leaves_room_for_a_prompt_named_by_its_key(key):
  config = _config("local_cpu.py", "smoke")  # the seed model: max_position_embeddings=512
  _set(config, key, 511)
  config_check.check_run_environment(config, 1)  # one token of prompt still fits
  _set(config, key, 600)
  with pytest.raises(ConfigError) as info:
    config_check.check_run_environment(config, 1)
  assert list(info.value.problems) == [
      f"{key}=600 leaves no room for a prompt in the model's context of "
      f"max_position_embeddings=512 tokens; lower {key}"]


def test_a_short_cache_is_named_by_its_key():
  config = _config("local_cpu.py", "smoke")
  config.sampling.max_cache_length = 200
  config.judge.max_new_tokens = 200
  with pytest.raises(ConfigError) as info:
    config_check.check_run_environment(config, 1)
  assert list(info.value.problems) == [
      "judge.max_new_tokens=200 leaves no room for a prompt in a cache of "
      "sampling.max_cache_length=200 tokens; lower judge.max_new_tokens or raise "
      "sampling.max_cache_length"]


def test_an_unused_meta_judge_is_not_checked():
  config = _config("local_cpu.py", "smoke")
  config.meta_judge.max_new_tokens = 600
  config.meta_judge.enabled = False  # the Self-Rewarding baseline samples no meta-judgments
  config_check.check_run_environment(config, 1)


def test_ste_stages_are_named_by_their_keys():
  config = _config("ste_testbed.py", "smoke")
  max_position_embeddings = plan.model_config_from(config)[0].max_position_embeddings
  config.ste.worse_max_new_tokens = max_position_embeddings
  config.ste.judge_max_new_tokens = max_position_embeddings + 1
  with pytest.raises(ConfigError) as info:
    config_check.check_run_environment(config, 1)
  assert [p.split(" ")[0] for p in info.value.problems] == [
      f"ste.worse_max_new_tokens={max_position_embeddings}",
      f"ste.judge_max_new_tokens={max_position_embeddings + 1}"]


def test_every_problem_on_its_own_line():
  config = _config("local_cpu.py", "smoke")
  config.mesh.shape = {"data": 1, "fsdp": 3, "tensor": 1}
  config.actor.max_new_tokens = 512
  with pytest.raises(ConfigError) as info:
    config_check.check_run_environment(config, 2)
  assert [p.split("=")[0] for p in info.value.problems] == ["mesh.shape", "actor.max_new_tokens"]
  assert str(info.value).splitlines() == list(info.value.problems)


def test_the_plan_names_the_key_too():
  config = _config("local_cpu.py", "smoke")
  config.judge.max_new_tokens = 600
  with pytest.raises(plan.DoesNotFitError, match=r"^judge.max_new_tokens=600 leaves no room"):
    plan.plan(config, 1)


def test_prompt_length_names_what_its_caller_calls_the_settings():
  with pytest.raises(prompt_length.PromptLengthError,
                     match=r"^max_new_tokens=64 leaves no room for a prompt in a cache of "
                           r"max_cache_length=64 tokens; lower max_new_tokens or raise "
                           r"max_cache_length$"):
    prompt_length.limits((16,), 64, 64, 512)
  with pytest.raises(prompt_length.PromptLengthError,
                     match=r"^--max_new_tokens=600 .* max_position_embeddings=512 tokens "
                           r"\(--max_cache_length=1024 is clipped to it\); lower "
                           r"--max_new_tokens$"):
    prompt_length.limits((16,), 600, 1024, 512, key="--max_new_tokens",
                         cache_key="--max_cache_length")
  assert prompt_length.limits((16, 64), 500, 0, 512) == ((12,), 12)


# ------------------------------------------------------------------------------------------------
# The host's RAM as the budget of CPU devices.

def _cpu_cases():
  """Every documented variant that leaves the device memory unknown (runs on a CPU)."""
  for name in configs.NAMES:
    module = configs.module(name)
    if not test_configs.is_pipeline_config(module):
      continue
    for variant in test_configs.documented_variants(module):
      config = configs.load(name, variant)
      if not config.mesh.get("device_memory_gb"):
        yield pytest.param(name, variant, id=f"{name}.py:{variant}")


@pytest.mark.parametrize("name,variant", list(_cpu_cases()))
def test_cpu_configs_fit_a_small_machine(name, variant):
  config = configs.load(name, variant)
  p = plan.check_fits(config, 1, log=False, host_memory=SMALL_CI_MACHINE)
  assert p.memory_source == "host RAM 4.0 GiB" and p.usable == SMALL_CI_MACHINE // 2


def test_the_tests_own_config_fits_a_small_machine_on_8_devices():
  import test_run  # the in-process end-to-end config, run on the 8 fake devices of conftest
  p = plan.check_fits(test_run.tiny_config(), jax.device_count(), log=False,
                      host_memory=SMALL_CI_MACHINE)
  assert p.memory_source == f"host RAM 4.0 GiB / {jax.device_count()} CPU devices"
  assert p.usable == SMALL_CI_MACHINE // jax.device_count() // 2


def test_a_batch_too_large_for_the_host_is_refused():
  config = _config("local_cpu.py")
  config.sampling.batch_size = 16384
  with pytest.raises(plan.DoesNotFitError) as info:
    plan.check_fits(config, 1, log=False, host_memory=24 * GiB)
  message = str(info.value)
  assert "are usable (host RAM 24.0 GiB x 50%) on 1 devices" in message
  assert "lower sampling.batch_size (now 16384)" in message


def test_the_table_says_the_budget_is_the_hosts():
  p = plan.on_host_memory(plan.plan(_config("local_cpu.py"), 1), 8 * GiB, local_devices=2)
  assert p.device_memory == 4 * GiB and p.usable == 2 * GiB
  table = p.table()
  assert "of 2.00 usable (host RAM 8.0 GiB / 2 CPU devices x 50%): fits" in table
  assert "note: CPU devices report no memory: the budget is the host RAM 8.0 GiB / 2 CPU " \
         "devices, 50% usable (set mesh.device_memory_gb to choose)" in table


def test_configured_device_memory_wins_over_the_host():
  config = _config("local_cpu.py")
  config.mesh.device_memory_gb = 0.25  # below the default's training peak (~0.35 GiB)
  with pytest.raises(plan.DoesNotFitError, match=r"usable \(0.25 GiB x 90%\)"):
    plan.check_fits(config, 1, log=False, host_memory=64 * GiB)
  assert plan.on_host_memory(plan.plan(config, 1), 64 * GiB).memory_source == ""
