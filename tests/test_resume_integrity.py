"""Resume never uses a damaged workdir (issue 14): completion markers on stage files and chunks,
model directories complete only with config.json and weights, chunk_size changes re-chunk without
duplicates, SIGTERM / SIGINT stop cleanly (one line, exit 143 / 130, no temp files), leftovers of a
killed run are swept, and timings live outside the artifacts."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from meta_rewarding import artifacts, chunk_store, pipeline
from meta_rewarding import model_files
from meta_rewarding.recipe_types import PipelineError
from meta_rewarding import policy as policy_lib
from test_pipeline import POOL, ScriptedPolicy, make_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
STAGES = ("prompts", "actor", "judge", "actor_pairs", "meta_judge", "judge_pairs", "dpo")
TIMING_FILES = ("timings.jsonl", "timings.json")


def _kill_during_judging(workdir, config, calls=3):
  """A run stopped after `calls` judge prompts (the first judge chunk of 3 is finished)."""
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(config, str(workdir), ScriptedPolicy(fail_after_judge_calls=calls), POOL)


def _results(workdir):
  """Every result file (relative path -> bytes): all but timings, TensorBoard events and plots."""
  out = {}
  for directory, dirs, names in os.walk(workdir):
    dirs[:] = [d for d in dirs if d not in ("tensorboard", "plots")]
    for name in names:
      if name not in TIMING_FILES:
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
          out[os.path.relpath(path, workdir)] = f.read()
  return out


def _leftovers(root):
  return [os.path.join(d, n) for d, dirs, names in os.walk(root) for n in names + dirs
          if n.endswith(".tmp") or ".tmp-" in n or artifacts.is_temp_name(n, n in dirs)]


# ------------------------------------------------------------------------------------------------
# Completion markers.

def test_every_stage_file_has_a_marker_with_count_and_checksum(tmp_path):
  pipeline.run(make_config(), str(tmp_path), ScriptedPolicy(), POOL)
  for name in STAGES:
    path = tmp_path / "iter_1" / f"{name}.jsonl"
    marker = json.loads((tmp_path / "iter_1" / f"{name}.jsonl.done.json").read_text())
    data = path.read_bytes()
    assert marker["records"] == len(data.splitlines()) and marker["bytes"] == len(data), name
    assert artifacts.check_jsonl_marked(path)[0] == "complete"
  assert not (tmp_path / "iter_1" / "judge.jsonl.chunks").exists()  # merged and removed


@pytest.mark.parametrize("damage", ["cut_at_a_line", "emptied", "edited"])
@pytest.mark.parametrize("name", ["actor.jsonl", "judge.jsonl.chunks/000000-000003.jsonl"])
def test_a_file_that_disagrees_with_its_marker_is_refused(tmp_path, damage, name):
  config = make_config()
  _kill_during_judging(tmp_path, config)
  path = tmp_path / "iter_1" / name
  data = path.read_bytes()
  lines = data.splitlines(keepends=True)
  path.write_bytes({"cut_at_a_line": b"".join(lines[:-1]), "emptied": b"",
                    "edited": data.replace(b'"uid": 0', b'"uid": 9', 1)}[damage])
  assert path.read_bytes() != data
  policy = ScriptedPolicy()
  with pytest.raises(PipelineError) as e:
    pipeline.run(config, str(tmp_path), policy, POOL)
  message = str(e.value)
  assert message.startswith(f"{path}: ") and "completion marker" in message, message
  assert "Delete it to have it made again" in message and "restore" in message
  assert policy.judge_calls == 0 and policy.trained == []  # nothing was built on it


def test_deleted_or_unmarked_files_are_made_again(tmp_path):
  config = make_config(num_iterations=2)
  pipeline.run(config, str(tmp_path / "clean"), ScriptedPolicy(), POOL)
  run = tmp_path / "killed"
  _kill_during_judging(run, config)
  os.remove(run / "iter_1" / "actor.jsonl")  # deleted (its marker is now stale): redone
  os.remove(run / "iter_1" / "prompts.jsonl.done.json")  # no marker (stopped before it): redone
  # A chunk written before markers existed (old name, no marker) is not used either.
  (run / "iter_1" / "judge.jsonl.chunks" / "00000.jsonl").write_text('{"stale": 1}\n')
  pipeline.run(config, str(run), ScriptedPolicy(), POOL)
  assert _results(run) == _results(tmp_path / "clean")


def test_chunks_left_by_a_kill_between_merge_and_removal_are_removed(tmp_path):
  config = make_config()
  pipeline.run(config, str(tmp_path / "clean"), ScriptedPolicy(), POOL)
  run = tmp_path / "killed"
  pipeline.run(config, str(run), ScriptedPolicy(), POOL)
  # judge.jsonl merged and marked, its chunk directory not yet removed, the iteration unfinished.
  os.remove(run / "iter_1" / "metrics.json.done.json")
  chunks = run / "iter_1" / "judge.jsonl.chunks"
  chunks.mkdir()
  (chunks / "000000-000003.jsonl").write_text('{"left": 1}\n')
  policy = ScriptedPolicy()
  pipeline.run(config, str(run), policy, POOL)
  assert not chunks.exists() and policy.judge_calls == 0
  assert _results(run) == _results(tmp_path / "clean")


# ------------------------------------------------------------------------------------------------
# Model directories.

class HFLikePolicy(ScriptedPolicy):
  """Saves what a real model directory holds (config.json, weights) and says when one is complete,
  as JaxPolicy does."""

  def save(self, path):
    tmp = path + ".tmp-abcdefgh"
    os.makedirs(tmp)
    for name, content in (("model.safetensors", "weights"), ("version.json",
                                                              json.dumps({"version": self.version})),
                          ("config.json", "{}")):
      with open(os.path.join(tmp, name), "w") as f:
        f.write(content)
    os.replace(tmp, path)

  def missing_model_files(self, path):
    return model_files.missing_files(path)

  def load(self, path):
    assert not self.missing_model_files(path), path
    super().load(path)


def test_model_dir_without_config_json_is_trained_again_never_loaded(tmp_path):
  config = make_config(num_iterations=2)
  first = pipeline.run(config, str(tmp_path), HFLikePolicy(), POOL)
  before = _results(tmp_path)
  os.remove(tmp_path / "iter_1" / "model" / "config.json")
  policy = HFLikePolicy()
  assert pipeline.run(config, str(tmp_path), policy, POOL) == first
  assert len(policy.trained) == 1 and policy.version == 2  # iteration 1's DPO again, 2 loaded
  assert _results(tmp_path) == before  # config.json is back; everything else unchanged


def test_missing_model_files():
  check = model_files.missing_files
  with pytest.MonkeyPatch.context() as mp:
    files = set()
    mp.setattr(artifacts, "exists", lambda p: p in files or any(f.startswith(p + "/") for f in files))
    mp.setattr(artifacts, "isdir", lambda p: any(f.startswith(p + "/") for f in files))
    mp.setattr(artifacts, "read_json", lambda p: {"weight_map": {"a": "s1.safetensors",
                                                                  "b": "s2.safetensors"}})
    assert check("m") == ["the directory"]
    files |= {"m/model.safetensors"}
    assert check("m") == ["config.json"]
    files |= {"m/config.json"}
    assert check("m") == []
    files = {"m/config.json", "m/model.safetensors.index.json", "m/s1.safetensors"}
    assert check("m") == ["s2.safetensors"]
    files |= {"m/s2.safetensors"}
    assert check("m") == []
    files = {"m/config.json", "m/tokenizer.model"}
    assert check("m")[0].startswith("model.safetensors")


def test_jax_policy_refuses_to_load_an_incomplete_model_dir(tmp_path):
  (tmp_path / "model").mkdir()
  (tmp_path / "model" / "model.safetensors").write_bytes(b"")
  policy = object.__new__(policy_lib.JaxPolicy)
  with pytest.raises(PipelineError, match=r"model: incomplete model directory \(missing "
                                          r"config.json\)"):
    policy.load(str(tmp_path / "model"))


# ------------------------------------------------------------------------------------------------
# chunk_size changes.

@pytest.mark.parametrize("first,second,calls", [(1, 2, 3), (1, 2, 6), (2, 1, 6), (1, 3, 3)])
def test_changed_chunk_size_on_resume_has_no_duplicates(tmp_path, monkeypatch, first, second,
                                                        calls):
  """Stopped with one chunk_size, resumed with another (as allow_config_change allows): the records
  are exactly those of an uninterrupted run, and the finished chunks are not judged again."""
  import test_pipeline
  monkeypatch.setitem(test_pipeline.RESPONSES, "P3", ["y", "x"])
  monkeypatch.setitem(test_pipeline.RESPONSES, "P4", ["short good", "y"])
  pool = ["P1", "P2", "P3", "P4"]  # 3 + 2 + 2 + 2 = 9 responses to judge
  config = lambda cs: make_config(num_iterations=2, prompts_per_iteration=4, chunk_size=cs)
  pipeline.run(config(first), str(tmp_path / "clean"), ScriptedPolicy(), pool)
  run = tmp_path / "killed"
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(config(first), str(run), ScriptedPolicy(fail_after_judge_calls=calls), pool)
  chunks = sorted(n for n in os.listdir(run / "iter_1" / "judge.jsonl.chunks")
                  if n.endswith(".jsonl"))
  assert chunks and int(chunks[-1].split("-")[1][:6]) == calls  # chunks of 3·first finished
  resumed = ScriptedPolicy()
  pipeline.run(config(second), str(run), resumed, pool)
  assert resumed.judge_calls == 9 - calls + 9  # iteration 1's rest, then iteration 2
  assert _results(run) == _results(tmp_path / "clean")
  judged = artifacts.read_jsonl(str(run / "iter_1" / "judge.jsonl"))
  keys = [(j["uid"], j["response_index"]) for j in judged]
  assert len(keys) == len(set(keys)) == 9


def test_rechunking_covers_every_item_once():
  calls = []

  def run_chunk(chunk, c):
    calls.append((chunk[0], chunk[-1] + 1, c))
    if len(calls) > limit:
      raise KeyboardInterrupt
    return [{"item": i} for i in chunk]

  items = list(range(10))
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "stage.jsonl")
    limit = 2
    with pytest.raises(KeyboardInterrupt):
      chunk_store.run_chunked(path, items, 3, run_chunk)  # [0, 3) and [3, 6) finished
    os.remove(os.path.join(path + ".chunks", "000000-000003.jsonl"))  # deleted by hand: redone
    calls.clear()
    limit = 99
    records = chunk_store.run_chunked(path, items, 4, run_chunk)
    assert [r["item"] for r in records] == items
    # [0, 3) is cut short where the finished [3, 6) starts; then chunks of 4 from 6.
    assert calls == [(0, 3, 0), (6, 10, 1)]
    assert not os.path.exists(path + ".chunks")


# ------------------------------------------------------------------------------------------------
# Preemption.

SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    # A child of a non-interactive shell may inherit SIGINT ignored; a terminal's Ctrl-C is not.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r})
    from test_pipeline import POOL, ScriptedPolicy, make_config
    from meta_rewarding import main as cli, pipeline

    class Stalls(ScriptedPolicy):
      '''Judges the first chunk, then waits in the second one for the signal.'''

      def generate(self, batch, **kw):
        if batch and "<response>" in batch[0] and self.judge_calls >= 3:
          open(sys.argv[2], "w").close()
          while True:
            time.sleep(0.05)
        return super().generate(batch, **kw)

    cli.run_interruptible(lambda: pipeline.run(make_config(num_iterations=2), sys.argv[1],
                                               Stalls(), POOL))
    """)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_judging_stops_cleanly_and_resumes_byte_identical(tmp_path, signum, code):
  script = tmp_path / "stalls.py"
  script.write_text(SCRIPT.format(tests=TESTS))
  run, flag = tmp_path / "run", tmp_path / "judging"
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if not f.startswith("--xla_force_host_platform_device_count"))
  proc = subprocess.Popen(
      [sys.executable, str(script), str(run), str(flag)], cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 180
    while not flag.exists() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.1)
    assert flag.exists(), proc.communicate(timeout=30)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == code, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  assert stderr.splitlines()[-1] == (
      "interrupted at iteration 1, stage judge; rerun the same command to resume"), stderr
  assert not _leftovers(run)
  assert sorted(os.listdir(run / "iter_1" / "judge.jsonl.chunks")) == [
      "000000-000003.jsonl", "000000-000003.jsonl.done.json"]  # the stopped chunk is abandoned
  resumed = ScriptedPolicy()
  pipeline.run(make_config(num_iterations=2), str(run), resumed, POOL)
  assert resumed.judge_calls == 2 + 5  # the finished chunk was not judged again
  pipeline.run(make_config(num_iterations=2), str(tmp_path / "clean"), ScriptedPolicy(), POOL)
  clean, resumed_files = _results(tmp_path / "clean"), _results(run)
  assert sorted(clean) == sorted(resumed_files)
  assert any(name.endswith("metrics.jsonl") for name in clean)
  for name in clean:
    assert clean[name] == resumed_files[name], name


