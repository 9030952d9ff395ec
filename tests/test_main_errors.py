"""`python -m meta_rewarding.main` in a subprocess, where the environment is at fault: a stray
positional argument, a read-only workdir, a full disk (the workdir's, and the log file's), a
directory where a stage file belongs, a file or a symbolic link where a model directory belongs.
Each is one `error:` line (exit 2 for usage, 1 for the rest), never a traceback; the project's
warnings show as `warning: ...` on the console, in absl's format in the log file.

The read-only and full-disk cases need a path no write can go into, also as root: a read-only bind
mount and a small full tmpfs where this process may mount (root in a container), else chmod (a
non-root user); they are skipped where neither works."""

import contextlib
import errno
import os
import re
import shutil
import subprocess
import sys

import pytest

from test_main import ABSL_PREFIX, REPO, _env, _main

SMOKE = "--config=configs/local_cpu.py:smoke"
NO_HELDOUT = "--config.evaluate.heldout_tasks=0"  # straight to iteration 1 (the held-out pass: ~30 s)


def _one_error(out, code: int) -> str:
  """The single `error:` line of a run that must have exited with `code`."""
  assert "Traceback" not in out.stderr and "Logging error" not in out.stderr, out.stderr[-3000:]
  assert out.returncode == code, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, out.stderr[-3000:]
  return errors[0]


def _mount(*args) -> bool:
  return subprocess.run(["mount", *map(str, args)], capture_output=True).returncode == 0


@contextlib.contextmanager
def _mounted(path, *args):
  """`mount *args path` for the duration; skips the test where this process may not mount."""
  if os.geteuid() != 0 or not _mount(*args, path):
    pytest.skip(f"cannot mount here (mount {' '.join(map(str, args))})")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture(name="read_only_dir")
def _read_only_dir(tmp_path):
  """An existing directory nothing can be written into: a read-only bind mount (root ignores
  permission bits), else chmod 0555 (a non-root user)."""
  path = tmp_path / "ro"
  path.mkdir()
  if os.geteuid() == 0:
    with _mounted(path, "--bind", path):
      if not _mount("-o", "remount,bind,ro", path):
        pytest.skip("cannot remount a bind mount read-only here")
      yield path
    return
  path.chmod(0o555)
  try:
    if os.access(path, os.W_OK):
      pytest.skip(f"chmod 0555 does not make {path} read-only for this user")
    yield path
  finally:
    path.chmod(0o755)


@pytest.fixture(name="full_disk")
def _full_disk(tmp_path):
  """The mount point of a 256 KiB tmpfs that a filler file has filled: creating a directory or an
  empty file still works there (they take no data blocks), writing a byte does not."""
  path = tmp_path / "full"
  path.mkdir()
  with _mounted(path, "-t", "tmpfs", "-o", "size=256k", "tmpfs"):
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT)
    try:
      while True:
        os.write(fd, b"\0" * 4096)
    except OSError as e:
      assert e.errno == errno.ENOSPC, e
    finally:
      os.close(fd)
    yield path


def test_a_stray_positional_argument_is_one_usage_line(tmp_path):
  workdir = tmp_path / "w"
  out = _main(SMOKE, f"--workdir={workdir}", "iterations=3", "a b", timeout=300)
  error = _one_error(out, 2)
  assert error == "error: unexpected argument(s): iterations=3 'a b' (see --help)"
  assert out.stderr.splitlines() == [error], out.stderr  # not the module doc
  assert not workdir.exists()


def test_a_workdir_in_a_read_only_directory_is_one_line(read_only_dir):
  workdir = read_only_dir / "run"  # cannot be created
  error = _one_error(_main(SMOKE, f"--workdir={workdir}", timeout=300), 1)
  assert re.fullmatch(f"error: {re.escape(str(workdir))}: (Read-only file system|Permission "
                      "denied)", error), error


