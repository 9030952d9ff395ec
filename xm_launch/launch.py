r"""Launches meta_rewarding on every host of a Cloud TPU VM slice (or on one GPU node) with XManager.

  # What would run, without credentials or network (prints the job specification as JSON):
  python xm_launch/launch.py --config=configs/tpu_v4.py --dry_run

  # A TPU v4-32 slice you created (`gcloud compute tpus tpu-vm create mr --zone=us-central2-b
  #   --accelerator-type=v4-32 --version=tpu-ubuntu2204-base`):
  python xm_launch/launch.py --config=configs/tpu_v4.py --tpu=mr --zone=us-central2-b \
      --project=my-project --workdir=gs://my-bucket/mr \
      --image=us-docker.pkg.dev/my-project/mr/meta_rewarding:latest \
      --set=model.checkpoint=gs://my-bucket/models/Meta-Llama-3-8B-Instruct \
      --set=data.prompts=gs://my-bucket/data/prompts.jsonl [--sweep]

  # One a3-highgpu-8g VM (8 x H100):
  python xm_launch/launch.py --config=configs/gpu.py --platform=gpu --vm=mr-gpu --zone=... ...

What it does:
  * packaging: `--packaging=image` (default) builds the project into a Docker image with
    `xm.python_container` (this directory, `pip install -e .` plus `jax[tpu]` or `jax[cuda12]`)
    and pushes it to `--image`; `--packaging=source` instead copies a tarball of the project to
    every host (`gcloud ... scp --worker=all`) and pip-installs it there (no Docker, no registry).
  * the job: `python -m meta_rewarding.main --config=<file>[:<arg>] --workdir=<dir> --config.k=v`
    on every host at once (`gcloud compute tpus tpu-vm ssh --worker=all`; JAX's multi-host
    runtime then finds the other hosts by itself), or on the GPU VM (`gcloud compute ssh`).
  * config overrides: `--set=key=value` (repeatable) become `--config.key=value`; each is checked
    against the config first. `--sweep` adds one work unit per setting of the config file's
    `get_hyper(h)` (`xm_launch.hyper`), each with its own workdir `<workdir>/<name>/<id>`.
  * names the XManager experiment (`--name`, default meta_rewarding-<config>[-<arg>]); each work
    unit is an XManager job (the local executor runs the gcloud command and streams its output).
  * plans memory first (meta_rewarding.plan on the slice's device count) and refuses a config
    that cannot fit (`--noplan` skips it).

Why gcloud under XManager: open-source XManager's Vertex executor knows TPU v2/v3 nodes only and
its Kubernetes executor sets no multi-host TPU topology, so TPU VM slices (and plain GPU VMs) are
reached over `gcloud ... ssh`, while XManager keeps the experiment, its work units, the sweep and
the image build.

`--dry_run` needs neither xmanager nor gcloud nor credentials; when xmanager is importable it also
builds (without packaging) the XManager objects and prints them.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shlex
import sys
from typing import Any, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # `python xm_launch/launch.py` from anywhere
  sys.path.insert(0, REPO_ROOT)

from absl import app, flags  # noqa: E402

import configs  # noqa: E402
from xm_launch import hyper  # noqa: E402

# Cloud TPU v4: the type counts TensorCores (2 per chip); 4 chips per VM host.
TPU_V4_TOPOLOGIES = {"v4-8": "2x2x1", "v4-16": "2x2x2", "v4-32": "2x2x4", "v4-64": "2x4x4",
                     "v4-128": "4x4x4", "v4-256": "4x4x8", "v4-512": "4x8x8", "v4-1024": "8x8x8",
                     "v4-2048": "8x8x16", "v4-4096": "8x16x16"}
TPU_V4_CHIPS_PER_HOST = 4
GPU_MACHINES = {("h100", 8): "a3-highgpu-8g", ("a100", 8): "a2-highgpu-8g",
                ("h200", 8): "a3-ultragpu-8g"}


class LaunchError(ValueError):
  """A launch that cannot be specified as asked; the message says why."""


@dataclasses.dataclass
class Accelerator:
  kind: str                 # "tpu_v4" | "h100" | ...
  name: str                 # "v4-32" | "h100x8"
  chips: int                # devices in the job
  hosts: int
  devices_per_host: int
  topology: str             # TPU topology ("2x2x4") or GPU count ("8")
  machine_type: str         # GCE / TPU type

  def xm_requirements(self) -> str:
    return f"xm.JobRequirements({self.kind}={self.topology!r})"


def accelerator_for(platform: str, name: str) -> Accelerator:
  if platform == "tpu_vm":
    if name not in TPU_V4_TOPOLOGIES:
      raise LaunchError(f"unknown TPU slice {name!r}; this launcher knows v4 slices: "
                        f"{', '.join(TPU_V4_TOPOLOGIES)}")
    chips = int(name.split("-")[1]) // 2
    return Accelerator("tpu_v4", name, chips, max(1, chips // TPU_V4_CHIPS_PER_HOST),
                       min(chips, TPU_V4_CHIPS_PER_HOST), TPU_V4_TOPOLOGIES[name], name)
  m = re.fullmatch(r"([a-z0-9]+)x(\d+)", name)
  if not m:
    raise LaunchError(f"--accelerator={name!r}: expected <gpu>x<count>, e.g. h100x8")
  kind, count = m.group(1), int(m.group(2))
  machine = GPU_MACHINES.get((kind, count))
  if machine is None:
    raise LaunchError(f"no single-node machine type for {count} x {kind}; known: "
                      f"{sorted(f'{k}x{n}' for k, n in GPU_MACHINES)}")
  return Accelerator(kind, name, count, 1, count, str(count), machine)


# ------------------------------------------------------------------------------------------------
# The config file: loaded to check overrides, read get_hyper and plan memory.

def split_config_arg(spec: str) -> tuple[str, str | None]:
  path, sep, arg = spec.partition(":")
  return path, (arg if sep else None)


def load_config_module(config_spec: str):
  """The config module of `--config=configs/<file>.py[:<arg>]` (`configs.module`; its config is
  `configs.load(config_spec)`, what main's --config gives on the host)."""
  try:
    return configs.module(config_spec)
  except configs.UnknownConfigError as e:
    raise LaunchError(str(e)) from None


def _parse_value(current: Any, text: str) -> Any:
  """`text` as the type of `current` (what config_flags will do on the host)."""
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise LaunchError(f"expected a bool, got {text!r}")
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  if isinstance(current, (tuple, list)):
    value = ast.literal_eval(text)
    if not isinstance(value, (tuple, list)):
      raise LaunchError(f"expected a tuple, got {text!r}")
    return tuple(value)
  return text


def apply_override(config, key: str, value: Any) -> None:
  """Sets `key` (a.b.c, optionally prefixed `config.`) in `config`, checking it exists."""
  key = key[len("config."):] if key.startswith("config.") else key
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    if p not in node:
      raise LaunchError(f"override {key!r}: the config has no section {p!r}")
    node = node[p]
  if leaf not in node:
    raise LaunchError(f"override {key!r}: the config has no field {leaf!r} "
                      f"(fields here: {', '.join(sorted(node.keys()))})")
  if isinstance(value, str):
    value = _parse_value(node[leaf], value)
  with node.unlocked() if hasattr(node, "unlocked") else _null():
    node[leaf] = value


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


def flag_value(value: Any) -> str:
  """How a value is written after --config.key= (config_flags parses it back)."""
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  return str(value)


# ------------------------------------------------------------------------------------------------
# The specification.

def default_name(config_spec: str) -> str:
  path, arg = split_config_arg(config_spec)
  stem = os.path.splitext(os.path.basename(path))[0]
  name = f"meta_rewarding-{stem}" + (f"-{arg}" if arg else "")
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-").lower()


def main_command(config_spec: str, workdir: str, overrides: Sequence[tuple[str, str]]) -> list[str]:
  """argv of the job on each host."""
  cmd = ["python", "-m", "meta_rewarding.main", f"--config={config_spec}", f"--workdir={workdir}"]
  cmd += [f"--config.{k}={v}" for k, v in overrides]
  return cmd


def _dockerfile(platform: str) -> list[str]:
  jax_extra = "jax[tpu]" if platform == "tpu_vm" else "jax[cuda12]"
  dirname = os.path.basename(REPO_ROOT)
  return ["ENV LANG=C.UTF-8",
          "RUN python -m pip install --upgrade pip",
          # xm copies the project directory into the build context under its own name.
          f"COPY --chown=1000:root {dirname}/ /workdir/meta_rewarding",
          "WORKDIR /workdir/meta_rewarding",
          f"RUN python -m pip install -e . '{jax_extra}'"]


SOURCE_FILES = ("setup.py", "README.md", "meta_rewarding", "configs", "xm_launch")


def build_spec(*, config_spec: str, platform: str | None = None, accelerator: str | None = None,
               name: str | None = None, workdir: str = "gs://YOUR_BUCKET/meta_rewarding",
               sets: Sequence[str] = (), sweep: bool = False, packaging: str = "image",
               image: str = "us-docker.pkg.dev/YOUR_PROJECT/meta-rewarding/meta_rewarding:latest",
               base_image: str = "python:3.11-slim", mounts: Sequence[str] = (),
               tpu: str = "YOUR_TPU_NAME", vm: str = "YOUR_GPU_VM", zone: str | None = None,
               project: str = "YOUR_PROJECT", plan_memory: bool = True) -> dict:
  """The full job specification as plain data (what `--dry_run` prints)."""
  path, _ = split_config_arg(config_spec)
  module = load_config_module(config_spec)
  if platform is None:
    platform = "gpu" if os.path.basename(path).startswith("gpu") else "tpu_vm"
  if accelerator is None:
    accelerator = (getattr(module, "SLICE", "v4-32") if platform == "tpu_vm"
                   else f"h100x{getattr(module, 'NUM_GPUS', 8)}")
  acc = accelerator_for(platform, accelerator)
  zone = zone or ("us-central2-b" if platform == "tpu_vm" else "us-central1-a")
  config = configs.load(config_spec)
  name = name or default_name(config_spec)

  # Overrides: checked against the config (type and existence) before anything is launched.
  fixed = []
  for item in sets:
    key, sep, value = item.partition("=")
    if not sep:
      raise LaunchError(f"--set={item!r}: expected key=value")
    key = key.strip()
    key = key[len("config."):] if key.startswith("config.") else key
    apply_override(config, key, value)
    fixed.append((key, value))
  settings = [{}]
  if sweep:
    if not hasattr(module, "get_hyper"):
      raise LaunchError(f"{path} defines no get_hyper(h); drop --sweep or add one")
    settings = module.get_hyper(hyper) or [{}]

  from meta_rewarding import sharding
  try:
    mesh = sharding.resolve_mesh_shape(dict(config.mesh.shape), acc.chips)
  except sharding.MeshError as e:
    raise LaunchError(f"{config_spec} cannot run on {acc.name} ({acc.chips} devices): {e}") from e

  work_units = []
  for wid, setting in enumerate(settings, start=1):
    unit_config = config.copy_and_resolve_references()
    overrides = list(fixed)
    for key, value in setting.items():
      key = key[len("config."):] if key.startswith("config.") else key
      apply_override(unit_config, key, value)
      overrides.append((key, flag_value(value)))
    unit_workdir = f"{workdir.rstrip('/')}/{name}" + (f"/{wid}" if len(settings) > 1 else "")
    argv = main_command(config_spec, unit_workdir, overrides)
    work_units.append({"id": wid, "overrides": dict(overrides), "setting": {
        k: flag_value(v) for k, v in setting.items()}, "workdir": unit_workdir,
        "command": shlex.join(argv),
        "launch": _launch_command(platform, packaging, image, name, tpu, vm, zone, project, argv,
                                  _mounts(mounts, workdir))})

  spec = {
      "experiment": name,
      "config": config_spec,
      "platform": platform,
      "accelerator": {"type": acc.kind, "name": acc.name, "devices": acc.chips,
                      "topology": acc.topology, "machine_type": acc.machine_type,
                      "xm_requirements": acc.xm_requirements()},
      "hosts": acc.hosts,
      "processes_per_host": 1,
      "devices_per_host": acc.devices_per_host,
      "mesh": mesh,
      "multi_host": bool(config.mesh.distributed),
      "packaging": _packaging(platform, packaging, image, base_image, name),
      "target": ({"tpu": tpu, "zone": zone, "project": project} if platform == "tpu_vm"
                 else {"vm": vm, "zone": zone, "project": project}),
      "env": _env(platform),
      "work_units": work_units,
  }
  if acc.hosts > 1 and not config.mesh.distributed:
    raise LaunchError(f"{acc.name} has {acc.hosts} hosts but the config has "
                      "mesh.distributed=False; set it (--set=mesh.distributed=True)")
  if plan_memory:
    from meta_rewarding import plan as plan_lib
    p = plan_lib.plan(config, acc.chips)
    spec["memory_plan"] = {"peak_gib": round(p.total / plan_lib.GiB, 2),
                           "usable_gib": None if p.usable is None else round(
                               p.usable / plan_lib.GiB, 2),
                           "fits": p.fits(), "table": p.table().splitlines()}
    if not p.fits():
      raise LaunchError("refusing to launch: " + p.refusal())
  return spec


def _env(platform: str) -> dict[str, str]:
  if platform == "gpu":
    return {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95", "TOKENIZERS_PARALLELISM": "false"}
  return {"TOKENIZERS_PARALLELISM": "false"}


def _packaging(platform: str, packaging: str, image: str, base_image: str, name: str) -> dict:
  if packaging == "image":
    return {"kind": "image", "image": image, "base_image": base_image,
            "context": REPO_ROOT, "dockerfile": _dockerfile(platform),
            "xm": (f"xm.python_container(executor_spec=xm_local.Vertex.Spec(push_image_tag="
                   f"{image!r}), path={REPO_ROOT!r}, base_image={base_image!r}, "
                   "entrypoint=xm.ModuleName('meta_rewarding.main'), docker_instructions=[...])")}
  jax_extra = "jax[tpu]" if platform == "tpu_vm" else "jax[cuda12]"
  return {"kind": "source", "archive": f"/tmp/{name}.tar.gz", "files": list(SOURCE_FILES),
          "install": f"pip install -e . '{jax_extra}'"}


def _remote_script(platform: str, packaging: str, image: str, name: str, argv: list[str],
                   mounts: Sequence[str] = ()) -> str:
  env = _env(platform)
  if packaging == "image":
    registry = image.split("/", 1)[0]
    env_flags = " ".join(f"-e {k}={shlex.quote(v)}" for k, v in env.items())
    volumes = "".join(f" -v {shlex.quote(m)}:{shlex.quote(m)}" for m in mounts)
    devices = "--privileged" if platform == "tpu_vm" else "--gpus=all --ipc=host --shm-size=16g"
    return (f"set -e; sudo gcloud auth configure-docker {registry} --quiet; "
            f"sudo docker run --rm --net=host {devices}{volumes} {env_flags} "
            f"{shlex.quote(image)} {shlex.join(argv)}")
  exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
  jax_extra = "jax[tpu]" if platform == "tpu_vm" else "jax[cuda12]"
  return (f"set -e; mkdir -p ~/{name} && tar xzf ~/{name}.tar.gz -C ~/{name} && cd ~/{name} && "
          f"python3 -m pip install -q -e . '{jax_extra}' && env {exports} {shlex.join(argv)}")


def _mounts(mounts: Sequence[str], workdir: str) -> list[str]:
  out = list(mounts)
  if "://" not in workdir:
    out.append(workdir.rstrip("/") or "/")
  return out


def _launch_command(platform, packaging, image, name, tpu, vm, zone, project, argv,
                    mounts) -> list[str]:
  """The gcloud argv that starts `argv` on every host."""
  script = _remote_script(platform, packaging, image, name, argv, mounts)
  where = [f"--zone={zone}", f"--project={project}"]
  if platform == "tpu_vm":
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, *where, "--worker=all",
            f"--command={script}"]
  return ["gcloud", "compute", "ssh", vm, *where, f"--command={script}"]


def _copy_command(spec: dict) -> list[str]:
  p, t = spec["packaging"], spec["target"]
  where = [f"--zone={t['zone']}", f"--project={t['project']}"]
  if spec["platform"] == "tpu_vm":
    return ["gcloud", "compute", "tpus", "tpu-vm", "scp", p["archive"], f"{t['tpu']}:~/",
            *where, "--worker=all"]
  return ["gcloud", "compute", "scp", p["archive"], f"{t['vm']}:~/", *where]


def xm_objects(spec: dict) -> dict[str, str] | None:
  """The XManager objects of `spec`, built but not packaged (None when xmanager is missing)."""
  try:
    from xmanager import xm
  except ImportError:
    return None
  acc = spec["accelerator"]
  requirements = xm.JobRequirements(**{acc["type"]: acc["topology"]})
  out = {"requirements": repr(requirements)}
  if spec["packaging"]["kind"] == "image":
    try:
      from xmanager import xm_local
      executor_spec = xm_local.Vertex.Spec(push_image_tag=spec["packaging"]["image"])
    except ImportError:  # xm core without the local backend's dependencies
      executor_spec = xm.ExecutorSpec()
    packageable = xm.python_container(
        executor_spec=executor_spec, path=REPO_ROOT, base_image=spec["packaging"]["base_image"],
        docker_instructions=spec["packaging"]["dockerfile"],
        entrypoint=xm.ModuleName("meta_rewarding.main"))
    out["packageable"] = repr(packageable.executable_spec)
  return out


def _define_flags():
  """Command-line flags, defined only when this file runs as a script: importing the module (for
  `build_spec`) then never clashes with other absl flags such as meta_rewarding.main's --config."""
  d = flags
  d.DEFINE_string("config", "configs/tpu_v4.py",
                  "Config file, relative to the repository, with an optional :arg.")
  d.DEFINE_enum("platform", None, ["tpu_vm", "gpu"],
                "Where to run (default: gpu for configs/gpu*.py, else tpu_vm).")
  d.DEFINE_string("accelerator", None, "TPU slice type (v4-8, v4-16, v4-32, ...; default: the "
                  "config's SLICE) or <gpu>x<count> for --platform=gpu (default h100x8).")
  d.DEFINE_string("name", None, "Experiment name (default meta_rewarding-<config>[-<arg>]).")
  d.DEFINE_string("workdir", "gs://YOUR_BUCKET/meta_rewarding",
                  "Root workdir; each work unit uses <workdir>/<name>[/<id>].")
  d.DEFINE_multi_string("set", [], "Config override key=value (passed as --config.key=value).")
  d.DEFINE_bool("sweep", False, "One work unit per setting of the config's get_hyper(h).")
  d.DEFINE_enum("packaging", "image", ["image", "source"],
                "A Docker image built by XManager, or a source tarball installed on each host.")
  d.DEFINE_string("image", "us-docker.pkg.dev/YOUR_PROJECT/meta-rewarding/meta_rewarding:latest",
                  "Image tag to build, push and run (--packaging=image).")
  d.DEFINE_string("base_image", "python:3.11-slim", "Base image of the build.")
  d.DEFINE_multi_string("mount", [], "Host directories mounted into the container at the same "
                        "path (a local --workdir is mounted automatically).")
  d.DEFINE_string("tpu", "YOUR_TPU_NAME", "TPU VM name (--platform=tpu_vm).")
  d.DEFINE_string("vm", "YOUR_GPU_VM", "GCE VM name (--platform=gpu).")
  d.DEFINE_string("zone", None, "Zone (default us-central2-b for TPU v4, us-central1-a for GPU).")
  d.DEFINE_string("project", "YOUR_PROJECT", "Google Cloud project.")
  d.DEFINE_bool("plan", True, "Plan memory on the target devices; refuse a config that cannot fit.")
  d.DEFINE_bool("dry_run", False, "Print the job specification (JSON) and exit: no credentials, "
                "no network.")


# ------------------------------------------------------------------------------------------------
# Launching (needs xmanager with its local backend, gcloud and credentials).

def _make_archive(path: str):
  import tarfile
  with tarfile.open(path, "w:gz") as tar:
    for name in SOURCE_FILES:
      full = os.path.join(REPO_ROOT, name)
      if os.path.exists(full):
        tar.add(full, arcname=name, filter=lambda t: None if (
            "__pycache__" in t.name or t.name.endswith(".pyc")) else t)


def launch(spec: dict):
  import shutil
  import subprocess
  from xmanager import xm, xm_local
  gcloud = shutil.which("gcloud")
  if gcloud is None:
    raise LaunchError("gcloud is not on PATH (https://cloud.google.com/sdk/docs/install)")
  with xm_local.create_experiment(experiment_title=spec["experiment"]) as experiment:
    if spec["packaging"]["kind"] == "image":
      p = spec["packaging"]
      experiment.package([xm.python_container(
          executor_spec=xm_local.Vertex.Spec(push_image_tag=p["image"]), path=REPO_ROOT,
          base_image=p["base_image"], docker_instructions=p["dockerfile"],
          entrypoint=xm.ModuleName("meta_rewarding.main"))])  # builds and pushes the image
    else:
      _make_archive(spec["packaging"]["archive"])
      subprocess.run(_copy_command(spec), check=True)
    [runner] = experiment.package([xm.binary(executor_spec=xm_local.Local.Spec(), path=gcloud)])
    for unit in spec["work_units"]:
      experiment.add(xm.Job(executable=runner, executor=xm_local.Local(),
                            args=unit["launch"][1:], name=f"{spec['experiment']}-{unit['id']}"))
    print(f"experiment {spec['experiment']} (id {experiment.experiment_id}): "
          f"{len(spec['work_units'])} work unit(s) on {spec['accelerator']['name']}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; config overrides go in --set=key=value")
  f = flags.FLAGS
  try:
    spec = build_spec(
        config_spec=f.config, platform=f.platform, accelerator=f.accelerator, name=f.name,
        workdir=f.workdir, sets=f.set, sweep=f.sweep, packaging=f.packaging, image=f.image,
        base_image=f.base_image, mounts=f.mount, tpu=f.tpu, vm=f.vm, zone=f.zone,
        project=f.project, plan_memory=f.plan)
  except LaunchError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if f.dry_run:
    objects = xm_objects(spec)
    if objects is not None:
      spec["xm"] = objects
    print(json.dumps(spec, indent=2))
    return
  launch(spec)


if __name__ == "__main__":
  _define_flags()
  try:  # XManager's own flags (--xm_build_image_locally, ...) when it is installed
    import xmanager.xm_flags  # noqa: F401
  except ImportError:
    pass
  app.run(main)
