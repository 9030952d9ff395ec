"""xm_launch/launch.py: the --dry_run job specification (no credentials, no network), overrides,
sweeps and accelerator arithmetic."""

import json
import os
import subprocess
import sys

import pytest

from xm_launch import hyper
from xm_launch import launch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_dry(*args):
  """launch.py --dry_run in a clean subprocess with no cloud credentials or gcloud config."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("GOOGLE_", "CLOUDSDK_", "GCLOUD"))}
  env.update(JAX_PLATFORMS="cpu", CLOUDSDK_CONFIG="/nonexistent", NO_GCE_CHECK="True",
             PATH=os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin")
  out = subprocess.run([sys.executable, os.path.join(REPO, "xm_launch", "launch.py"), "--dry_run",
                        *args], cwd="/tmp", env=env, capture_output=True, text=True, timeout=300)
  return out


def test_dry_run_tpu_spec():
  out = run_dry("--config=configs/tpu_v4.py", "--tpu=mr-v4", "--project=p", "--zone=us-central2-b",
                "--set=model.checkpoint=gs://b/Meta-Llama-3-8B-Instruct",
                "--set=train.learning_rate=1e-6", "--name=mr-test")
  assert out.returncode == 0, out.stderr[-3000:]
  spec = json.loads(out.stdout)
  assert spec["experiment"] == "mr-test"
  # accelerator and hosts: a v4-32 slice is 16 chips on 4 hosts
  acc = spec["accelerator"]
  assert (acc["type"], acc["name"], acc["devices"], acc["topology"]) == ("tpu_v4", "v4-32", 16,
                                                                          "2x2x4")
  assert "xm.JobRequirements(tpu_v4='2x2x4')" == acc["xm_requirements"]
  assert spec["hosts"] == 4 and spec["devices_per_host"] == 4 and spec["multi_host"]
  assert spec["mesh"] == {"data": 1, "fsdp": 2, "tensor": 8}
  # packaging: an image built from this repository by xm.python_container
  pkg = spec["packaging"]
  assert pkg["kind"] == "image" and pkg["image"].endswith(":latest")
  assert "xm.python_container" in pkg["xm"] and pkg["context"] == REPO
  assert any("pip install -e ." in line and "jax[tpu]" in line for line in pkg["dockerfile"])
  # the command, with the overrides, on every host
  [unit] = spec["work_units"]
  cmd = unit["command"]
  assert cmd.startswith("python -m meta_rewarding.main --config=configs/tpu_v4.py --workdir=")
  assert "--config.model.checkpoint=gs://b/Meta-Llama-3-8B-Instruct" in cmd
  assert "--config.train.learning_rate=1e-6" in cmd
  launch_argv = unit["launch"]
  assert launch_argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "mr-v4"]
  assert "--worker=all" in launch_argv and "--project=p" in launch_argv
  assert cmd in launch_argv[-1] and "docker run" in launch_argv[-1]
  # the memory plan for the slice
  assert spec["memory_plan"]["fits"] and spec["memory_plan"]["peak_gib"] < 32


def test_dry_run_gpu_sweep_with_source_packaging():
  out = run_dry("--config=configs/gpu.py", "--sweep", "--packaging=source", "--noplan",
                "--workdir=/mnt/disks/runs")
  assert out.returncode == 0, out.stderr[-3000:]
  spec = json.loads(out.stdout)
  assert spec["platform"] == "gpu" and spec["hosts"] == 1
  assert spec["accelerator"]["type"] == "h100" and spec["accelerator"]["devices"] == 8
  assert spec["accelerator"]["machine_type"] == "a3-highgpu-8g"
  assert spec["packaging"]["kind"] == "source" and "meta_rewarding" in spec["packaging"]["files"]
  units = spec["work_units"]
  assert len(units) == 2
  assert {u["setting"]["config.meta_judge.enabled"] for u in units} == {"True", "False"}
  assert len({u["workdir"] for u in units}) == 2
  for u in units:
    assert u["workdir"].startswith("/mnt/disks/runs/meta_rewarding-gpu/")
    assert u["launch"][:4] == ["gcloud", "compute", "ssh", "YOUR_GPU_VM"]
    assert "pip install" in u["launch"][-1] and u["command"] in u["launch"][-1]
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.95" in u["launch"][-1]
  assert "memory_plan" not in spec


def test_bad_override_is_refused():
  out = run_dry("--config=configs/tpu_v4.py", "--noplan", "--set=train.no_such_field=1")
  assert out.returncode == 1
  assert "no field 'no_such_field'" in out.stderr


# ------------------------------------------------------------------------------------------------
# In-process (build_spec never touches the network either).

def test_build_spec_checks_mesh_against_the_slice():
  with pytest.raises(launch.LaunchError, match="cannot run on v4-8"):
    launch.build_spec(config_spec="configs/tpu_v4.py", accelerator="v4-8", plan_memory=False)
  spec = launch.build_spec(config_spec="configs/tpu_v4.py", accelerator="v4-64",
                           plan_memory=False)
  assert spec["hosts"] == 8 and spec["mesh"] == {"data": 1, "fsdp": 4, "tensor": 8}


def test_unknown_config_file_is_refused_with_the_configs_there_are():
  with pytest.raises(launch.LaunchError, match=r"unknown config 'configs/nope.py'.*tpu_v4"):
    launch.build_spec(config_spec="configs/nope.py", plan_memory=False)


def test_build_spec_refuses_what_cannot_fit():
  with pytest.raises(launch.LaunchError, match="refusing to launch.*sampling.batch_size"):
    launch.build_spec(config_spec="configs/tpu_v4.py", sets=["sampling.batch_size=2048"])


def test_overrides_are_typed_like_the_config():
  spec = launch.build_spec(config_spec="configs/tpu_v4.py:model=llama3_1b", plan_memory=False,
                           sets=["meta_judge.enabled=false", "pipeline.rho=(0.0, 0.1)",
                                 "sampling.batch_size=32"])
  assert spec["experiment"] == "meta_rewarding-tpu_v4-model-llama3_1b"
  assert "--config=configs/tpu_v4.py:model=llama3_1b" in spec["work_units"][0]["command"]
  with pytest.raises(launch.LaunchError, match="expected a bool"):
    launch.build_spec(config_spec="configs/tpu_v4.py", plan_memory=False,
                      sets=["meta_judge.enabled=maybe"])
  with pytest.raises(launch.LaunchError, match="no section"):
    launch.build_spec(config_spec="configs/tpu_v4.py", plan_memory=False, sets=["nope.x=1"])


def test_accelerators():
  a = launch.accelerator_for("tpu_vm", "v4-32")
  assert (a.chips, a.hosts, a.topology) == (16, 4, "2x2x4")
  a = launch.accelerator_for("tpu_vm", "v4-8")
  assert (a.chips, a.hosts) == (4, 1)
  assert launch.accelerator_for("gpu", "h100x8").machine_type == "a3-highgpu-8g"
  for platform, name in (("tpu_vm", "v5e-8"), ("gpu", "h100x3"), ("gpu", "eight")):
    with pytest.raises(launch.LaunchError):
      launch.accelerator_for(platform, name)


def test_hyper():
  s = hyper.product([hyper.sweep("a", [1, 2]), hyper.zipit([hyper.sweep("b", [3, 4]),
                                                            hyper.sweep("c", [5, 6])])])
  assert s == [{"a": 1, "b": 3, "c": 5}, {"a": 1, "b": 4, "c": 6},
               {"a": 2, "b": 3, "c": 5}, {"a": 2, "b": 4, "c": 6}]
  assert hyper.chainit([hyper.fixed("a", 1), hyper.sweep("a", [2])]) == [{"a": 1}, {"a": 2}]
  with pytest.raises(ValueError):
    hyper.zipit([hyper.sweep("a", [1, 2]), hyper.sweep("b", [1])])
  with pytest.raises(ValueError):
    hyper.product([hyper.fixed("a", 1), hyper.fixed("a", 2)])


def test_xm_objects_when_xmanager_is_installed():
  pytest.importorskip("xmanager")
  spec = launch.build_spec(config_spec="configs/tpu_v4.py", plan_memory=False)
  objects = launch.xm_objects(spec)
  assert "tpu_v4" in objects["requirements"] and "2x2x4" in objects["requirements"]
  assert "meta_rewarding.main" in objects["packageable"]
