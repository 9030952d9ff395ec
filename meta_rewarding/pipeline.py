"""The Meta-Rewarding iteration driver (DESIGN.md 4.2): stages, artifacts, resume.

One iteration t turns model M_t into M_{t+1}:

  prompts     sample P prompts from the pool, seeded by (seed, t)        -> iter_t/prompts.jsonl
  actor       K responses per prompt, exact duplicates dropped           -> iter_t/actor.jsonl
  judge       N judgments per response, parsed; score = mean of valid    -> iter_t/judge.jsonl
  actor_pairs length-controlled best-vs-worst per prompt (rho_t)         -> iter_t/actor_pairs.jsonl
  meta_judge  battles between the valid judgments of the highest-variance
              response, in both orders                                   -> iter_t/meta_judge.jsonl
  judge_pairs position weights, battle matrix, Elo, chosen/rejected      -> iter_t/judge_pairs.jsonl
  dpo         reference log-probs once, then DPO on the scheduled pairs  -> iter_t/dpo.jsonl, iter_t/model/
  evaluate    the 4.3 metrics                                            -> iter_t/metrics.json, metrics.jsonl

Every artifact is written atomically (`artifacts.py`); the generation stages are written in chunks of
`pipeline.chunk_size` prompts, so a killed run loses at most one chunk. Rerunning the same command
skips finished stages and chunks; seeds derive from (config.seed, iteration, stage, chunk), so the
resumed run produces exactly what an uninterrupted run would. The stage logic is pure functions of
the earlier artifacts; this module's `run` is the only place with side effects.

Each stage file and chunk has a completion marker `<file>.done.json` (record count, size, sha256),
written after it; a file that disagrees with its marker is refused by name, one without a marker is
made again, and an iteration's model/ is used only when complete (config.json and the weights).
Chunk files are named by the item range they hold, so a changed chunk_size re-chunks without
duplicates. Timing fields go to iter_t/timings.json and timings.jsonl, never into the artifacts or
metrics, which are therefore byte-identical between a resumed run and an uninterrupted one. `run`
starts by removing the temp files a killed run left behind (`artifacts.sweep_temp`).

Every record carries `uid`, its prompt's position in the iteration's prompts.jsonl (0..P-1), and
`id`, the prompt's index in the pool; the stages join on `uid` (`join_key`).

Self-Rewarding is the same loop with `meta_judge.enabled = False` (no meta_judge / judge_pairs).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import time
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
from absl import logging

from meta_rewarding import (artifacts, distributed, metrics as metrics_lib, prompts as prompts_lib,
                            rewarding)
from meta_rewarding.errors import UserError

STAGE_IDS = {"prompts": 0, "actor": 1, "judge": 2, "meta_judge": 3, "dpo": 4}


class PipelineError(UserError, ValueError):
  """A configuration or resume problem the user must fix (the message says what to change)."""


@dataclasses.dataclass(frozen=True)
class Generation:
  """One sampled completion, as the pipeline stores it."""
  text: str
  num_tokens: int
  finish_reason: str  # "stop" | "length"


class Policy(Protocol):
  """What the pipeline needs from a model. `JaxPolicy` (policy.py) is the real one; tests script one.

  Optional: `missing_model_files(path) -> list[str]`, what a saved model directory lacks ([] when it
  is complete); without it a directory's presence means complete."""

  def fits(self, prompt: str, max_new_tokens: int) -> bool:
    """Whether the (chat-templated) prompt plus `max_new_tokens` fits the context."""

  def generate(self, prompts: Sequence[str], *, n: int, max_new_tokens: int, seed: int,
               share_prefix: bool, desc: str) -> list[list[Generation]]:
    """n completions per prompt (with the config's sampling settings), in input order."""

  def train_dpo(self, pairs: Sequence[Mapping[str, str]], *, checkpoint_dir: str,
                seed: int) -> list[dict]:
    """DPO on {prompt, chosen, rejected} pairs, reference = the current model; returns step metrics."""

  def save(self, path: str) -> None:
    """Writes the current model (atomically) so `load` can resume from it."""

  def load(self, path: str) -> None:
    """Replaces the current model by the one saved at `path`."""


def stage_seed(seed: int, iteration: int, stage: str, chunk: int = 0) -> int:
  """A 31-bit seed from (config seed, iteration, stage, chunk): independent streams per stage."""
  return int(np.random.SeedSequence([seed, iteration, STAGE_IDS[stage], chunk]).generate_state(1)[0]
             & 0x7FFFFFFF)


def per_iteration(values, iteration: int, name: str):
  """The entry of a per-iteration config list for 1-based `iteration` (the last one repeats)."""
  values = list(values)
  if not values:
    raise PipelineError(f"config {name} is an empty list; give one value per iteration")
  return values[min(iteration, len(values)) - 1]


# --------------------------------------------------------------------------------------------------
# Pure stage logic.

