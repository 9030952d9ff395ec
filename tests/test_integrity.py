"""Nothing silently wrong: the real `python -m meta_rewarding.main` on a finished smoke run whose
files were damaged after the fact (model weights, heldout.json, metrics.json, a finished
iteration's stage file, a lost tokenizer file), on a locked workdir, and with a missing input; plus
the model marker and the workdir lock in-process.

One smoke run is made per session (`finished_run`) and copied for each case, so each case costs
one resume (~20 s), not a run."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from meta_rewarding import artifacts, checkpoints, model_files, workdir_lock

from test_main import REPO, _env, _errors, _main
from test_remote_paths import gcs  # pylint: disable=unused-import  (the fixture)

SMOKE = "--config=configs/local_cpu.py:smoke"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("smoke") / "run")
  out = _main(SMOKE, f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-4000:]
  return workdir


@pytest.fixture
def run_copy(finished_run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished_run, workdir, symlinks=True)
  return workdir


def _resume(workdir, *args):
  return _main(SMOKE, f"--workdir={workdir}", *args)


def _flip_same_size(path, offset=None):
  data = bytearray(open(path, "rb").read())
  offset = len(data) // 2 if offset is None else offset
  data[offset:offset + 4096] = bytes(b ^ 0xFF for b in data[offset:offset + 4096])
  with open(path, "wb") as f:
    f.write(bytes(data))


def _one_error(out) -> str:
  errors = _errors(out)
  assert out.returncode == 1 and len(errors) == 1, (out.returncode, out.stderr[-3000:])
  return errors[0]


# ------------------------------------------------------------------------------------------------
# A finished run, damaged and resumed.

def test_resuming_an_intact_run_changes_nothing(run_copy):
  before = {name: open(os.path.join(run_copy, "iter_1", name), "rb").read()
            for name in ("metrics.json", "judge.jsonl")}
  out = _resume(run_copy)
  assert out.returncode == 0, out.stderr[-3000:]
  for name, data in before.items():
    assert open(os.path.join(run_copy, "iter_1", name), "rb").read() == data
  assert not os.path.exists(os.path.join(run_copy, workdir_lock.LOCK_FILE))  # released


def test_same_size_corruption_of_model_weights_is_refused_by_name(run_copy):
  weights = os.path.join(run_copy, "iter_1", "model", "model.safetensors")
  _flip_same_size(weights)
  # As in the audit: the iteration's results deleted too, so the resume has to rebuild them from
  # the damaged model.
  for name in ("metrics.json", "metrics.json.done.json", "heldout.json", "heldout.json.done.json"):
    os.remove(os.path.join(run_copy, "iter_1", name))
  error = _one_error(_resume(run_copy))
  assert weights in error and "sha256" in error and "Restore it" in error, error


@pytest.mark.parametrize("name", ["iter_0/heldout.json", "iter_1/metrics.json"])
def test_an_edited_result_file_is_refused(run_copy, name):
  path = os.path.join(run_copy, name)
  record = json.load(open(path))
  key = next(k for k, v in record.items() if isinstance(v, float) and 0 < v < 1)
  record[key] = 0.999
  with open(path, "w") as f:
    json.dump(record, f)
  error = _one_error(_resume(run_copy))
  assert error.startswith(f"error: {path}: does not match its completion marker"), error


def test_finished_iteration_damage_default_and_full_verification(run_copy):
  judge = os.path.join(run_copy, "iter_1", "judge.jsonl")
  data = open(judge, "rb").read()
  # Same size, edited in place: only the sha256 of --verify=full sees it.
  with open(judge, "wb") as f:
    f.write(data.replace(b'"uid": 0', b'"uid": 9', 1))
  assert _resume(run_copy).returncode == 0
  error = _one_error(_resume(run_copy, "--verify=full"))
  assert judge in error and "sha256" in error and "metrics.json" in error, error
  # Emptied: the default check (sizes) sees it.
  open(judge, "wb").close()
  error = _one_error(_resume(run_copy))
  assert judge in error and "0 bytes" in error, error


def test_garbage_in_a_finished_models_config_is_refused(run_copy):
  config = os.path.join(run_copy, "iter_1", "model", "config.json")
  with open(config, "w") as f:
    f.write("{garbage")
  error = _one_error(_resume(run_copy))
  assert config in error and "marker" in error, error


def test_a_lost_tokenizer_file_is_restored_from_its_source(run_copy):
  model = os.path.join(run_copy, "iter_1", "model")
  lost = [n for n in ("tokenizer.model", "tokenizer.json") if os.path.exists(os.path.join(model, n))]
  assert lost, os.listdir(model)
  original = open(os.path.join(model, lost[0]), "rb").read()
  os.remove(os.path.join(model, lost[0]))
  out = _resume(run_copy)
  assert out.returncode == 0, out.stderr[-3000:]
  assert open(os.path.join(model, lost[0]), "rb").read() == original
  assert "restored" in out.stderr


# ------------------------------------------------------------------------------------------------
# The workdir lock, through the real command.

_HOLD = textwrap.dedent("""
    import sys, time
    from meta_rewarding import workdir_lock
    with workdir_lock.hold(sys.argv[1]):
      print("held", flush=True)
      time.sleep(120)