def test_leftovers_of_a_killed_run_are_swept_at_the_next_start(tmp_path):
  config = make_config()
  _kill_during_judging(tmp_path, config)
  it = tmp_path / "iter_1"
  # What a SIGKILL leaves: a model save's temp directory, atomic writes' temp files (made with the
  # project's own helpers, so the names are the real ones).
  model_tmp = artifacts.mkdtemp(prefix="model.tmp-", dir=str(it))
  with open(os.path.join(model_tmp, "model.safetensors"), "wb") as f:
    f.write(b"\0" * 1024)
  temp_files = []
  for target in (it / "judge.jsonl", it / "judge.jsonl.chunks" / "000003-000005.jsonl",
                 tmp_path / "metrics.jsonl"):
    fd, tmp = artifacts._mkstemp(str(target))  # pylint: disable=protected-access
    os.close(fd)
    temp_files.append(tmp)
  kept = [it / "notes.tmp", tmp_path / "model.tmp-mine"]  # not the project's temp names
  kept[0].write_text("mine")
  kept[1].mkdir()
  assert artifacts.is_temp_name(os.path.basename(model_tmp), is_dir=True)
  assert all(artifacts.is_temp_name(os.path.basename(t), is_dir=False) for t in temp_files)
  pipeline.run(config, str(tmp_path), ScriptedPolicy(), POOL)
  assert not os.path.exists(model_tmp)
  assert not any(os.path.exists(t) for t in temp_files)
  assert all(p.exists() for p in kept)
  assert (it / "metrics.json").exists()


