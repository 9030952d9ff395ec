"""Runs the compile check for every shipped TPU config on its slice and writes the tables.

  pip install -e ".[tpu]"      # libtpu: the TPU compiler (no TPU needed)
  python -m bench.tpu_compile --out=bench/results/tpu_compile_runs.md

Each case is the user's command, `python -m meta_rewarding.plan --config=... --compile_for=...
--output=...`, run as a subprocess and timed wall-clock; the file gets the command, its time, the
machine's load and core count, and the table it printed. The analysis of the findings is in
bench/results/tpu_compile.md, written by hand from these runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = (
    ("configs/tpu_v4.py", "v4-32"),
    ("configs/tpu_v5e.py", "v5e-32"),
    ("configs/ste_tpu_v4.py", "v4-256"),
)


def run_case(config: str, target: str, json_dir: str) -> dict:
  output = os.path.join(json_dir, f"{os.path.basename(config)[:-3]}_{target}.json")
  command = [sys.executable, "-m", "meta_rewarding.plan", f"--config={config}",
             f"--compile_for={target}", f"--output={output}"]
  load = os.getloadavg()[0]
  start = time.perf_counter()
  r = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  shown = " ".join(["python -m meta_rewarding.plan"] + command[3:])
  return {"config": config, "target": target, "command": shown, "seconds": seconds,
          "returncode": r.returncode, "load_at_start": load, "table": r.stdout.strip(),
          "stderr_tail": "\n".join(l for l in r.stderr.splitlines()
                                   if l.startswith(("error", "compiled")))[-3000:]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(REPO, "bench", "results",
                                                    "tpu_compile_runs.md"))
  parser.add_argument("--json_dir", default=os.path.join(REPO, "bench", "results", "tpu_compile"))
  parser.add_argument("--only", default="", help="comma-separated config basenames to run")
  args = parser.parse_args()
  os.makedirs(args.json_dir, exist_ok=True)
  cases = [c for c in CASES if not args.only or os.path.basename(c[0])[:-3] in args.only.split(",")]
  lines = ["# The compile check on the shipped TPU configs", "",
           f"Written by `python -m bench.tpu_compile` on {os.cpu_count()} cores "
           f"({time.strftime('%Y-%m-%d')}); JSON per case in `{os.path.relpath(args.json_dir, REPO)}/`.",
           ""]
  for config, target in cases:
    result = run_case(config, target, args.json_dir)
    print(f"{config} {target}: exit {result['returncode']} in {result['seconds']:.0f} s",
          flush=True)
    lines += [f"## `{config}` on {target}", "",
              f"`{result['command']}`: exit {result['returncode']}, {result['seconds'] / 60:.1f} "
              f"min wall on {os.cpu_count()} cores, 1-minute load {result['load_at_start']:.2f} "
              "at the start.", "", "```", result["table"] or result["stderr_tail"], "```", ""]
    with open(args.out, "w") as f:  # after every case: a long case stopped keeps the others
      f.write("\n".join(lines))
  print(json.dumps({"wrote": args.out}))


if __name__ == "__main__":
  main()
