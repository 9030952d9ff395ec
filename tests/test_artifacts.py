"""artifacts: atomic writes end with the umask's mode, and unreadable files are named with their
line (non-UTF-8 text, invalid JSON)."""

import contextlib
import os
import stat

import pytest

from meta_rewarding import artifacts
from meta_rewarding.artifacts import ArtifactError


@contextlib.contextmanager
def umask(mask):
  old = os.umask(mask)
  try:
    yield
  finally:
    os.umask(old)


def _mode(path):
  return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                     (0o002, 0o664, 0o775)])
def test_writes_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
  with umask(mask):
    assert artifacts.umask() == mask
    assert artifacts.file_mode() == file_mode and artifacts.dir_mode() == dir_mode
    paths = {
        "jsonl": tmp_path / "a.jsonl", "json": tmp_path / "sub" / "b.json",
        "bytes": tmp_path / "c.bin", "text": tmp_path / "d.txt", "copy": tmp_path / "e.jsonl"}
    artifacts.write_jsonl(paths["jsonl"], [{"a": 1}])
    artifacts.write_json(paths["json"], {"b": 2})
    artifacts.write_bytes(paths["bytes"], b"\x00\x01")
    artifacts.write_text(paths["text"], "x")
    artifacts.copy_file(paths["jsonl"], paths["copy"])
    for name, path in paths.items():
      assert _mode(path) == file_mode, (name, oct(_mode(path)))
    # Overwriting gives the umask's mode too (a new inode replaces the old file).
    os.chmod(paths["json"], 0o600)
    artifacts.write_json(paths["json"], {"b": 3})
    assert _mode(paths["json"]) == file_mode
    assert _mode(tmp_path / "sub") == dir_mode  # made by os.makedirs
    model_dir = artifacts.mkdtemp(prefix="model.tmp-", dir=str(tmp_path))
    assert _mode(model_dir) == dir_mode
    assert os.path.basename(model_dir).startswith("model.tmp-")
  # No temp file is left behind.
  assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_failed_write_leaves_nothing(tmp_path):
  def records():
    yield {"a": 1}
    raise RuntimeError("generator failed")
  with pytest.raises(RuntimeError):
    artifacts.write_jsonl(tmp_path / "a.jsonl", records())
  assert os.listdir(tmp_path) == []


def test_binary_garbage_in_a_json_file_is_named(tmp_path):
  path = tmp_path / "config.json"
  path.write_bytes(b'{"a":\n 1,\n "b": "\xc9\xff"}')
  with pytest.raises(ArtifactError, match=rf"^{path}:3: not UTF-8 text \(byte 0xc9\): the file is "
                                          r"damaged; restore or delete it$"):
    artifacts.read_json(path)
  path.write_bytes(bytes(range(128, 256)))
  with pytest.raises(ArtifactError, match=rf"^{path}:1: not UTF-8 text"):
    artifacts.read_json(path)
  path.write_text('{"a": 1,\n"b": }')
  with pytest.raises(ArtifactError, match=rf"^{path}:2: invalid JSON"):
    artifacts.read_json(path)


def test_non_utf8_jsonl_gives_the_line(tmp_path):
  path = tmp_path / "judge.jsonl"
  path.write_bytes(b'{"a": 1}\n\n{"a": "caf\xe9"}\n{"a": 3}\n')
  records = artifacts.iter_jsonl(path)
  assert next(records) == {"a": 1}
  with pytest.raises(ArtifactError, match=rf"^{path}:3: not UTF-8 text \(byte 0xe9\)"):
    next(records)
  path.write_bytes(b'{"a": 1}\r\n{"a": "\xc3\xa9"}\r\n')  # CRLF and real UTF-8 read fine
  assert artifacts.read_jsonl(path) == [{"a": 1}, {"a": "é"}]
  path.write_bytes(b'{"a": 1}\n{"a": \n')
  with pytest.raises(ArtifactError, match=rf"^{path}:2: invalid JSON"):
    artifacts.read_jsonl(path)


def test_marked_jsonl_states(tmp_path):
  path = tmp_path / "judge.jsonl"
  assert artifacts.check_jsonl_marked(path) == ("missing", None)
  records = [{"a": 1}, {"b": "é"}]
  marker = artifacts.write_jsonl_marked(path, records)
  assert marker["records"] == 2 and marker["bytes"] == path.stat().st_size
  artifacts.write_jsonl(tmp_path / "plain.jsonl", records)  # the same bytes as the plain writer
  assert path.read_bytes() == (tmp_path / "plain.jsonl").read_bytes() == artifacts.jsonl_bytes(records)
  assert artifacts.check_jsonl_marked(path) == ("complete", records)
  path.write_bytes(path.read_bytes().splitlines(keepends=True)[0])  # cut at a line boundary
  with pytest.raises(artifacts.IntegrityError, match=rf"^{path}: does not match its completion "
                                                     r"marker judge.jsonl.done.json"):
    artifacts.check_jsonl_marked(path)
  os.remove(artifacts.marker_path(path))
  assert artifacts.check_jsonl_marked(path) == ("unmarked", None)
  os.remove(path)
  artifacts.write_json(artifacts.marker_path(path), marker)  # a stale marker vouches for nothing
  assert artifacts.check_jsonl_marked(path) == ("missing", None)
  # Rewriting replaces the marker: the old one never vouches for the new content.
  artifacts.write_jsonl_marked(path, records[:1])
  assert artifacts.check_jsonl_marked(path) == ("complete", records[:1])


def test_sweep_removes_only_the_project_temp_names(tmp_path):
  (tmp_path / "iter_1").mkdir()
  fd, temp_file = artifacts._mkstemp(str(tmp_path / "iter_1" / "actor.jsonl"))
  os.close(fd)
  temp_dir = artifacts.mkdtemp(prefix="model.tmp-", dir=str(tmp_path / "iter_1"))
  open(os.path.join(temp_dir, "model.safetensors"), "wb").close()
  kept = ["iter_1/actor.jsonl", "iter_1/notes.tmp", "iter_1/x.tmp-1", "iter_1/actor.jsonl.done.json"]
  for name in kept:
    (tmp_path / name).write_text("")
  assert artifacts.sweep_temp(tmp_path) == sorted([temp_file, temp_dir])
  assert sorted(os.listdir(tmp_path / "iter_1")) == sorted(os.path.basename(k) for k in kept)
  assert artifacts.sweep_temp(tmp_path) == []
  assert artifacts.sweep_temp("gs://bucket/run") == []
