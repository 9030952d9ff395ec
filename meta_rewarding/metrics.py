"""Where per-iteration numbers go: metrics.jsonl, TensorBoard events, PNG plots, a printed table.

All writers are driven by the pipeline (the edge); everything here is idempotent given the list of
per-iteration metric dicts, so a resumed run rewrites the same files an uninterrupted one would.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from meta_rewarding import artifacts

# (title, y label, [metric keys]) for the PNG plots over iterations.
PLOTS = (
    ("score_drift", "judge score", ["judge/score_mean", "judge/fractional_share",
                                    "heldout/judge_score_mean"]),
    ("lengths", "response length (tokens)", ["actor/length_tokens_mean", "actor/length_tokens_median",
                                              "pairs/chosen_length_mean", "pairs/rejected_length_mean"]),
    ("pair_counts", "pairs", ["pairs/actor", "pairs/judge", "pairs/judge_identical_dropped"]),
    ("position_bias", "rate", ["meta/first_position_win_rate", "meta/first_position_win_rate_same_score",
                               "meta/first_position_win_rate_diff_score", "meta/picks_higher_score_rate"]),
    ("dpo_rewards", "reward", ["dpo/rewards/chosen", "dpo/rewards/rejected", "dpo/rewards/margins",
                               "dpo/rewards/accuracies"]),
    # heldout/*: the model M_t at x = t (M_0 = the seed at x = 0); oracle/*: what iteration t
    # generated, i.e. M_{t-1} on the pool's prompts.
    ("oracle", "accuracy", ["heldout/actor_accuracy", "heldout/judge_balanced_accuracy",
                            "heldout/judge_score_fits_verdict_rate",
                            "heldout/meta_accuracy", "oracle/actor_accuracy",
                            "oracle/judge_accuracy", "oracle/meta_judge_accuracy"]),
    # The Self-Taught Evaluator (ste.py): what each step kept and dropped, the judge's rates on
    # its own pairs, the SFT loss.
    ("ste_counts", "examples", ["ste/pairs", "ste/judged", "ste/with_match", "ste/kept",
                                "ste/worse_unparseable", "ste/dropped_no_match",
                                "ste/dropped_balance"]),
    ("ste_rates", "rate", ["ste/worse_parse_rate", "ste/verdict_rate", "ste/match_rate",
                           "ste/first_position_verdict_rate", "ste/kept_label_a_share"]),
    ("sft_loss", "loss", ["sft/loss", "sft/final_loss"]),
    ("ste_oracle", "share", ["oracle/ste_label_right", "oracle/ste_judgment_right",
                             "oracle/ste_kept_right", "oracle/ste_chosen_correct",
                             "oracle/ste_rejected_correct"]),
    # judge_eval/*: M_t judging the evaluate.judge_pairs preference pairs (judge_eval.py).
    ("judge_eval", "accuracy", ["judge_eval/score", "judge_eval/position_consistency",
                                "judge_eval/parse_rate"]),
)

# The columns of the table printed at the end of each iteration.
TABLE_KEYS = (
    "prompts", "skipped/long_prompts", "skipped/long_judge_prompts", "skipped/long_meta_judge_prompts",
    "actor/length_tokens_mean", "actor/stopped_by_length_share", "judge/parse_failure_rate",
    "judge/score_mean", "pairs/actor", "pairs/judge", "pairs/judge_identical_dropped",
    "meta/parse_failure_rate", "meta/same_score_battles_skipped",
    "meta/first_position_win_rate", "dpo/loss", "dpo/rewards/accuracies", "dpo/rewards/margins",
    "oracle/actor_accuracy", "oracle/judge_accuracy", "oracle/meta_judge_accuracy",
    "heldout/actor_accuracy", "heldout/judge_balanced_accuracy",
    "heldout/judge_score_fits_verdict_rate", "heldout/judge_score_mean",
    "heldout/meta_accuracy", "heldout/meta_picks_higher_rate",
    "judge_eval/score", "judge_eval/position_consistency",
    # The Self-Taught Evaluator's.
    "ste/selected", "ste/pairs", "ste/worse_unparseable", "ste/worse_parse_rate",
    "ste/judged", "ste/verdict_rate", "ste/match_rate", "ste/first_position_verdict_rate",
    "ste/dropped_no_match", "ste/dropped_balance", "ste/kept", "ste/kept_label_a_share",
    "sft/trained_on", "sft/steps", "sft/loss", "sft/final_loss", "oracle/ste_label_right",
    "oracle/ste_judgment_right", "oracle/ste_kept_right",
)


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write_jsonl(workdir: str, per_iteration: Sequence[Mapping[str, Any]]):
  """workdir/metrics.jsonl: one line per finished iteration (rewritten whole, atomically)."""
  artifacts.write_jsonl(artifacts.join(workdir, "metrics.jsonl"), per_iteration)


def write_tensorboard(workdir: str, iteration_metrics: Mapping[str, Any],
                      step_metrics: Sequence[Mapping[str, Any]] = (), step_prefix: str = "dpo_steps"):
  """Scalars of one iteration at step=iteration, training step metrics under `step_prefix`/
  (dpo_steps/, or sft_steps/ for the Self-Taught Evaluator) at global steps.

  Each call writes one new event file under workdir/tensorboard. For a remote workdir the event file
  is written to a local temporary directory first and uploaded when the writer is closed (TensorBoard
  reads every event file of the directory, so per-call files add up to the full history).
  """
  if artifacts.is_remote(workdir):
    with tempfile.TemporaryDirectory(prefix="meta_rewarding_tb-") as local:
      _write_tensorboard(local, iteration_metrics, step_metrics, step_prefix)
      artifacts.upload_dir(local, artifacts.join(workdir, "tensorboard"))
  else:
    _write_tensorboard(os.path.join(workdir, "tensorboard"), iteration_metrics, step_metrics,
                       step_prefix)


def _write_tensorboard(logdir: str, iteration_metrics: Mapping[str, Any],
                       step_metrics: Sequence[Mapping[str, Any]], step_prefix: str = "dpo_steps"):
  from tensorboardX import SummaryWriter  # tensorboardX: only when writing event files
  iteration = int(iteration_metrics["iteration"])
  with SummaryWriter(logdir) as writer:
    for key, value in iteration_metrics.items():
      if key != "iteration" and _finite(value):
        writer.add_scalar(key, value, iteration)
    hist = iteration_metrics.get("judge/score_histogram")
    if isinstance(hist, Mapping) and sum(hist.values()):
      values = np.repeat([float(k) for k in hist], [int(v) for v in hist.values()])
      writer.add_histogram("judge/scores", values, iteration, bins=np.arange(-0.25, 5.5, 0.5))
    for record in step_metrics:
      step = int(record.get("global_step", record.get("step", 0)))
      for key, value in record.items():
        if key not in ("step", "global_step") and _finite(value):
          writer.add_scalar(f"{step_prefix}/{key}", value, step)


def write_plots(workdir: str, per_iteration: Sequence[Mapping[str, Any]]) -> list[str]:
  """One PNG per entry of PLOTS under workdir/plots (metrics absent in every iteration are skipped).

  Each figure is rendered to memory and written with `artifacts.write_bytes` (atomic locally, one
  object upload for a remote workdir)."""
  import matplotlib  # matplotlib: only the plots need it (slow to import); Agg before pyplot
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  out_dir = artifacts.join(workdir, "plots")
  artifacts.makedirs(out_dir)
  iterations = [m["iteration"] for m in per_iteration]
  written = []
  for name, ylabel, keys in PLOTS:
    series = {k: [m.get(k) if _finite(m.get(k)) else np.nan for m in per_iteration] for k in keys}
    series = {k: v for k, v in series.items() if not all(np.isnan(v))}
    if not series:
      continue
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for key, values in series.items():
      ax.plot(iterations, values, marker="o", label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_xticks(iterations)
    ax.set_title(name.replace("_", " "))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = artifacts.join(out_dir, f"{name}.png")
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    artifacts.write_bytes(path, png.getvalue())
    written.append(path)
  return written


def format_table(per_iteration: Sequence[Mapping[str, Any]], keys: Iterable[str] = TABLE_KEYS) -> str:
  """A fixed-width table: one row per metric, one column per iteration."""
  keys = [k for k in keys if any(k in m for m in per_iteration)]
  if not keys:
    return ""
  width = max(len(k) for k in keys)
  header = "metric".ljust(width) + "".join(f"{'iter ' + str(m['iteration']):>12}" for m in per_iteration)
  lines = [header, "-" * len(header)]
  for key in keys:
    cells = []
    for m in per_iteration:
      value = m.get(key)
      if value is None:
        cells.append(f"{'-':>12}")
      elif isinstance(value, float):
        cells.append(f"{value:>12.4g}")
      else:
        cells.append(f"{value!s:>12}")
    lines.append(key.ljust(width) + "".join(cells))
  return "\n".join(lines)