def test_sweep_is_a_no_op_for_remote_workdirs():
  assert artifacts.sweep_temp("gs://bucket/run") == []


# ------------------------------------------------------------------------------------------------
# Timings.

def test_timings_live_outside_the_metrics_and_survive_a_resume(tmp_path):
  config = make_config(num_iterations=2)
  pipeline.run(config, str(tmp_path / "a"), ScriptedPolicy(), POOL)
  pipeline.run(config, str(tmp_path / "b"), ScriptedPolicy(), POOL)
  assert _results(tmp_path / "a") == _results(tmp_path / "b")  # metrics included, byte for byte
  for m in artifacts.read_jsonl(str(tmp_path / "a" / "metrics.jsonl")):
    assert not any("wall_seconds" in k or "tokens_per_second" in k for k in m), m
  timings = artifacts.read_jsonl(str(tmp_path / "a" / "timings.jsonl"))
  assert [t["iteration"] for t in timings] == [1, 2]
  assert all("wall_seconds" in t and "resumed" not in t for t in timings)
  # A loaded iteration keeps the wall_seconds it was run with.
  path = tmp_path / "a" / "iter_1" / "timings.json"
  path.write_text(json.dumps({**json.loads(path.read_text()), "wall_seconds": 123.0}))
  pipeline.run(config, str(tmp_path / "a"), ScriptedPolicy(), POOL)
  again = artifacts.read_jsonl(str(tmp_path / "a" / "timings.jsonl"))
  assert again[0]["wall_seconds"] == 123.0 and again[1] == timings[1]


