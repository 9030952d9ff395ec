"""Meta-Rewarding vs Self-Rewarding on the synthetic testbed, with ground truth.

  python bench/testbed.py                        # 3 arms x 3 seeds x 3 iterations (CPU: ~35 min)
  python bench/testbed.py --seeds=0,1 --arms=meta_rewarding,self_rewarding --eval_tasks=40

Every run is the default config's `bench` variant (configs/local_cpu.py: the shipped seed model,
3 iterations of 24 prompts x 4 responses x 4 judgments; the Meta-Rewarding arms train on actor
and judge pairs in every iteration) with one of these arms:

  meta_rewarding          actor pairs (length control rho 0 / 0.32 / 0.32) + judge pairs
  self_rewarding          actor pairs only (the same length control)
  self_rewarding_no_lc    actor pairs only, rho = 0 (plain best-vs-worst)
  meta_rewarding_no_lc    (not in the default set) actor + judge pairs, rho = 0

Two kinds of numbers, both mean +- std over seeds (sample std):
  * the pipeline's own per-iteration metrics (metrics.jsonl): oracle/actor_accuracy,
    oracle/judge_accuracy, oracle/meta_judge_accuracy -- measured on what iteration t generated,
    i.e. on the model ENTERING iteration t -- and the pair counts;
  * a held-out evaluation of every iteration's model M_0 (the seed) ... M_3 (after 3 iterations)
    with `testbed.seed.measure` on fixed tasks (seed.eval_task_list, never in the seed's SFT
    data): actor accuracy (4 samples per task, the pipeline's sampling), judge accuracy on the
    model's own responses and on a fixed response set, meta-judge accuracy on fixed judgment pairs.

Runs happen in this process one after the other (compiled programs are reused); each run's
directory is a normal pipeline workdir, so an interrupted bench resumes where it stopped (the
evaluations are cached next to the runs). Prints the tables and writes bench/results/testbed.md.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time

from absl import app, flags, logging

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FLAGS = flags.FLAGS
ARMS = {
    "meta_rewarding": "bench",
    "self_rewarding": "bench,self_rewarding",
    "self_rewarding_no_lc": "bench,self_rewarding,no_length_control",
    "meta_rewarding_no_lc": "bench,no_length_control",
}
flags.DEFINE_list("arms", ["meta_rewarding", "self_rewarding", "self_rewarding_no_lc"],
                  f"Arms to run, from {list(ARMS)}.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Run seeds (config seed=<k>).")
flags.DEFINE_string("workdir", "/tmp/mr_bench", "Where the runs go (resumed if present).")
flags.DEFINE_integer("eval_tasks", 40, "Held-out tasks for the per-model evaluation.")
flags.DEFINE_integer("eval_samples", 4, "Actor samples per held-out task.")
flags.DEFINE_string("output", os.path.join(REPO, "bench", "results", "testbed.md"), "")

PIPELINE_KEYS = ("oracle/actor_accuracy", "oracle/judge_accuracy", "oracle/meta_judge_accuracy",
                 "pairs/actor", "pairs/judge", "judge/parse_failure_rate",
                 "oracle/actor_pair_chosen_correct", "oracle/actor_pair_rejected_correct",
                 "dpo/rewards/accuracies", "wall_seconds")
EVAL_KEYS = ("actor_accuracy", "actor_accuracy_greedy", "judge_accuracy", "judge_accuracy_fixed",
             "judge_parse_rate", "meta_accuracy", "meta_parse_rate", "meta_first_position_rate")


def load_config(variant: str):
  import importlib.util
  spec = importlib.util.spec_from_file_location("local_cpu", os.path.join(REPO, "configs",
                                                                          "local_cpu.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant), module.seed_dir()


def evaluate(model_dir: str, cache: str, tasks) -> dict:
  """seed.measure of the model in `model_dir`, cached in the file `cache`."""
  if os.path.exists(cache):
    with open(cache) as f:
      return json.load(f)
  from meta_rewarding import checkpoints, sharding
  from meta_rewarding.testbed import seed as seed_lib
  from meta_rewarding.tokenizer import load_tokenizer
  config, params = checkpoints.load_hf(model_dir, dtype="float32")
  tokenizer = load_tokenizer(model_dir, chat_format=seed_lib.CHAT_FORMAT)
  mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
  start = time.time()
  out = seed_lib.measure(config, params, tokenizer, tasks, samples=FLAGS.eval_samples, seed=0,
                         mesh=mesh)
  out["eval_seconds"] = round(time.time() - start, 1)
  os.makedirs(os.path.dirname(cache), exist_ok=True)
  with open(cache + ".tmp", "w") as f:
    json.dump(out, f)
  os.replace(cache + ".tmp", cache)
  return out


def run_one(arm: str, seed: int, tasks) -> dict:
  from meta_rewarding import run as run_lib
  config, seed_dir = load_config(f"{ARMS[arm]},seed={seed}")
  workdir = os.path.join(FLAGS.workdir, arm, f"seed{seed}")
  start = time.time()
  done = os.path.exists(os.path.join(workdir, f"iter_{config.pipeline.num_iterations}",
                                     "metrics.json"))
  metrics = run_lib.run(config, workdir)
  pipeline_seconds = time.time() - start
  evals = [evaluate(seed_dir, os.path.join(FLAGS.workdir, "eval_seed_model.json"), tasks)]
  for t in range(1, config.pipeline.num_iterations + 1):
    evals.append(evaluate(os.path.join(workdir, f"iter_{t}", "model"),
                          os.path.join(workdir, f"eval_iter_{t}.json"), tasks))
  record = {"arm": arm, "seed": seed, "metrics": metrics, "evals": evals,
            "pipeline_seconds": None if done else round(pipeline_seconds, 1),
            "total_seconds": None if done else round(time.time() - start, 1)}
  with open(os.path.join(workdir, "bench_record.json"), "w") as f:
    json.dump(record, f)
  return record


def mean_std(xs):
  xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
  if not xs:
    return None, None
  m = sum(xs) / len(xs)
  s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
  return m, s


def fmt(m, s, pct):
  if m is None:
    return "-"
  return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.1f} ± {s:.1f}"


def tables(records, arms) -> tuple[str, dict]:
  """Markdown tables and the summary numbers the verdict needs."""
  by_arm = {a: [r for r in records if r["arm"] == a] for a in arms}
  lines = []
  n_iter = max(len(r["metrics"]) for r in records)
  lines.append("### Held-out evaluation of each iteration's model (M_0 = the seed)\n")
  lines.append("Mean ± std over seeds, in %. actor: 4 samples per task at the pipeline's "
               "sampling; judge (own): judgments of those responses; judge (fixed): a fixed "
               "45/40/15 right/wrong/malformed response set; meta: fixed oracle-ranked judgment "
               "pairs, both orders.\n")
  cols = ("actor_accuracy", "actor_accuracy_greedy", "judge_accuracy", "judge_accuracy_fixed",
          "judge_parse_rate", "meta_accuracy", "meta_first_position_rate")
  lines.append("| arm | model | " + " | ".join(cols) + " |")
  lines.append("|---|---|" + "---|" * len(cols))
  summary = {}
  for a in arms:
    for t in range(n_iter + 1):
      cells = []
      for c in cols:
        m, s = mean_std([r["evals"][t].get(c) for r in by_arm[a] if len(r["evals"]) > t])
        cells.append(fmt(m, s, True))
        summary[(a, t, c)] = (m, s)
      lines.append(f"| {a} | M_{t} | " + " | ".join(cells) + " |")
  lines.append("")
  lines.append("### The pipeline's per-iteration metrics (iteration t generates with M_{t-1})\n")
  lines.append("Mean ± std over seeds; accuracies in %, pair counts and seconds as numbers.\n")
  pcols = PIPELINE_KEYS
  lines.append("| arm | iter | " + " | ".join(pcols) + " |")
  lines.append("|---|---|" + "---|" * len(pcols))
  for a in arms:
    for t in range(1, n_iter + 1):
      cells = []
      for c in pcols:
        m, s = mean_std([r["metrics"][t - 1].get(c) for r in by_arm[a] if len(r["metrics"]) >= t])
        pct = c.startswith(("oracle/", "judge/", "dpo/rewards"))
        cells.append(fmt(m, s, pct))
        summary[(a, f"iter{t}", c)] = (m, s)
      lines.append(f"| {a} | {t} | " + " | ".join(cells) + " |")
  return "\n".join(lines), summary


def verdict(summary, arms, n_iter) -> str:
  if "meta_rewarding" not in arms:
    return ""
  out = [f"### Meta-Rewarding vs Self-Rewarding after {n_iter} iterations (held-out, M_{n_iter})\n"]
  for base in [a for a in arms if a.startswith("self_rewarding")]:
    for c, name in (("actor_accuracy", "actor accuracy"),
                    ("judge_accuracy_fixed", "judge accuracy (fixed set)"),
                    ("judge_accuracy", "judge accuracy (own responses)"),
                    ("meta_accuracy", "meta-judge accuracy")):
      m1, s1 = summary[("meta_rewarding", n_iter, c)]
      m2, s2 = summary[(base, n_iter, c)]
      g1, _ = summary[("meta_rewarding", 0, c)]
      if m1 is None or m2 is None:
        continue
      spread = max(s1, s2)
      diff = m1 - m2
      call = ("beats" if diff > 0 else "trails") if abs(diff) > spread else "ties (within the spread)"
      out.append(f"- {name}: meta_rewarding {100 * m1:.1f} vs {base} {100 * m2:.1f} "
                 f"(seed {100 * g1:.1f}): difference {100 * diff:+.1f} points, seed-to-seed std "
                 f"{100 * s1:.1f} / {100 * s2:.1f} -> Meta-Rewarding {call}.")
  return "\n".join(out)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax
  from meta_rewarding.testbed import seed as seed_lib
  arms = list(FLAGS.arms)
  for a in arms:
    if a not in ARMS:
      raise app.UsageError(f"unknown arm {a!r}; expected one of {list(ARMS)}")
  seeds = [int(s) for s in FLAGS.seeds]
  tasks = seed_lib.eval_task_list(FLAGS.eval_tasks)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  start = time.time()
  records = []
  for seed in seeds:          # seeds outermost: a partial bench still compares the arms
    for arm in arms:
      t0 = time.time()
      records.append(run_one(arm, seed, tasks))
      print(f"[{time.time() - start:.0f} s] {arm} seed {seed}: {time.time() - t0:.0f} s; "
            f"final actor {records[-1]['evals'][-1]['actor_accuracy']}, judge(fixed) "
            f"{records[-1]['evals'][-1]['judge_accuracy_fixed']}", flush=True)
  total = time.time() - start
  body, summary = tables(records, arms)
  config, seed_dir = load_config("bench")
  n_iter = config.pipeline.num_iterations
  with open(os.path.join(seed_dir, "build_info.json")) as f:
    seed_sha = json.load(f).get("model_sha256", "?")[:12]
  run_times = [r["total_seconds"] for r in records if r["total_seconds"]]
  pool = {t.instruction for t in seed_lib.eval_task_list(FLAGS.eval_tasks)}
  from meta_rewarding.testbed.tasks import generate_tasks
  overlap = max(len(pool & {t.instruction for t in generate_tasks(s, 2000)}) for s in seeds)
  header = f"""# Testbed benchmark: Meta-Rewarding vs Self-Rewarding

    python bench/testbed.py --arms={','.join(arms)} --seeds={','.join(map(str, seeds))} --eval_tasks={FLAGS.eval_tasks}

Machine: {platform.node()}, {os.cpu_count()} CPU cores (shared with other jobs while measured),
jax {jax.__version__} ({jax.default_backend()}). Seed model sha256 {seed_sha}.
Per run: configs/local_cpu.py:bench -- {config.pipeline.prompts_per_iteration} prompts x
{config.actor.num_responses} responses x {config.judge.num_judgments} judgments per iteration,
{n_iter} iterations, pairs trained on {tuple(config.pipeline.train_pairs)}, DPO lr
{config.train.learning_rate}, beta {config.train.beta}, {config.train.num_epochs} epochs.
{len(records)} runs in {total / 60:.1f} min ({'per run ' + f'{min(run_times) / 60:.1f}-{max(run_times) / 60:.1f} min incl. evaluation' if run_times else 'resumed from disk'}).
Held-out evaluation: {FLAGS.eval_tasks} tasks (at most {overlap} of them also in a run's prompt pool).
"""
  text = header + "\n" + body + "\n\n" + verdict(summary, arms, n_iter) + "\n"
  os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    f.write(text)
  with open(os.path.join(FLAGS.workdir, "records.json"), "w") as f:
    json.dump(records, f)
  print(text)


if __name__ == "__main__":
  app.run(main)