def sample_prompt_ids(pool_size: int, per_iteration_count: int, iteration: int, seed: int) -> list[int]:
  """Indices into the pool for iteration t (1-based), deterministic in all four arguments.

  The run draws from one stream: epoch e is a seeded permutation of the whole pool, the epochs are
  concatenated, and iteration t takes stream positions [(t-1)·P, t·P). So no prompt repeats within a
  run until the pool is exhausted, and every prompt is drawn once per epoch.

  When an iteration straddles an epoch boundary, the pool indices it already drew from the end of
  epoch e-1 are moved (in their permuted order) to the end of epoch e's permutation, so an iteration
  never holds a pool index twice (the stages join on `uid`, so a repeat would not mis-join, but it
  would spend two of the iteration's prompts on one task). Every epoch stays a full permutation,
  iteration boundaries stay at fixed stream positions, and iterations that do not reach a boundary
  draw what they always drew. This needs P ≤ pool size; a larger P raises PipelineError.
  """
  if pool_size <= 0:
    raise PipelineError("the prompt pool is empty")
  if per_iteration_count > pool_size:
    raise PipelineError(
        f"pipeline.prompts_per_iteration={per_iteration_count} is larger than the prompt pool "
        f"({pool_size} prompts), so an iteration would draw some prompt twice; lower "
        "pipeline.prompts_per_iteration or use a larger pool")
  if per_iteration_count <= 0:
    return []
  start = (iteration - 1) * per_iteration_count
  stop = start + per_iteration_count
  ids = []
  order = None
  # Epoch e's order depends on the end of epoch e-1's (already adjusted) order, so build them in turn
  # from epoch 0; a permutation per epoch is cheap next to generating one response per prompt.
  for epoch in range((stop - 1) // pool_size + 1):
    perm = np.random.default_rng([seed, epoch]).permutation(pool_size)
    boundary = epoch * pool_size
    straddle_start = boundary - boundary % per_iteration_count  # start of the iteration holding it
    if epoch > 0 and straddle_start < boundary:
      already = order[straddle_start - (epoch - 1) * pool_size:]
      moved = np.isin(perm, already)
      perm = np.concatenate([perm[~moved], perm[moved]])
    order = perm
    lo, hi = max(start - boundary, 0), min(stop - boundary, pool_size)
    if lo < hi:
      ids.extend(int(i) for i in order[lo:hi])
  return ids


def join_key(record: Mapping[str, Any]) -> int:
  """The key that joins one iteration's records: `uid`, the prompt's position in prompts.jsonl.

  Not `id` (the pool index): an iteration must never hold a pool index twice, but the stages must
  not rely on it, or a repeated prompt would have its scores joined to the other copy's responses.
  Records written before `uid` existed fall back to `id`, which is what they were joined by.
  """
  return record["uid"] if "uid" in record else record["id"]


def dedupe_responses(generations: Sequence[Generation]) -> tuple[list[Generation], int]:
  """Drops exact duplicate texts (keeping the first); returns (kept, number dropped)."""
  seen, kept = set(), []
  for g in generations:
    if g.text not in seen:
      seen.add(g.text)
      kept.append(g)
  return kept, len(generations) - len(kept)


def response_length(record: Mapping[str, Any], unit: str) -> int:
  if unit == "chars":
    return len(record["text"])
  if unit == "tokens":
    return int(record["num_tokens"])
  raise PipelineError(f"pipeline.length_unit={unit!r}; expected 'chars' or 'tokens'")


def actor_pairs(actor: Sequence[Mapping], judge: Sequence[Mapping], rho: float,
                length_unit: str) -> list[dict]:
  """Length-controlled actor pairs (4.2 step 4), one per prompt at most (joined by `join_key`)."""
  by_prompt: dict[int, dict[int, Mapping]] = {}
  for j in judge:
    by_prompt.setdefault(join_key(j), {})[j["response_index"]] = j
  pairs = []
  for a in actor:
    judged = by_prompt.get(join_key(a), {})
    responses = a["responses"]
    scores = [judged[i]["score"] if i in judged else None for i in range(len(responses))]
    lengths = [response_length(r, length_unit) for r in responses]
    pair = rewarding.select_actor_pair(scores, lengths, rho)
    if pair is None:
      continue
    c, r = pair
    pairs.append({"uid": join_key(a), "id": a["id"], "kind": "actor", "prompt": a["prompt"],
                  "chosen": responses[c]["text"], "rejected": responses[r]["text"],
                  "chosen_index": c, "rejected_index": r, "chosen_score": scores[c],
                  "rejected_score": scores[r], "chosen_length": lengths[c],
                  "rejected_length": lengths[r]})
  return pairs


def meta_judge_requests(actor: Sequence[Mapping], judge: Sequence[Mapping]) -> list[dict]:
  """Per prompt: the highest-variance response and the battles among its valid judgments."""
  by_prompt: dict[int, list[Mapping]] = {}
  for j in judge:
    by_prompt.setdefault(join_key(j), []).append(j)
  requests = []
  for a in actor:
    judged = sorted(by_prompt.get(join_key(a), []), key=lambda j: j["response_index"])
    if not judged:
      continue
    per_response = [[x["score"] for x in j["judgments"]] for j in judged]
    choice = rewarding.highest_variance_response(per_response)
    if choice is None:
      continue
    record = judged[choice]
    valid = [i for i, x in enumerate(record["judgments"]) if x["score"] is not None]
    battles = rewarding.battle_orders(valid)
    if not battles:
      continue
    requests.append({"uid": join_key(a), "id": a["id"], "prompt": a["prompt"],
                     "response_index": record["response_index"],
                     "response": a["responses"][record["response_index"]]["text"],
                     "judgments": [x["text"] for x in record["judgments"]],
                     "scores": [x["score"] for x in record["judgments"]],
                     "orders": [list(b) for b in battles]})
  return requests


def judge_pairs(meta: Sequence[Mapping], judge_template: str, max_chosen_chars: int | None,
                l2: float) -> tuple[list[dict], tuple[float, float], int]:
  """Judge pairs from all meta-judge battles of the iteration (4.2 step 5).

  Returns (pairs, (w1, w2), identical_dropped). A pair whose chosen and rejected judgments are the
  same text (the judge sampled one judgment twice and the battles split them) is dropped: its DPO
  gradient is zero, so it teaches nothing and only pulls `rewards/accuracies` down.
  `identical_dropped` counts them; it is a function of the meta-judge records alone, so a resumed
  run recomputes the same number.
  """
  all_battles = [(b["a"], b["b"], b["winner"]) for m in meta for b in m["battles"]]
  w1, w2 = rewarding.position_weights(*rewarding.count_position_wins(all_battles))
  pairs, identical_dropped = [], 0
  for m in meta:
    battles = [(b["a"], b["b"], b["winner"]) for b in m["battles"]]
    n = len(m["judgments"])
    elo = rewarding.elo_scores(rewarding.battle_matrix(n, battles, w1, w2), l2)
    lengths = [len(t) for t in m["judgments"]]
    # Only judgments that took part in battles compete for chosen / rejected.
    players = sorted({i for a, b, _ in battles for i in (a, b)})
    sub = rewarding.select_judge_pair([elo[i] for i in players], [lengths[i] for i in players],
                                      max_chosen_chars)
    if sub is None:
      continue
    c, r = players[sub[0]], players[sub[1]]
    if m["judgments"][c] == m["judgments"][r]:
      identical_dropped += 1
      continue
    pairs.append({"uid": join_key(m), "id": m["id"], "kind": "judge",
                  "prompt": prompts_lib.render_judge_prompt(judge_template, m["prompt"], m["response"]),
                  "chosen": m["judgments"][c], "rejected": m["judgments"][r],
                  "chosen_index": c, "rejected_index": r, "elo": [float(e) for e in elo],
                  "chosen_score": m["scores"][c], "rejected_score": m["scores"][r]})
  return pairs, (w1, w2), identical_dropped


def _mean(xs):
  xs = [x for x in xs if x is not None]
  return float(np.mean(xs)) if xs else None


def iteration_metrics(iteration: int, prompts: Sequence[Mapping], actor: Sequence[Mapping],
                      judge: Sequence[Mapping], a_pairs: Sequence[Mapping],
                      meta: Sequence[Mapping] | None, j_pairs: Sequence[Mapping] | None,
                      dpo_steps: Sequence[Mapping], position_w: tuple[float, float] | None,
                      skipped: Mapping[str, int], judge_identical_dropped: int = 0) -> dict:
  """The numbers of DESIGN.md 4.3 for one iteration, from its artifacts.

  `judge_identical_dropped` is the third value `judge_pairs` returns (0 without a meta-judge).
  """
  responses = [r for a in actor for r in a["responses"]]
  tokens = [r["num_tokens"] for r in responses]
  chars = [len(r["text"]) for r in responses]
  out: dict[str, Any] = {"iteration": iteration, "prompts": len(prompts)}
  out.update({f"skipped/{k}": v for k, v in skipped.items()})
  out.update({
      "actor/responses": len(responses),
      "actor/length_tokens_mean": _mean(tokens), "actor/length_tokens_median":
          float(np.median(tokens)) if tokens else None,
      "actor/length_chars_mean": _mean(chars), "actor/length_chars_median":
          float(np.median(chars)) if chars else None,
      "actor/duplicates_dropped": sum(a["duplicates_dropped"] for a in actor),
      "actor/stopped_by_length_share": _mean([float(r["finish_reason"] == "length") for r in responses]),
  })
  stats = rewarding.judge_score_stats([x["score"] for j in judge for x in j["judgments"]])
  out.update({
      "judge/judgments": stats["judgments"], "judge/parse_failures": stats["parse_failures"],
      "judge/parse_failure_rate": stats["parse_failure_rate"], "judge/score_mean": stats["mean"],
      "judge/fractional_share": stats["fractional_share"],
      "judge/score_histogram": {str(k): v for k, v in enumerate(stats["histogram"])},
      "judge/scored_responses": sum(j["score"] is not None for j in judge),
  })
  out.update({
      "pairs/actor": len(a_pairs),
      "pairs/judge": len(j_pairs) if j_pairs is not None else 0,
      "pairs/judge_identical_dropped": judge_identical_dropped,
      "pairs/actor_score_margin_mean": _mean([p["chosen_score"] - p["rejected_score"] for p in a_pairs]),
      "pairs/chosen_length_mean": _mean([p["chosen_length"] for p in a_pairs]),
      "pairs/rejected_length_mean": _mean([p["rejected_length"] for p in a_pairs]),
  })
  if meta is not None:
    # One pool of battles over the whole iteration: offset each prompt's judgment indices.
    battles, scores = [], []
    for m in meta:
      offset = len(scores)
      scores.extend(m["scores"])
      battles.extend((offset + x["a"], offset + x["b"], x["winner"]) for x in m["battles"]
                     if not x.get("too_long"))
    mstats = rewarding.meta_judge_stats(battles, scores)
    out.update({
        "meta/prompts": len(meta), "meta/battles": mstats["battles"],
        "meta/parse_failure_rate": mstats["parse_failure_rate"],
        "meta/first_position_win_rate": mstats["first_position_win_rate"],
        "meta/first_position_win_rate_same_score": mstats["first_position_win_rate_same_score"],
        "meta/first_position_win_rate_diff_score": mstats["first_position_win_rate_diff_score"],
        "meta/picks_higher_score_rate": mstats["higher_score_pick_rate"],
        "meta/position_weight_first": position_w[0] if position_w else None,
        "meta/position_weight_second": position_w[1] if position_w else None,
    })
  if dpo_steps:
    last = dpo_steps[-1]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "grad_norm", "learning_rate", "tokens_per_second"):
      values = [s[key] for s in dpo_steps if s.get(key) is not None]
      if values:
        out[f"dpo/{key}"] = float(np.mean(values))
        out[f"dpo/final_{key}"] = float(last.get(key, values[-1]))
    out["dpo/steps"] = len(dpo_steps)
    out.update({k: v for k, v in dpo_steps[0].items() if k.startswith("data/")})
  else:
    out["dpo/steps"] = 0
  return out


