"""Stage 0 (issue 30): with `sft.data` set, the pipeline first makes M_0 by SFT of the loaded model
(iter_0/sft.jsonl, iter_0/model/, iter_0/metrics.json), then runs the iterations from it. A run
killed at any point and resumed writes exactly what an uninterrupted one does; M_0's held-out
record measures the SFT model; config_check and preflight refuse bad `sft` values up front."""

import json
import os
import subprocess
import sys

import pytest

from meta_rewarding import artifacts, config_check, data, pipeline, run as run_lib, stages
from meta_rewarding.recipe_types import PipelineError
from test_pipeline import POOL, ScriptedPolicy, make_config
from test_resume_integrity import _results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SFT_RECORDS = [
    {"prompt": "Rate this answer.", "completion": "Fine. Score: 4"},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
     "completion": "Hello."},
    {"messages": [{"role": "user", "content": "Judge it."},
                  {"role": "assistant", "content": "Score: 3"}]},
]
SFT_VERSION = 100  # what the scripted SFT adds to the model's version (DPO adds 1)


@pytest.fixture(autouse=True)
def _no_plots_or_tensorboard(monkeypatch):
  """Plots and TensorBoard events are not results (`_results` leaves them out) and take seconds
  per iteration: skipped here."""
  from meta_rewarding import metrics as metrics_lib
  monkeypatch.setattr(metrics_lib, "write_plots", lambda *a, **k: [])
  monkeypatch.setattr(metrics_lib, "write_tensorboard", lambda *a, **k: None)


class SFTPolicy(ScriptedPolicy):
  """The scripted model, with an SFT that records its inputs; `fail_in_sft` stops the run inside
  it (after its train-state checkpoint directory exists, as a real kill during training would)."""

  def __init__(self, fail_in_sft=False, **kwargs):
    super().__init__(**kwargs)
    self.fail_in_sft = fail_in_sft
    self.sft_calls = []

  def train_sft(self, records, *, checkpoint_dir, seed, system_prompt="", train_config=None):
    os.makedirs(checkpoint_dir, exist_ok=True)
    if self.fail_in_sft:
      raise KeyboardInterrupt("simulated kill during stage 0")
    self.sft_calls.append({"records": list(records), "seed": seed,
                           "system_prompt": system_prompt,
                           "learning_rate": train_config.learning_rate})
    self.version += SFT_VERSION
    return [{"step": 1, "loss": 1.5, "grad_norm": 2.0, "learning_rate": 1e-6,
             "data/sft_skipped_too_long": 1, "data/sft_truncated": 0, "tokens_per_second": 50.0},
            {"step": 2, "loss": 0.5, "grad_norm": 1.0, "learning_rate": 5e-7,
             "tokens_per_second": 70.0}]


def _config(tmp_path, num_iterations=2):
  path = tmp_path / "eft.jsonl"
  if not path.exists():
    path.write_text("".join(json.dumps(r) + "\n" for r in SFT_RECORDS))
  config = make_config(num_iterations=num_iterations)
  config.sft.data = str(path)
  config.sft.system_prompt = "You judge."
  config.sft.train.learning_rate = 3e-6
  return config


def _heldout(policy, label):
  return {"heldout/version": policy.version, "heldout/label": label}


def _run(workdir, config, policy=None):
  policy = policy or SFTPolicy()
  return pipeline.run(config, str(workdir), policy, POOL, evaluate_model=_heldout), policy


def test_stage0_trains_m0_and_iteration_1_starts_from_it(tmp_path):
  config = _config(tmp_path)
  metrics, policy = _run(tmp_path / "run", config)
  (call,) = policy.sft_calls
  assert [r["response"] for r in call["records"]] == ["Fine. Score: 4", "Hello.", "Score: 3"]
  assert call["records"][2]["prompt"] == [{"role": "user", "content": "Judge it."}]
  assert call["seed"] == stages.stage_seed(config.seed, 0, "sft")
  assert call["system_prompt"] == "You judge." and call["learning_rate"] == 3e-6  # sft.train
  it0 = tmp_path / "run" / "iter_0"
  for name in ("sft.jsonl", "metrics.json", "heldout.json"):
    assert (it0 / (name + ".done.json")).exists(), name  # marked
  assert json.loads((it0 / "model" / "version.json").read_text()) == {"version": SFT_VERSION}
  assert not (it0 / "sft_checkpoints").exists()
  # The step records hold no timing fields (those are in timings.json).
  assert all("tokens_per_second" not in s for s in artifacts.read_jsonl(it0 / "sft.jsonl"))
  record = metrics[0]
  assert record["iteration"] == 0
  assert record["sft/examples"] == 3 and record["sft/examples_used"] == 2
  assert record["sft/examples_skipped_too_long"] == 1 and record["sft/examples_truncated"] == 0
  assert record["sft/loss"] == pytest.approx(1.0) and record["sft/final_loss"] == 0.5
  assert record["sft/steps"] == 2
  # M_0's held-out record is the SFT model's; iteration 1's DPO started from it.
  assert record["heldout/version"] == SFT_VERSION and record["heldout/label"] == "M_0"
  assert metrics[1]["heldout/version"] == SFT_VERSION + 1
  assert metrics[2]["heldout/version"] == SFT_VERSION + 2
  lines = artifacts.read_jsonl(tmp_path / "run" / "metrics.jsonl")
  assert [m["iteration"] for m in lines] == [0, 1, 2] and lines[0] == record
  timings = artifacts.read_jsonl(tmp_path / "run" / "timings.jsonl")
  assert [t["iteration"] for t in timings] == [0, 1, 2]
  assert timings[0]["sft/tokens_per_second"] == pytest.approx(60.0)
  assert "sft/tokens_per_second" not in record


