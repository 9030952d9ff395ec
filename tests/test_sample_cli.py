"""`python -m meta_rewarding.sample` on a tiny saved checkpoint with a tiny Llama-3-style tokenizer."""

import json
import os
import subprocess
import sys

import pytest
import tiny_tokenizers
from absl import app, flags

from hf_models import save_hf_model
from meta_rewarding import checkpoints, sample, sampling
from meta_rewarding.tokenizer import load_tokenizer

PROMPTS = ["What is 12 + 7?", [{"role": "system", "content": "You are a helpful assistant."},
                               {"role": "user", "content": "Count the letters in banana."}],
           "Write a short poem about the sea."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("ckpt"))
  # Ids as the tokenizer's: <|begin_of_text|> = 0, <|end_of_text|> = 1, <|eot_id|> = 4.
  save_hf_model("llama3", directory, vocab_size=400, bos_token_id=0, eos_token_id=[1, 4])
  tiny_tokenizers.build_llama3_hf(directory)
  return directory


@pytest.fixture
def prompts_file(tmp_path):
  path = tmp_path / "prompts.jsonl"
  path.write_text("\n".join(json.dumps({"prompt": p, "id": k}) for k, p in enumerate(PROMPTS)) + "\n\n")
  return str(path)


def _run_main(*args):
  flags.FLAGS(["sample", *args])
  try:
    sample.run()
  finally:
    flags.FLAGS.unparse_flags()


def _read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_cli_writes_one_line_per_completion_matching_the_sampler(checkpoint, prompts_file, tmp_path):
  out = str(tmp_path / "out.jsonl")
  _run_main(f"--checkpoint={checkpoint}", f"--prompts={prompts_file}", f"--output={out}", "--n=2",
            "--temperature=1.0", "--top_p=0.9", "--max_new_tokens=6", "--seed=7", "--batch_size=8")
  rows = _read(out)
  assert [(r["index"], r["n"]) for r in rows] == [(i, j) for i in range(3) for j in range(2)]
  assert [r["prompt"] for r in rows[::2]] == PROMPTS
  for r in rows:
    assert r["finish_reason"] in ("stop", "length") and 1 <= r["num_tokens"] <= 6
    assert isinstance(r["completion"], str) and isinstance(r["logprob"], float)
    assert r["finish_reason"] == "stop" or r["num_tokens"] == 6
  # Exactly what the library driver returns for the same settings.
  tokenizer = load_tokenizer(checkpoint)
  config, params = checkpoints.load_hf(checkpoint, dtype="float32", param_dtype="float32")
  sampler = sampling.Sampler(config, params, tokenizer, batch_size=8)
  results = sampler.generate(PROMPTS, n=2, strategy=sampling.Sampling(temperature=1.0, top_p=0.9),
                             max_new_tokens=6, seed=7, progress=False)
  assert [c.text for cs in results for c in cs] == [r["completion"] for r in rows]
  for cs in results:
    for c in cs:
      body = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids
      assert c.finish_reason == "length" or c.token_ids[-1] in tokenizer.stop_ids
      assert c.text == tokenizer.decode(body) and c.num_tokens == len(c.token_ids)


def test_cli_greedy_raw_is_deterministic(checkpoint, prompts_file, tmp_path):
  outs = []
  for k in range(2):
    out = str(tmp_path / f"greedy{k}.jsonl")
    _run_main(f"--checkpoint={checkpoint}", f"--prompts={prompts_file}", f"--output={out}",
              "--greedy", "--raw", "--max_new_tokens=6", f"--seed={k}", "--batch_size=8")
    outs.append([(r["completion"], r["num_tokens"]) for r in _read(out)])
  assert outs[0] == outs[1] and len(outs[0]) == 3


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "ok"}\n{"prompt": "broken\n', r"bad\.jsonl:2: invalid JSON"),
    ('{"prompt": "ok"}\n\n["a list"]\n', r"bad\.jsonl:3: expected a JSON object"),
    ('{"text": "no prompt"}\n', r"bad\.jsonl:1: missing 'prompt' field"),
    ('{"prompt": 5}\n', r"bad\.jsonl:1: 'prompt' must be a string"),
])
def test_malformed_prompts_file_names_file_and_line(tmp_path, content, message):
  path = tmp_path / "bad.jsonl"
  path.write_text(content)
  with pytest.raises(app.UsageError, match=message):
    sample.read_prompts(str(path))


def test_malformed_line_exits_nonzero_without_traceback(checkpoint, tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"prompt": "fine"}\n{not json}\n')
  proc = subprocess.run([sys.executable, "-m", "meta_rewarding.sample", f"--checkpoint={checkpoint}",
                         f"--prompts={path}"], capture_output=True, text=True,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120)
  assert proc.returncode != 0
  assert f"{path}:2: invalid JSON" in proc.stderr and "Traceback" not in proc.stderr


def test_too_long_prompt_is_a_usage_error_or_skipped(checkpoint, tmp_path):
  path = tmp_path / "long.jsonl"
  path.write_text(json.dumps({"prompt": "hello " * 200}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n")
  with pytest.raises(app.UsageError, match=r"prompt 0 has \d+ tokens"):
    _run_main(f"--checkpoint={checkpoint}", f"--prompts={path}", "--max_new_tokens=6", "--raw")
  out = str(tmp_path / "out.jsonl")
  _run_main(f"--checkpoint={checkpoint}", f"--prompts={path}", "--max_new_tokens=6", "--raw",
            "--skip_long", "--greedy", "--batch_size=8", f"--output={out}")
  assert [r["index"] for r in _read(out)] == [1]