def test_old_metrics_json_with_timings_is_made_again_without_them(tmp_path):
  config = make_config()
  pipeline.run(config, str(tmp_path), ScriptedPolicy(), POOL)
  metrics_path = tmp_path / "iter_1" / "metrics.json"
  old = json.loads(metrics_path.read_text())
  # A workdir from before timings.json and metrics markers: timing fields inside, no marker.
  metrics_path.write_text(json.dumps({**old, "wall_seconds": 7.5, "dpo/tokens_per_second": 9.0}))
  os.remove(tmp_path / "iter_1" / "timings.json")
  os.remove(tmp_path / "iter_1" / "metrics.json.done.json")
  policy = ScriptedPolicy()
  (result,) = pipeline.run(config, str(tmp_path), policy, POOL)
  assert result == old and json.loads(metrics_path.read_text()) == old
  assert policy.trained == [] and policy.judge_calls == 0  # only the metrics were made again
  (timings,) = artifacts.read_jsonl(str(tmp_path / "timings.jsonl"))
  assert timings["resumed"] is True and timings["wall_seconds"] != 7.5  # this run's, partial


def test_a_resumed_iteration_says_its_time_is_partial(tmp_path):
  config = make_config()
  _kill_during_judging(tmp_path, config)
  pipeline.run(config, str(tmp_path), ScriptedPolicy(), POOL)
  (timings,) = artifacts.read_jsonl(str(tmp_path / "timings.jsonl"))
  assert timings["resumed"] is True and timings["dpo/tokens_per_second"] == 100.0


