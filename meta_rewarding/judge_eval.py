"""Judge evaluation on preference data in RewardBench's format: how often a model, as a judge,
prefers the chosen response.

  python -m meta_rewarding.judge_eval --checkpoint=HF_DIR --pairs=SOURCE \
      [--protocol=pairwise|pointwise] [--num_samples=k --temperature=0.8] [--output=DIR]

SOURCE: a JSONL or parquet file, or `hf:<name>[:<split>]` (through `datasets`; RewardBench's
reference is `hf:allenai/reward-bench:filtered`), one record per pair: `prompt`, `chosen`,
`rejected` (strings or one-message lists), optional `subset` and `id`. A bad record is an error
naming its file and line.

Protocols:
  pairwise   the Self-Taught Evaluator's judge prompt (`prompts.PAIRWISE_SYSTEM_PROMPT` and
             `prompts.PAIRWISE_TEMPLATE`, the MT-Bench pairwise prompt without its tie option, as
             RewardBench and the STE reference use it). Every pair is judged in both orders (the
             chosen response as assistant A, then as B), so position bias cancels. A verdict names
             [[A]] or [[B]]; a judgment with both tags or neither has none
             (`prompts.parse_pairwise_verdict`, the reference implementation's rule). One order
             scores 1 when its verdict names the chosen response, 0 when it names the rejected
             one, 0.5 without a verdict (RewardBench scores such ties 0.5); with `--num_samples=k`
             the order's verdict is the majority of the k verdicts (a tie of votes: no verdict).
             A pair's score is the mean of its two orders.
  pointwise  the pipeline's own judge (`--judge_template`, default the paper's 5-point rubric):
             each response is judged `--num_samples` times and its parsed scores averaged, as the
             pipeline averages N judgments. The pair scores 1 when the chosen response's mean is
             higher, 0 when lower, 0.5 when equal or when either has no parseable score (the
             Meta-Rewarding paper's Table 3 counts agreement with the human ranking; a tie agrees
             with neither side, and scoring it 0.5 keeps an always-tie judge at chance).

Output: a table on stdout (accuracy per subset, RewardBench's four sections and their mean, the
position-consistency and parse rates); with `--output=DIR`, `DIR/pairs.jsonl` (one record per
input pair: id, subset, score in [0, 1], verdicts, raw judgments) and `DIR/scores.json`
(subsets, sections, score, rates). Judgments are generated in chunks under `DIR/judgments.jsonl`
(as the pipeline's stages): a rerun of the same command resumes where it stopped.

Sections (`section_scores`): RewardBench's grouping (Chat, Chat Hard, Safety, Reasoning), each
the mean of its subsets weighted by RewardBench's example counts, where the math subset weighs
as much as all code subsets together; `score` is the mean of the sections present. A file with
none of RewardBench's subsets (e.g. the testbed's) has no sections, and its `score` is the mean
pair score.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from typing import Iterable, Mapping, Sequence

from absl import app, flags, logging

from meta_rewarding import artifacts, prompts
from meta_rewarding.errors import UserError

# RewardBench's sections and the example counts it weighs subsets by (rewardbench/constants.py:
# math-prm has 447 examples and is counted as 984, the six code subsets together).
SECTIONS = {
    "Chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy",
             "mt-bench-med"),
    "Chat Hard": ("mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor",
                  "llmbar-adver-GPTInst", "llmbar-adver-GPTOut", "llmbar-adver-manual"),
    "Safety": ("refusals-dangerous", "refusals-offensive", "xstest-should-refuse",
               "xstest-should-respond", "donotanswer"),
    "Reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}
EXAMPLE_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
    "mt-bench-med": 40, "mt-bench-hard": 37, "llmbar-natural": 100, "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "refusals-dangerous": 100, "refusals-offensive": 100, "xstest-should-refuse": 154,
    "xstest-should-respond": 250, "donotanswer": 136, "math-prm": 984, "hep-cpp": 164,
    "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}
PROTOCOLS = ("pairwise", "pointwise")


class JudgeEvalError(UserError, ValueError):
  """Bad input to judge_eval (the message says which flag, file or line)."""


# ------------------------------------------------------------------------------------------------
# Data.

def load_preference_pairs(source: str) -> list[dict]:
  """Pairs of `source` (module doc) as dicts: id, subset, prompt, chosen, rejected, where."""
  from meta_rewarding import data
  split = None
  if source.startswith("hf:"):
    name, _, split = source[3:].partition(":")
    source, split = name, (split or None)
  try:
    loaded = data.load_pairs(source, split=split, keep=("id", "subset"))
  except data.DataError as e:
    raise JudgeEvalError(str(e)) from e
  pairs, seen = [], set()
  for n, pair in enumerate(loaded):
    where = pair.pop("source")
    pair_id = pair.setdefault("id", n)
    if not isinstance(pair_id, (str, int)) or isinstance(pair_id, bool):
      raise JudgeEvalError(f"{where}: field 'id' must be a string or an integer")
    if pair_id in seen:
      raise JudgeEvalError(f"{where}: id {pair_id!r} appears twice")
    seen.add(pair_id)
    subset = pair.setdefault("subset", "all")
    if not isinstance(subset, str) or not subset:
      raise JudgeEvalError(f"{where}: field 'subset' must be a non-empty string")
    pairs.append({**pair, "where": where})
  return pairs


def _question(prompt) -> str:
  """The user question a judge sees: the text, or a conversation's turns written out."""
  if isinstance(prompt, str):
    return prompt
  return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)


