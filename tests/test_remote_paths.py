"""Remote (gs://) workdirs and checkpoints, without a network: `etils.epath.testing.mock_epath`
routes every gs://bucket/... path to a local directory, and records the writes."""

import os

import jax
import numpy as np
import pytest
from etils.epath import testing as epath_testing

from meta_rewarding import artifacts, checkpoints, metrics as metrics_lib, model_files, pipeline
from meta_rewarding.checkpoints import CheckpointError
from meta_rewarding.model.config import tiny_config
from meta_rewarding.model.llama import init_params
from meta_rewarding.tokenizer import load_tokenizer


class FakeGCS:
  """gs://<path> lives at <root>/<path>; `writes` lists every gs:// path opened for writing."""

  def __init__(self, root):
    self.root = str(root)
    self.writes = []

  def local(self, path) -> str:
    path = os.fspath(path)
    if path.startswith("gs://"):
      return os.path.join(self.root, path[len("gs://"):])
    return path

  def _open(self, fn, path, mode):
    if any(c in mode for c in "wax"):
      self.writes.append(os.fspath(path))
      os.makedirs(os.path.dirname(self.local(path)), exist_ok=True)  # object stores have no dirs
    return fn(self.local(path), mode)

  def _rmtree(self, fn, path):
    return fn(self.local(path))

  def _walk(self, fn, top, **kwargs):
    yield from fn(self.local(top), **kwargs)

  def mock(self):
    one = lambda fn, path, **kw: fn(self.local(path), **kw)
    two = lambda fn, src, dst, **kw: fn(self.local(src), self.local(dst), **kw)
    return epath_testing.mock_epath(
        open=self._open, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one, remove=one,
        rmtree=self._rmtree, stat=one, glob=one, walk=self._walk, copy=two, rename=two,
        replace=two)


@pytest.fixture
def gcs(tmp_path, monkeypatch):
  monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path / "cache"))
  fake = FakeGCS(tmp_path / "gcs")
  with fake.mock():
    yield fake


def test_is_remote_and_join():
  assert artifacts.is_remote("gs://b/run") and artifacts.is_remote("s3://b/x")
  assert not artifacts.is_remote("/tmp/run") and not artifacts.is_remote("run/gs://x")
  assert artifacts.join("gs://b/run", "iter_1", "a.jsonl") == "gs://b/run/iter_1/a.jsonl"


def test_artifact_helpers_on_gcs(gcs):
  path = "gs://bucket/run/iter_1/actor.jsonl"
  assert not artifacts.exists(path)
  artifacts.write_jsonl(path, [{"a": 1}, {"b": "ü"}])
  assert artifacts.exists(path) and artifacts.exists("gs://bucket/run/iter_1")
  assert artifacts.read_jsonl(path) == [{"a": 1}, {"b": "ü"}]
  artifacts.write_json("gs://bucket/run/config.json", {"x": [1, 2]})
  assert artifacts.read_json("gs://bucket/run/config.json") == {"x": [1, 2]}
  assert artifacts.listdir("gs://bucket/run") == ["config.json", "iter_1"]
  assert artifacts.isdir("gs://bucket/run/iter_1")
  # A remote write is one direct object write, never a temp object renamed into place.
  assert gcs.writes == [path, "gs://bucket/run/config.json"]
  assert os.listdir(gcs.local("gs://bucket/run/iter_1")) == ["actor.jsonl"]
  # A failure while rendering leaves no object behind.
  def bad_records():
    yield {"ok": 1}
    raise RuntimeError("boom")
  with pytest.raises(RuntimeError):
    artifacts.write_jsonl("gs://bucket/run/bad.jsonl", bad_records())
  assert not artifacts.exists("gs://bucket/run/bad.jsonl")
  artifacts.rmtree("gs://bucket/run/iter_1")
  assert not artifacts.exists(path)
  artifacts.rmtree("gs://bucket/run/missing", ignore_errors=True)
  artifacts.remove("gs://bucket/run/config.json")
  assert artifacts.listdir("gs://bucket/run") == []


