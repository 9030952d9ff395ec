"""Meta-Rewarding vs Self-Rewarding on the synthetic testbed: paired seeds, held-out ground truth.

  python -m bench.testbed                          # 3 arms x 10 seeds x 3 iterations
  python -m bench.testbed --seeds=0,1 --arms=meta_rewarding,self_rewarding --eval_tasks=40
  python -m bench.testbed --eval_seed=7 --seeds=0,1,2,3,4,5 --workdir=/tmp/mr_bench_fresh \
      --arms=meta_rewarding,self_rewarding --output=bench/results/testbed_fresh.md
                              # tasks no seed was designed on (evaluate.heldout_task_seed)
  python -m bench.testbed --report_only            # rebuild the report from what is on disk

Every run is configs/local_cpu.py with one arm's variant plus `seed=<k>`:

  meta_rewarding        `bench`                    the paper's schedule: actor + judge pairs in
                                                   iterations 1-2, actor pairs only in 3
  self_rewarding        `bench,self_rewarding`     no meta-judge: actor pairs only
  meta_rewarding_every  `bench,judge_pairs_every`  actor + judge pairs in every iteration

Two diagnostic arms run only when named in --arms (`--arms=oracle_meta_verdict,oracle_meta_check`):
Meta-Rewarding with the testbed's oracle answering the meta-judge prompts (by the scores, or by
the scores and then the checks: meta_rewarding/testbed/oracle_meta_judge.py). They bound what
judge pairs can do for this model's judge; they are not the method.

Seed k gives every arm the same prompts and the same starting model, so arms are compared by PAIRED
differences over seeds (arm X minus arm Y on the same seed), which removes the seed-to-seed spread
that an unpaired comparison has to beat.

The numbers come from the pipeline itself: each run's metrics.jsonl holds a record with
"iteration": 0 (held-out evaluation of the seed model M_0) and one per iteration t whose heldout/*
keys measure the model that iteration trained (M_t), next to the pipeline's own metrics of what
iteration t generated (with M_{t-1}). The report gives, per arm, mean +- 95% CI half-width over
seeds of M_0 ... M_T, then the paired comparisons: mean difference, a paired-t 95% CI (which decides
the verdict) and a paired bootstrap percentile CI as a cross-check.

The seed model's own evaluation (M_0) is the same in every run (same model, tasks and sampling
seed), so it is measured once and copied into each run (`shared_seed_evaluation`).

Runs happen in this process one after the other (compiled programs are reused), seeds outermost so
that an interrupted bench still compares every arm on the seeds it finished; each run's directory
is a normal pipeline workdir (<workdir>/<arm>/seed<k>), so a rerun resumes where it stopped. The
report (bench/results/testbed.md) and <workdir>/records.json are rewritten after every run.

The statistics are bench/stats.py's (tested, with this module's report, by
tests/test_bench_stats.py); importing this module defines no flags and imports no jax.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import sys
import time
from typing import Any, Mapping, Sequence

from bench import stats

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ARMS = {
    "meta_rewarding": "bench",
    "self_rewarding": "bench,self_rewarding",
    "meta_rewarding_every": "bench,judge_pairs_every",
    # Diagnostics, not the method (run only when named in --arms): the oracle in the meta-judge's
    # seat, so judge pairs are as good as the rule allows (meta_rewarding/testbed/oracle_meta_judge.py).
    "oracle_meta_verdict": "bench,oracle_meta=verdict",
    "oracle_meta_check": "bench,oracle_meta=check",
}
METHOD_ARMS = ("meta_rewarding", "self_rewarding", "meta_rewarding_every")
DEFAULT_SEEDS = tuple(range(10))

# Held-out metrics of M_t (metrics.jsonl key "heldout/<key>"). Kind: "pct" = a rate shown in %,
# "score" = a judge score (0-5), "count" = a plain number.
HELDOUT = (
    ("actor_accuracy", "actor acc", "pct"),
    ("actor_accuracy_greedy", "actor acc (greedy)", "pct"),
    ("judge_balanced_accuracy", "judge balanced acc", "pct"),
    # On a fixed 45/40/15 right/wrong/malformed response mix: the same responses for every model,
    # so a change in the actor's answers (which the headline judges) does not move it.
    ("judge_balanced_accuracy_fixed", "judge balanced acc (fixed mix)", "pct"),
    ("judge_check_true_rate", "judge checks true", "pct"),
    ("judge_accuracy", "judge acc", "pct"),
    ("judge_score_mean", "judge score mean", "score"),
    ("judge_parse_rate", "judge parse rate", "pct"),
    ("meta_accuracy", "meta acc", "pct"),
    ("meta_picks_higher_rate", "meta picks higher", "pct"),
    ("meta_first_position_rate", "meta first position", "pct"),
)
# The pipeline's own per-iteration metrics (measured on what iteration t generated, with M_{t-1}).
PIPELINE = (
    ("oracle/actor_accuracy", "pct"),
    ("oracle/judge_accuracy", "pct"),
    ("oracle/meta_judge_accuracy", "pct"),
    ("pairs/actor", "count"),
    ("pairs/judge", "count"),
    ("pairs/judge_identical_dropped", "count"),
    ("judge/score_mean", "score"),
    ("meta/picks_higher_score_rate", "pct"),
    ("dpo/rewards/accuracies", "pct"),
    ("wall_seconds", "count"),
)
KINDS = {f"heldout/{k}": kind for k, _, kind in HELDOUT} | dict(PIPELINE)
LABELS = {k: label for k, label, _ in HELDOUT}

# (tag, held-out metric, arm X, arm Y). Y None: X's own seed model M_0 on the same seed.
# (a) and (b) are the questions of issue 13; the rest say where the answer comes from.
COMPARISONS = (
    ("(a)", "actor_accuracy", "self_rewarding", None),
    ("(b)", "judge_balanced_accuracy", "meta_rewarding", "self_rewarding"),
    ("", "judge_balanced_accuracy", "meta_rewarding_every", "self_rewarding"),
    ("", "judge_balanced_accuracy", "meta_rewarding", "meta_rewarding_every"),
    ("", "actor_accuracy", "meta_rewarding", "self_rewarding"),
    ("", "actor_accuracy", "meta_rewarding_every", "self_rewarding"),
    ("", "judge_balanced_accuracy_fixed", "meta_rewarding", "self_rewarding"),
    ("", "judge_check_true_rate", "meta_rewarding", "self_rewarding"),
    ("", "judge_balanced_accuracy_fixed", "self_rewarding", None),
    # Upper bounds (the oracle as meta-judge): what judge pairs could do for this judge.
    ("", "judge_balanced_accuracy", "oracle_meta_verdict", "self_rewarding"),
    ("", "judge_balanced_accuracy", "oracle_meta_check", "self_rewarding"),
    ("", "judge_balanced_accuracy", "meta_rewarding", "oracle_meta_verdict"),
    ("", "judge_balanced_accuracy_fixed", "oracle_meta_verdict", "self_rewarding"),
    ("", "judge_balanced_accuracy_fixed", "oracle_meta_check", "self_rewarding"),
) + tuple(("", metric, arm, None) for arm in ARMS
          for metric in ("actor_accuracy", "judge_balanced_accuracy")
          if (metric, arm) != ("actor_accuracy", "self_rewarding"))  # that one is (a)


# ---------------------------------------------------------------------------------------------
# Reading runs.

def _scalars(record: Mapping[str, Any]) -> dict:
  # Only scalar metrics: records.json stays small and JSON-safe.
  return {k: v for k, v in record.items()
          if v is None or isinstance(v, (bool, int, float, str))}


def read_run(workdir: str, returned: Sequence[Mapping[str, Any]] | None = None) -> dict[int, dict]:
  """Metrics records of one run by iteration: `returned` (run.run's list) overlaid with the
  workdir's metrics.jsonl, then iter_<t>/metrics.json for iterations neither has.

  Robust to what is not settled or not finished: the iteration-0 record may be only in the file,
  a line cut short by an interrupted write is skipped, and a later record of an iteration adds to
  (and overrides) an earlier one.
  """
  records: dict[int, dict] = {}

  def add(rec):
    if not isinstance(rec, Mapping) or "iteration" not in rec:
      return
    try:
      t = int(rec["iteration"])
    except (TypeError, ValueError):
      return
    records[t] = {**records.get(t, {}), **_scalars(rec), "iteration": t}

  for rec in returned or ():
    add(rec)
  # metrics.jsonl, then timings.jsonl (wall_seconds and tokens/s: kept out of the metrics so
  # that those are byte-identical between runs; records keyed by iteration like the metrics).
  for name in ("metrics.jsonl", "timings.jsonl"):
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
      continue
    with open(path) as f:
      for line in f:
        line = line.strip()
        if not line:
          continue
        try:
          add(json.loads(line))
        except json.JSONDecodeError:
          continue
  if os.path.isdir(workdir):
    for name in os.listdir(workdir):
      match = re.fullmatch(r"iter_(\d+)", name)
      per_iter = os.path.join(workdir, name, "metrics.json")
      if match and int(match.group(1)) not in records and os.path.exists(per_iter):
        try:
          with open(per_iter) as f:
            rec = json.load(f)
        except (OSError, json.JSONDecodeError):
          continue
        if isinstance(rec, dict):
          add({"iteration": int(match.group(1)), **rec})
  return records


def make_run(arm: str, seed: int, workdir: str, records: Mapping[int, Mapping[str, Any]],
             **extra) -> dict:
  return {"arm": arm, "seed": int(seed), "workdir": workdir,
          "records": [dict(records[t]) for t in sorted(records)], **extra}


def run_dir(root: str, arm: str, seed: int) -> str:
  return os.path.join(root, arm, f"seed{seed}")


def collect_runs(root: str, arms: Sequence[str], seeds: Sequence[int]) -> list[dict]:
  """The runs on disk under `root` (for --report_only), seeds outermost; absent ones skipped."""
  runs = []
  for seed in seeds:
    for arm in arms:
      workdir = run_dir(root, arm, seed)
      records = read_run(workdir)
      if records:
        extra = {}
        info = os.path.join(workdir, "bench_run.json")
        if os.path.exists(info):
          with open(info) as f:
            extra = {k: v for k, v in json.load(f).items() if k in ("bench_seconds", "resumed")}
        runs.append(make_run(arm, seed, workdir, records, **extra))
  return runs


# ---------------------------------------------------------------------------------------------
# The report.

def _index(runs) -> dict[tuple[str, int], dict[int, dict]]:
  return {(r["arm"], int(r["seed"])): {int(rec["iteration"]): rec for rec in r["records"]}
          for r in runs}


def _value(index, arm: str, seed: int, t: int, key: str):
  v = index.get((arm, seed), {}).get(t, {}).get(key)
  xs = stats.clean([v])
  return xs[0] if xs else None


def _scale(key: str) -> float:
  return 100.0 if KINDS.get(key) == "pct" else 1.0


def _digits(key: str) -> int:
  return 2 if KINDS.get(key) == "score" else 1


def _cell(values, key: str) -> str:
  mean, half, n = stats.mean_halfwidth(values)
  if n == 0:
    return "-"
  s, d = _scale(key), _digits(key)
  return f"{s * mean:.{d}f}" if n < 2 else f"{s * mean:.{d}f} ± {s * half:.{d}f}"


def _signed(x: float, d: int = 1) -> str:
  return "n/a" if not math.isfinite(x) else f"{x:+.{d}f}"


def _interval(lo: float, hi: float, d: int = 1) -> str:
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return "n/a"
  return f"[{lo:+.{d}f}, {hi:+.{d}f}]"


def compare(index, seeds, metric: str, x: str, y: str | None, n_iter: int) -> dict:
  """One paired comparison at the final model M_T (y None: x's M_T minus its M_0)."""
  key = f"heldout/{metric}"
  diffs, used = [], []
  for seed in seeds:
    vx = _value(index, x, seed, n_iter, key)
    vy = _value(index, x, seed, 0, key) if y is None else _value(index, y, seed, n_iter, key)
    if vx is not None and vy is not None:
      diffs.append(vx - vy)
      used.append(seed)
  mean, lo, hi = stats.paired_t_ci(diffs)
  blo, bhi = stats.bootstrap_ci(diffs)
  x_label = f"{x} M_{n_iter}" if y is None else x
  y_label = "seed M_0" if y is None else y
  s = _scale(key)
  return {"metric": metric, "x": x, "y": y, "x_label": x_label, "y_label": y_label,
          "seeds": used, "diffs": diffs, "n": len(diffs), "mean": s * mean, "t_lo": s * lo,
          "t_hi": s * hi, "boot_lo": s * blo, "boot_hi": s * bhi,
          "verdict": stats.verdict(lo, hi, x_label, y_label) if len(diffs) >= 2
                     else f"no decision ({len(diffs)} seed{'s' if len(diffs) != 1 else ''})"}


def _question(tag: str, c: dict, n_iter: int) -> str:
  if tag == "(a)":
    q = "Self-Rewarding raises held-out actor accuracy above the seed model's"
    what = f"self_rewarding M_{n_iter} − M_0 actor accuracy"
  else:
    q = "Meta-Rewarding's balanced judge accuracy beats Self-Rewarding's"
    what = f"meta_rewarding − self_rewarding judge balanced accuracy at M_{n_iter}"
  if c is None or c["n"] < 2:
    n = 0 if c is None else c["n"]
    return (f"**{tag} {q}: not measured** — the paired difference needs at least 2 seeds whose "
            f"runs finished ({n} here).")
  if c["t_lo"] > 0:
    answer = "yes"
  elif c["t_hi"] < 0:
    answer = "no — the difference is below 0"
  else:
    answer = "not shown — the 95% CI spans 0"
  return (f"**{tag} {q}: {answer}.** {what} = {_signed(c['mean'])} points, 95% CI "
          f"{_interval(c['t_lo'], c['t_hi'])} (paired t over {c['n']} seeds; bootstrap "
          f"{_interval(c['boot_lo'], c['boot_hi'])}).")


def build_report(runs: Sequence[Mapping[str, Any]], arms: Sequence[str], *,
                 n_iter: int | None = None, header_lines: Sequence[str] = ()) -> tuple[str, list]:
  """Markdown report and the comparison results, from run dicts (make_run's form)."""
  index = _index(runs)
  seeds = sorted({int(r["seed"]) for r in runs})
  if n_iter is None:
    n_iter = max([t for recs in index.values() for t in recs] + [1])
  finished = {a: [s for s in seeds if n_iter in index.get((a, s), {})] for a in arms}
  out = ["# Testbed benchmark: Meta-Rewarding vs Self-Rewarding, paired seeds", ""]
  out += list(header_lines)
  out += ["", "Runs finished (all iterations): " + "; ".join(
      f"{a} {len(finished[a])} (seeds {','.join(map(str, finished[a])) or '-'})" for a in arms)
      + "."]
  tasks = sorted({int(v) for recs in index.values() for rec in recs.values()
                  for v in stats.clean([rec.get("heldout/tasks")])})
  if tasks:
    out.append(f"Held-out tasks per evaluation (as recorded): {', '.join(map(str, tasks))}.")

  out += ["", f"## Held-out evaluation of M_0 (the seed) ... M_{n_iter}", "",
          "Mean ± 95% CI half-width (t, over seeds) in %; judge score mean on the 0-5 scale (its "
          "rise is score drift). The judge's headline is balanced accuracy (mean of its true-pass "
          "and true-fail rates: an always-pass judge gets 50). Meta acc: on battles where the "
          "oracle prefers one judgment; meta picks higher: how often it picks the higher-scored "
          "judgment.",
          ""]
  cols = [k for k, _, _ in HELDOUT]
  for arm in arms:
    out += [f"### {arm} (`{ARMS.get(arm, '?')}`)", ""]
    out.append("| model | n | " + " | ".join(LABELS[c] for c in cols) + " |")
    out.append("|---|---|" + "---|" * len(cols))
    for t in range(n_iter + 1):
      n = sum(1 for s in seeds if _value(index, arm, s, t, "heldout/actor_accuracy") is not None)
      cells = [_cell([_value(index, arm, s, t, f"heldout/{c}") for s in seeds], f"heldout/{c}")
               for c in cols]
      out.append(f"| M_{t} | {n} | " + " | ".join(cells) + " |")
    out.append("")

  out += ["## The pipeline's per-iteration metrics", "",
          "Measured on what iteration t generated, i.e. with the model entering it (M_{t-1}); mean "
          "± 95% CI half-width over seeds, rates in %, pair counts and seconds as numbers.", ""]
  out.append("| arm | iter | n | " + " | ".join(k for k, _ in PIPELINE) + " |")
  out.append("|---|---|---|" + "---|" * len(PIPELINE))
  for arm in arms:
    for t in range(1, n_iter + 1):
      n = sum(1 for s in seeds if t in index.get((arm, s), {}))
      cells = [_cell([_value(index, arm, s, t, k) for s in seeds], k) for k, _ in PIPELINE]
      out.append(f"| {arm} | {t} | {n} | " + " | ".join(cells) + " |")
  out.append("")

  out += ["## Paired comparisons at the final model", "",
          f"Per seed: arm X minus arm Y at M_{n_iter} (or X's M_{n_iter} minus the seed model "
          "M_0 of the same run), in points. The verdict comes from the paired-t 95% CI: it decides "
          "only when the interval excludes 0. Bootstrap: percentile CI, "
          f"{stats.BOOTSTRAP_RESAMPLES} resamples of the seeds, RNG seed {stats.BOOTSTRAP_SEED} "
          "(a cross-check).", "",
          "| | metric | X − Y | mean diff | 95% CI (t) | 95% CI (bootstrap) | n seeds "
          "| verdict |",
          "|---|---|---|---|---|---|---|---|"]
  results = []
  for tag, metric, x, y in COMPARISONS:
    if x not in arms or (y is not None and y not in arms):
      continue
    c = compare(index, seeds, metric, x, y, n_iter)
    c["tag"] = tag
    results.append(c)
    out.append(f"| {tag} | {LABELS[metric]} | {c['x_label']} − {c['y_label']} | "
               f"{_signed(c['mean'])} | {_interval(c['t_lo'], c['t_hi'])} | "
               f"{_interval(c['boot_lo'], c['boot_hi'])} | {c['n']} | {c['verdict']} |")
  out += ["", "## Verdict", ""]
  by_tag = {c["tag"]: c for c in results if c["tag"]}
  for tag, needs in (("(a)", ("self_rewarding",)), ("(b)", ("meta_rewarding", "self_rewarding"))):
    if not all(a in arms for a in needs):
      out.append(f"**{tag}: not measured** — the bench did not run {' and '.join(needs)}.")
    else:
      out.append(_question(tag, by_tag.get(tag), n_iter))
    out.append("")
  return "\n".join(out), results


# ---------------------------------------------------------------------------------------------
# Running.

def load_config(variant: str):
  import configs  # not at import: `import bench.testbed` loads no project code (its test checks)
  return configs.load("local_cpu", variant), configs.module("local_cpu").seed_dir()


def arm_config(arm: str, seed: int, eval_tasks: int, eval_seed: int = 0):
  config, _ = load_config(f"{ARMS[arm]},seed={seed}")
  with config.unlocked():  # works whether or not the config author locked it
    config.evaluate.heldout_tasks = eval_tasks
    config.evaluate.heldout_task_seed = eval_seed
  return config


def _get(d: Mapping, path: str, default=None):
  for part in path.split("."):
    if not isinstance(d, Mapping) or part not in d:
      return default
    d = d[part]
  return d


def config_summary(config: Mapping[str, Any]) -> dict:
  """What the report states about a run's config, from its resolved JSON (workdir/config.json)."""
  return {k: _get(config, path) for k, path in (
      ("prompts_per_iteration", "pipeline.prompts_per_iteration"),
      ("K", "actor.num_responses"), ("N", "judge.num_judgments"),
      ("iterations", "pipeline.num_iterations"), ("train_pairs", "pipeline.train_pairs"),
      ("meta_judge", "meta_judge.enabled"), ("rho", "pipeline.rho"),
      ("lr", "train.learning_rate"), ("beta", "train.beta"), ("epochs", "train.num_epochs"),
      ("heldout_tasks", "evaluate.heldout_tasks"),
      ("heldout_task_seed", "evaluate.heldout_task_seed"), ("seed_model", "model.checkpoint"))}


def _arm_summary(root: str, arm: str, seeds: Sequence[int], eval_tasks: int) -> dict:
  # The workdir's config.json is what actually ran; the config file is the fallback.
  for seed in seeds:
    path = os.path.join(run_dir(root, arm, seed), "config.json")
    if os.path.exists(path):
      with open(path) as f:
        return config_summary(json.load(f))
  return config_summary(json.loads(arm_config(arm, seeds[0], eval_tasks).to_json()))


def _seed_sha(seed_model: str | None) -> str:
  path = os.path.join(seed_model or os.path.join(REPO, "meta_rewarding", "testbed", "seed"),
                      "build_info.json")
  try:
    with open(path) as f:
      return str(json.load(f).get("model_sha256", "?"))
  except (OSError, json.JSONDecodeError):
    return f"? ({path} unreadable)"


def _loadavg(load) -> str:
  return "/".join(f"{x:.2f}" for x in load)


def header_lines(*, command: str, load_start, load_end, summaries: Mapping[str, dict],
                 runs: Sequence[Mapping[str, Any]], total_seconds: float,
                 report_only: bool) -> list[str]:
  import importlib.metadata
  try:
    jax_version = importlib.metadata.version("jax")
  except importlib.metadata.PackageNotFoundError:
    jax_version = "?"
  backend = ""
  if "jax" in sys.modules:  # only a bench that ran has initialised a backend worth naming
    backend = f" ({sys.modules['jax'].default_backend()})"
  first = next(iter(summaries.values()))
  lines = ["    " + command, "",
           f"- Machine: {os.cpu_count()} CPU cores; load average (1/5/15 min) "
           f"{_loadavg(load_start)} at start, {_loadavg(load_end)} at end; "
           f"jax {jax_version}{backend}.",
           f"- Seed model M_0: sha256 {_seed_sha(first.get('seed_model'))}.",
           f"- Per run (configs/local_cpu.py, the arm's variant + `seed=<k>`): "
           f"{first['prompts_per_iteration']} prompts x K={first['K']} responses x N={first['N']} "
           f"judgments per iteration, {first['iterations']} iterations, rho "
           f"{tuple(first['rho'] or ())}; DPO lr {first['lr']}, beta {first['beta']}, "
           f"{first['epochs']} epochs; held-out evaluation on {first['heldout_tasks']} tasks, "
           + ("the development set the seeds were designed on (evaluate.heldout_task_seed=0)."
              if not first.get("heldout_task_seed") else
              f"a fresh set no seed was designed on (evaluate.heldout_task_seed="
              f"{first['heldout_task_seed']}: disjoint from the development draws by "
              "construction).")]
  for arm, s in summaries.items():
    schedule = tuple(s["train_pairs"] or ())
    note = "" if s["meta_judge"] else " (meta-judge off: actor pairs only)"
    lines.append(f"- {arm} (`{ARMS.get(arm, '?')}`): pairs trained per iteration {schedule}{note}.")
    differs = [k for k in ("prompts_per_iteration", "K", "N", "iterations", "lr", "beta",
                           "epochs", "heldout_tasks", "heldout_task_seed") if s[k] != first[k]]
    if differs:
      lines.append(f"  (differs from the first arm in {', '.join(differs)}: "
                   + ", ".join(f"{k}={s[k]}" for k in differs) + ")")
  per_run = [sum(stats.clean(rec.get("wall_seconds") for rec in r["records"]
                       if rec.get("iteration", 0) >= 1)) for r in runs]
  per_run = [x for x in per_run if x > 0]
  resumed = sum(1 for r in runs if r.get("resumed"))
  if report_only:
    lines.append(f"- Report rebuilt with --report_only from {len(runs)} runs on disk.")
  else:
    lines.append(f"- This invocation: {total_seconds / 60:.1f} min for {len(runs)} runs "
                 f"({resumed} of them already finished on disk).")
  if per_run:
    lines.append(f"- Pipeline time per run (the iterations' wall_seconds, incl. their held-out "
                 f"evaluation): {min(per_run) / 60:.1f}-{max(per_run) / 60:.1f} min, mean "
                 f"{sum(per_run) / len(per_run) / 60:.1f} min.")
  return lines


def _json_safe(value):
  # NaN (a comparison with fewer than 2 seeds) is not JSON: write null.
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, Mapping):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  return value


def write_json_atomic(path: str, value):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(_json_safe(value), f, allow_nan=False)
  os.replace(path + ".tmp", path)


def shared_seed_evaluation(root: str, workdir: str, eval_tasks: int, eval_seed: int = 0):
  """Measures M_0 once for the whole bench: every run starts from the same seed model and the
  held-out evaluation's tasks and sampling seed do not depend on the run (testbed/evaluate.py,
  HELDOUT_SEED), so its iter_0/heldout.json is the same file in every run. The first run's copy
  is kept under <root> and placed into each later run's workdir before it starts."""
  name = f"seed_model_heldout_{eval_tasks}" + (f"_tasks{eval_seed}" if eval_seed else "")
  shared = os.path.join(root, name + ".json")
  own = os.path.join(workdir, "iter_0", "heldout.json")
  if os.path.exists(own):
    if not os.path.exists(shared):
      with open(own) as f:
        write_json_atomic(shared, json.load(f))
  elif os.path.exists(shared):
    from meta_rewarding import artifacts
    os.makedirs(os.path.dirname(own), exist_ok=True)
    with open(shared) as f:
      # With its completion marker: the pipeline reads a heldout.json only when they agree.
      artifacts.write_json_marked(own, json.load(f))


def run_one(arm: str, seed: int, root: str, eval_tasks: int, eval_seed: int = 0) -> dict:
  from meta_rewarding import run as run_lib
  config = arm_config(arm, seed, eval_tasks, eval_seed)
  workdir = run_dir(root, arm, seed)
  resumed = config.pipeline.num_iterations in read_run(workdir)
  start = time.time()
  shared_seed_evaluation(root, workdir, eval_tasks, eval_seed)
  returned = run_lib.run(config, workdir)
  shared_seed_evaluation(root, workdir, eval_tasks, eval_seed)
  seconds = round(time.time() - start, 1)
  info = {"arm": arm, "seed": seed, "variant": f"{ARMS[arm]},seed={seed}",
          "eval_tasks": eval_tasks, "eval_seed": eval_seed, "bench_seconds": seconds,
          "resumed": resumed}
  write_json_atomic(os.path.join(workdir, "bench_run.json"), info)
  return make_run(arm, seed, workdir, read_run(workdir, returned), bench_seconds=seconds,
                  resumed=resumed)


def _define_flags():
  # Defined only when run as a script: tests import this module next to others that define
  # --workdir, and absl refuses a flag defined twice.
  from absl import flags
  flags.DEFINE_list("arms", list(METHOD_ARMS), f"Arms to run (and report), from {list(ARMS)}; "
                    "the default is the method's three, without the oracle diagnostics.")
  flags.DEFINE_list("seeds", [str(s) for s in DEFAULT_SEEDS],
                    "Paired run seeds (config seed=<k>): the same seed gives every arm the same "
                    "prompts and starting model.")
  flags.DEFINE_string("workdir", "/tmp/mr_bench", "Where the runs go (<workdir>/<arm>/seed<k>; "
                      "resumed if present).")
  flags.DEFINE_integer("eval_tasks", 200, "Held-out tasks per evaluation "
                       "(config.evaluate.heldout_tasks).")
  flags.DEFINE_integer("eval_seed", 0, "Which held-out tasks (config.evaluate.heldout_task_seed): "
                       "0, the development set the seeds were designed on; K > 0, a fresh set "
                       "drawn with seed K, disjoint from it by construction.", lower_bound=0)
  flags.DEFINE_string("output", os.path.join(REPO, "bench", "results", "testbed.md"),
                      "Where the markdown report goes.")
  flags.DEFINE_bool("report_only", False, "Rebuild the report from the runs already under "
                    "--workdir; run nothing.")


def main(argv):
  from absl import app, flags, logging
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  arms = list(FLAGS.arms)
  for a in arms:
    if a not in ARMS:
      raise app.UsageError(f"unknown arm {a!r}; expected one of {list(ARMS)}")
  seeds = [int(s) for s in FLAGS.seeds]
  if not seeds:
    raise app.UsageError("--seeds is empty")
  command = "python -m bench.testbed " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  load_start = os.getloadavg()
  start = time.time()

  def write(runs, final):
    summaries = {a: _arm_summary(FLAGS.workdir, a, seeds, FLAGS.eval_tasks) for a in arms}
    n_iter = next(iter(summaries.values()))["iterations"]
    header = header_lines(command=command.strip(), load_start=load_start,
                          load_end=os.getloadavg(), summaries=summaries, runs=runs,
                          total_seconds=time.time() - start, report_only=FLAGS.report_only)
    text, results = build_report(runs, arms, n_iter=n_iter, header_lines=header)
    if not final:
      text = text.replace("\n", "\n\n(Partial: the bench is still running.)\n", 1)
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    with open(FLAGS.output, "w") as f:
      f.write(text)
    write_json_atomic(os.path.join(FLAGS.workdir, "records.json"),
                      {"command": command.strip(), "arms": arms, "seeds": seeds,
                       "configs": summaries, "runs": list(runs),
                       "comparisons": results})
    return text

  if FLAGS.report_only:
    runs = collect_runs(FLAGS.workdir, arms, seeds)
    if not runs:
      raise app.UsageError(f"no runs of {arms} x seeds {seeds} under {FLAGS.workdir}")
    print(write(runs, final=True))
    return
  os.makedirs(FLAGS.workdir, exist_ok=True)
  runs = []
  for seed in seeds:  # seeds outermost: a partial bench still compares the arms
    for arm in arms:
      t0 = time.time()
      runs.append(run_one(arm, seed, FLAGS.workdir, FLAGS.eval_tasks, FLAGS.eval_seed))
      final = {rec["iteration"]: rec for rec in runs[-1]["records"]}
      last = final[max(final)] if final else {}
      print(f"[{time.time() - start:.0f} s] {arm} seed {seed}: {time.time() - t0:.0f} s; "
            f"M_{last.get('iteration')} held-out actor {last.get('heldout/actor_accuracy')}, "
            f"judge balanced {last.get('heldout/judge_balanced_accuracy')}", flush=True)
      write(runs, final=False)  # a current report at every point of a long bench
  print(write(runs, final=True))


if __name__ == "__main__":
  from absl import app
  _define_flags()
  app.run(main)
