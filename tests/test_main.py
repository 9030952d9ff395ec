"""End to end: `python -m meta_rewarding.main` with the default config (the shipped seed on the
testbed), one tiny iteration in a subprocess, with a console free of library INFO logs; and the
one-line errors: bad input, out-of-range config values, a misspelt config key, a damaged
workdir/config.json, Ctrl-C."""

import json
import os
import re
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_FILES = ("prompts.jsonl", "actor.jsonl", "judge.jsonl", "actor_pairs.jsonl",
               "meta_judge.jsonl", "judge_pairs.jsonl", "dpo.jsonl", "metrics.json")


# absl's log line prefix (Python and C++ alike): level letter, MMDD, time.
ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ ")


def _env():
  env = dict(os.environ)
  # One CPU device, like a user's run (conftest gives this process 8 fake ones).
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if not f.startswith("--xla_force_host_platform_device_count"))
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _main(*args, timeout=900):
  return subprocess.run([sys.executable, "-m", "meta_rewarding.main", *args], cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def _errors(out) -> list[str]:
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  return [line for line in out.stderr.splitlines() if line.startswith("error:")]


def test_smoke_run_of_the_default_config(tmp_path):
  workdir = str(tmp_path / "run")
  out = _main("--config=configs/local_cpu.py:smoke", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-4000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    metrics = [json.loads(line) for line in f if line.strip()]
  # The seed M_0's held-out record (iteration 0), then iteration 1's.
  assert [m["iteration"] for m in metrics] == [0, 1]
  # Held-out oracle figures of M_0 and of the model iteration 1 trained (M_1), 12 tasks here.
  for record in metrics:
    assert record["heldout/tasks"] == 12
    assert 0.0 <= record["heldout/actor_accuracy"] <= 1.0
  assert os.path.isfile(os.path.join(workdir, "iter_0", "heldout.json"))
  assert os.path.isfile(os.path.join(workdir, "plots", "oracle.png"))
  assert "heldout/actor_accuracy" in out.stdout
  m = metrics[1]
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
  # The console: progress bars, tables, the project's messages; library INFO records (orbax writes
  # dozens per checkpoint save) and absl-formatted INFO lines only in the log file.
  lines = (out.stdout + out.stderr).splitlines()  # splits tqdm's carriage returns too
  assert not [l for l in lines if l.startswith("I1") or re.match(r"^I\d{4} ", l)], lines[:20]
  orbax = [l for l in lines if "orbax" in l.lower()]
  assert all(ABSL_PREFIX.match(l) and l[0] in "WEF" for l in orbax), orbax  # warnings may show
  assert "prompt pool: 2000 prompts from testbed:2000" in lines  # the project's own messages
  log = os.path.join(workdir, "logs", "main.INFO")
  shown = [l[len("log: "):] for l in lines if l.startswith("log: ")]
  assert [os.path.realpath(p) for p in shown] == [os.path.realpath(log)], shown
  with open(log, encoding="utf-8") as f:
    logged = f.read()
  assert "orbax" in logged and "prompt pool" in logged
  # Artifacts get the umask's mode, not tempfile's 0600.
  mask = os.umask(0)
  os.umask(mask)
  for name in ("config.json", "metrics.jsonl", "iter_1/judge.jsonl", "iter_1/metrics.json"):
    mode = os.stat(os.path.join(workdir, name)).st_mode & 0o777
    assert mode == 0o666 & ~mask, (name, oct(mode), oct(mask))


def test_bad_prompt_file_gives_a_one_line_error(tmp_path):
  out = _main("--config=configs/local_cpu.py:smoke", f"--workdir={tmp_path / 'bad'}",
              "--config.data.prompts=/nonexistent.jsonl", timeout=300)
  assert out.returncode == 1
  assert "Traceback" not in out.stderr
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "/nonexistent.jsonl" in errors[0], out.stderr


def test_bad_config_values_give_one_line_each_and_write_nothing(tmp_path):
  workdir = tmp_path / "never"
  out = _main("--config=configs/local_cpu.py:smoke", f"--workdir={workdir}",
              "--config.pipeline.rho=(2.0,)", "--config.judge.num_judgments=0",
              "--config.sampling.temperature=-1", "--config.actor.num_responses=1",
              "--config.train.batch_size=0", timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  errors = _errors(out)
  assert errors == [line for line in out.stderr.splitlines() if line.strip()], out.stderr
  assert [e.split("=")[0] for e in errors] == [
      "error: sampling.temperature", "error: actor.num_responses", "error: judge.num_judgments",
      "error: pipeline.rho[0]", "error: train.batch_size"], errors
  assert "error: pipeline.rho[0]=2.0: must be a number in [0, 0.5)" in errors
  assert not workdir.exists()  # so the corrected rerun is not refused as "a different config"


def test_misspelt_config_key_is_one_line(tmp_path):
  out = _main("--config=configs/local_cpu.py:smoke", f"--workdir={tmp_path / 'w'}",
              "--config.pipeline.num_iteratons=3", timeout=300)
  assert out.returncode == 2
  assert _errors(out) == ["error: --config.pipeline.num_iteratons: the config has no key "
                          "'num_iteratons' (did you mean 'num_iterations'?)"], out.stderr
  out = _main("--config=configs/local_cpu.py:no_such_variant", f"--workdir={tmp_path / 'w'}",
              timeout=300)
  assert out.returncode == 2
  errors = _errors(out)
  assert len(errors) == 1 and "unknown local_cpu variant 'no_such_variant'" in errors[0], errors
  out = _main("--config=configs/no_such_file.py", f"--workdir={tmp_path / 'w'}", timeout=300)
  assert out.returncode == 2
  errors = _errors(out)
  assert len(errors) == 1 and "no_such_file.py" in errors[0], errors
  assert not (tmp_path / "w").exists()


def test_garbage_config_json_in_the_workdir_is_one_line(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_bytes(bytes(range(128, 256)) * 4)
  out = _main("--config=configs/local_cpu.py:smoke", f"--workdir={workdir}", timeout=300)
  assert out.returncode == 1
  assert _errors(out) == [f"error: {workdir / 'config.json'}:1: not UTF-8 text (byte 0x80): the "
                          "file is damaged; restore or delete it"], out.stderr


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
  proc = subprocess.Popen(
      [sys.executable, "-m", "meta_rewarding.main", "--config=configs/local_cpu.py:smoke",
       f"--workdir={tmp_path / 'run'}"], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True,
      # A child of a non-interactive shell may inherit SIGINT ignored; a terminal's Ctrl-C is not.
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  try:
    first = proc.stdout.readline()  # "log: ..." once the config is checked and the run starts
    assert first.startswith("log: "), first
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 130, stderr[-3000:]
  assert "Traceback" not in stderr
  assert stderr.splitlines()[-1] == "interrupted; rerun the same command to resume", stderr
  leftovers = [os.path.join(d, n) for d, _, names in os.walk(tmp_path) for n in names
               if n.endswith(".tmp")]
  assert not leftovers


_SWALLOWED_INTERRUPT = """
import gc, os, signal, sys, time
from meta_rewarding import main

def work():
  def press_ctrl_c_inside(phase, info):  # Python prints and drops what a gc callback raises
    if phase == "start":
      gc.callbacks.remove(press_ctrl_c_inside)
      os.kill(os.getpid(), signal.SIGINT)
      for _ in range(1000):  # bytecode to run the handler on, still inside the callback
        pass
  gc.callbacks.append(press_ctrl_c_inside)
  gc.collect()
  deadline = time.time() + 30
  while time.time() < deadline:
    sum(range(1000))
  print("finished as if never interrupted")

main.run_interruptible(work)
"""


def test_ctrl_c_raised_inside_a_gc_callback_still_stops_the_run():
  # CI once saw Ctrl-C's KeyboardInterrupt raised inside jax's gc callback, dropped by Python,
  # and the run finish with exit 0.
  out = subprocess.run([sys.executable, "-c", _SWALLOWED_INTERRUPT], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  assert out.returncode == 130, out.stdout + out.stderr
  assert "finished" not in out.stdout
  assert "Traceback" not in out.stderr, out.stderr
  assert out.stderr.splitlines() == ["interrupted; rerun the same command to resume"], out.stderr