""")


def test_a_second_launch_on_a_locked_workdir_is_refused(run_copy):
  holder = subprocess.Popen([sys.executable, "-c", _HOLD, run_copy], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    error = _one_error(_resume(run_copy))
    assert f"PID {holder.pid}" in error and "in use by another run" in error, error
  finally:
    holder.kill()
    holder.wait()


def test_a_lock_left_by_a_killed_run_is_taken_over(run_copy):
  holder = subprocess.Popen([sys.executable, "-c", _HOLD, run_copy], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  holder.kill()  # SIGKILL: the lock file stays, its flock goes with the process
  holder.wait()
  assert os.path.exists(os.path.join(run_copy, workdir_lock.LOCK_FILE))
  out = _resume(run_copy)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"took over the workdir lock of PID {holder.pid}" in out.stderr


# ------------------------------------------------------------------------------------------------
# Problems found before anything is written.

def test_a_missing_prompts_file_writes_nothing_and_the_corrected_rerun_starts(run_copy, tmp_path):
  missing = f"--config.data.prompts={tmp_path}/missing.jsonl"
  fresh = tmp_path / "fresh"
  out = _main(SMOKE, f"--workdir={fresh}", missing)
  errors = _errors(out)
  assert out.returncode == 1 and len(errors) == 1 and "missing.jsonl" in errors[0], out.stderr
  assert not fresh.exists()  # no config.json, no logs/: nothing to refuse the corrected run
  # The same in a workdir that holds a run: its config.json is untouched, and the corrected
  # command resumes it.
  config_json = open(os.path.join(run_copy, "config.json"), "rb").read()
  out = _main(SMOKE, f"--workdir={run_copy}", missing)
  assert out.returncode == 1 and "missing.jsonl" in _errors(out)[0], out.stderr
  assert open(os.path.join(run_copy, "config.json"), "rb").read() == config_json
  out = _resume(run_copy)
  assert out.returncode == 0, out.stderr[-3000:]


# ------------------------------------------------------------------------------------------------
# In-process: the model marker and the lock.

def test_save_hf_writes_a_marker_of_every_file(tmp_path):
  import jax
  from meta_rewarding.model.config import tiny_config
  from meta_rewarding.model.llama import init_params
  config = tiny_config()
  params = init_params(config, jax.random.key(0))
  path = str(tmp_path / "model")
  checkpoints.save_hf(path, config, params, extra_files={"tokenizer.json": "{}"},
                      max_shard_bytes=40_000)
  marker = model_files.read_marker(path)
  on_disk = sorted(n for n in os.listdir(path) if n != model_files.MODEL_MARKER)
  assert sorted(marker) == on_disk and len([n for n in on_disk if n.startswith("model-")]) > 1
  for name, want in marker.items():
    assert want == {"bytes": os.path.getsize(os.path.join(path, name)),
                    "sha256": model_files.file_sha256(os.path.join(path, name))}
  assert model_files.problems(path, full=True) == []
  identity = checkpoints.model_identity(path)
  shard = os.path.join(path, next(n for n in on_disk if n.startswith("model-")))
  _flip_same_size(shard, offset=os.path.getsize(shard) - 64)
  assert model_files.problems(path, full=False) == []  # same size: only the sha256 sees it
  (problem,) = model_files.problems(path, full=True)
  assert problem.startswith(f"{shard}: sha256")
  with pytest.raises(model_files.ModelDirError, match="the model was changed after it was saved"):
    checkpoints.load_hf(path)
  assert checkpoints.model_identity(path) == identity  # the marker's identity: what was saved


def test_model_identity_without_a_marker_follows_the_files(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  first = checkpoints.model_identity(str(tmp_path))
  assert first == checkpoints.model_identity(str(tmp_path))
  (tmp_path / "config.json").write_text('{"a": 1}')
  assert checkpoints.model_identity(str(tmp_path)) != first


def test_the_lock_refuses_a_second_holder_and_is_released(tmp_path):
  first = workdir_lock.WorkdirLock(str(tmp_path))
  assert first.acquire() is None
  with pytest.raises(workdir_lock.WorkdirLockedError, match=f"PID {os.getpid()} on "):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  first.release()
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()
  second = workdir_lock.WorkdirLock(str(tmp_path))
  assert second.acquire() is None
  second.release()


def test_hold_is_reentrant_within_a_process(tmp_path):
  with workdir_lock.hold(str(tmp_path)):
    with workdir_lock.hold(str(tmp_path)):
      pass
    assert (tmp_path / workdir_lock.LOCK_FILE).exists()  # the inner hold did not release it
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()


def test_a_remote_lock_is_taken_over_only_when_its_heartbeat_is_stale(gcs, monkeypatch):
  del gcs  # gs:// paths live in a local directory
  monkeypatch.setattr(workdir_lock, "_READ_BACK_SECONDS", 0.0)
  now = [1000.0]
  clock = lambda: now[0]
  workdir = "gs://bucket/run"
  first = workdir_lock.WorkdirLock(workdir, clock=clock, heartbeat_seconds=3600)
  assert first.acquire() is None
  now[0] += 60
  with pytest.raises(workdir_lock.WorkdirLockedError, match="heartbeat is 60 s old"):
    workdir_lock.WorkdirLock(workdir, clock=clock).acquire()
  now[0] += workdir_lock.STALE_SECONDS
  second = workdir_lock.WorkdirLock(workdir, clock=clock, heartbeat_seconds=3600)
  message = second.acquire()
  assert message.startswith(f"took over the workdir lock of PID {os.getpid()}")
  first.release()  # no longer its lock: left in place
  assert artifacts.exists(artifacts.join(workdir, workdir_lock.LOCK_FILE))
  second.release()
  assert not artifacts.exists(artifacts.join(workdir, workdir_lock.LOCK_FILE))
