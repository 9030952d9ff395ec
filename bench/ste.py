"""The Self-Taught Evaluator on the synthetic testbed: does it raise the judge's pairwise accuracy?

  python -m bench.ste                         # 5 seeds x configs/ste_testbed.py (3 iterations)
  python -m bench.ste --seeds=0,1 --pairs=40  # quicker
  python -m bench.ste --report_only           # rebuild the report from the runs on disk
  python -m bench.ste --variant=large --workdir=/tmp/ste_large --output=bench/results/ste_large.md
                                              # 256 instructions per iteration (~4x the SFT data)

Every run is configs/ste_testbed.py with `seed=<k>` and `evaluate.judge_pairs=testbed:<pairs>`:
the shipped seed M_0 and each iteration's model M_t judge the same held-out oracle pairs (a right
answer against a plausible mistake, `testbed.evaluate.preference_pairs`) in both orders with the
STE prompt; judge_eval/score is their mean pair score (ties and unparseable verdicts 0.5). Seed k
fixes the run's instructions and sampling, so M_t is compared with M_0 by PAIRED per-seed
differences: mean, paired-t 95% CI (which decides the verdict) and a paired bootstrap CI as a
cross-check (bench/stats.py). The report also gives, per iteration, what the loop built and kept
from M_{t-1}'s generations and how often the oracle agrees with those labels.

Runs happen in this process one after the other (<workdir>/seed<k>, normal pipeline workdirs, so a
rerun resumes); the report (bench/results/ste.md) is rewritten after every run.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from typing import Any, Mapping, Sequence

from bench import stats, testbed

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SEEDS = tuple(range(5))
SCORE = "judge_eval/score"
# What each iteration built from M_{t-1}'s generations (means over seeds), and how it is shown.
DATA_KEYS = (("ste/pairs", "pairs built", "n"), ("ste/match_rate", "judgments naming y_w", "pct"),
             ("ste/kept", "kept for SFT", "n"), ("oracle/ste_label_right", "labels right (oracle)",
                                                "pct"),
             ("oracle/ste_kept_right", "kept verdicts right (oracle)", "pct"),
             ("sft/final_loss", "final SFT loss", "x"))


def load_config(seed: int, pairs: int, variant: str = ""):
  import configs  # not at import: `import bench.ste` loads no project code (as bench.testbed)
  config = configs.load("ste_testbed", ",".join(filter(None, (variant, f"seed={seed}"))))
  config.evaluate.judge_pairs = f"testbed:{pairs}"
  return config


def run_dir(root: str, seed: int) -> str:
  return os.path.join(root, f"seed{seed}")


def read_records(workdir: str) -> dict[int, dict]:
  """metrics.jsonl by iteration ({} when the run has not started)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {r["iteration"]: r for r in (json.loads(l) for l in f if l.strip())}


def _fmt(mean: float, half: float, kind: str) -> str:
  scale, digits = (100.0, 1) if kind == "pct" else (1.0, 1 if kind == "n" else 3)
  if mean != mean:  # NaN: no value
    return "-"
  text = f"{mean * scale:.{digits}f}"
  return text + (f" ± {half * scale:.{digits}f}" if half == half else "")