def test_without_evaluate_model_the_stage0_record_is_iteration_0(tmp_path):
  metrics = pipeline.run(_config(tmp_path, 1), str(tmp_path / "run"), SFTPolicy(), POOL)
  assert [m["iteration"] for m in metrics] == [0, 1] and metrics[0]["sft/steps"] == 2


def test_no_sft_data_no_stage0(tmp_path):
  config = _config(tmp_path, 1)
  config.sft.data = ""
  metrics, policy = _run(tmp_path / "run", config)
  assert policy.sft_calls == [] and not (tmp_path / "run" / "iter_0" / "sft.jsonl").exists()
  assert metrics[0] == {"iteration": 0, "heldout/version": 0, "heldout/label": "M_0"}


def _remove_marked(path):
  os.remove(artifacts.marker_path(path))
  os.remove(path)


@pytest.mark.parametrize("kill", ["in_sft", "before_stage0_metrics", "in_m0_heldout",
                                  "in_iteration_1", "after_iteration_1"])
def test_killed_and_resumed_equals_uninterrupted(tmp_path, kill):
  config = _config(tmp_path)
  _run(tmp_path / "clean", config)
  run = tmp_path / "killed"
  if kill == "in_sft":
    with pytest.raises(KeyboardInterrupt):
      _run(run, config, SFTPolicy(fail_in_sft=True))
    assert (run / "iter_0" / "sft_checkpoints").exists()
    assert not (run / "iter_0" / "model").exists()
  elif kill == "in_iteration_1":  # stage 0 finished, iteration 1 stopped during judging
    with pytest.raises(KeyboardInterrupt):
      _run(run, config, SFTPolicy(fail_after_judge_calls=3))
    assert (run / "iter_0" / "metrics.json.done.json").exists()
  elif kill == "in_m0_heldout":  # stage 0 finished, stopped while M_0 was being measured
    def stopped(policy, label):
      raise KeyboardInterrupt("simulated kill during the held-out evaluation")
    with pytest.raises(KeyboardInterrupt):
      pipeline.run(config, str(run), SFTPolicy(), POOL, evaluate_model=stopped)
    assert not (run / "iter_0" / "heldout.json").exists()
  else:
    _run(run, config)
    if kill == "before_stage0_metrics":  # M_0 saved and sft.jsonl written, metrics.json not yet
      for name in ("metrics.json", "heldout.json"):
        _remove_marked(run / "iter_0" / name)
      for it in (1, 2):
        artifacts.rmtree(run / f"iter_{it}")
    else:  # after_iteration_1: iteration 2 is lost
      artifacts.rmtree(run / "iter_2")
  policy = SFTPolicy()
  _run(run, config, policy)
  # M_0 is trained once: never again once saved with its step records.
  assert len(policy.sft_calls) == (1 if kill == "in_sft" else 0)
  assert _results(run) == _results(tmp_path / "clean")


def test_a_finished_stage0_is_loaded_not_retrained(tmp_path):
  config = _config(tmp_path, 1)
  _run(tmp_path / "run", config)
  policy = SFTPolicy()
  policy.version = -7  # what the policy holds when the run starts (the checkpoint)
  metrics, _ = _run(tmp_path / "run", config, policy)
  assert policy.sft_calls == [] and policy.trained == []
  assert metrics[0]["heldout/version"] == SFT_VERSION and policy.version == SFT_VERSION + 1


def test_a_damaged_stage0_file_is_refused_by_name(tmp_path):
  config = _config(tmp_path, 1)
  _run(tmp_path / "run", config)
  path = tmp_path / "run" / "iter_0" / "sft.jsonl"
  path.write_text(path.read_text().replace('"loss": 0.5', '"loss": 0.25'))  # another size
  policy = SFTPolicy()
  with pytest.raises(PipelineError, match="sft.jsonl"):
    _run(tmp_path / "run", config, policy)
  assert policy.sft_calls == [] and policy.trained == []