# --------------------------------------------------------------------------------------------------
# The driver (side effects live here).

# Multi-host: every process runs the driver and holds the same records; the state of a file is
# decided by process 0, only process 0 writes, and the others wait for the write before reading
# (the workdir must be shared by all hosts, e.g. a gs:// path or NFS). One process: plain file I/O.
#
# Integrity: every stage file and chunk is written with a completion marker `<file>.done.json`
# (record count, size, sha256; `artifacts.write_jsonl_marked`), written after the file. On resume a
# file is used only when it agrees with its marker; one that disagrees (cut at a line boundary,
# emptied, edited) stops the run with its name and a hint (PipelineError), and one without a marker
# is made again: its writer was stopped between the file and the marker. A file written before
# markers existed cannot be told from one cut short at a line boundary, so it is made again too
# (with a warning): the seeds derive from (seed, iteration, stage, chunk), so the redo writes what
# an uninterrupted run would have, at the cost of recomputing that stage.

# Timing fields are not results: they differ between two runs of the same command. They go to
# iter_<t>/timings.json and workdir/timings.jsonl, never to metrics.json / metrics.jsonl or the stage
# files, which are therefore byte-identical between an interrupted-and-resumed run and an
# uninterrupted one.
STEP_TIMING_KEYS = ("tokens_per_second",)  # in the DPO step records policy.train_dpo returns
TIMING_KEYS = ("wall_seconds", "dpo/tokens_per_second", "dpo/final_tokens_per_second")
TIMINGS_FILE = "timings.jsonl"

