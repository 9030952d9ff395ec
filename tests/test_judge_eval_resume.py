"""judge_eval --output resumes only judgments of the same inputs: DIR/inputs.json records the pairs,
the checkpoint, the protocol, the orders, the template and the sampling settings; a directory of
other (or unrecorded) inputs is refused by name, and --overwrite starts over without touching
anything else in DIR."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from meta_rewarding import judge_eval, prompts
from meta_rewarding.judge_eval import JudgeEvalError

from test_judge_eval_cli import _one_error_line

PAIRS = [{"id": f"p{k}", "subset": "s", "prompt": f"Question {k}?", "chosen": f"ok {k}",
          "rejected": f"a much longer wrong answer to question {k}"} for k in range(3)]
SWAPPED = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in PAIRS]


def _write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _shorter_wins(requests, n):
  """A scripted pairwise judge that prefers the shorter answer (the chosen one in PAIRS)."""
  out = []
  for messages in requests:
    text = messages[-1]["content"]
    a = text.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
    b = text.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End")[0]
    out.append([f"[[{'A' if len(a) <= len(b) else 'B'}]]"] * n)
  return out


@pytest.fixture
def checkpoint_dir(tmp_path):
  """A directory standing in for a model (its identity: its files' sizes and mtimes)."""
  directory = tmp_path / "model"
  directory.mkdir()
  (directory / "config.json").write_text("{}")
  return str(directory)


def _judge(options, overwrite=False):
  """What `judge_eval.run` does around the model: key --output by the inputs, then judge."""
  pairs = judge_eval.load_preference_pairs(options.pairs)
  judge_eval.prepare_output(options.output,
                            judge_eval.input_identity(options, pairs, prompts.JUDGE_TEMPLATE),
                            overwrite=overwrite)
  records, _ = judge_eval.evaluate(pairs, _shorter_wins, protocol=options.protocol,
                                   orders=options.orders, order_seed=options.seed,
                                   num_samples=options.num_samples, output=options.output)
  return [r["score"] for r in records]


def test_swapped_pairs_are_refused_not_scored_from_stale_judgments(tmp_path, checkpoint_dir):
  out = str(tmp_path / "out")
  options = judge_eval.Options(checkpoint=checkpoint_dir, pairs=_write(tmp_path / "pairs.jsonl",
                                                                      PAIRS), output=out)
  assert _judge(options) == [1.0, 1.0, 1.0]
  assert _judge(options) == [1.0, 1.0, 1.0]  # the same inputs resume
  swapped = dataclasses.replace(options, pairs=_write(tmp_path / "swapped.jsonl", SWAPPED))
  # Before: the swapped pairs were scored from the first run's judgments, 1.0 instead of 0.0.
  with pytest.raises(JudgeEvalError, match=r"^--output=.*/out holds judgments of other inputs "
                                           r"\(pairs file differs\); use another --output or "
                                           r"pass --overwrite$"):
    _judge(swapped)
  assert _judge(swapped, overwrite=True) == [0.0, 0.0, 0.0]  # what a fresh directory gives
  assert _judge(dataclasses.replace(swapped, output=str(tmp_path / "fresh"))) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("change, named", [
    (dict(protocol="pointwise"), "protocol"),
    (dict(orders="random"), "orders"),
    (dict(temperature=0.7, top_p=0.5), "--temperature, --top_p differ"),
    (dict(num_samples=3, temperature=0.7), "--temperature, --num_samples differ"),
    (dict(max_new_tokens=64), "--max_new_tokens differs"),
    (dict(seed=1), "--seed differs"),
    (dict(dtype="float32"), "--dtype differs"),
    (dict(chat_format="llama3"), "--chat_format differs"),
])
def test_each_recorded_input_is_named_when_it_differs(tmp_path, checkpoint_dir, change, named):
  options = judge_eval.Options(checkpoint=checkpoint_dir, pairs=_write(tmp_path / "p.jsonl", PAIRS),
                               output=str(tmp_path / "out"))
  pairs = judge_eval.load_preference_pairs(options.pairs)
  template = prompts.JUDGE_TEMPLATE
  judge_eval.prepare_output(options.output, judge_eval.input_identity(options, pairs, template))
  other = judge_eval.input_identity(dataclasses.replace(options, **change), pairs, template)
  with pytest.raises(JudgeEvalError, match=r"\(.*" + named.replace("-", r"\-")):
    judge_eval.prepare_output(options.output, other)


def test_what_does_not_change_the_judgments_may_change(tmp_path, checkpoint_dir):
  options = judge_eval.Options(checkpoint=checkpoint_dir, pairs=_write(tmp_path / "p.jsonl", PAIRS))
  pairs = judge_eval.load_preference_pairs(options.pairs)
  template = prompts.JUDGE_TEMPLATE
  identity = judge_eval.input_identity(options, pairs, template)
  # Decode batch and mesh; where the pairs file lies (its bytes are what count).
  moved = shutil.copy(options.pairs, tmp_path / "moved.jsonl")
  assert judge_eval.input_identity(dataclasses.replace(options, batch_size=2, mesh="fsdp=-1",
                                                       pairs=str(moved)), pairs, template) == identity
  # The pointwise template is recorded by its text's sha256; the pairwise one is fixed.
  pointwise = dataclasses.replace(options, protocol="pointwise")
  assert (judge_eval.input_identity(pointwise, pairs, template + " ")["template_sha256"]
          != judge_eval.input_identity(pointwise, pairs, template)["template_sha256"])
  # A dataset source: its name and split, and the loaded pairs' digest.
  hub = judge_eval.pairs_identity("hf:allenai/reward-bench:filtered", pairs)
  assert hub["dataset"] == "hf:allenai/reward-bench:filtered"
  assert judge_eval.pairs_identity("hf:allenai/reward-bench:filtered", pairs[:2]) != hub


def test_a_changed_checkpoint_is_refused(tmp_path, checkpoint_dir):
  options = judge_eval.Options(checkpoint=checkpoint_dir, pairs=_write(tmp_path / "p.jsonl", PAIRS),
                               output=str(tmp_path / "out"))
  _judge(options)
  with open(os.path.join(checkpoint_dir, "config.json"), "a") as f:
    f.write(" ")  # a retrained or re-exported model
  with pytest.raises(JudgeEvalError, match=r"\(checkpoint differs\)"):
    _judge(options)


def test_judgments_without_a_record_are_refused_and_overwrite_removes_only_its_own_files(
    tmp_path, checkpoint_dir):
  out = tmp_path / "out"
  options = judge_eval.Options(checkpoint=checkpoint_dir, pairs=_write(tmp_path / "p.jsonl", PAIRS),
                               output=str(out))
  _judge(options)
  (out / "inputs.json").unlink()  # as an older judge_eval left its directories
  with pytest.raises(JudgeEvalError, match=r"holds judgments without inputs\.json \(made by an "
                                           r"older judge_eval\), so what they are of cannot be "
                                           r"told; use another --output or pass --overwrite"):
    _judge(options)
  # The user's own files in the directory stay; a link named like a chunk directory is removed,
  # never followed.
  (out / "notes.txt").write_text("mine")
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  (elsewhere / "keep.jsonl").write_text("{}\n")
  os.symlink(elsewhere, out / "pairs.jsonl.chunks")
  (out / "judgments.jsonl.chunks").mkdir()
  (out / "judgments.jsonl.chunks" / "000000-000002.jsonl").write_text("{}\n")
  assert _judge(options, overwrite=True) == [1.0, 1.0, 1.0]
  assert sorted(os.listdir(out)) == ["inputs.json", "judgments.jsonl", "judgments.jsonl.done.json",
                                     "notes.txt"]
  assert (elsewhere / "keep.jsonl").read_text() == "{}\n"


def test_a_directory_of_other_files_is_used_and_a_damaged_record_refused(tmp_path, checkpoint_dir):
  out = tmp_path / "out"
  out.mkdir()
  (out / "README").write_text("results go here")
  options = judge_eval.Options(checkpoint=checkpoint_dir, pairs=_write(tmp_path / "p.jsonl", PAIRS),
                               output=str(out))
  assert _judge(options) == [1.0, 1.0, 1.0]
  record = json.loads((out / "inputs.json").read_text())
  assert record["paths"] == {}  # where the inputs were found is informative, never compared
  assert record["protocol"] == "pairwise" and record["orders"] == "both"
  (out / "inputs.json").write_text("{truncated")
  with pytest.raises(JudgeEvalError, match=r"its inputs\.json cannot be read"):
    _judge(options)


# -- the command -----------------------------------------------------------------------------------


def _judge_eval(*args):
  return subprocess.run([sys.executable, "-m", "meta_rewarding.judge_eval", *args],
                        capture_output=True, text=True, timeout=600,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})