def test_invalid_remote_jsonl_names_the_file(gcs):
  artifacts.write_bytes("gs://bucket/x.jsonl", b'{"a": 1}\nnot json\n')
  with pytest.raises(artifacts.ArtifactError, match=r"gs://bucket/x.jsonl:2"):
    artifacts.read_jsonl("gs://bucket/x.jsonl")


def test_localize_copies_once_and_refreshes_changed_files(gcs, tmp_path):
  artifacts.write_text("gs://bucket/ckpt/a.txt", "one")
  artifacts.write_text("gs://bucket/ckpt/b.bin", "skip me")
  local = artifacts.localize("gs://bucket/ckpt", lambda n: n.endswith(".txt"))
  assert local.startswith(str(tmp_path / "cache"))
  assert sorted(n for n in os.listdir(local) if not n.startswith(".")) == ["a.txt"]
  assert open(os.path.join(local, "a.txt")).read() == "one"
  reads = []
  with epath_testing.mock_epath(open=lambda fn, p, mode: reads.append(p) or fn(gcs.local(p), mode),
                                exists=lambda fn, p: fn(gcs.local(p)),
                                isdir=lambda fn, p: fn(gcs.local(p)),
                                listdir=lambda fn, p: fn(gcs.local(p)),
                                stat=lambda fn, p: fn(gcs.local(p))):
    assert artifacts.localize("gs://bucket/ckpt", lambda n: n.endswith(".txt")) == local
    assert reads == []  # unchanged: served from the cache
    artifacts.write_text("gs://bucket/ckpt/a.txt", "changed")
    artifacts.localize("gs://bucket/ckpt", lambda n: n.endswith(".txt"))
  assert open(os.path.join(local, "a.txt")).read() == "changed"
  assert artifacts.localize("/some/local/dir") == "/some/local/dir"


def _tiny():
  config = tiny_config(tie_word_embeddings=False)
  return config, init_params(config, jax.random.key(0))


def test_save_hf_to_gcs_then_load_hf_gives_identical_params(gcs):
  config, params = _tiny()
  remote = "gs://bucket/run/iter_1/model"
  artifacts.write_text(remote + "/stale-00001.safetensors", "from an earlier partial save")
  out = checkpoints.save_hf(remote, config, params, max_shard_bytes=40_000,
                            extra_files={"tokenizer_config.json": "{}"})
  assert out == remote
  written = [w for w in gcs.writes if w.startswith(remote + "/") and "stale" not in w]
  # config.json and then the model marker are uploaded last: a complete checkpoint.
  assert written[-2:] == [remote + "/config.json", remote + "/" + model_files.MODEL_MARKER]
  assert len(written) == len(set(written)) > 3  # shards, index, generation config, extra file
  names = artifacts.listdir(remote)
  assert "stale-00001.safetensors" not in names and "model.safetensors.index.json" in names
  config2 = checkpoints.read_hf_config(remote, dtype=config.dtype)
  assert config2 == config
  config3, params2 = checkpoints.load_hf(remote, dtype=config.dtype)
  assert config3 == config
  jax.tree.map(np.testing.assert_array_equal, params, params2)
  # A second load reuses the local copy; keep_local_copy=False leaves nothing behind.
  cache = os.environ[artifacts.CACHE_ENV]
  before = sorted(os.listdir(cache))
  _, params3 = checkpoints.load_hf(remote, config=config, keep_local_copy=False)
  jax.tree.map(np.testing.assert_array_equal, params, params3)
  assert sorted(os.listdir(cache)) == before == [os.path.basename(artifacts.local_cache_path(remote))]


