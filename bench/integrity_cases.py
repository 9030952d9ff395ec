"""Re-runs the damage cases of the integrity audit on a checkout of the project, with the real
command, and writes what each did: exit code, the first `error:` / `warning:` line, and whether the
damage reached the results.

  python -m bench.integrity_cases --repo=. --label=after --output=bench/results/integrity_cases.md
  git worktree add /tmp/before fd5fc0a
  python -m bench.integrity_cases --repo=/tmp/before --label=before \
      --output=bench/results/integrity_cases.md

Each run appends its column to the output's JSON sidecar (`<output without .md>.json`) and rewrites the table
from all the columns there, so the two checkouts end up side by side. Every case starts from a copy
of one finished smoke run (`configs/local_cpu.py:smoke`) made with the checkout itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_REPO = flags.DEFINE_string("repo", ".", "The checkout whose `meta_rewarding` runs the cases.")
_LABEL = flags.DEFINE_string("label", "after", "The column's name.")
_OUTPUT = flags.DEFINE_string("output", "bench/results/integrity_cases.md", "Markdown table.")
_KEEP = flags.DEFINE_string("keep_template", "", "Where to keep the finished smoke run (e.g. to "
                            "diff two checkouts' artifacts); removed with the scratch otherwise.")

SMOKE = "--config=configs/local_cpu.py:smoke"


def _main(repo, *args, wait=True):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.path.abspath(repo))
  env.pop("XLA_FLAGS", None)
  command = [sys.executable, "-m", "meta_rewarding.main", *args]
  if not wait:
    return subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=1800)


def _said(out_stderr: str) -> str:
  lines = [l for l in out_stderr.splitlines() if l.startswith(("error:", "warning:"))]
  errors = [l for l in lines if l.startswith("error:")]
  line = (errors or lines or ["no error or warning printed"])[0]
  tracebacks = out_stderr.count("Traceback")
  return (line[:160] + ("..." if len(line) > 160 else "")) + (
      f" ({tracebacks} traceback(s))" if tracebacks else "")


def _heldout_accuracy(workdir) -> str:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return "no metrics.jsonl"
  records = [json.loads(l) for l in open(path) if l.strip()]
  return ", ".join(f"M_{r['iteration']} {r.get('heldout/actor_accuracy')}" for r in records)


def _flip(path):
  data = bytearray(open(path, "rb").read())
  mid = len(data) // 2
  data[mid:mid + 4096] = bytes(b ^ 0xFF for b in data[mid:mid + 4096])
  open(path, "wb").write(bytes(data))


def _edit_json(path, key, value):
  record = json.load(open(path))
  record[key] = value
  json.dump(record, open(path, "w"), indent=2, sort_keys=True)


def cases(repo, template, scratch):
  def copy(name):
    workdir = os.path.join(scratch, name)
    shutil.copytree(template, workdir, symlinks=True)
    for lock in ("workdir.lock",):  # none after a clean exit; never copied as held
      if os.path.exists(os.path.join(workdir, lock)):
        os.remove(os.path.join(workdir, lock))
    return workdir

  def resume(workdir, *args):
    return _main(repo, SMOKE, f"--workdir={workdir}", *args)

  out = {}
  w = copy("weights")
  _flip(os.path.join(w, "iter_1", "model", "model.safetensors"))
  for name in ("metrics.json", "heldout.json"):
    for f in (name, name + ".done.json"):
      if os.path.exists(os.path.join(w, "iter_1", f)):
        os.remove(os.path.join(w, "iter_1", f))
  r = resume(w)
  out["2. 4 KB inverted in iter_1/model/model.safetensors, iter_1/{metrics,heldout}.json deleted"] = (
      f"exit {r.returncode}; {_said(r.stderr)}; held-out actor accuracy: {_heldout_accuracy(w)}")

  w = copy("heldout")
  _edit_json(os.path.join(w, "iter_0", "heldout.json"), "heldout/actor_accuracy", 0.999)
  r = resume(w)
  out["3. iter_0/heldout.json: heldout/actor_accuracy edited to 0.999"] = (
      f"exit {r.returncode}; {_said(r.stderr)}; metrics.jsonl: {_heldout_accuracy(w)}")

  w = copy("metrics")
  _edit_json(os.path.join(w, "iter_1", "metrics.json"), "pairs/actor", 999)
  r = resume(w)
  pairs = [json.loads(l).get("pairs/actor") for l in open(os.path.join(w, "metrics.jsonl"))]
  out["3. iter_1/metrics.json: pairs/actor edited to 999"] = (
      f"exit {r.returncode}; {_said(r.stderr)}; metrics.jsonl pairs/actor: {pairs}")

  w = copy("judge")
  open(os.path.join(w, "iter_1", "judge.jsonl"), "w").close()
  r = resume(w)
  out["4. iter_1/judge.jsonl emptied (finished iteration)"] = f"exit {r.returncode}; {_said(r.stderr)}"

  w = copy("config")
  open(os.path.join(w, "iter_1", "model", "config.json"), "w").write("{garbage")
  r = resume(w)
  out["4. `{garbage` in iter_1/model/config.json"] = f"exit {r.returncode}; {_said(r.stderr)}"

  w = copy("tokenizer")
  model = os.path.join(w, "iter_1", "model")
  name = "tokenizer.model" if os.path.exists(os.path.join(model, "tokenizer.model")) else "tokenizer.json"
  os.remove(os.path.join(model, name))
  r = resume(w)
  out[f"4. iter_1/model/{name} deleted"] = (
      f"exit {r.returncode}; {_said(r.stderr)}; restored: {os.path.exists(os.path.join(model, name))}")

  w = os.path.join(scratch, "missing_prompts")
  r = _main(repo, SMOKE, f"--workdir={w}", f"--config.data.prompts={scratch}/missing.jsonl")
  out["6. data.prompts names a missing file"] = (
      f"exit {r.returncode}; {_said(r.stderr)}; config.json written: "
      f"{os.path.exists(os.path.join(w, 'config.json'))}")

  w = os.path.join(scratch, "two_launches")
  first = _main(repo, SMOKE, f"--workdir={w}", wait=False)
  deadline = time.time() + 600
  while not os.path.exists(os.path.join(w, "config.json")) and time.time() < deadline:
    if first.poll() is not None:
      break
    time.sleep(0.5)
  second = _main(repo, SMOKE, f"--workdir={w}")
  _, first_err = first.communicate(timeout=1800)
  out["7. a second launch on a workdir while the first runs"] = (
      f"second: exit {second.returncode}; {_said(second.stderr)}; first: exit {first.returncode}")
  return out


def write_table(output, columns):
  labels = list(columns)
  rows = list(dict.fromkeys(k for c in columns.values() for k in c))
  lines = ["# Integrity cases: the audit's damage, re-run with the real command", "",
           "Written by `bench/integrity_cases.py` (its doc has the commands). Each case starts from "
           "a copy of one finished `configs/local_cpu.py:smoke` run made by the same checkout; "
           "numbers are issue 32's items. Load: 1-minute load 1-3 on 2 cores (other work ran "
           "beside it); the cases do not depend on it.", "",
           "| case | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
  for row in rows:
    # Columns written before `_said` named an empty stderr have "exit N; ;" there.
    cells = [re.sub(r"^(second: )?(exit -?\d+);\s*(?=;|$|\()", r"\1\2; no error or warning printed ",
                    columns[l].get(row, "")).strip().replace("|", "\\|") for l in labels]
    lines.append(f"| {row} | " + " | ".join(cells) + " |")
  with open(output, "w") as f:
    f.write("\n".join(lines) + "\n")


def main(argv):
  del argv
  repo = os.path.abspath(_REPO.value)
  scratch = tempfile.mkdtemp(prefix="integrity-")
  template = os.path.join(scratch, "template")
  r = _main(repo, SMOKE, f"--workdir={template}")
  if r.returncode != 0:
    raise SystemExit(f"the smoke run failed: {r.stderr[-2000:]}")
  column = cases(repo, template, scratch)
  sidecar = os.path.splitext(_OUTPUT.value)[0] + ".json"
  columns = json.load(open(sidecar)) if os.path.exists(sidecar) else {}
  columns[_LABEL.value] = column
  with open(sidecar, "w") as f:
    json.dump(columns, f, indent=2)
  write_table(_OUTPUT.value, columns)
  if _KEEP.value:
    shutil.copytree(template, _KEEP.value, symlinks=True)
  shutil.rmtree(scratch, ignore_errors=True)
  print(open(_OUTPUT.value).read())


if __name__ == "__main__":
  app.run(main)
