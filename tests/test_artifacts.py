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
