"""The GPU figures issue 17 asks for, in one command: each item is an existing bench or CLI run as a
subprocess, and one summary links their results files.

  python -m bench.gpu_figures --output_dir=bench/results/gpu          # on the GPU machine
  python -m bench.gpu_figures --output_dir=/tmp/gf --tiny             # tiny shapes on a CPU
                                                                      # (~6 min, 2 cores): plumbing
  python -m bench.gpu_figures --output_dir=bench/results/gpu --items=decode_1b,dpo_1b   # a subset

Items (`build_items`; --items picks some, in this order):
  decode_8b     bench/decode.py on a Llama-3-8B-shaped random-weight model (vocab 128256, d 4096,
                32 layers, 32/8 heads, mlp 14336), bf16, batch 1 and 64: tokens/s, ms per step,
                roofline fraction and "weights read" = weight bytes x steps / wall time, with its
                share of the HBM read bandwidth the bench measures (a jitted sum over 256 MB).
  decode_1b     the same on the Llama-3.2-1B shape (d 2048, 16 layers, mlp 8192, untied 128256
                head: 1.5B params, as in bench/results/decode_gpu.md), plus the length-skewed
                workload (512 prompts, 64 decode rows, lengths <= 128: static vs continuous, useful
                tokens/s and slot utilisation) and the shared-prefix section.
  dpo_1b        bench/dpo_step.py on the 1B shape (vocab 128256, d 2048, 16 layers, 32/8 heads,
                mlp 8192), bf16, 16 pairs per step, 10 timed steps: tokens/s and MFU. The bench
                has the peak table it divides by (`dpo_step.PEAK_FLOPS`, dense bf16 per device:
                H100 989, H200 989, A100 312 TFLOP/s; matched by substring of `device_kind`, so an
                "H100 PCIe" (756) is overstated by the SXM figure).
  iteration_1b  `python -m meta_rewarding.main --config=configs/local_cpu.py` (the testbed config)
                for ONE iteration (held-out evaluation off: evaluate.heldout_tasks=0) with a
                random-init model of the 1B shape (d 2048, 16 layers, 32/8 heads, mlp 8192, tied
                embeddings as Llama-3.2-1B; bf16 compute, float32 params) but vocab 512: the
                testbed tokenizer's (meta_rewarding/testbed/seed/tokenizer.model), whose ids the
                model must cover. A random-weight model writes no parseable judgment, so on its
                own it forms no pairs and would skip the meta-judge and DPO. Three commands:
                  (a) random 1B from scratch: the prompts, actor and judge stages;
                  (b) the shipped testbed seed (0.9M params) on the CPU, the same iteration;
                  (c) random 1B again, in a workdir seeded with (b)'s prompts / actor / judge files
                      (and their completion markers), so it skips them and runs the meta-judge on
                      the seed's judgments and DPO on the pairs they give, at 1B.
                Per-stage seconds come from the stage files' completion times in iter_1/ (the
                pipeline records only the iteration's wall_seconds, in timings.jsonl); "one 1B
                iteration" = (a)'s prompts / actor / judge + (c)'s later stages. iteration_1b.md
                has them with each run's metrics; timings.jsonl / metrics.jsonl / config.json of
                each run are copied next to it. The random model's generations mostly run to
                max_new_tokens, so its generation stages are an upper bound for these prompts.

References: transformers (decode) and TRL (dpo) run only where `torch.cuda.is_available()` in
this environment (--references=auto; on/off force it): on a CPU they would time PyTorch on the
host next to XLA on the GPU. Each bench runs with --allow_loaded (a CPU-loaded host does not refuse
a GPU run; the results say NOT COMPARABLE when it was loaded).

How long: --tiny 5-6 minutes on 2 CPU cores. On one H100/H200 (an estimate, not measured):
decode_8b ~4-6 min with transformers (random init, a 16 GB safetensors save and two loads,
compiles), decode_1b ~3-4 min, dpo_1b ~2 min, iteration_1b ~4-6 min (its step (b) runs on the
host CPU). Where one command may run at most ~10 minutes, split it (--items), e.g.
--items=decode_8b,decode_1b then --items=dpo_1b,iteration_1b: the summary is rebuilt from every
item record in --output_dir, so several commands add up to one summary. --item_timeout_s bounds
each item.

What it writes under --output_dir: README.md (the summary: the machine -- nvidia-smi, jax devices,
versions --, then per item its command, exit code, wall time, the 1-minute load before and after,
its results file and the tables copied from it, and the tail of its output), each item's results
file (decode_8b.md, decode_1b.md, dpo_1b.md, iteration_1b.md plus iteration_1b/<run>/
timings.jsonl, metrics.jsonl and config.json), items/<item>.json (the record the summary is built
from) and logs/<item>.log (its whole output). The pipeline workdirs (models, artifacts) go to
--workdir_root, not there.

The parent process never imports jax or torch: the children need the GPU's memory (JAX
preallocates 75% of it), so the machine is probed by a subprocess too.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from bench import machine  # pure: no jax, no torch at import

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ITEM_NAMES = ("decode_8b", "decode_1b", "dpo_1b", "iteration_1b")

# The testbed tokenizer's vocab (meta_rewarding/testbed/settings.ARCHITECTURE): iteration_1b's model
# covers its ids, so its vocab is this one, not Llama-3's 128256.
TESTBED_VOCAB = 512

LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, num_layers=32, intermediate_size=14336,
                 num_heads=32, num_kv_heads=8)
LLAMA32_1B = dict(vocab_size=128256, hidden_size=2048, num_layers=16, intermediate_size=8192,
                  num_heads=32, num_kv_heads=8)
TINY = dict(vocab_size=256, hidden_size=64, num_layers=2, intermediate_size=128, num_heads=4,
            num_kv_heads=2)


@dataclasses.dataclass(frozen=True)
class Step:
  """One subprocess of an item, run from the repository root."""
  label: str
  argv: tuple[str, ...]
  env: tuple[tuple[str, str], ...] = ()
  workdir: str = ""              # a pipeline workdir: removed before the step (a fresh run)
  copy_stages_from: str = ""     # a pipeline workdir whose iter_1 stage files seed `workdir`

  def command(self) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
    return (env + " " if env else "") + " ".join(shlex.quote(a) for a in self.argv)


@dataclasses.dataclass(frozen=True)
class Item:
  name: str
  title: str
  steps: tuple[Step, ...]
  results: str                   # the item's own results file (relative to the output dir)

  @property
  def argv(self) -> tuple[str, ...]:
    """The main (last) step's command line."""
    return self.steps[-1].argv

  def command(self) -> str:
    return " && ".join(s.command() for s in self.steps)


