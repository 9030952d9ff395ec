"""Oracle metrics for testbed runs: how right the actor, the judge and the meta-judge really are.

Two hooks of the pipeline, and a writer of preference pairs:

`heldout_evaluator(config)` returns the pipeline's `evaluate_model` hook: it measures the model the
policy holds (M_0 before the first iteration, M_t after iteration t) on `evaluate.heldout_tasks`
tasks of the `eval` split (never in the seed's SFT data or the prompt pool), with
`measure.measure` at the config's sampling settings, and returns `heldout/*` numbers. Its sampling
seed is fixed (HELDOUT_SEED), not the run's: every model of every run and arm is measured on the
same tasks with the same random draws, so differences between them are paired.

`oracle_metrics(stage_records)` is the pipeline's `evaluate_extra` hook: it reads the iteration's
artifacts (prompts are testbed instructions, so `task_from_instruction` recovers each answer) and
returns `oracle/*` numbers next to the standard ones. Prompts that are not testbed instructions are
counted (`oracle/unknown_prompts`) and left out.

`python -m meta_rewarding.testbed.evaluate --pairs_out=pairs.jsonl [--n=200]` writes the oracle's
RewardBench-format pairs (`preference_pairs`: per family a subset, a right answer chosen over a
plausible mistake) for `judge_eval --pairs=pairs.jsonl` or `evaluate.judge_pairs`.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, Mapping

from absl import flags

from meta_rewarding import artifacts
from meta_rewarding.recipe_types import join_key
from meta_rewarding.testbed import oracle
from meta_rewarding.testbed.measure import eval_task_list, measure
from meta_rewarding.testbed.responses import plausible_mistake, right_answer
from meta_rewarding.testbed.tasks import task_from_instruction

HELDOUT_SEED = 0
HELDOUT_JUDGMENTS = 2   # judgments per sampled answer (two, so the meta-judge has own battles)


def heldout_evaluator(config) -> Callable[[Any], dict]:
  """The `evaluate_model(policy) -> {"heldout/<figure>": value}` hook (module docstring)."""
  tasks = eval_task_list(int(config.evaluate.heldout_tasks),
                                  int(config.evaluate.get("heldout_task_seed", 0)))
  s = config.sampling

  def evaluate_model(policy, label: str) -> dict:
    figures = measure(
        policy.model_config, policy.params, policy.tokenizer, tasks,
        samples=int(config.evaluate.heldout_samples),
        judgments=HELDOUT_JUDGMENTS, seed=HELDOUT_SEED, mesh=policy.mesh,
        judge_template=config.judge.template, meta_template=config.meta_judge.template,
        temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, batch_size=s.batch_size,
        progress=True, desc=f"held-out {label}", self_taught=False,
        diagnostics=bool(config.evaluate.get("heldout_diagnostics", True)))
    return {f"heldout/{k}": v for k, v in figures.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
  return evaluate_model



def _clean(x: float) -> float | None:
  return None if isinstance(x, float) and math.isnan(x) else x


def oracle_metrics(records: Mapping[str, list]) -> dict:
  # Keyed by the per-iteration `uid` (`join_key`), not the pool index: records of two copies of one
  # prompt must not be joined to each other's responses.
  tasks = {}
  unknown = 0
  for a in records["actor"]:
    task = task_from_instruction(a["prompt"])
    if task is None:
      unknown += 1
    else:
      tasks[join_key(a)] = task
  actor_tasks, actor_responses = [], []
  for a in records["actor"]:
    if join_key(a) in tasks:
      for r in a["responses"]:  # a text the actor sampled k times counts k times
        actor_tasks += [tasks[join_key(a)]] * int(r.get("samples", 1))
        actor_responses += [r["text"]] * int(r.get("samples", 1))
  response_text = {(join_key(a), i): r["text"] for a in records["actor"]
                   for i, r in enumerate(a["responses"])}
  judge_tasks, judge_responses, judge_scores = [], [], []
  for j in records["judge"]:
    if join_key(j) in tasks:
      for x in j["judgments"]:
        if x["score"] is not None:
          judge_tasks.append(tasks[join_key(j)])
          judge_responses.append(response_text[(join_key(j), j["response_index"])])
          judge_scores.append(x["score"])
  meta_tasks, meta_responses, meta_pairs, meta_winners = [], [], [], []
  for m in records["meta_judge"]:
    if join_key(m) in tasks:
      for b in m["battles"]:
        meta_tasks.append(tasks[join_key(m)])
        meta_responses.append(m["response"])
        meta_pairs.append((m["scores"][b["a"]], m["scores"][b["b"]]))
        meta_winners.append(b["winner"])
  out = {
      "oracle/unknown_prompts": unknown,
      "oracle/actor_accuracy": _clean(oracle.actor_accuracy(actor_tasks, actor_responses)),
      "oracle/judge_accuracy": _clean(oracle.judge_accuracy(judge_tasks, judge_responses, judge_scores)),
      "oracle/meta_judge_accuracy": _clean(oracle.meta_judge_accuracy(
          meta_tasks, meta_responses, meta_pairs, meta_winners)) if meta_tasks else None,
  }
  # The chosen side of the actor pairs should be right more often than the rejected side.
  pairs = [p for p in records["actor_pairs"] if join_key(p) in tasks]
  if pairs:
    out["oracle/actor_pair_chosen_correct"] = sum(
        oracle.is_correct(tasks[join_key(p)], p["chosen"]) for p in pairs) / len(pairs)
    out["oracle/actor_pair_rejected_correct"] = sum(
        oracle.is_correct(tasks[join_key(p)], p["rejected"]) for p in pairs) / len(pairs)
  return out


def preference_pairs(n: int, seed: int = 0) -> list[dict]:
  """`n` RewardBench-format pairs from the oracle on held-out (`eval` split) tasks: a right answer
  (chosen) against a plausible mistake (rejected), one subset per family, for `judge_eval` and
  `evaluate.judge_pairs`. Deterministic in (n, seed)."""
  rng = random.Random(f"preference-pairs/{seed}")
  out = []
  for k, task in enumerate(eval_task_list(n)):
    out.append({"id": f"{task.family}/{k}", "subset": task.family, "prompt": task.instruction,
                "chosen": f"The answer is {right_answer(task, rng)}.",
                "rejected": f"The answer is {plausible_mistake(task, rng)}."})
  return out


def main(argv):
  """Writes `--n` oracle preference pairs (`preference_pairs`) as a RewardBench-format JSONL file
  that `judge_eval --pairs=FILE` and `evaluate.judge_pairs=FILE` read."""
  del argv
  f = flags.FLAGS
  if f.n < 1:
    raise SystemExit(f"--n={f.n}: give a count of at least 1")
  pairs = preference_pairs(f.n, f.seed)
  artifacts.write_jsonl(f.pairs_out, pairs)
  subsets = {}
  for p in pairs:
    subsets[p["subset"]] = subsets.get(p["subset"], 0) + 1
  print(f"wrote {len(pairs)} pairs to {f.pairs_out} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(subsets.items()))})")


if __name__ == "__main__":
  from absl import app
  flags.DEFINE_string("pairs_out", None, "Where to write the pairs (JSONL, RewardBench format: "
                      "id, subset, prompt, chosen, rejected).", required=True)
  flags.DEFINE_integer("n", 200, "How many pairs (held-out tasks, balanced over the families).")
  flags.DEFINE_integer("seed", 0, "Seed of the answers drawn (the tasks are the eval split's).")
  app.run(main)
