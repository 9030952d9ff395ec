"""train_dpo: pairs with chosen == rejected are dropped and counted; out-of-range config values stop
the CLI with one `error:` line per value before anything is written."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import configs
from meta_rewarding import data, train_dpo

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_drop_identical_pairs_counts_them():
  ids = lambda *x: np.asarray(x, np.int32)
  examples = [dict(prompt_ids=ids(1, 2), chosen_ids=ids(5, 6), rejected_ids=ids(5, 7)),
              dict(prompt_ids=ids(1, 3), chosen_ids=ids(5, 6), rejected_ids=ids(5, 6)),
              dict(prompt_ids=ids(1, 4), chosen_ids=ids(5), rejected_ids=ids(5, 6)),
              dict(prompt_ids=ids(1, 5), chosen_ids=[9, 9], rejected_ids=ids(9, 9))]
  kept, dropped = train_dpo.drop_identical_pairs(examples)
  assert dropped == 2
  assert [ex["prompt_ids"].tolist() for ex in kept] == [[1, 2], [1, 4]]
  assert train_dpo.drop_identical_pairs([]) == ([], 0)




def _config(hf_model, pairs):
  config = configs.load("dpo_example")
  config.model.checkpoint = hf_model
  config.model.dtype = "float32"
  config.data.pairs = str(pairs)
  config.mesh.shape = {"data": 1, "fsdp": -1, "tensor": 1}
  config.train.update(dict(learning_rate=1e-2, warmup_steps=0, batch_size=8, grad_accum_steps=1,
                           num_epochs=1, max_length=128, length_buckets=(64, 128), log_every=1))
  config.progress = False
  config.export_hf = False
  return config


def _write(path, records):
  with open(path, "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")


def test_run_drops_identical_pairs(hf_model, tmp_path, capsys):
  pairs = tmp_path / "pairs.jsonl"
  records = [{"prompt": f"What is {k} + {k}?", "chosen": f"The answer is {2 * k}.",
              "rejected": "I do not know, sorry."} for k in range(5)]
  records += [{"prompt": f"Name {k}.", "chosen": "Same text.", "rejected": "Same text."}
              for k in range(3)]
  _write(pairs, records)
  summary = train_dpo.run(_config(hf_model, pairs), str(tmp_path / "work"))
  assert summary["data"]["identical_dropped"] == 3
  assert summary["data"]["kept"] == 5 and summary["data"]["total"] == 8
  assert "identical_dropped=3 (chosen == rejected)" in capsys.readouterr().out
  with open(tmp_path / "work" / "summary.json") as f:
    assert json.load(f)["data"]["identical_dropped"] == 3


def test_run_with_only_identical_pairs_is_an_error(hf_model, tmp_path):
  pairs = tmp_path / "pairs.jsonl"
  _write(pairs, [{"prompt": f"Q{k}", "chosen": "A", "rejected": "A"} for k in range(4)])
  with pytest.raises(data.DataError, match=r"chosen == rejected \(4 dropped\)"):
    train_dpo.run(_config(hf_model, pairs), str(tmp_path / "work"))


def test_cli_refuses_bad_config_values_before_writing(tmp_path):
  workdir = tmp_path / "work"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "meta_rewarding.train_dpo", f"--config={REPO}/configs/dpo_example.py",
       "--config.model.checkpoint=/nonexistent", "--config.data.pairs=/nonexistent.jsonl",
       "--config.train.batch_size=0", "--config.train.learning_rate=-1.0",
       f"--workdir={workdir}"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert errors == ["error: train.learning_rate=-1.0: must be a number > 0",
                    "error: train.batch_size=0: must be an integer >= 1"], proc.stderr
  assert not workdir.exists()


@pytest.mark.parametrize("mode", ["dpo", "sft"])
def test_cli_names_the_line_that_is_not_utf8(hf_model, tmp_path, mode):
  data_file = tmp_path / "data.jsonl"
  response = "chosen" if mode == "dpo" else "response"
  good = {"prompt": "Hi", response: "Hello", "rejected": "Go away"}
  data_file.write_bytes(json.dumps(good).encode() + b"\n" + json.dumps(good).encode() + b"\n"
                        + b'{"prompt": "caf\xe9 ol\xff", "chosen": "a", "rejected": "b"}\n')
  source = "pairs" if mode == "dpo" else "sft"
  proc = subprocess.run(
      [sys.executable, "-m", "meta_rewarding.train_dpo", f"--config={REPO}/configs/dpo_example.py",
       f"--config.mode={mode}", f"--config.model.checkpoint={hf_model}",
       f"--config.data.{source}={data_file}", f"--workdir={tmp_path / 'work'}"],
      capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=REPO,
      timeout=300)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  # Before: "cannot read (UnicodeDecodeError: ... in position 85 ...)", a byte offset in the file.
  assert errors == [f"error: {data_file}:3: not UTF-8 (byte 0xe9 at column 16); save the file as "
                    "UTF-8"], proc.stderr[-3000:]