def test_remote_checkpoint_errors_name_the_remote_path(gcs):
  with pytest.raises(CheckpointError, match="gs://bucket/none does not exist"):
    checkpoints.read_hf_config("gs://bucket/none")
  artifacts.write_text("gs://bucket/pickled/config.json", "{}")
  artifacts.write_text("gs://bucket/pickled/pytorch_model.bin", "x")
  with pytest.raises(CheckpointError, match=r"gs://bucket/pickled: no model.safetensors.*pickle"):
    checkpoints.load_hf("gs://bucket/pickled", config=_tiny()[0])
  config, params = _tiny()
  checkpoints.save_hf("gs://bucket/m", config, params)
  data = artifacts.read_bytes("gs://bucket/m/model.safetensors")
  artifacts.write_bytes("gs://bucket/m/model.safetensors", data[:len(data) // 2])
  # The marker of the save names the remote file, not its local copy ...
  with pytest.raises(model_files.ModelDirError, match=r"^gs://bucket/m/model.safetensors: \d+ bytes"):
    checkpoints.load_hf("gs://bucket/m", config=config, keep_local_copy=False)
  # ... and so does the reader, for a checkpoint without one.
  artifacts.remove("gs://bucket/m/" + model_files.MODEL_MARKER)
  with pytest.raises(CheckpointError, match=r"^gs://bucket/m/model.safetensors: "):
    checkpoints.load_hf("gs://bucket/m", config=config, keep_local_copy=False)


def test_tokenizer_loads_from_gcs(gcs, tmp_path):
  from tiny_tokenizers import build_sentencepiece
  local = tmp_path / "tok"
  local.mkdir()
  build_sentencepiece(local)
  for name in os.listdir(local):
    artifacts.copy_file(str(local / name), f"gs://bucket/tok/{name}")
  expected = load_tokenizer(str(local))
  remote = load_tokenizer("gs://bucket/tok")
  assert remote.encode("hello world") == expected.encode("hello world")


def test_plots_and_tensorboard_go_to_a_gcs_workdir(gcs):
  per_iteration = [{"iteration": 1, "pairs/actor": 2, "pairs/judge": 1, "judge/score_mean": 3.5}]
  metrics_lib.write_plots("gs://bucket/run", per_iteration)
  metrics_lib.write_tensorboard("gs://bucket/run", per_iteration[0],
                                [{"step": 1, "global_step": 1, "loss": 0.7}])
  assert "pair_counts.png" in artifacts.listdir("gs://bucket/run/plots")
  assert artifacts.read_bytes("gs://bucket/run/plots/pair_counts.png")[:4] == b"\x89PNG"
  (event,) = artifacts.listdir("gs://bucket/run/tensorboard")
  assert event.startswith("events.out.tfevents")


def test_scripted_pipeline_on_a_gcs_workdir(gcs, tmp_path):
  from test_pipeline import POOL, ScriptedPolicy, make_config

  class RemotePolicy(ScriptedPolicy):  # the scripted model, saved with the remote helpers
    def save(self, path):
      artifacts.write_json(artifacts.join(path, "version.json"), {"version": self.version})

    def load(self, path):
      self.version = artifacts.read_json(artifacts.join(path, "version.json"))["version"]

  config = make_config(num_iterations=2)
  remote = pipeline.run(config, "gs://bucket/run", RemotePolicy(), POOL)
  local = pipeline.run(config, str(tmp_path / "local"), ScriptedPolicy(), POOL)
  strip = lambda ms: [{k: v for k, v in m.items() if k != "wall_seconds"} for m in ms]
  assert strip(remote) == strip(local)
  for name in ("actor", "judge", "meta_judge", "judge_pairs", "dpo"):
    assert (artifacts.read_text(f"gs://bucket/run/iter_1/{name}.jsonl") ==
            (tmp_path / "local" / "iter_1" / f"{name}.jsonl").read_text()), name
  assert not artifacts.exists("gs://bucket/run/iter_1/judge.jsonl.chunks")  # merged and removed
  assert artifacts.exists("gs://bucket/run/iter_2/.tensorboard_written")
  assert "metrics.jsonl" in artifacts.listdir("gs://bucket/run")
  # Resuming the finished run reads everything back and trains nothing.
  again = RemotePolicy()
  assert strip(pipeline.run(config, "gs://bucket/run", again, POOL)) == strip(remote)
  assert again.trained == [] and again.version == 2