def _shape_flags(shape: dict) -> list[str]:
  return [f"--{k}={v}" for k, v in shape.items()]


def build_items(tiny: bool, output_dir: str, *, references: bool = False,
                workdir_root: str | None = None) -> list[Item]:
  """The items' commands (pure: nothing runs). `references`: also run transformers / TRL."""
  out = lambda name: os.path.join(output_dir, name)
  workdir_root = workdir_root or os.path.join(tempfile.gettempdir(), "gpu_figures_workdir")
  py = sys.executable
  env = (("JAX_PLATFORMS", "cpu"),) if tiny else ()
  dtype_name = "float32" if tiny else "bf16"
  items = []

  # 1. decode, Llama-3-8B shape.
  if tiny:
    decode_common = _shape_flags(TINY) + ["--dtype=float32", "--prompt_len=8", "--new_tokens=8",
                                          "--repeats=1"]
    big_batch = "4"
  else:
    decode_common = ["--dtype=bfloat16", "--repeats=2"]
    big_batch = "64"
  skip_tf = [] if references else ["--skip_transformers"]
  shape = lambda name: "tiny stand-in for the " + name if tiny else name
  items.append(Item(
      "decode_8b", f"decode, {shape('Llama-3-8B shape')}, {dtype_name}, batch 1 and {big_batch}",
      (Step("bench", (py, "-m", "bench.decode", f"--batch_sizes=1,{big_batch}")
            + tuple(([] if tiny else _shape_flags(LLAMA3_8B)) + decode_common + skip_tf)
            + ("--skewed_prompts=0", "--shared_batch=0", "--allow_loaded",
               f"--output={out('decode_8b.md')}"), env),),
      "decode_8b.md"))

  # 2. decode, Llama-3.2-1B shape, with the length-skewed workload and the shared-prefix section.
  if tiny:
    extra = ["--skewed_prompts=16", "--skewed_slots=4", "--skewed_max_new_tokens=32",
             "--skewed_decode_block=8", "--skewed_repeats=1", "--shared_batch=2",
             "--shared_prefix_len=16", "--shared_suffix_len=4", "--shared_new_tokens=4"]
  else:
    extra = _shape_flags(LLAMA32_1B) + ["--skewed_prompts=512", "--skewed_slots=64",
                                        "--skewed_max_new_tokens=128", "--skewed_repeats=2"]
  items.append(Item(
      "decode_1b", f"decode, {shape('Llama-3.2-1B shape')}, {dtype_name}, batch 1 and {big_batch}"
      "; length-skewed workload, static vs continuous",
      (Step("bench", (py, "-m", "bench.decode", f"--batch_sizes=1,{big_batch}")
            + tuple(decode_common + extra + skip_tf)
            + ("--allow_loaded", f"--output={out('decode_1b.md')}"), env),),
      "decode_1b.md"))

  # 3. The DPO train step's MFU, 1B shape.
  if tiny:
    dpo = _shape_flags(TINY) + ["--dtype=float32", "--batch_size=2", "--seq_len=64", "--steps=1",
                                "--warmup=1", "--repeats=1"]
  else:
    dpo = _shape_flags(LLAMA32_1B) + ["--dtype=bfloat16", "--batch_size=16", "--seq_len=256",
                                      "--steps=10", "--warmup=2", "--repeats=1"]
  items.append(Item(
      "dpo_1b", f"DPO train step, {shape('Llama-3.2-1B shape')}, {dtype_name}: tokens/s and MFU",
      (Step("bench", (py, "-m", "bench.dpo_step")
            + tuple(dpo + ([] if references else ["--skip_trl"]))
            + ("--allow_loaded", f"--output={out('dpo_1b.md')}"), env),),
      "dpo_1b.md"))

  # 4. One Meta-Rewarding iteration of the testbed config, random init at the 1B shape: (a) from
  # scratch (prompts, actor, judge at 1B); (b) the testbed seed's iteration 1 on the CPU, whose
  # prompts, actor and judge files then seed (c) a 1B run, which meta-judges and trains on them.
  if tiny:
    config = "configs/local_cpu.py:smoke"
    arch = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=True)
    dtype = "float32"
  else:
    config = "configs/local_cpu.py"
    arch = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True)
    dtype = "bfloat16"
  arch["vocab_size"] = TESTBED_VOCAB
  one = ("--config.pipeline.num_iterations=1", "--config.evaluate.heldout_tasks=0")
  main_cmd = lambda workdir: (py, "-m", "meta_rewarding.main", f"--config={config}",
                              f"--workdir={workdir}")
  random_1b = (("--config.model.checkpoint=",
                "--config.model.tokenizer=meta_rewarding/testbed/seed")
               + tuple(f"--config.model.architecture.{k}={v}" for k, v in arch.items())
               + (f"--config.model.dtype={dtype}", "--config.model.param_dtype=float32") + one)
  wd = lambda name: os.path.join(workdir_root, name)
  items.append(Item(
      "iteration_1b", f"one Meta-Rewarding iteration of the testbed config ({config}), random init"
      f" at the {'tiny' if tiny else '1B'} shape, vocab {TESTBED_VOCAB} (the testbed tokenizer's)",
      (Step("random", main_cmd(wd("iteration_1b")) + random_1b, env, workdir=wd("iteration_1b")),
       Step("seed", main_cmd(wd("iteration_seed")) + one, (("JAX_PLATFORMS", "cpu"),),
            workdir=wd("iteration_seed")),
       Step("seeded", main_cmd(wd("iteration_1b_seeded")) + random_1b, env,
            workdir=wd("iteration_1b_seeded"), copy_stages_from=wd("iteration_seed"))),
      "iteration_1b.md"))
  return items


