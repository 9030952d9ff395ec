"""Runs the compile check for every shipped TPU config (and its variants) on its slice.

  pip install -e ".[tpu]"      # libtpu: the TPU compiler (no TPU needed)
  python -m bench.tpu_compile                          # the three configs, default variants
  python -m bench.tpu_compile --only=tpu_v4:mesh=fsdp,tpu_v4:model=gemma_2_9b_it
  python -m bench.tpu_compile --variants               # every variant of configs/tpu_v4.py too

Each case is the user's command, `python -m meta_rewarding.plan --config=... --compile_for=...
--output=...`, run as a subprocess and timed wall-clock; the file gets the command, its time, its
peak resident memory, the machine's load and core count, and the table it printed. A case's
section replaces the one of the same case already in the file (other cases' sections stay), and
the file is written after every case, so a long run stopped midway keeps what finished. The
analysis of the findings is in bench/results/tpu_compile.md, written by hand from these runs.

Host memory: the Llama-3-8B programs peak at 16-18 GB resident with two compile threads; larger
vocabularies (Gemma: 256k) need more, so those cases compile one program at a time. The 70B
config's programs do not fit one process on 24 GiB even one at a time (killed at 23.2 GiB after
its 10th program): its check runs as groups of programs (`--compile_programs`), one process each,
and their JSON is merged into the case's (`compile_check.merge_reports`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# (config spec, target, compile threads or None for one per core)
CASES = (
    ("configs/tpu_v4.py", "v4-32", None),
    ("configs/tpu_v5e.py", "v5e-32", None),
    ("configs/ste_tpu_v4.py", "v4-256", 1),
)

# Every other variant the two pipeline configs ship (their `VARIANTS`, less the local ones), each
# on the config's slice; Gemma's 256k vocabularies compile one program at a time (host memory).
VARIANT_CASES = tuple(
    (f"configs/{name}.py:{variant}", target, 1 if "gemma" in variant else None)
    for name, target in (("tpu_v4", "v4-32"), ("tpu_v5e", "v5e-32"))
    for variant in configs.module(name).VARIANTS if variant and "runlocal" not in variant)


# Cases whose check runs as several processes, one per group of programs (host memory, above).
GROUPS = {
    "configs/ste_tpu_v4.py": ("train,actor/*,worse/*", "judge/*"),
}


def case_name(config: str) -> str:
  """"configs/tpu_v4.py:model=x" -> "tpu_v4:model=x" (what --only takes)."""
  path, _, variant = config.partition(":")
  base = os.path.basename(path)[:-3]
  return f"{base}:{variant}" if variant else base


def run_case(config: str, target: str, threads: int | None, json_dir: str) -> dict:
  output = json_path(config, target, json_dir)
  groups = GROUPS.get(config)
  if not groups:
    return run_command(config, target, threads, output)
  parts = []
  for i, group in enumerate(groups):
    part = output[:-len(".json")] + f".part{i + 1}.json"
    parts.append(run_command(config, target, threads, part, programs=group))
  spec, _, variant = config.partition(":")
  merged = None
  if all(os.path.exists(p["output"]) and p["returncode"] in (0, 1) for p in parts):
    from meta_rewarding import compile_check
    cfg = configs.load(spec, variant)
    merged = compile_check.merge_reports(
        [compile_check.report_from_json(cfg, json.load(open(p["output"]))) for p in parts])
    tmp = output + ".tmp"
    with open(tmp, "w") as f:
      json.dump(merged.to_json(), f, indent=1, sort_keys=True)
      f.write("\n")
    os.replace(tmp, output)
  worst = next((p["returncode"] for p in parts if p["returncode"] not in (0, 1)), None)
  return {"config": config, "target": target,
          "command": "\n".join(p["command"] for p in parts),
          "seconds": sum(p["seconds"] for p in parts),
          "returncode": worst if worst is not None else max(p["returncode"] for p in parts),
          "load_at_start": parts[0]["load_at_start"], "load_at_end": parts[-1]["load_at_end"],
          "peak_rss_gb": max(p["peak_rss_gb"] for p in parts),
          "table": merged.table() if merged else "",
          "stderr_tail": "\n".join(p["stderr_tail"] for p in parts), "parts": parts}


def run_command(config: str, target: str, threads: int | None, output: str,
                programs: str = "") -> dict:
  command = [sys.executable, "-m", "meta_rewarding.plan", f"--config={config}",
             f"--compile_for={target}", f"--output={os.path.relpath(output, REPO)}"]
  if threads:
    command.append(f"--compile_threads={threads}")
  if programs:
    command.append(f"--compile_programs={programs}")
  load = os.getloadavg()[0]
  start = time.perf_counter()
  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err, text=True)
    # Reaped with wait4, not Popen.wait: wait4 gives this child's own rusage (its peak resident
    # memory, KiB on Linux), where getrusage(RUSAGE_CHILDREN) is the maximum over every child.
    _, status, usage = os.wait4(proc.pid, 0)
    returncode = os.waitstatus_to_exitcode(status)
    out.seek(0), err.seek(0)
    stdout, stderr = out.read(), err.read()
  seconds = time.perf_counter() - start
  rss = usage.ru_maxrss / 2**20
  shown = " ".join(["python -m meta_rewarding.plan"] + command[3:])
  return {"config": config, "target": target, "command": shown, "seconds": seconds,
          "output": output,
          "returncode": returncode, "load_at_start": load,
          "load_at_end": os.getloadavg()[0], "peak_rss_gb": rss, "table": stdout.strip(),
          "stderr_tail": _stderr_tail(stderr, returncode)}


def _stderr_tail(stderr: str, returncode: int) -> str:
  """The command's progress lines; after a crash (exit 2 and up, a signal, a traceback) its last
  lines too, so the file says what went wrong."""
  lines = stderr.splitlines()
  kept = [l for l in lines if l.startswith(("error", "compiled", "XLA refused", "Traceback"))]
  if returncode not in (0, 1) or any(l.startswith("Traceback") for l in lines):
    kept += ["..."] + lines[-25:]
  return "\n".join(kept)[-6000:]


def section(result: dict) -> str:
  rss = f", peak resident memory {result['peak_rss_gb']:.1f} GiB"
  exit_code = result["returncode"]
  verdict = {0: "every program fits", 1: "a program does not fit",
             -9: "killed (signal 9: host memory)"}.get(exit_code, "the check could not run")
  parts = result.get("parts")
  if parts:  # one process per group of programs; the table is their merged JSON's
    commands = "; ".join(f"`{p['command']}` (exit {p['returncode']}, {p['seconds'] / 60:.1f} "
                         f"min, peak resident {p['peak_rss_gb']:.1f} GiB)" for p in parts)
    head = (f"In {len(parts)} processes, one per group of programs: {commands}. Together: exit "
            f"{exit_code} ({verdict}), {result['seconds'] / 60:.1f} min wall on "
            f"{os.cpu_count()} cores")
  else:
    head = (f"`{result['command']}`: exit {exit_code} ({verdict}), "
            f"{result['seconds'] / 60:.1f} min wall on {os.cpu_count()} cores{rss}")
  return "\n".join([
      f"## `{result['config']}` on {result['target']}", "",
      f"{head}; 1-minute load {result['load_at_start']:.2f} at the "
      f"start, {result['load_at_end']:.2f} at the end ({time.strftime('%Y-%m-%d %H:%M')}).", "",
      "```", result["table"] or result["stderr_tail"], "```", ""])


def merge(path: str, header: str, new_sections: dict[str, str]) -> str:
  """The file at `path` with each of `new_sections` (heading -> text) replacing the section of
  the same heading, or appended."""
  old = open(path).read() if os.path.exists(path) else header
  parts = re.split(r"\n(?=## )", old)
  head, sections = parts[0], parts[1:]
  by_heading = {s.splitlines()[0]: s for s in sections}
  for heading, text in new_sections.items():
    by_heading[heading] = text
  return "\n".join([head.rstrip() + "\n"] + [s.rstrip() + "\n" for s in by_heading.values()])


def json_path(config: str, target: str, json_dir: str) -> str:
  stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", case_name(config))
  return os.path.join(json_dir, f"{stem}_{target}.json")


def summary(cases, json_dir: str) -> str:
  """One markdown row per case with a saved JSON: the check's verdicts, re-read from the file
  (`compile_check.report_from_json`, the plan recomputed from the config as it is now)."""
  from meta_rewarding import compile_check
  GiB = 1 << 30
  rows = ["| case | slice | mesh | largest program: XLA + live / usable GiB | planner / XLA "
          "(sampling, reference, training) | decode HBM / floor | DPO FLOPs / model | roofline "
          "h / iteration | verdict |", "|" + "---|" * 9]
  for config, target, _ in cases:
    path = json_path(config, target, json_dir)
    if not os.path.exists(path):
      continue
    spec, _, variant = config.partition(":")
    report = compile_check.report_from_json(
        configs.load(spec, variant), json.load(open(path)))
    worst = max(report.measured, key=lambda m: m.compiled + m.resident)
    peaks = report.phase_peaks()
    ratios = ", ".join(f"{peaks[k]['ratio']:.2f}" if k in peaks else "-"   # SFT: no reference
                       for k in ("sampling", "reference", "training"))
    decode = [d["ratio"] for d in report.decode_checks()]
    train = [t["ratio"] for t in report.train_checks()]
    estimate = report.iteration_estimate()
    mesh = " ".join(f"{k}={v}" for k, v in report.plan.mesh.items())
    rows.append(
        f"| `{case_name(config)}` | {target} | {mesh} | {worst.name} "
        f"{(worst.compiled + worst.resident) / GiB:.1f} / {report.usable_bytes / GiB:.1f} | "
        f"{ratios} | {f'{min(decode):.2f}-{max(decode):.2f}' if decode else '-'} | "
        f"{', '.join(f'{r:.2f}' for r in train) or '-'} | "
        f"{'-' if estimate is None else f'{sum(v for _, v in estimate) / 3600:.2f}'} | "
        f"{'fits' if report.all_fit else 'DOES NOT FIT'} |")
  return "\n".join(rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(REPO, "bench", "results",
                                                    "tpu_compile_runs.md"))
  parser.add_argument("--json_dir", default=os.path.join(REPO, "bench", "results", "tpu_compile"))
  parser.add_argument("--only", default="", help="comma-separated cases: config basenames with "
                      "their variant, e.g. tpu_v4,tpu_v4:mesh=fsdp")
  parser.add_argument("--variants", action="store_true", help="also every variant of tpu_v4.py")
  parser.add_argument("--summary", action="store_true", help="compile nothing: print one row per "
                      "case from the JSON already in --json_dir")
  args = parser.parse_args()
  os.makedirs(args.json_dir, exist_ok=True)
  every = CASES + VARIANT_CASES
  if args.only:
    wanted = args.only.split(",")
    unknown = sorted(set(wanted) - {case_name(c[0]) for c in every})
    if unknown:
      parser.error(f"--only: unknown case(s) {unknown}; known: "
                   f"{[case_name(c[0]) for c in every]}")
    by_name = {case_name(c[0]): c for c in every}
    cases = [by_name[name] for name in wanted]   # in the order given
  else:
    cases = list(every if args.variants else CASES)
  # This process reads the checks' JSON back (summary, merged groups): jax on the CPU, and no
  # libtpu probing for a TPU VM (its warnings filled the log after the 70B case).
  from meta_rewarding import compile_check
  compile_check.quiet_libtpu_environment()
  if args.summary:
    print(summary(every, args.json_dir))
    return
  header = ("# The compile check on the shipped TPU configs: the command's own output\n\n"
            f"Written by `python -m bench.tpu_compile` on {os.cpu_count()} cores; JSON per case in "
            f"`{os.path.relpath(args.json_dir, REPO)}/`.\n")
  for config, target, threads in cases:
    result = run_case(config, target, threads, args.json_dir)
    print(f"{config} {target}: exit {result['returncode']} in {result['seconds']:.0f} s, "
          f"peak RSS {result['peak_rss_gb']:.1f} GiB", flush=True)
    text = section(result)
    merged = merge(args.out, header, {text.splitlines()[0]: text})
    with open(args.out + ".tmp", "w") as f:  # after every case: a long run stopped keeps the others
      f.write(merged)
    os.replace(args.out + ".tmp", args.out)
  print(json.dumps({"wrote": args.out}))


if __name__ == "__main__":
  main()