def test_a_heldout_of_the_seed_is_measured_again_once_stage0_trains(tmp_path):
  """A run that gains sft.data (allow_config_change) measured M_0 = the seed before: stale."""
  config = _config(tmp_path, 1)
  config.sft.data = ""
  _run(tmp_path / "run", config)
  assert json.loads((tmp_path / "run" / "iter_0" / "heldout.json").read_text())[
      "heldout/version"] == 0
  artifacts.rmtree(tmp_path / "run" / "iter_1")
  metrics, _ = _run(tmp_path / "run", _config(tmp_path, 1))
  assert metrics[0]["heldout/version"] == SFT_VERSION


def test_nothing_to_train_on_stops_the_run(tmp_path):
  class DropsAll(SFTPolicy):
    def train_sft(self, records, **kwargs):
      return []
  with pytest.raises(PipelineError, match="none of its 3 records fits"):
    _run(tmp_path / "run", _config(tmp_path, 1), DropsAll())
  assert not (tmp_path / "run" / "iter_0" / "model").exists()


# ------------------------------------------------------------------------------------------------
# Records, config_check, preflight.

def test_sft_records_prompt_completion_and_messages(tmp_path):
  path = tmp_path / "eft.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in SFT_RECORDS))
  records = data.load_sft(str(path), response_field="completion")
  assert [r["prompt"] for r in records][0] == "Rate this answer."
  assert records[2] == {"prompt": [{"role": "user", "content": "Judge it."}],
                        "response": "Score: 3", "source": f"{path}:3"}
  path.write_text(json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n")
  with pytest.raises(data.DataError, match=r"eft.jsonl:1: .*ending with one assistant message"):
    data.load_sft(str(path))


def _pipeline_config():
  config = make_config()
  config.model.checkpoint = "/some/checkpoint"
  config.data.prompts = "testbed:10"
  return config


@pytest.mark.parametrize("key, value, expected", [
    ("train.learning_rate", 1.0,
     "sft.train.learning_rate=1.0: must be <= 0.01: " + config_check.LEARNING_RATE.reason),
    ("train.num_epochs", 1000,
     "sft.train.num_epochs=1000: must be <= 100: " + config_check.NUM_EPOCHS.reason),
    ("train.batch_size", 0, "sft.train.batch_size=0: must be an integer >= 1"),
    ("train.max_length", 10**6,
     "sft.train.max_length=1000000: must be <= 131072: " + config_check.TOKENS.reason),
    ("train.truncation", "drop", "sft.train.truncation='drop': must be one of "
     "skip|truncate_response|error"),
    ("data", 3, "sft.data=3: must be a string (a JSONL/parquet file of SFT records; '' = no "
     "stage 0)"),
    ("response_field", "", "sft.response_field='': must be a non-empty string"),
])
def test_config_check_refuses_bad_sft_values(key, value, expected):
  config = _pipeline_config()
  config_check.check_pipeline_config(config)  # the defaults pass
  node = config.sft
  *parents, last = key.split(".")
  for p in parents:
    node = node[p]
  with node.ignore_type():
    node[last] = value
  with pytest.raises(config_check.ConfigError) as e:
    config_check.check_pipeline_config(config)
  assert e.value.problems == (expected,)


def test_config_check_refuses_sft_data_with_the_ste_recipe():
  from meta_rewarding.config.base import get_ste_config
  config = get_ste_config()
  config.model.checkpoint = "/some/checkpoint"
  config.data.prompts = "testbed:10"
  config.sft.data = "eft.jsonl"
  with pytest.raises(config_check.ConfigError) as e:
    config_check.check_pipeline_config(config)
  assert e.value.problems == (
      "sft.data='eft.jsonl': must be '' with recipe='ste': the Self-Taught Evaluator trains from "
      "its seed every iteration; point model.checkpoint at the SFT model instead",)


def test_preflight_sources_refuse_a_missing_or_bad_sft_file(tmp_path):
  config = _pipeline_config()
  config.model.checkpoint = ""
  config.sft.data = str(tmp_path / "missing.jsonl")
  with pytest.raises(PipelineError, match=r"^sft.data='.*missing.jsonl': no such file$"):
    run_lib._check_sources(config)
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"prompt": "x", "response": "wrong field"}) + "\n")
  config.sft.data = str(bad)
  with pytest.raises(data.DataError, match=r"bad.jsonl:1: missing field 'completion'"):
    run_lib._check_sources(config)


def test_main_refuses_a_missing_sft_file_before_anything_is_written(tmp_path):
  workdir = tmp_path / "work"
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if not f.startswith("--xla_force_host_platform_device_count"))
  env["JAX_PLATFORMS"] = "cpu"
  missing = tmp_path / "eft.jsonl"
  out = subprocess.run([sys.executable, "-m", "meta_rewarding.main",
                        "--config=configs/local_cpu.py:smoke", f"--workdir={workdir}",
                        f"--config.sft.data={missing}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert errors == [f"error: sft.data='{missing}': no such file"], out.stderr[-3000:]
  assert out.stderr.splitlines()[-1] == errors[0]
  assert not workdir.exists()