# ------------------------------------------------------------------------------------------------
# The machine.

PROBE = r"""
import json, platform
out = {"python": platform.python_version()}
try:
  import jax
  out["jax"] = jax.__version__
  out["backend"] = jax.default_backend()
  out["devices"] = [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]
except Exception as e:
  out["jax_error"] = repr(e)
for name in ("torch", "transformers", "trl"):
  try:
    out[name] = __import__(name).__version__
  except Exception:
    out[name] = None
try:
  import torch
  out["torch_cuda"] = bool(torch.cuda.is_available())
except Exception:
  out["torch_cuda"] = False
print("PROBE" + json.dumps(out))
"""


def probe(env: dict) -> dict:
  """jax's devices and the versions, from a child process (the parent keeps off the GPU)."""
  try:
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=300)
    line = next(l for l in r.stdout.splitlines() if l.startswith("PROBE"))
    return json.loads(line[len("PROBE"):])
  except Exception as e:  # noqa: BLE001
    return {"probe_error": repr(e)}


def nvidia_smi() -> str:
  if not shutil.which("nvidia-smi"):
    return "(no nvidia-smi on this machine)"
  r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm,"
                      "clocks.max.memory,power.limit", "--format=csv"],
                     capture_output=True, text=True)
  return (r.stdout or r.stderr).strip()