def test_a_read_only_workdir_is_one_line(read_only_dir):
  error = _one_error(_main(SMOKE, f"--workdir={read_only_dir}", timeout=300), 1)
  # Its first write: the workdir lock (taken before the log file opens).
  assert re.fullmatch(f"error: {re.escape(str(read_only_dir / 'workdir.lock'))}: (Read-only file "
                      "system|Permission denied)", error), error
  # --verbosity=1 (every record on the console, no log file) shows where it was raised, then one
  # line naming what the first write was then.
  out = _main(SMOKE, f"--workdir={read_only_dir}", "--verbosity=1", timeout=300)
  assert out.returncode == 1, out.stderr[-3000:]
  assert "Traceback" in out.stderr, out.stderr[-3000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and errors[0].startswith(f"error: {read_only_dir}"), out.stderr
  assert re.search("(Read-only file system|Permission denied)$", errors[0]), errors


def test_a_full_disk_is_one_line_naming_the_file(full_disk):
  workdir = full_disk / "run"
  out = _main(SMOKE, f"--workdir={workdir}", timeout=300)
  error = _one_error(out, 1)
  # The first file the run writes: the workdir lock, before the log file opens (a log file on a
  # full disk is `test_a_log_file_on_a_full_disk_is_one_warning`'s case).
  assert re.fullmatch(f"error: {re.escape(str(workdir))}/workdir.lock: No space left on device; "
                      "free some space, then rerun the same command to resume", error), error
  assert len(out.stderr.splitlines()) < 60, out.stderr  # the memory plan and the line above


_LOG_TO_A_FULL_DISK = """
import sys
from absl import app, logging
from meta_rewarding import main

def log_a_lot(argv):
  log_file = main.route_logs()
  logging.info("held until the log file opens")
  print(log_file.open("unused"), flush=True)
  for i in range(2000):  # ~300 KB: past any buffer, so that writes fail, not only flushes
    logging.info("record %d %s", i, "x" * 128)
  logging.warning("still on the console")

app.run(log_a_lot, argv=["main", "--log_dir=" + sys.argv[1]])  # as main.py's app.run sets it up
"""


def test_a_log_file_on_a_full_disk_is_one_warning(full_disk):
  # The run itself may have room (--log_dir elsewhere); before, each of thousands of records
  # printed logging's 20-line "--- Logging error ---" report.
  out = subprocess.run([sys.executable, "-c", _LOG_TO_A_FULL_DISK, str(full_disk)], cwd=REPO,
                       env=_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  log_file = out.stdout.strip()
  assert log_file.startswith(str(full_disk)), out.stdout
  lines = out.stderr.splitlines()
  assert len(lines) == 2, out.stderr[-3000:]
  assert lines[0] == (f"warning: cannot write the log file {log_file}: No space left on device; "
                      "no more log records are written to it"), lines
  assert ABSL_PREFIX.match(lines[1]) and lines[1].endswith("] still on the console"), lines


def test_a_run_refused_by_its_checks_leaves_no_workdir(tmp_path):
  workdir = tmp_path / "run"
  out = _main(SMOKE, f"--workdir={workdir}", "--config.data.prompts=/nonexistent.jsonl",
              timeout=300)
  assert "/nonexistent.jsonl" in _one_error(out, 1)
  assert not workdir.exists()  # no logs/, no config.json: the corrected rerun starts afresh
  assert "log: " not in out.stdout


def test_a_directory_where_a_stage_file_belongs_is_one_line(tmp_path):
  workdir = tmp_path / "run"
  (workdir / "iter_1" / "prompts.jsonl").mkdir(parents=True)
  # A killed run's temp file: the start-up sweep removes it with a warning.
  (workdir / "iter_1" / "prompts.jsonl.abcd1234.tmp").write_text("partial")
  out = _main(SMOKE, f"--workdir={workdir}", NO_HELDOUT)
  error = _one_error(out, 1)
  assert error.startswith(f"error: {workdir}/iter_1/prompts.jsonl"), error
  assert "prompts.jsonl.abcd1234.tmp" not in error  # the removed temp file is not the culprit
  # The project's warnings: `warning: ...` on the console, absl's format in the log file.
  lines = out.stderr.splitlines()
  swept = f"removed 1 temp file(s)/dir(s) a stopped run left in {workdir}"
  assert [l for l in lines if swept in l] == [
      f"warning: {swept}: {workdir}/iter_1/prompts.jsonl.abcd1234.tmp"], out.stderr
  ours = {n for _, _, names in os.walk(os.path.join(REPO, "meta_rewarding")) for n in names
          if n.endswith(".py")}
  absl_lines = [re.search(r" ([\w.]+\.py):\d+\] ", l) for l in lines if ABSL_PREFIX.match(l)]
  assert not [m.group(0) for m in absl_lines if m and m.group(1) in ours], out.stderr
  with open(workdir / "logs" / "main.INFO", encoding="utf-8") as f:
    logged = f.read().splitlines()
  swept_logged = [l for l in logged if swept in l]
  assert len(swept_logged) == 1 and swept_logged[0][0] == "W", swept_logged
  assert ABSL_PREFIX.match(swept_logged[0]), swept_logged
  # What was logged by the checks before the file was opened is in it too.
  assert [l for l in logged if l.endswith("] prompt pool: 2000 prompts from testbed:2000")], logged


@pytest.fixture(name="model_is_a_file", scope="module")
def _model_is_a_file(tmp_path_factory):
  """A run whose iter_1/model is a file: (its workdir, its output). It fails at the DPO stage, before
  training (the model directory is checked first), so the workdir holds iteration 1's finished
  stages, which the next test reuses."""
  workdir = tmp_path_factory.mktemp("model_is_a_file") / "run"
  (workdir / "iter_1").mkdir(parents=True)
  (workdir / "iter_1" / "model").write_text("not a model")
  return workdir, _main(SMOKE, f"--workdir={workdir}", NO_HELDOUT)


def test_a_file_where_the_model_directory_belongs_is_one_line(model_is_a_file):
  workdir, out = model_is_a_file
  error = _one_error(out, 1)
  assert error.startswith(f"error: {workdir}/iter_1/model"), error
  assert (workdir / "iter_1" / "model").read_text() == "not a model"


def test_a_symlinked_model_directory_is_refused_by_name(model_is_a_file, tmp_path):
  # The model is saved by replacing its directory whole (a temp dir renamed over it): a link there
  # is refused rather than followed, and whatever it points to is left alone.
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  (elsewhere / "keep.txt").write_text("someone else's")
  workdir = tmp_path / "run"
  # The stages the run above finished: this run goes straight to training (a minute less).
  shutil.copytree(model_is_a_file[0], workdir, ignore=shutil.ignore_patterns("logs", "model"))
  (workdir / "iter_1" / "model").symlink_to(elsewhere)
  error = _one_error(_main(SMOKE, f"--workdir={workdir}", NO_HELDOUT), 1)
  assert error.startswith(f"error: {workdir}/iter_1/model"), error
  assert os.listdir(elsewhere) == ["keep.txt"]
  assert (elsewhere / "keep.txt").read_text() == "someone else's"


def test_tensorstore_s_report_of_a_full_disk_is_an_os_error():
  # What orbax's DPO checkpoint save raised on a full disk (a mid-run full disk, seen once): a
  # ValueError from tensorstore, which main prints as the OSError it reports.
  from meta_rewarding.errors import as_os_error, os_error_line
  raised = ValueError(
      'RESOURCE_EXHAUSTED: Error writing "opt_state.1.count/0" in OCDBT database at local file '
      '"/w/iter_1/dpo_checkpoints/state/1.orbax-checkpoint-tmp/ocdbt.process_0/": Failed writing: '
      '"/w/iter_1/dpo_checkpoints/state/1.orbax-checkpoint-tmp/ocdbt.process_0/d/9d85c3d7": '
      "Failed to write 4771840 bytes to file 5: No space left on device [os_error_code='28']")
  assert os_error_line(as_os_error(raised)) == (
      "/w/iter_1/dpo_checkpoints/state/1.orbax-checkpoint-tmp/ocdbt.process_0/d/9d85c3d7: No space "
      "left on device; free some space, then rerun the same command to resume")
  assert as_os_error(ValueError("learning_rate must be positive")) is None  # a bug stays one
  assert as_os_error(TypeError("x")) is None
