"""End to end: `python -m meta_rewarding.main` with the default config (the shipped seed on the
testbed), one tiny iteration in a subprocess; and a bad input's one-line error."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_FILES = ("prompts.jsonl", "actor.jsonl", "judge.jsonl", "actor_pairs.jsonl",
               "meta_judge.jsonl", "judge_pairs.jsonl", "dpo.jsonl", "metrics.json")


def _main(*args, timeout=900):
  env = dict(os.environ)
  # One CPU device, like a user's run (conftest gives this process 8 fake ones).
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if not f.startswith("--xla_force_host_platform_device_count"))
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run([sys.executable, "-m", "meta_rewarding.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_smoke_run_of_the_default_config(tmp_path):
  workdir = str(tmp_path / "run")
  out = _main("--config=configs/local_cpu.py:smoke", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-4000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    metrics = [json.loads(line) for line in f if line.strip()]
  assert len(metrics) == 1
  m = metrics[0]
  for key in ("oracle/actor_accuracy", "oracle/judge_accuracy", "oracle/meta_judge_accuracy",
              "pairs/actor", "pairs/judge", "judge/parse_failure_rate"):
    assert key in m, key
  assert 0.0 <= m["oracle/actor_accuracy"] <= 1.0
  # The seed writes parseable judgments (a random-weight model would not).
  assert m["judge/parse_failure_rate"] < 0.5
  it = os.path.join(workdir, "iter_1")
  for name in STAGE_FILES:
    assert os.path.isfile(os.path.join(it, name)), name
  model = os.path.join(it, "model")
  for name in ("config.json", "model.safetensors", "tokenizer.model"):
    assert os.path.isfile(os.path.join(model, name)), name
  assert "oracle/actor_accuracy" in out.stdout  # the printed table


def test_bad_prompt_file_gives_a_one_line_error(tmp_path):
  out = _main("--config=configs/local_cpu.py:smoke", f"--workdir={tmp_path / 'bad'}",
              "--config.data.prompts=/nonexistent.jsonl", timeout=300)
  assert out.returncode == 1
  assert "Traceback" not in out.stderr
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "/nonexistent.jsonl" in errors[0], out.stderr