# ------------------------------------------------------------------------------------------------
# Running an item.

# The stage files iteration 1 of the seed run hands to the seeded 1B run (with their markers).
SEEDED_STAGES = ("prompts.jsonl", "actor.jsonl", "judge.jsonl")


def _copy_stages(src_workdir: str, dst_workdir: str) -> None:
  src, dst = os.path.join(src_workdir, "iter_1"), os.path.join(dst_workdir, "iter_1")
  os.makedirs(dst, exist_ok=True)
  for name in SEEDED_STAGES:
    for f in (name, name + ".done.json"):
      shutil.copy(os.path.join(src, f), os.path.join(dst, f))  # new mtimes: before the run


def _run_step(step: Step, log, deadline: float) -> tuple[int, bool]:
  """(exit code, timed out) of one step, its output appended to `log`."""
  env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
  env.update(dict(step.env))
  if step.workdir:
    shutil.rmtree(step.workdir, ignore_errors=True)  # a fresh run, not a resume
  if step.copy_stages_from:
    _copy_stages(step.copy_stages_from, step.workdir)
  log.write(f"=== step {step.label}: {step.command()}\n")
  log.flush()
  proc = subprocess.Popen(list(step.argv), cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
  try:
    return proc.wait(timeout=max(1.0, deadline - time.perf_counter())), False
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
    return proc.returncode, True


def run_item(item: Item, output_dir: str, timeout_s: float, tail_lines: int = 40,
             device: str = "") -> dict:
  """Runs the item's steps (stopping at the first failure, all within timeout_s) and writes its
  record, items/<name>.json."""
  os.makedirs(os.path.join(output_dir, "logs"), exist_ok=True)
  log_path = os.path.join(output_dir, "logs", f"{item.name}.log")
  load_before = machine.load_average()
  started = datetime.datetime.now(datetime.timezone.utc)
  t0 = time.perf_counter()
  print(f"\n=== {item.name}: {item.command()}", flush=True)
  rc, timed_out, step_seconds = 0, False, {}
  with open(log_path, "w") as log:
    for step in item.steps:
      s0 = time.perf_counter()
      rc, timed_out = _run_step(step, log, t0 + timeout_s)
      step_seconds[step.label] = round(time.perf_counter() - s0, 1)
      if rc != 0:
        break
  wall = time.perf_counter() - t0
  with open(log_path, errors="replace") as f:
    # Progress bars redraw with \r: keep each line's last state.
    lines = [l.split("\r")[-1] for l in f.read().splitlines()]
  record = dict(name=item.name, title=item.title, command=item.command(), rc=rc,
                timed_out=timed_out, wall_s=round(wall, 1), step_seconds=step_seconds,
                load_before=load_before, load_after=machine.load_average(),
                cores=machine.cores(), started_utc=started.strftime("%Y-%m-%d %H:%M:%S"),
                results=item.results, log=os.path.join("logs", f"{item.name}.log"),
                device=device, stdout_tail=lines[-tail_lines:])
  if item.name == "iteration_1b" and rc == 0:
    try:
      record["stages"] = write_iteration_report(item, output_dir, step_seconds)
    except Exception as e:  # noqa: BLE001  (the record says what failed)
      record["rc"] = 1
      record["stdout_tail"].append(f"gpu_figures: reading the workdirs failed: {e!r}")
  record["results_exists"] = os.path.exists(os.path.join(output_dir, item.results))
  record["ok"] = record["rc"] == 0 and record["results_exists"]
  os.makedirs(os.path.join(output_dir, "items"), exist_ok=True)
  with open(os.path.join(output_dir, "items", f"{item.name}.json"), "w") as f:
    json.dump(record, f, indent=1)
  print(f"=== {item.name}: {'ok' if record['ok'] else 'FAILED'} (exit {record['rc']}"
        f"{', timed out' if timed_out else ''}), {wall:.1f} s", flush=True)
  return record


# The pipeline's stage files in the order it writes them (recipes/meta_rewarding.py); a stage's
# completion time is its marker's (<file>.done.json) modification time, else the file's.
STAGE_FILES = (("prompts", "prompts.jsonl"), ("actor", "actor.jsonl"), ("judge", "judge.jsonl"),
               ("actor_pairs", "actor_pairs.jsonl"), ("meta_judge", "meta_judge.jsonl"),
               ("judge_pairs", "judge_pairs.jsonl"),
               ("dpo (reference log-probs, training, model save)", "dpo.jsonl"),
               ("evaluate (metrics)", "metrics.json"))


def stage_seconds(it_dir: str, wall_seconds: float) -> dict[str, float | None]:
  """{stage: seconds} from the stage files' completion times (None: no file); the iteration
  started wall_seconds before its timings.json (written just before metrics.json). A file older
  than that (copied in before the run) took no time in this run: 0."""
  mtime = lambda p: os.path.getmtime(p + ".done.json" if os.path.exists(p + ".done.json") else p)
  previous = os.path.getmtime(os.path.join(it_dir, "timings.json")) - wall_seconds
  out = {}
  for stage, name in STAGE_FILES:
    path = os.path.join(it_dir, name)
    if not os.path.exists(path):
      out[stage] = None
      continue
    t = mtime(path)
    out[stage] = max(0.0, t - previous)
    previous = max(previous, t)
  return out


def _read_run(workdir: str) -> dict:
  """Iteration 1 of a finished pipeline workdir: its timings, metrics and stage seconds."""
  read = lambda name: [json.loads(l) for l in open(os.path.join(workdir, name)) if l.strip()]
  timings = next(t for t in read("timings.jsonl") if t.get("iteration") == 1)
  metrics = next(m for m in read("metrics.jsonl") if m.get("iteration") == 1)
  it_dir = os.path.join(workdir, "iter_1")
  wall = float(timings["wall_seconds"])
  start = os.path.getmtime(os.path.join(it_dir, "timings.json")) - wall
  return dict(wall=wall, metrics=metrics, stages=stage_seconds(it_dir, wall),
              setup=start - os.path.getmtime(os.path.join(workdir, "config.json")))


METRIC_KEYS = ("prompts", "actor/responses", "actor/length_tokens_mean",
               "actor/stopped_by_length_share", "judge/judgments", "judge/parse_failure_rate",
               "pairs/actor", "meta/battles", "meta/parse_failure_rate", "pairs/judge", "dpo/steps")


def write_iteration_report(item: Item, output_dir: str, step_seconds: dict) -> dict:
  steps = {s.label: s for s in item.steps}
  runs = {label: _read_run(steps[label].workdir) for label in ("random", "seeded", "seed")}
  copy_dir = os.path.join(output_dir, "iteration_1b")
  for label in runs:
    os.makedirs(os.path.join(copy_dir, label), exist_ok=True)
    for name in ("timings.jsonl", "metrics.jsonl", "config.json"):
      shutil.copy(os.path.join(steps[label].workdir, name), os.path.join(copy_dir, label, name))
  fmt = lambda v: "-" if v is None else f"{v:.1f}"
  # The iteration at 1B: the random run's prompts / actor / judge, the seeded run's later stages.
  combined = {}
  lines = ["| stage | (a) random 1B, from scratch | (c) random 1B, on the seed's files | "
           "(b) the seed (0.9M, CPU) | one 1B iteration: (a) then (c) |", "|---|---|---|---|---|"]
  for stage, name in STAGE_FILES:
    a, c, b = (runs[k]["stages"][stage] for k in ("random", "seeded", "seed"))
    pick = a if name in SEEDED_STAGES else c
    combined[stage] = pick
    c_text = "copied" if name in SEEDED_STAGES else fmt(c)
    lines.append(f"| {stage} | {fmt(a)} | {c_text} | {fmt(b)} | {fmt(pick)} |")
  total = sum(v for v in combined.values() if v is not None)
  lines.append(f"| **iteration (timings.jsonl wall_seconds)** | **{runs['random']['wall']:.1f}** | "
               f"**{runs['seeded']['wall']:.1f}** | **{runs['seed']['wall']:.1f}** | "
               f"**{total:.1f}** (sum) |")
  mlines = ["| metric | (a) random 1B | (c) random 1B on the seed's files | (b) the seed |",
            "|---|---|---|---|"]
  for k in METRIC_KEYS:
    mlines.append("| " + k + " | " + " | ".join(str(runs[r]["metrics"].get(k, "-"))
                                               for r in ("random", "seeded", "seed")) + " |")
  cmds = "\n".join(f"- ({'abc'[i]}) {s.label}, {step_seconds.get(s.label, '-')} s in all "
                   f"({runs[s.label]['setup']:.1f} s before the iteration: start-up, tokenizer, "
                   f"init or load, the memory plan, the prompt pool): `{s.command()}`"
                   for i, s in enumerate(item.steps))
  links = ", ".join(f"[{label}/{n}](iteration_1b/{label}/{n})" for label in runs
                    for n in ("timings.jsonl", "metrics.jsonl"))
  text = f"""# One Meta-Rewarding iteration, testbed config, random init

{item.title}. The model is random-initialised from `model.architecture` (`model.checkpoint=""`);
the tokenizer is the testbed seed's (vocab {TESTBED_VOCAB}), so the vocab is {TESTBED_VOCAB}, not
128256: the rest of the shape is the one named (tied embeddings, as Llama-3.2-1B). Held-out
evaluation off.

A random-weight model writes no parseable judgment (judge/parse_failure_rate 1 in (a)), so on its
own it forms no pairs and its meta-judge and DPO stages have nothing to do. So the item runs three
commands:

{cmds}

(b) is the shipped testbed seed on the CPU; its iteration-1 prompts, actor and judge files (with
their completion markers) are copied into (c)'s workdir, so (c) skips those stages and runs the
rest at the 1B shape: the meta-judge on the seed's judgments and DPO on the pairs they give (its
random meta-judge parses nothing either, so those are the seed's actor pairs only).
"One 1B iteration" takes prompts, actor and judge from (a) and the later stages from (c). The
random model's generations mostly run to max_new_tokens (stopped_by_length_share), longer than a
trained model's, so its generation stages are an upper bound for these prompts.

Per-stage seconds, from the completion times of the stage files in `iter_1/` (each stage's
`<file>.done.json` marker), the iteration starting `wall_seconds` before its `timings.json`; the
pipeline itself records only the iteration's wall_seconds (timings.jsonl).

{chr(10).join(lines)}

What each iteration did (metrics.jsonl):

{chr(10).join(mlines)}

Copied from the workdirs: {links} (and each config.json).
"""
  with open(os.path.join(output_dir, item.results), "w") as f:
    f.write(text)
  return {k: None if v is None else round(v, 2) for k, v in combined.items()}


# ------------------------------------------------------------------------------------------------
# The summary.

def _tables(path: str) -> str:
  """The markdown tables of a results file (its headline figures), in order."""
  if not os.path.exists(path):
    return ""
  blocks, current = [], []
  with open(path) as f:
    for line in f.read().splitlines():
      if line.startswith("|"):
        current.append(line)
      elif current:
        blocks.append("\n".join(current))
        current = []
  if current:
    blocks.append("\n".join(current))
  return "\n\n".join(blocks)


def write_summary(output_dir: str, machine_info: dict, argv: Sequence[str]) -> str:
  records = []
  for name in ITEM_NAMES:
    path = os.path.join(output_dir, "items", f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        records.append(json.load(f))
  probe_info = machine_info.get("probe", {})
  devices = probe_info.get("devices") or [probe_info.get("jax_error", "?")]
  versions = ", ".join(f"{k} {probe_info.get(k)}" for k in ("python", "jax", "torch",
                                                             "transformers", "trl"))
  lines = [
      "# GPU figures (issue 17)", "",
      f"`python -m bench.gpu_figures {' '.join(argv)}` (items run by earlier invocations into the "
      "same directory are included with their own dates)", "",
      f"- written {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC" + (
          "; --tiny: tiny shapes on the CPU, the plumbing only, not figures"
          if machine_info.get("tiny") else ""),
      f"- jax backend {probe_info.get('backend')}: {'; '.join(devices)}",
      f"- versions: {versions}; torch sees CUDA: {probe_info.get('torch_cuda')}; "
      f"references (transformers / TRL) run: {machine_info.get('references')}",
      f"- host: {machine.cores()} cores available", "",
      "nvidia-smi:", "", "```", machine_info.get("nvidia_smi", ""), "```", "",
      "| item | what | device | exit | wall s | load before / after | results |",
      "|---|---|---|---|---|---|---|"]
  for r in records:
    status = str(r["rc"]) + (" (timed out)" if r.get("timed_out") else "")
    link = f"[{r['results']}]({r['results']})" if r.get("results_exists") else "(not written)"
    lines.append(f"| {r['name']} | {r['title']} | {r.get('device', '')} | {status} | "
                 f"{r['wall_s']} | "
                 f"{r['load_before']:.1f} / {r['load_after']:.1f} ({r['cores']} cores) | {link} |")
  for r in records:
    lines += ["", f"## {r['name']}: {r['title']}", "",
              f"Started {r['started_utc']} UTC; exit {r['rc']}; {r['wall_s']} s; "
              f"whole output: [{r['log']}]({r['log']}).", "", f"`{r['command']}`", ""]
    tables = _tables(os.path.join(output_dir, r["results"]))
    if tables:
      lines += [f"Tables of [{r['results']}]({r['results']}):", "", tables, ""]
    lines += ["<details><summary>last lines of its output</summary>", "", "```",
              *r["stdout_tail"], "```", "", "</details>"]
  text = "\n".join(lines) + "\n"
  path = os.path.join(output_dir, "README.md")
  with open(path, "w") as f:
    f.write(text)
  return path


# ------------------------------------------------------------------------------------------------

def main(argv):
  del argv
  from absl import flags
  FLAGS = flags.FLAGS
  names = [n for n in FLAGS.items if n]
  unknown = set(names) - set(ITEM_NAMES)
  if unknown:
    raise SystemExit(f"unknown --items {sorted(unknown)}; known: {', '.join(ITEM_NAMES)}")
  output_dir = os.path.abspath(FLAGS.output_dir)
  os.makedirs(output_dir, exist_ok=True)
  env = dict(os.environ)
  if FLAGS.tiny:
    env["JAX_PLATFORMS"] = "cpu"
  info = {"probe": probe(env), "nvidia_smi": nvidia_smi(), "tiny": FLAGS.tiny}
  print(f"machine: {json.dumps(info['probe'])}\n{info['nvidia_smi']}", flush=True)
  if FLAGS.references == "auto":
    references = bool(info["probe"].get("torch_cuda"))
  else:
    references = FLAGS.references == "on"
  info["references"] = references
  items = build_items(FLAGS.tiny, output_dir, references=references,
                      workdir_root=FLAGS.workdir_root or None)
  items = [i for i in items if not names or i.name in names]
  t0 = time.perf_counter()
  device = "; ".join(info["probe"].get("devices") or ["?"])
  records = [run_item(i, output_dir, FLAGS.item_timeout_s, device=device) for i in items]
  path = write_summary(output_dir, info, sys.argv[1:])
  ok = sum(r["ok"] for r in records)
  print(f"\n{ok} of {len(records)} items ok in {time.perf_counter() - t0:.0f} s; wrote {path}")
  return 0 if ok == len(records) else 1


def _define_flags():
  from absl import flags
  flags.DEFINE_string("output_dir", os.path.join(REPO, "bench", "results", "gpu"),
                      "Where the summary (README.md), the items' results files and logs go.")
  flags.DEFINE_bool("tiny", False, "Tiny shapes, few tokens, one repeat, on the CPU: checks the "
                    "plumbing in a few minutes (write it to a temporary directory).")
  flags.DEFINE_list("items", [], f"Items to run (default all): {', '.join(ITEM_NAMES)}.")
  flags.DEFINE_enum("references", "auto", ["auto", "on", "off"],
                    "transformers / TRL reference rows: auto = where torch sees CUDA.")
  flags.DEFINE_float("item_timeout_s", 1200, "Each item is stopped after this many seconds.")
  flags.DEFINE_string("workdir_root", "", "Where iteration_1b's pipeline workdir goes "
                      "(default: <tmp>/gpu_figures_workdir).")


if __name__ == "__main__":
  from absl import app
  _define_flags()
  app.run(main)
