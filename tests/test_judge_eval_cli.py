"""`python -m meta_rewarding.judge_eval`: every bad flag and bad input is one `error:` line on
stderr (exit 2 for a flag, 1 for input), never a traceback; --mesh no longer collides with sample's
flags."""

import json
import os
import subprocess
import sys

import pytest


def _judge_eval(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "meta_rewarding.judge_eval", *args],
                        capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def _one_error_line(proc) -> str:
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  return errors[0]


@pytest.fixture
def pairs_file(tmp_path):
  path = tmp_path / "pairs.jsonl"
  path.write_text(json.dumps({"id": "p0", "prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
  return str(path)


@pytest.mark.parametrize("flag, message", [
    ("--temperature=-1", "error: --temperature=-1.0 is out of range; expected a finite number >= 0"),
    ("--batch_size=0", "error: --batch_size=0 is out of range; expected an integer >= 1"),
    ("--dtype=int8", "error: --dtype='int8' is out of range; expected float32 | bfloat16"),
    # Accepted before: every judgment empty, every pair scored 0.5.
    ("--max_new_tokens=0", "error: --max_new_tokens=0 is out of range; expected an integer >= 1"),
    ("--num_samples=0", "error: --num_samples=0 is out of range; expected an integer >= 1"),
    ("--top_p=0", "error: --top_p=0.0 is out of range; expected a number in (0, 1]"),
    ("--top_p=1.5", "error: --top_p=1.5 is out of range; expected a number in (0, 1]"),
    ("--seed=-1", "error: --seed=-1 is out of range; expected an integer in [0, 4294967295]"),
    ("--chat_format=chatml", "error: --chat_format='chatml' is out of range; expected auto | hf"),
    ("--orders=sometimes", "error: flag --orders=sometimes: value should be one of <both|random>"),
    ("--batch_size=many", "error: flag --batch_size=many: invalid literal for int()"),
    ("--no_such_flag=1", "error: Unknown command line flag 'no_such_flag'"),
    ("--mesh=bogus", "error: --mesh='bogus': bad entry 'bogus'; expected axis=size pairs"),
    ("--mesh=data=3", "error: --mesh='data=3': mesh shape"),
    ("--mesh=fsdp=-1,tensor=-1", "error: --mesh='fsdp=-1,tensor=-1': only one axis may be -1"),
])
def test_bad_flag_is_one_error_line_exit_2(tmp_path, pairs_file, flag, message):
  proc = _judge_eval(f"--checkpoint={tmp_path}", f"--pairs={pairs_file}", flag)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert _one_error_line(proc).startswith(message)


@pytest.mark.parametrize("flags, message", [
    (["--num_samples=3"], "error: --num_samples > 1 with --temperature=0 repeats one greedy"),
    (["--orders=random", "--protocol=pointwise"],
     "error: --orders=random applies to --protocol=pairwise only"),
    (["--overwrite"], "error: --overwrite applies to --output=DIR"),
])
def test_contradicting_flags_are_one_error_line_exit_2(tmp_path, pairs_file, flags, message):
  proc = _judge_eval(f"--checkpoint={tmp_path}", f"--pairs={pairs_file}", *flags)
  assert proc.returncode == 2 and _one_error_line(proc).startswith(message), proc.stderr[-3000:]


def test_output_that_is_a_file_is_refused(tmp_path, pairs_file):
  proc = _judge_eval(f"--checkpoint={tmp_path}", f"--pairs={pairs_file}",
                     f"--output={pairs_file}")
  assert proc.returncode == 2
  assert _one_error_line(proc) == f"error: --output={pairs_file} is a file; expected a directory"


def test_missing_flag_and_stray_argument_exit_2(tmp_path, pairs_file):
  proc = _judge_eval(f"--checkpoint={tmp_path}")
  assert proc.returncode == 2
  assert _one_error_line(proc).startswith("error: flag --pairs=None")
  proc = _judge_eval(f"--checkpoint={tmp_path}", f"--pairs={pairs_file}", "stray")
  assert proc.returncode == 2
  assert _one_error_line(proc) == "error: unexpected arguments ['stray']"


def test_mesh_flag_no_longer_collides_and_non_utf8_pairs_are_named_by_line(tmp_path):
  # --mesh with any value used to stop at DuplicateFlagError (judge_eval imported sample's flags);
  # a valid mesh now gets as far as the pairs, whose bad line is named by number and column.
  path = tmp_path / "pairs.jsonl"
  path.write_bytes(b'{"prompt": "q", "chosen": "c", "rejected": "r"}\n\n'
                   b'{"prompt": "caf\xff", "chosen": "c", "rejected": "r"}\n')
  proc = _judge_eval(f"--checkpoint={tmp_path}", f"--pairs={path}", "--mesh=fsdp=-1")
  assert proc.returncode == 1
  assert _one_error_line(proc) == (f"error: {path}:3: not UTF-8 (byte 0xff at column 16); save "
                                   "the file as UTF-8")


def test_bad_input_is_one_error_line_exit_1(tmp_path, pairs_file):
  missing = tmp_path / "missing.jsonl"
  proc = _judge_eval(f"--checkpoint={tmp_path}", f"--pairs={missing}")
  assert proc.returncode == 1
  assert _one_error_line(proc) == f"error: {missing}: no such file"
  proc = _judge_eval(f"--checkpoint={tmp_path / 'nope'}", f"--pairs={pairs_file}")
  assert proc.returncode == 1
  assert _one_error_line(proc).startswith(f"error: --checkpoint={tmp_path / 'nope'}: no such "
                                          "directory")
  template = tmp_path / "judge.txt"
  template.write_bytes(b"Rate it.\n\xe9\n")
  proc = _judge_eval(f"--checkpoint={tmp_path}", f"--pairs={pairs_file}", "--protocol=pointwise",
                     f"--judge_template={template}")
  assert proc.returncode == 1
  assert _one_error_line(proc) == (f"error: --judge_template: {template}:2: not UTF-8 (byte 0xe9 "
                                   "at column 1); save the file as UTF-8")