# ------------------------------------------------------------------------------------------------
# Remote workdirs: markers are objects like any other.

def test_markers_on_a_gcs_workdir(tmp_path, monkeypatch):
  from test_remote_paths import FakeGCS

  class RemotePolicy(ScriptedPolicy):
    def save(self, path):
      artifacts.write_json(artifacts.join(path, "version.json"), {"version": self.version})

    def load(self, path):
      self.version = artifacts.read_json(artifacts.join(path, "version.json"))["version"]

  monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path / "cache"))
  gcs = FakeGCS(tmp_path / "gcs")
  config = make_config()
  with gcs.mock():
    with pytest.raises(KeyboardInterrupt):
      pipeline.run(config, "gs://bucket/run", RemotePolicy(fail_after_judge_calls=3), POOL)
    assert artifacts.exists("gs://bucket/run/iter_1/actor.jsonl.done.json")
    chunk = "gs://bucket/run/iter_1/judge.jsonl.chunks/000000-000003.jsonl"
    assert artifacts.check_jsonl_marked(chunk)[0] == "complete"
    good = artifacts.read_bytes(chunk)
    artifacts.write_bytes(chunk, b"".join(good.splitlines(keepends=True)[:-1]))
    with pytest.raises(PipelineError, match="does not match its completion marker"):
      pipeline.run(config, "gs://bucket/run", RemotePolicy(), POOL)
    artifacts.write_bytes(chunk, good)  # restored: used
    resumed = RemotePolicy()
    pipeline.run(config, "gs://bucket/run", resumed, POOL)
    assert resumed.judge_calls == 2
    assert artifacts.check_jsonl_marked("gs://bucket/run/iter_1/judge.jsonl")[0] == "complete"