def test_command_refuses_other_pairs_or_checkpoint_and_overwrites(llama3_checkpoint, tmp_path):
  out = tmp_path / "out"
  pairs = _write(tmp_path / "pairs.jsonl", PAIRS)
  swapped = _write(tmp_path / "swapped.jsonl", SWAPPED)
  common = ["--max_new_tokens=2", "--dtype=float32", "--batch_size=8", f"--output={out}"]
  proc = _judge_eval(f"--checkpoint={llama3_checkpoint}", f"--pairs={pairs}", *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads((out / "inputs.json").read_text())
  assert record["paths"] == {"pairs": pairs, "checkpoint": llama3_checkpoint}
  hint = "; use another --output or pass --overwrite"

  proc = _judge_eval(f"--checkpoint={llama3_checkpoint}", f"--pairs={swapped}", *common)
  assert proc.returncode == 1
  assert _one_error_line(proc) == (f"error: --output={out} holds judgments of other inputs "
                                   f"(pairs file differs){hint}")
  # Without a model marker, a checkpoint is known by its files' sizes and mtimes: a copy that
  # keeps the mtimes (copy2) counts as the same model, one with new mtimes as another.
  other_model = shutil.copytree(llama3_checkpoint, tmp_path / "other_model",
                                copy_function=shutil.copy)
  proc = _judge_eval(f"--checkpoint={other_model}", f"--pairs={swapped}", "--temperature=0.5",
                     *common)
  assert proc.returncode == 1
  assert _one_error_line(proc) == (f"error: --output={out} holds judgments of other inputs "
                                   f"(pairs file, checkpoint, --temperature differ){hint}")

  proc = _judge_eval(f"--checkpoint={llama3_checkpoint}", f"--pairs={swapped}", "--overwrite",
                     *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads((out / "inputs.json").read_text())["paths"]["pairs"] == swapped
  scores = json.loads((out / "scores.json").read_text())
  assert scores["pairs"] == 3 and scores["weighting"] == judge_eval.MEAN_WEIGHTING