# ------------------------------------------------------------------------------------------------
# Requests and scores (pure).

def pairwise_requests(pairs: Sequence[Mapping], template: str, system_prompt: str) -> list:
  """Two chat prompts per pair, chosen as assistant A then as B: [pair0 AB, pair0 BA, pair1 AB...].
  Both orders start with the same system prompt and question, which the sampler prefills once."""
  out = []
  for p in pairs:
    q = _question(p["prompt"])
    for a, b in ((p["chosen"], p["rejected"]), (p["rejected"], p["chosen"])):
      user = template.format(input=q, response_a=a, response_b=b)
      out.append([{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
                 if system_prompt else [{"role": "user", "content": user}])
  return out


def pointwise_requests(pairs: Sequence[Mapping], template: str) -> list[str]:
  """Two judge prompts per pair (the pipeline's rubric): [pair0 chosen, pair0 rejected, ...]."""
  return [prompts.render_judge_prompt(template, _question(p["prompt"]), response)
          for p in pairs for response in (p["chosen"], p["rejected"])]


def majority(verdicts: Iterable[str | None]) -> str | None:
  """The verdict most of `verdicts` name ("A" or "B"); None for a tie of votes or no votes."""
  votes = collections.Counter(v for v in verdicts if v is not None)
  if votes["A"] == votes["B"]:
    return None
  return "A" if votes["A"] > votes["B"] else "B"


def pairwise_pair_score(chosen_first: Sequence[str | None], chosen_second: Sequence[str | None]
                        ) -> dict:
  """Score of one pair from the verdicts of its two orders (chosen as A, then as B)."""
  first, second = majority(chosen_first), majority(chosen_second)
  order_scores = [0.5 if first is None else float(first == "A"),
                  0.5 if second is None else float(second == "B")]
  picks = [None if first is None else ("chosen" if first == "A" else "rejected"),
           None if second is None else ("chosen" if second == "B" else "rejected")]
  return {"score": sum(order_scores) / 2, "order_scores": order_scores, "verdicts": [first, second],
          "consistent": picks[0] is not None and picks[0] == picks[1],
          "parsed": [v is not None for v in list(chosen_first) + list(chosen_second)]}


def pointwise_pair_score(chosen_scores: Sequence[float | None],
                         rejected_scores: Sequence[float | None]) -> dict:
  """Score of one pair from the parsed judge scores of each response (None: no score)."""
  c = [x for x in chosen_scores if x is not None]
  r = [x for x in rejected_scores if x is not None]
  mean_c = sum(c) / len(c) if c else None
  mean_r = sum(r) / len(r) if r else None
  if mean_c is None or mean_r is None or mean_c == mean_r:
    score = 0.5
  else:
    score = float(mean_c > mean_r)
  return {"score": score, "means": [mean_c, mean_r],
          "parsed": [x is not None for x in list(chosen_scores) + list(rejected_scores)]}


def section_scores(subset_accuracy: Mapping[str, float]) -> dict[str, float]:
  """RewardBench's section scores of the subsets present: per section, the subsets' accuracies
  weighted by EXAMPLE_COUNTS. Sections with none of their subsets present are left out."""
  out = {}
  for section, subsets in SECTIONS.items():
    present = [s for s in subsets if s in subset_accuracy]
    if present:
      total = sum(EXAMPLE_COUNTS[s] for s in present)
      out[section] = sum(subset_accuracy[s] * EXAMPLE_COUNTS[s] for s in present) / total
  return out


def summarize(records: Sequence[Mapping]) -> dict:
  """scores.json: accuracy per subset, the sections, the score, position consistency, parse rate."""
  by_subset = collections.defaultdict(list)
  for r in records:
    by_subset[r["subset"]].append(r["score"])
  subsets = {s: sum(xs) / len(xs) for s, xs in sorted(by_subset.items())}
  sections = section_scores(subsets)
  mean = sum(r["score"] for r in records) / len(records)
  parsed = [ok for r in records for ok in r["parsed"]]
  out = {"pairs": len(records), "subsets": subsets, "sections": sections,
         "score": sum(sections.values()) / len(sections) if sections else mean,
         "mean_pair_score": mean, "parse_rate": sum(parsed) / len(parsed) if parsed else None}
  consistency = [r["consistent"] for r in records if "consistent" in r]
  if consistency:
    out["position_consistency"] = sum(consistency) / len(consistency)
  return out


def table(summary: Mapping) -> str:
  """The stdout table: subsets, sections, score and rates."""
  lines = [f"{'subset':<28}{'pairs':>7}{'accuracy':>10}"]
  for subset, acc in summary["subsets"].items():
    lines.append(f"{subset:<28}{summary['subset_pairs'][subset]:>7}{100 * acc:>9.1f}%")
  for section, acc in summary["sections"].items():
    lines.append(f"{'section ' + section:<35}{100 * acc:>9.1f}%")
  lines.append(f"{'score':<35}{100 * summary['score']:>9.1f}%")
  if "position_consistency" in summary:
    lines.append(f"{'position consistency':<35}{100 * summary['position_consistency']:>9.1f}%")
  if summary.get("parse_rate") is not None:
    lines.append(f"{'parse rate':<35}{100 * summary['parse_rate']:>9.1f}%")
  if summary.get("requests_too_long"):
    lines.append(f"{summary['requests_too_long']} judge prompts did not fit the model's context "
                 "(scored as no verdict)")
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# The evaluation (the model's side).

def evaluate(pairs: Sequence[Mapping], generate, *, protocol: str, num_samples: int,
             judge_template: str = prompts.JUDGE_TEMPLATE,
             pairwise_template: str = prompts.PAIRWISE_TEMPLATE,
             system_prompt: str = prompts.PAIRWISE_SYSTEM_PROMPT,
             output: str | None = None, chunk_size: int = 64) -> tuple[list[dict], dict]:
  """(one record per pair, the summary). `generate(requests, n) -> [[text] * n]` is the judge (a
  row of None: the request did not fit the model's context; counted, and scored as no verdict);
  with `output`, its judgments are kept in chunks under `output/judgments.jsonl` (resumable)."""
  if protocol not in PROTOCOLS:
    raise JudgeEvalError(f"--protocol={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
  requests = (pairwise_requests(pairs, pairwise_template, system_prompt) if protocol == "pairwise"
              else pointwise_requests(pairs, judge_template))

  def run_chunk(chunk, _):
    return [{"texts": texts} if texts[0] is not None else {"texts": [""] * len(texts),
                                                           "too_long": True}
            for texts in generate(list(chunk), num_samples)]

  if output:
    from meta_rewarding import pipeline
    judged = pipeline.run_chunked(artifacts.join(output, "judgments.jsonl"), requests,
                                  2 * chunk_size, run_chunk)
  else:
    judged = run_chunk(requests, 0)
  records = []
  for k, pair in enumerate(pairs):
    first, second = judged[2 * k]["texts"], judged[2 * k + 1]["texts"]
    if protocol == "pairwise":
      result = pairwise_pair_score([prompts.parse_pairwise_verdict(t) for t in first],
                                   [prompts.parse_pairwise_verdict(t) for t in second])
    else:
      result = pointwise_pair_score([prompts.parse_score(t) for t in first],
                                    [prompts.parse_score(t) for t in second])
    records.append({"id": pair["id"], "subset": pair["subset"], **result,
                    "judgments": [first, second]})
  summary = summarize(records)
  summary["subset_pairs"] = dict(collections.Counter(r["subset"] for r in records))
  summary["requests_too_long"] = sum(bool(j.get("too_long")) for j in judged)
  summary["protocol"] = protocol
  summary["num_samples"] = num_samples
  return records, summary


def judgment_texts(rows) -> list:
  """`evaluate`'s judge output from generations (the pipeline's or the sampler's): per request
  its texts, stripped, or a row of None when the request did not fit the context."""
  from meta_rewarding.stages import TOO_LONG  # the sampler's finish reason too
  return [[None] * len(row) if row[0].finish_reason == TOO_LONG else [g.text.strip() for g in row]
          for row in rows]


def pipeline_evaluator(config):
  """The pipeline's `evaluate_model(policy, label)` hook for `evaluate.judge_pairs`: every model
  M_0 ... M_T judges the pairs (the config's sampling settings and judge lengths; pointwise:
  `judge.num_judgments` scores per response, averaged, with `judge.template`), reported as
  judge_eval/score, judge_eval/<subset>, judge_eval/position_consistency, judge_eval/parse_rate."""
  pairs = load_preference_pairs(config.evaluate.judge_pairs)
  protocol = config.evaluate.get("judge_protocol", "pairwise")
  num_samples = 1 if protocol == "pairwise" else int(config.judge.num_judgments)

  def evaluate_model(policy, label: str) -> dict:
    def generate(requests, n):
      rows = policy.generate(requests, n=n, max_new_tokens=int(config.judge.max_new_tokens),
                             seed=int(config.seed), share_prefix=True, desc=f"judge_eval {label}")
      return judgment_texts(rows)
    _, summary = evaluate(pairs, generate, protocol=protocol, num_samples=num_samples,
                          judge_template=config.judge.template)
    out = {"judge_eval/score": summary["score"], "judge_eval/parse_rate": summary["parse_rate"],
           "judge_eval/requests_too_long": summary["requests_too_long"]}
    if "position_consistency" in summary:
      out["judge_eval/position_consistency"] = summary["position_consistency"]
    out.update({f"judge_eval/{name}": value
                for name, value in {**summary["subsets"], **summary["sections"]}.items()})
    return out
  return evaluate_model


@dataclasses.dataclass
class Options:
  """The command's settings (its flags; `main` fills them)."""
  checkpoint: str
  pairs: str
  protocol: str = "pairwise"
  num_samples: int = 1
  temperature: float = 0.0
  top_p: float = 0.95
  max_new_tokens: int = 512
  batch_size: int = 16
  mesh: str = ""
  dtype: str = "bfloat16"
  chat_format: str = "auto"
  judge_template: str = ""
  output: str = ""
  seed: int = 0


def run(o: Options) -> dict:
  """The command; returns the summary."""
  if o.num_samples < 1:
    raise JudgeEvalError(f"--num_samples={o.num_samples}: must be >= 1")
  if o.num_samples > 1 and o.temperature == 0:
    raise JudgeEvalError("--num_samples > 1 with --temperature=0 repeats one greedy judgment; "
                         "set --temperature (e.g. 0.8) for a majority vote")
  judge_template = prompts.JUDGE_TEMPLATE
  if o.judge_template:
    try:
      with open(o.judge_template, encoding="utf-8") as f:
        judge_template = f.read()
      prompts.validate_judge_template(judge_template)
    except (OSError, ValueError) as e:
      raise JudgeEvalError(f"--judge_template={o.judge_template}: {e}") from e
  pairs = load_preference_pairs(o.pairs)  # before the slow model load: bad input fails fast

  from meta_rewarding import runtime, sampling
  from meta_rewarding.tokenizer import load_tokenizer
  tokenizer = load_tokenizer(o.checkpoint, chat_format=o.chat_format)
  mesh_shape = None  # the first device
  if o.mesh:
    from meta_rewarding.sample import parse_mesh
    mesh_shape = parse_mesh(o.mesh)
  rt = runtime.build_for_checkpoint(o.checkpoint, tokenizer, dtype=o.dtype, mesh_shape=mesh_shape,
                                    seed=o.seed)
  sampler = sampling.Sampler(rt.model_config, rt.params, tokenizer, mesh=rt.mesh,
                             rules=rt.decode_rules, batch_size=o.batch_size)
  strategy = (sampling.Greedy() if o.temperature == 0 else
              sampling.Sampling(temperature=o.temperature, top_p=o.top_p))

  def generate(requests, n):
    rows = sampler.generate(requests, n=n, strategy=strategy, max_new_tokens=o.max_new_tokens,
                            seed=o.seed, share_prefix=True, desc="judge_eval",
                            too_long="report")
    return judgment_texts(rows)

  records, summary = evaluate(pairs, generate, protocol=o.protocol,
                              num_samples=o.num_samples, judge_template=judge_template,
                              output=o.output or None)
  print(table(summary), flush=True)
  if o.output:
    artifacts.write_jsonl(artifacts.join(o.output, "pairs.jsonl"), records)
    artifacts.write_json(artifacts.join(o.output, "scores.json"), summary)
  return summary


def _define_flags():
  # Defined only when run as a command: sample.py defines flags of the same names.
  flags.DEFINE_string("checkpoint", None, "Hugging Face Llama directory (config, weights, tokenizer).")
  flags.DEFINE_string("pairs", None, "JSONL / parquet file, or hf:<name>[:<split>].")
  flags.DEFINE_enum("protocol", "pairwise", PROTOCOLS, "pairwise (STE prompt) or pointwise.")
  flags.DEFINE_integer("num_samples", 1, "Judgments per order (pairwise, majority vote) or per "
                       "response (pointwise, scores averaged).")
  flags.DEFINE_float("temperature", 0.0, "0: greedy; num_samples > 1 needs > 0.")
  flags.DEFINE_float("top_p", 0.95, "Nucleus mass when sampling.")
  flags.DEFINE_integer("max_new_tokens", 512, "Tokens per judgment.")
  flags.DEFINE_integer("batch_size", 16, "Decode rows per batch.")
  flags.DEFINE_string("mesh", "", "Mesh shape, e.g. 'fsdp=-1' (default: the first device).")
  flags.DEFINE_string("dtype", "bfloat16", "Compute and parameter dtype.")
  flags.DEFINE_string("chat_format", "auto", "auto | llama3 | llama2 | hf | raw.")
  flags.DEFINE_string("judge_template", "", "Pointwise judge template file ('' = the paper's).")
  flags.DEFINE_string("output", "", "Directory for pairs.jsonl, scores.json and the resumable "
                      "judgments.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")


def main(argv):
  if len(argv) > 1:
    sys.exit(f"judge_eval: error: unexpected arguments {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    run(Options(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(Options)}))
  except (UserError, app.UsageError, FileNotFoundError) as e:  # the reason, without a traceback
    sys.exit(f"judge_eval: error: {e}")
  except KeyboardInterrupt:
    print("judge_eval: interrupted (with --output, the same command resumes)", file=sys.stderr)
    sys.exit(130)


FLAGS = flags.FLAGS

if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["checkpoint", "pairs"])
  app.run(main)