# Where the driver is (for the one-line message of an interrupted run, see `interrupted_message`).
_progress: dict[str, Any] = {"iteration": None, "stage": None}


def _at(iteration: int | None, stage: str | None):
  _progress.update(iteration=iteration, stage=stage)


def interrupted_message() -> str:
  """The line to print when a run is stopped by SIGINT / SIGTERM (see main.py)."""
  if _progress["iteration"] is None:
    return "interrupted; rerun the same command to resume"
  return (f"interrupted at iteration {_progress['iteration']}, stage {_progress['stage']}; "
          "rerun the same command to resume")


def _decide(value):
  """Process 0's JSON-serialisable `value` on every process (every process must call this)."""
  return distributed.allgather_objects(value)[0]


def _exists(path: str) -> bool:
  return distributed.main_process_decides(artifacts.exists(path))


def _write_jsonl(path: str, records: Sequence) -> None:
  """Writes a stage file or chunk and then its completion marker (process 0)."""
  if distributed.is_main_process():
    artifacts.write_jsonl_marked(path, records)
  distributed.sync("write:" + path)


def _finished(path: str) -> list | None:
  """The records of a finished stage file or chunk; None when it is to be made (again).

  A file that disagrees with its completion marker raises PipelineError (never used, never silently
  replaced: the user decides whether to restore it or have it redone)."""
  try:
    state, records = artifacts.check_jsonl_marked(path)
    error = None
  except artifacts.ArtifactError as e:
    state, records, error = "damaged", None, str(e)
  state, error = _decide([state, error])
  if state == "damaged":
    raise PipelineError(error)
  if state == "unmarked":
    logging.warning("%s has no completion marker (its writer stopped before finishing it, or it "
                    "was written before markers existed): it is made again", path)
  if state != "complete":
    return None
  return records if records is not None else artifacts.read_jsonl(path)


def _read_back(path: str) -> list:
  """The records just written to `path`, as a resumed run would read them."""
  records = _finished(path)
  if records is None:
    raise PipelineError(f"{path} was written but cannot be read back complete")
  return records


_CHUNK_NAME = re.compile(r"^(\d+)-(\d+)\.jsonl$")


def _chunk_path(chunk_dir: str, start: int, end: int) -> str:
  return artifacts.join(chunk_dir, f"{start:06d}-{end:06d}.jsonl")