def build_report(runs: Mapping[int, Mapping[int, dict]], n_iter: int,
                 header: Sequence[str]) -> tuple[str, dict]:
  """(markdown, results): judge_eval/score of M_0 ... M_T, paired M_t - M_0, the data table."""
  seeds = sorted(runs)
  lines = ["# Self-Taught Evaluator on the testbed: pairwise judge accuracy", "", *header, ""]
  lines += ["Pairwise judge accuracy on held-out oracle pairs (judge_eval/score, %, mean ± 95% CI "
            "half-width over seeds; both orders, ties 0.5):", "",
            "| model | score | position consistency | seeds |", "|---|---|---|---|"]
  results: dict[str, Any] = {"seeds": seeds, "models": {}, "paired": {}}
  for t in range(n_iter + 1):
    scores = [runs[s].get(t, {}).get(SCORE) for s in seeds]
    consistency = [runs[s].get(t, {}).get("judge_eval/position_consistency") for s in seeds]
    mean, half, n = stats.mean_halfwidth(scores)
    cmean, chalf, _ = stats.mean_halfwidth(consistency)
    results["models"][f"M_{t}"] = {"mean": mean, "halfwidth": half, "n": n}
    label = "M_0 (seed)" if t == 0 else f"M_{t}"
    lines.append(f"| {label} | {_fmt(mean, half, 'pct')} | {_fmt(cmean, chalf, 'pct')} | {n} |")
  lines += ["", "Paired per-seed difference M_t − M_0 (percentage points):", "",
            "| model | mean | 95% CI (paired t) | 95% CI (bootstrap) | verdict |",
            "|---|---|---|---|---|"]
  for t in range(1, n_iter + 1):
    diffs = [runs[s][t][SCORE] - runs[s][0][SCORE] for s in seeds
             if runs[s].get(t, {}).get(SCORE) is not None
             and runs[s].get(0, {}).get(SCORE) is not None]
    mean, lo, hi = stats.paired_t_ci(diffs)
    blo, bhi = stats.bootstrap_ci(diffs)
    call = stats.verdict(lo, hi, f"M_{t}", "M_0")
    results["paired"][f"M_{t}"] = {"mean": mean, "lo": lo, "hi": hi, "bootstrap": [blo, bhi],
                                   "n": len(diffs), "verdict": call}
    lines.append(f"| M_{t} | {_fmt(mean, float('nan'), 'pct')} | "
                 f"[{_fmt(lo, float('nan'), 'pct')}, {_fmt(hi, float('nan'), 'pct')}] | "
                 f"[{_fmt(blo, float('nan'), 'pct')}, {_fmt(bhi, float('nan'), 'pct')}] | {call} |")
  last = results["paired"].get(f"M_{n_iter}")
  if last and last["n"] >= 2:
    answer = {f"M_{n_iter} > M_0": "STE raises the judge's pairwise accuracy above the seed's",
              f"M_{n_iter} < M_0": "STE lowers the judge's pairwise accuracy below the seed's"}.get(
                  last["verdict"], "No decision: the 95% CI of the paired difference contains 0")
    lines += ["", f"**Answer** ({len(seeds)} seeds, M_{n_iter} − M_0): {answer}; "
              f"{100 * last['mean']:+.1f} points, 95% CI [{100 * last['lo']:+.1f}, "
              f"{100 * last['hi']:+.1f}]."]
  lines += ["", "What each iteration t built from M_{t−1}'s generations (mean ± 95% CI over seeds):",
            "", "| | " + " | ".join(f"iteration {t}" for t in range(1, n_iter + 1)) + " |",
            "|---|" + "---|" * n_iter]
  for key, name, kind in DATA_KEYS:
    cells = [_fmt(*stats.mean_halfwidth([runs[s].get(t, {}).get(key) for s in seeds])[:2],
                  kind) for t in range(1, n_iter + 1)]
    lines.append(f"| {name} (`{key}`) | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n", results


def _define_flags():
  from absl import flags
  flags.DEFINE_list("seeds", [str(s) for s in DEFAULT_SEEDS], "Run seeds (config seed=<k>).")
  flags.DEFINE_integer("pairs", 200, "Held-out oracle pairs judged per model.")
  flags.DEFINE_string("workdir", "/tmp/ste_bench", "Where the runs go (<workdir>/seed<k>).")
  flags.DEFINE_string("output", os.path.join(REPO, "bench", "results", "ste.md"),
                      "Where the markdown report goes.")
  flags.DEFINE_bool("report_only", False, "Rebuild the report from the runs on disk.")
  flags.DEFINE_string("variant", "", "configs/ste_testbed.py variant(s) besides seed=<k>, e.g. "
                      "'large'.")


def main(argv):
  from absl import app, flags, logging
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  seeds = [int(s) for s in FLAGS.seeds]
  if not seeds:
    raise app.UsageError("--seeds is empty")
  command = "python -m bench.ste " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  load_start, start = os.getloadavg(), time.time()
  config = load_config(seeds[0], FLAGS.pairs, FLAGS.variant)
  n_iter = int(config.pipeline.num_iterations)

  def write(runs, final):
    header = ["    " + command.strip(), "",
              f"- Machine: {os.cpu_count()} CPU cores; load average (1/5/15 min) "
              f"{testbed._loadavg(load_start)} at start, {testbed._loadavg(os.getloadavg())} now.",
              f"- Seed model M_0: sha256 {testbed._seed_sha(None)}.",
              f"- Per run (configs/ste_testbed.py, "
              f"`{','.join(filter(None, (FLAGS.variant, 'seed=<k>')))}`): {n_iter} iterations of "
              f"{config.pipeline.prompts_per_iteration} instructions, N="
              f"{config.ste.num_judgments} judgments, SFT from the seed at lr "
              f"{config.train.learning_rate} for {config.train.num_epochs} epochs; "
              f"{FLAGS.pairs} held-out pairs per model.",
              f"- {len(runs)} of {len(seeds)} runs done; this invocation "
              f"{(time.time() - start) / 60:.1f} min."]
    text, results = build_report(runs, n_iter, header)
    if not final:
      text = text.replace("\n", "\n\n(Partial: the bench is still running.)\n", 1)
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    with open(FLAGS.output, "w") as f:
      f.write(text)
    testbed.write_json_atomic(os.path.join(FLAGS.workdir, "results.json"), results)
    print(text, flush=True)

  runs: dict[int, dict] = {}
  for seed in seeds:
    workdir = run_dir(FLAGS.workdir, seed)
    if not FLAGS.report_only:
      from meta_rewarding import run as run_lib
      run_lib.run(load_config(seed, FLAGS.pairs, FLAGS.variant), workdir)
    records = read_records(workdir)
    if records:
      runs[seed] = records
    write(runs, final=seed == seeds[-1])


if __name__ == "__main__":
  from absl import app
  _define_flags()
  app.run(main)