def _chunked(path: str, items: Sequence, chunk_size: int,
             run_chunk: Callable[[Sequence, int], list]) -> list:
  """Runs `run_chunk(items_of_chunk, chunk_index)` for every chunk not yet on disk, then merges.

  A chunk file is named by the item range it holds, `<start>-<end>.jsonl` ([start, end) of
  `items`), so a resume with another `chunk_size` (allow_config_change) re-chunks without
  duplicating records: the items are covered left to right, a finished chunk starting where the
  cover stands is used whole, and new chunks of `chunk_size` items (cut short where the next
  finished chunk starts) fill the gaps. Finished chunks that do not fit the cover are not used (they
  are removed with the chunk directory after the merge). `chunk_index` (for the seed) is
  start // chunk_size: the index an uninterrupted run gives each chunk.
  """
  records = _finished(path)
  if records is not None:
    return records
  chunk_dir = path + ".chunks"
  names = _decide(artifacts.listdir(chunk_dir) if artifacts.isdir(chunk_dir) else [])
  starts: dict[int, int] = {}  # start -> end of the chunk files on disk, within the items
  for name in names:
    m = _CHUNK_NAME.match(name)
    if m and int(m.group(1)) < int(m.group(2)) <= len(items):
      starts[int(m.group(1))] = max(starts.get(int(m.group(1)), 0), int(m.group(2)))
  records = []
  position = 0
  while position < len(items):
    if position in starts:
      chunk = _finished(_chunk_path(chunk_dir, position, starts[position]))
      if chunk is not None:
        records.extend(chunk)
        position = starts[position]
        continue
    end = min([position + chunk_size, len(items)] + [s for s in starts if s > position])
    chunk_path = _chunk_path(chunk_dir, position, end)
    _write_jsonl(chunk_path, run_chunk(items[position:end], position // chunk_size))
    # Always continue from what is on disk, so resumed and uninterrupted runs see identical data.
    records.extend(_read_back(chunk_path))
    position = end
  distributed.sync("read:" + chunk_dir)  # everyone has read the chunks before they are removed
  _write_jsonl(path, records)
  if distributed.is_main_process():
    artifacts.rmtree(chunk_dir, ignore_errors=True)
  return _read_back(path)


def _stage(path: str, compute: Callable[[], list]) -> list:
  if _finished(path) is None:
    _write_jsonl(path, compute())
  return _read_back(path)


def _missing_model_files(policy: Policy, path: str) -> list[str]:
  """What the model directory `path` lacks ([] when complete), as process 0 sees it.

  A policy may say what a complete directory holds (`JaxPolicy.missing_model_files`: config.json and
  the weights); for one that does not, the directory's presence is enough."""
  check = getattr(policy, "missing_model_files", None)
  if check is not None:
    missing = check(path) if distributed.is_main_process() else []
  else:
    missing = [] if artifacts.exists(path) else ["the directory"]
  return list(_decide(missing))


def _read_timings(it_dir: str) -> dict:
  """iter_<t>/timings.json, or {} (timings are not results: a missing or unreadable file is no
  reason to stop a run)."""
  path = artifacts.join(it_dir, "timings.json")
  try:
    return dict(artifacts.read_json(path)) if artifacts.exists(path) else {}
  except (artifacts.ArtifactError, OSError, TypeError, ValueError):
    return {}


def _write_timings(it_dir: str, timings: Mapping) -> None:
  if distributed.is_main_process():
    artifacts.write_json(artifacts.join(it_dir, "timings.json"), dict(timings))


def _split_step_timings(steps: Sequence[Mapping]) -> tuple[list[dict], dict]:
  """DPO step records without their timing fields, and the timings of the iteration's DPO."""
  clean = [{k: v for k, v in s.items() if k not in STEP_TIMING_KEYS} for s in steps]
  timings: dict[str, Any] = {}
  for key in STEP_TIMING_KEYS:
    values = [s.get(key) for s in steps]
    present = [v for v in values if v is not None]
    if present:
      timings[f"dpo/{key}"] = float(np.mean(present))
      timings[f"dpo/final_{key}"] = float(values[-1] if values[-1] is not None else present[-1])
      timings[f"dpo/step_{key}"] = values
  return clean, timings


def _pop_timings(metrics: dict, timings: dict) -> dict:
  """Moves timing fields out of `metrics` (e.g. a metrics.json or dpo.jsonl written before they had
  their own file) into `timings`, where they do not override what is there; returns `metrics`."""
  for key in TIMING_KEYS:
    if key in metrics:
      timings.setdefault(key, metrics.pop(key))
  return metrics


def check_config(workdir: str, config_json: str, allow_change: bool):
  """Records the resolved config; refuses a resumed run whose config differs (unless allowed)."""
  path = artifacts.join(workdir, "config.json")
  current = json.loads(config_json)
  if artifacts.exists(path):
    previous = artifacts.read_json(path)
    if previous != current:
      diff = sorted(_diff_keys(previous, current))
      if not allow_change:
        raise PipelineError(
            f"{workdir} holds a run with a different config (changed: {', '.join(diff[:8])}"
            f"{' ...' if len(diff) > 8 else ''}). Use a new --workdir, or pass "
            "--config.allow_config_change=True to resume with the new config.")
      logging.warning("resuming %s with a changed config: %s", workdir, diff)
  artifacts.write_json(path, current)


def _diff_keys(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    for k in set(a) | set(b):
      yield from _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
  elif a != b:
    yield prefix.rstrip(".")


def _generations_to_records(gens: Sequence[Generation]) -> list[dict]:
  return [dataclasses.asdict(g) for g in gens]


def run_iteration(config, workdir: str, iteration: int, policy: Policy, pool: Sequence[str],
                  evaluate_extra: Callable[[Mapping[str, list]], dict] | None = None) -> dict:
  """Runs (or resumes) iteration `iteration` (1-based); returns its metrics."""
  return _run_iteration(config, workdir, iteration, policy, pool, evaluate_extra)[0]


def _run_iteration(config, workdir: str, iteration: int, policy: Policy, pool: Sequence[str],
                   evaluate_extra: Callable[[Mapping[str, list]], dict] | None = None
                   ) -> tuple[dict, dict]:
  """`run_iteration`, also returning the iteration's timings (process 0's; {} on the others).

  An iteration is finished when metrics.json (written last) is there and its model directory is
  complete; a finished iteration is loaded with the timings it was run with."""
  start = time.time()
  it_dir = artifacts.join(workdir, f"iter_{iteration}")
  artifacts.makedirs(it_dir)
  metrics_path = artifacts.join(it_dir, "metrics.json")
  model_dir = artifacts.join(it_dir, "model")
  main = distributed.is_main_process()
  _at(iteration, "load")
  if _exists(metrics_path) and not _missing_model_files(policy, model_dir):
    policy.load(model_dir)
    timings = _read_timings(it_dir) if main else {}
    return _pop_timings(artifacts.read_json(metrics_path), timings), timings
  # Whether an earlier process started this iteration: its wall_seconds then covers only the part
  # this process ran, and says so ("resumed": true).
  resumed = _exists(artifacts.join(it_dir, "prompts.jsonl"))
  timings = _read_timings(it_dir) if main else {}
  timings.pop("wall_seconds", None)
  timings.pop("resumed", None)
  p = config.pipeline
  seed = config.seed
  skipped = {"long_prompts": 0, "long_judge_prompts": 0, "long_meta_judge_prompts": 0}

  # 1. Prompts.
  def sample_prompts():
    ids = sample_prompt_ids(len(pool), p.prompts_per_iteration, iteration, seed)
    # uid (the position in this list) is what the later stages join on; id is the pool index.
    return [{"uid": k, "id": i, "prompt": pool[i]} for k, i in enumerate(ids)]
  _at(iteration, "prompts")
  prompt_records = _stage(artifacts.join(it_dir, "prompts.jsonl"), sample_prompts)
  usable = [r for r in prompt_records if policy.fits(r["prompt"], config.actor.max_new_tokens)]
  skipped["long_prompts"] = len(prompt_records) - len(usable)
  if skipped["long_prompts"] and not config.data.skip_long_prompts:
    raise PipelineError(f"{skipped['long_prompts']} prompts of iteration {iteration} do not fit the "
                        "context; shorten them or set data.skip_long_prompts=True")

  # 2. Actor.
  def run_actor(chunk, c):
    gens = policy.generate([r["prompt"] for r in chunk], n=config.actor.num_responses,
                           max_new_tokens=config.actor.max_new_tokens,
                           seed=stage_seed(seed, iteration, "actor", c), share_prefix=False,
                           desc=f"iter {iteration} actor [{c}]")
    out = []
    for r, g in zip(chunk, gens):
      kept, dropped = dedupe_responses(g)
      responses = _generations_to_records(kept)
      # How many of the K samples each kept text stands for: sample-level statistics (the
      # testbed's actor accuracy) must not undercount answers the actor gives repeatedly.
      copies = collections.Counter(x.text for x in g)
      for record in responses:
        record["samples"] = copies[record["text"]]
      out.append({"uid": join_key(r), "id": r["id"], "prompt": r["prompt"],
                  "responses": responses, "duplicates_dropped": dropped})
    return out
  _at(iteration, "actor")
  actor = _chunked(artifacts.join(it_dir, "actor.jsonl"), usable, p.chunk_size, run_actor)

  # 3. Judge.
  judge_template = config.judge.template
  items = [(a, i) for a in actor for i in range(len(a["responses"]))]

  def run_judge(chunk, c):
    rendered = [prompts_lib.render_judge_prompt(judge_template, a["prompt"], a["responses"][i]["text"])
                for a, i in chunk]
    fits = [policy.fits(x, config.judge.max_new_tokens) for x in rendered]
    todo = [x for x, ok in zip(rendered, fits) if ok]
    gens = iter(policy.generate(todo, n=config.judge.num_judgments,
                                max_new_tokens=config.judge.max_new_tokens,
                                seed=stage_seed(seed, iteration, "judge", c), share_prefix=True,
                                desc=f"iter {iteration} judge [{c}]")) if todo else iter(())
    out = []
    for (a, i), ok in zip(chunk, fits):
      judgments = [{"text": g.text, "num_tokens": g.num_tokens, "finish_reason": g.finish_reason,
                    "score": prompts_lib.parse_score(g.text)} for g in next(gens)] if ok else []
      out.append({"uid": join_key(a), "id": a["id"], "response_index": i, "judgments": judgments,
                  "too_long": not ok,
                  "score": rewarding.response_score([j["score"] for j in judgments])})
    return out
  # Chunk over prompts' responses in groups of chunk_size prompts' worth.
  _at(iteration, "judge")
  judge = _chunked(artifacts.join(it_dir, "judge.jsonl"), items,
                   p.chunk_size * max(1, config.actor.num_responses), run_judge)
  skipped["long_judge_prompts"] = sum(j["too_long"] for j in judge)

  # 4. Actor pairs.
  rho = float(per_iteration(p.rho, iteration, "pipeline.rho"))
  _at(iteration, "actor_pairs")
  a_pairs = _stage(artifacts.join(it_dir, "actor_pairs.jsonl"),
                   lambda: actor_pairs(actor, judge, rho, p.length_unit))

  # 5. Meta-judge and judge pairs (not run when this iteration trains on no judge pairs, unless
  # meta_judge.run_when_unused asks for its metrics anyway).
  use = per_iteration(p.train_pairs, iteration, "pipeline.train_pairs")
  if use not in ("both", "actor", "judge", "none"):
    raise PipelineError(f"pipeline.train_pairs entry {use!r}: expected both|actor|judge|none")
  meta = j_pairs = position_w = None
  identical_dropped = 0
  if config.meta_judge.enabled and (use in ("both", "judge") or config.meta_judge.run_when_unused):
    requests = meta_judge_requests(actor, judge)

    def run_meta(chunk, c):
      flat = []
      for r in chunk:
        for a_idx, b_idx in r["orders"]:
          flat.append(prompts_lib.render_meta_judge_prompt(
              config.meta_judge.template, r["prompt"], r["response"], r["judgments"][a_idx],
              r["judgments"][b_idx]))
      fits = [policy.fits(x, config.meta_judge.max_new_tokens) for x in flat]
      todo = [x for x, ok in zip(flat, fits) if ok]
      gens = iter(policy.generate(todo, n=1, max_new_tokens=config.meta_judge.max_new_tokens,
                                  seed=stage_seed(seed, iteration, "meta_judge", c),
                                  share_prefix=True, desc=f"iter {iteration} meta-judge [{c}]")
                  ) if todo else iter(())
      fit_iter = iter(fits)
      out = []
      for r in chunk:
        battles = []
        for a_idx, b_idx in r["orders"]:
          if not next(fit_iter):
            battles.append({"a": a_idx, "b": b_idx, "text": None, "winner": None, "too_long": True})
            continue
          g = next(gens)[0]
          battles.append({"a": a_idx, "b": b_idx, "text": g.text, "finish_reason": g.finish_reason,
                          "winner": prompts_lib.parse_winner(g.text), "too_long": False})
        out.append({"uid": join_key(r), **{k: r[k] for k in ("id", "prompt", "response_index",
                                                             "response", "judgments", "scores")},
                    "battles": battles})
      return out
    _at(iteration, "meta_judge")
    meta = _chunked(artifacts.join(it_dir, "meta_judge.jsonl"), requests, p.chunk_size, run_meta)
    skipped["long_meta_judge_prompts"] = sum(b["too_long"] for m in meta for b in m["battles"])
    j_pairs_path = artifacts.join(it_dir, "judge_pairs.jsonl")
    _at(iteration, "judge_pairs")
    j_pairs, position_w, identical_dropped = judge_pairs(
        meta, judge_template, config.meta_judge.max_chosen_chars, config.meta_judge.elo_l2)
    j_pairs = _stage(j_pairs_path, lambda: j_pairs)

  # 6. DPO.
  _at(iteration, "dpo")
  dpo_path = artifacts.join(it_dir, "dpo.jsonl")
  dpo_steps = _finished(dpo_path)
  missing = _missing_model_files(policy, model_dir)
  if dpo_steps is None or missing:
    if missing and _exists(model_dir):
      # Never loaded: e.g. a remote save stopped before its config.json (uploaded last), or a
      # directory damaged by hand. DPO is deterministic, so training again rebuilds it.
      logging.warning("%s is incomplete (missing %s): iteration %d's DPO is run again", model_dir,
                      ", ".join(missing), iteration)
      if main:
        artifacts.rmtree(model_dir, ignore_errors=True)
      distributed.sync("remove:" + model_dir)
    pairs = []
    if use in ("both", "actor"):
      pairs += a_pairs
    if use in ("both", "judge") and j_pairs:
      pairs += j_pairs
    steps = []
    if pairs:
      steps = policy.train_dpo([{k: q[k] for k in ("prompt", "chosen", "rejected", "kind")}
                                for q in pairs],
                               checkpoint_dir=artifacts.join(it_dir, "dpo_checkpoints"),
                               seed=stage_seed(seed, iteration, "dpo"))
    else:
      logging.warning("iteration %d: no pairs to train on; the model is carried over unchanged",
                      iteration)
    steps, dpo_timings = _split_step_timings(steps)
    for key in list(timings):
      if key.startswith("dpo/"):
        del timings[key]
    timings.update(dpo_timings)
    _write_timings(it_dir, timings)  # before the model and dpo.jsonl: a resume keeps them
    policy.save(model_dir)
    _write_jsonl(dpo_path, steps)
    if distributed.is_main_process():
      artifacts.rmtree(artifacts.join(it_dir, "dpo_checkpoints"), ignore_errors=True)
    dpo_steps = _read_back(dpo_path)
  else:
    policy.load(model_dir)

  # 7. Evaluate.
  _at(iteration, "evaluate")
  result = iteration_metrics(iteration, prompt_records, actor, judge, a_pairs, meta, j_pairs,
                             dpo_steps, position_w, skipped, identical_dropped)
  result["pairs/trained_on"] = use
  result["rho"] = rho
  if evaluate_extra is not None:
    result.update(evaluate_extra({"prompts": prompt_records, "actor": actor, "judge": judge,
                                  "meta_judge": meta or [], "actor_pairs": a_pairs,
                                  "judge_pairs": j_pairs or []}))
  _pop_timings(result, timings)  # dpo/tokens_per_second of a dpo.jsonl from before timings.json
  timings["wall_seconds"] = round(time.time() - start, 2)
  if resumed:
    timings["resumed"] = True
  _write_timings(it_dir, timings)  # before metrics.json, which marks the iteration finished
  if main:
    artifacts.write_json(metrics_path, result)
  distributed.sync("write:" + metrics_path)
  return result, timings


def _evaluate_model(workdir: str, iteration: int, policy: Policy,
                    evaluate_model: Callable[[Policy, str], dict]) -> dict:
  """`evaluate_model` of the model the policy holds now (M_iteration), computed once: kept in
  iter_<t>/heldout.json (atomic), so a resumed run reads it instead of measuring again."""
  it_dir = artifacts.join(workdir, f"iter_{iteration}")
  path = artifacts.join(it_dir, "heldout.json")
  if not _exists(path):
    start = time.time()
    result = evaluate_model(policy, f"M_{iteration}")
    if distributed.is_main_process():
      artifacts.makedirs(it_dir)
      artifacts.write_json(path, result)
      logging.info("held-out evaluation of M_%d: %.1f s", iteration, time.time() - start)
    distributed.sync("write:" + path)
  return artifacts.read_json(path)


def run(config, workdir: str, policy: Policy, pool: Sequence[str], *,
        evaluate_extra: Callable[[Mapping[str, list]], dict] | None = None,
        evaluate_model: Callable[[Policy, str], dict] | None = None,
        is_main_process: bool = True) -> list[dict]:
  """Runs all `pipeline.num_iterations` iterations (resuming what is on disk); returns their metrics.

  With `evaluate_model` (e.g. the testbed's held-out evaluation), the model entering the run (M_0)
  is measured first, giving a record with "iteration": 0, and iteration t's record also holds the
  measurement of the model it trained (M_t) -- of every iteration, or with
  `evaluate.heldout_every_iteration=False` only of the last one (M_T: what a comparison of runs
  needs, at a fraction of the cost).

  The metrics (returned, and in metrics.jsonl / iter_<t>/metrics.json) hold no timing fields; those
  (wall_seconds, dpo/tokens_per_second, ...) are in workdir/timings.jsonl, one line per iteration,
  with "resumed": true when the iteration's wall_seconds covers only the part after a resume.

  It starts by removing the temp files and directories a killed run left in the workdir
  (`artifacts.sweep_temp`). `interrupted_message` says where a stopped run was."""
  _at(None, None)
  artifacts.makedirs(workdir)
  if distributed.is_main_process():
    removed = artifacts.sweep_temp(workdir)
    if removed:
      logging.warning("removed %d temp file(s)/dir(s) a stopped run left in %s: %s", len(removed),
                      workdir, ", ".join(removed[:5]) + (" ..." if len(removed) > 5 else ""))
  distributed.sync("sweep:" + workdir)
  all_metrics, all_timings = [], []
  if evaluate_model is not None:  # before iteration 1 the policy holds M_0, also on resume
    _at(0, "heldout evaluation")
    all_metrics.append({"iteration": 0, **_evaluate_model(workdir, 0, policy, evaluate_model)})
    if is_main_process:
      _log_iteration(workdir, 0, all_metrics, step_metrics=())
  for iteration in range(1, config.pipeline.num_iterations + 1):
    result, timings = _run_iteration(config, workdir, iteration, policy, pool, evaluate_extra)
    last = iteration == config.pipeline.num_iterations
    if evaluate_model is not None and (last or config.evaluate.get("heldout_every_iteration",
                                                                   True)):
      # run_iteration leaves M_t in the policy (trained or loaded)
      _at(iteration, "heldout evaluation")
      result.update(_evaluate_model(workdir, iteration, policy, evaluate_model))
    all_metrics.append(result)
    if is_main_process:
      it_dir = artifacts.join(workdir, f"iter_{iteration}")
      all_timings.append({"iteration": iteration,
                          **{k: v for k, v in timings.items() if not k.startswith("dpo/step_")}})
      artifacts.write_jsonl(artifacts.join(workdir, TIMINGS_FILE), all_timings)
      steps = artifacts.read_jsonl(artifacts.join(it_dir, "dpo.jsonl"))
      step_timings = {k[len("dpo/step_"):]: v for k, v in timings.items()
                      if k.startswith("dpo/step_") and isinstance(v, list) and len(v) == len(steps)}
      steps = [{**s, **{k: v[i] for k, v in step_timings.items() if v[i] is not None}}
               for i, s in enumerate(steps)]
      _log_iteration(workdir, iteration, all_metrics, steps,
                     timings={k: v for k, v in timings.items() if not k.startswith("dpo/step_")})
  _at(None, None)
  return all_metrics


def _log_iteration(workdir: str, iteration: int, all_metrics: Sequence[dict], step_metrics,
                   timings: Mapping[str, Any] | None = None):
  """metrics.jsonl, TensorBoard (once per iteration, also across resumes), plots, the table.

  `timings` (not in metrics.jsonl) and the step records' timing fields go to TensorBoard only."""
  metrics_lib.write_jsonl(workdir, all_metrics)
  it_dir = artifacts.join(workdir, f"iter_{iteration}")
  marker = artifacts.join(it_dir, ".tensorboard_written")
  if not artifacts.exists(marker):  # a resumed run does not log an iteration twice
    metrics_lib.write_tensorboard(workdir, {**all_metrics[-1], **(timings or {})}, step_metrics)
    artifacts.write_text(marker, "")
  metrics_lib.write_plots(workdir, all_metrics)
  title = "the seed model M_0" if iteration == 0 else f"iteration {iteration}"
  print(f"\n== {title} ==\n" + metrics_lib.format_table(all_metrics), flush=True)
