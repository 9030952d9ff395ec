"""Every config key, declared once: its default, its allowed values and a one-line doc.

  Key("learning_rate", 5e-7, Number(0, lo_open=True, limit=LEARNING_RATE), "AdamW's peak ...")

A section is a tuple of keys (`TRAIN`, `SAMPLING`, ...); `SECTIONS` maps each config section to
its keys, in the order `config.base.get_base_config()` builds them (the order of config.json).
`config.base` builds the base configs from the defaults, and `config_check` checks a config's
values with the `check` of each key, so adding a key means adding one `Key` here.

What a key may hold is one of the small checks below (`Integer`, `Number`, `Choice`, `Flag`,
`Text`, `Template`, `Lengths`, `PerIteration`, `MeshShape`, `Unchecked`); each names the key, the
value and what is allowed in its one-line error. Upper bounds past which a value is surely a
mistake are `Limit`s, each with its reason. What involves several keys (the meta-judge needs two
judgments, a cache longer than the longest generation, ...) is `config_check`'s own code.

`in_base=False` marks a key the base config leaves out and a config file may add (the planner's
`mesh.num_devices`); `optional=True` a key that a config written before it existed may lack: both
are checked only when present. Pure data: no jax, only `choices` and `prompts`.
"""

from __future__ import annotations

import ast
import math
import numbers
from typing import Any, Callable, Mapping, NamedTuple

from meta_rewarding import choices, prompts
from meta_rewarding.config import rules

MISSING = object()


class Limit(NamedTuple):
  """An upper bound past which a value is surely a mistake (a typo, a unit slip, a lost comma),
  and why: the error prints both, so the user sees what the bound protects."""
  most: float
  reason: str


# Upper bounds. Each is far above every setting in use (the shipped configs, the papers), so it
# refuses only values no run can mean, before hours of work go into them.
LEARNING_RATE = Limit(1e-2, "Adam moves every weight by about the learning rate per step; above "
                      "1e-2 that overwrites a pretrained model (the configs use 5e-7 to 1e-4)")
NUM_EPOCHS = Limit(100, "DPO and SFT make 1-3 passes over their data; more than 100 only "
                   "memorises it, and a typo like 1e9 never ends")
NUM_RESPONSES = Limit(256, "the paper samples K=7 per prompt, and each response is judged N "
                      "times: 256 is already 256 x N generations per prompt")
NUM_JUDGMENTS = Limit(64, "the papers use N=11 (Meta-Rewarding) and 15 (STE); the meta-judge "
                      "battles every ordered pair of a response's judgments, 4032 at N=64")
HELDOUT_SAMPLES = Limit(256, "answers per held-out task, like actor.num_responses (the configs "
                        "use 2-4)")
NUM_ITERATIONS = Limit(100, "the papers run 4 (Meta-Rewarding) and 5 (STE) iterations, each "
                       "training a new model")
PROMPTS_PER_ITERATION = Limit(1_000_000, "the papers use 5,000 (Meta-Rewarding) and 20,000 "
                              "(STE); a million prompts is ~10^8 judgments at K=7, N=11")
TOKENS = Limit(131_072, "longer than the 128k-token context of every Llama 3 model")
SAMPLING_BATCH = Limit(65_536, "decode rows per batch: 128 per chip on the largest slice the "
                       "project targets (512 chips); the planner refuses smaller ones that do "
                       "not fit")
TRAIN_BATCH = Limit(4096, "pairs (SFT: sequences) per microbatch; DPO and SFT steps use 16-512 "
                    "in all")
REFERENCE_BATCH = Limit(8192, "pairs per reference batch: twice the largest train.batch_size "
                        "(its default)")
GRAD_ACCUM_STEPS = Limit(1024, "microbatches per step; 1024 makes a step of at least 1024 "
                         "pairs, above any DPO or SFT batch in use (16-512)")


# ------------------------------------------------------------------------------------------------
# How a value is checked. Each check appends one line per failure to `problems` (a list) through
# `fail(key, value, allowed)`.

def is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
  # Finite only: NaN fails every range and would print as a confusing "nan: must be >= 0".
  return (isinstance(v, numbers.Real) and not isinstance(v, bool)
          and math.isfinite(float(v)))


def is_sequence(v) -> bool:
  return isinstance(v, (list, tuple))


def show(v) -> str:
  text = repr(v)
  return text if len(text) <= 60 else text[:57] + "..."


def options(values) -> str:
  return "|".join(repr(c) if c == "" else str(c) for c in values)


class Failures:
  """The problems found so far: one line each, `key=value: what is allowed`."""

  def __init__(self):
    self.problems: list[str] = []

  def fail(self, key: str, value, allowed: str) -> None:
    self.problems.append(f"{key}={show(value)}: {allowed}")

  def note(self, line: str) -> None:
    self.problems.append(line)


def within(out: Failures, key: str, v, limit: Limit | None) -> None:
  """Refuses an in-range value above `limit` (one line: key, value, bound and reason)."""
  if limit is not None and v > limit.most:
    out.fail(key, v, f"must be <= {limit.most:g}: {limit.reason}")


class Integer(NamedTuple):
  lo: int
  why: str = ""              # what the lowest value means, e.g. " (0 = all epochs)"
  limit: Limit | None = None
  none_ok: bool = False      # None is allowed too ("no limit")

  def __call__(self, out: Failures, key: str, v) -> None:
    if v is None and self.none_ok:
      return
    if not (is_int(v) and v >= self.lo):
      out.fail(key, v, f"must be an integer >= {self.lo}{self.why}")
    else:
      within(out, key, v, self.limit)


class Number(NamedTuple):
  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False
  limit: Limit | None = None

  def __call__(self, out: Failures, key: str, v) -> None:
    lo, hi = self.lo, self.hi
    ok = is_real(v)
    if ok and lo is not None:
      ok = v > lo if self.lo_open else v >= lo
    if ok and hi is not None:
      ok = v < hi if self.hi_open else v <= hi
    if ok:
      within(out, key, v, self.limit)
      return
    if lo is not None and hi is not None:
      allowed = f"in {'(' if self.lo_open else '['}{lo:g}, {hi:g}{')' if self.hi_open else ']'}"
    elif lo is not None:
      allowed = f"{'>' if self.lo_open else '>='} {lo:g}"
    else:
      allowed = f"{'<' if self.hi_open else '<='} {hi:g}"
    out.fail(key, v, f"must be a number {allowed}")


class Choice(NamedTuple):
  values: tuple

  def __call__(self, out: Failures, key: str, v) -> None:
    if v not in self.values:
      out.fail(key, v, f"must be one of {options(self.values)}")


class Flag(NamedTuple):
  def __call__(self, out: Failures, key: str, v) -> None:
    if not isinstance(v, bool):
      out.fail(key, v, "must be True or False")


class Text(NamedTuple):
  nonempty: bool = False
  why: str = ""

  def __call__(self, out: Failures, key: str, v) -> None:
    if not (isinstance(v, str) and (v or not self.nonempty)):
      out.fail(key, v, f"must be a {'non-empty ' if self.nonempty else ''}string{self.why}")


class Template(NamedTuple):
  """A prompt template, checked by its `prompts.validate_*` function."""
  validate: Callable[[str], Any]

  def __call__(self, out: Failures, key: str, v) -> None:
    try:
      self.validate(v)
    except (TypeError, ValueError) as e:
      out.note(f"{key}: {e}")


class Lengths(NamedTuple):
  """A list of positive token lengths (buckets)."""
  nonempty: bool = False

  def __call__(self, out: Failures, key: str, v) -> None:
    if not is_sequence(v) or (self.nonempty and not v):
      out.fail(key, v, f"must be a {'non-empty ' if self.nonempty else ''}list of positive "
               "lengths")
      return
    for i, b in enumerate(v):
      Integer(1, limit=TOKENS)(out, f"{key}[{i}]", b)


def _literal(node: ast.AST, text: str):
  """The value of one entry of a list written on the command line: a Python literal, nan / inf
  and float('nan') as floats, a nested list as a tuple, anything else as its own text."""
  try:
    return ast.literal_eval(node)
  except (ValueError, TypeError, SyntaxError):
    pass
  if isinstance(node, ast.Name) and node.id.lower() in ("nan", "inf", "infinity"):
    return float(node.id)
  if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
      and isinstance(_literal(node.operand, text), float)):
    return -_literal(node.operand, text)
  if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float"
      and len(node.args) == 1 and not node.keywords):
    try:
      return float(ast.literal_eval(node.args[0]))
    except (ValueError, TypeError, SyntaxError):
      pass
  if isinstance(node, (ast.Tuple, ast.List)):
    return tuple(_literal(e, text) for e in node.elts)
  return ast.get_source_segment(text, node)


def _unparsed_list(v) -> list | None:
  """The entries of a one-string list whose string is a list's text (what ml_collections keeps
  when a command-line tuple holds something ast.literal_eval cannot read); None otherwise."""
  if len(v) != 1 or not isinstance(v[0], str):
    return None
  text = v[0].strip()
  try:
    node = ast.parse(text, mode="eval").body
  except SyntaxError:
    return None
  if isinstance(node, (ast.Tuple, ast.List)):
    return [_literal(e, text) for e in node.elts]
  value = _literal(node, text)
  return [value] if isinstance(value, float) else None  # "nan" alone: one number


class PerIteration(NamedTuple):
  """A non-empty list with one value per iteration (the last one repeats), each entry checked by
  `entry`."""
  entry: Callable[[Failures, str, Any], None]

  def __call__(self, out: Failures, key: str, v) -> None:
    if not is_sequence(v) or not v:
      out.fail(key, v, "must be a non-empty list, one value per iteration (the last repeats)")
      return
    unparsed = _unparsed_list(v)
    if unparsed is not None:
      # `--config.pipeline.rho="(0.1, nan)"`: nan is no Python literal, so ml_collections kept the
      # text as the tuple's one string. Naming that string as entry [0] points at the wrong
      # element; the entries the text holds are checked instead, and the text is refused whole
      # when they all pass (the pipeline would still read one string).
      before = len(out.problems)
      for i, entry in enumerate(unparsed):
        self.entry(out, f"{key}[{i}]", entry)
      if len(out.problems) == before:
        out.fail(key, v[0], "was read as one string, not a list (an entry is not a Python "
                 "literal); write literals, e.g. (0.0, 0.3) or ('both', 'actor')")
      return
    for i, entry in enumerate(v):
      self.entry(out, f"{key}[{i}]", entry)


class MeshShape(NamedTuple):
  """{axis: size} over `choices.MESH_AXES`; sizes positive, or -1 (the devices left over) once."""

  def __call__(self, out: Failures, key: str, shape) -> None:
    axes = "|".join(choices.MESH_AXES)
    if not (isinstance(shape, Mapping) or hasattr(shape, "items")):
      out.fail(key, shape, f"must map the axes {axes} to sizes")
      return
    for axis, size in shape.items():
      if axis not in choices.MESH_AXES:
        out.fail(f"{key}.{axis}", size, f"unknown axis; the axes are {axes}")
      elif not (is_int(size) and (size >= 1 or size == -1)):
        out.fail(f"{key}.{axis}", size, "must be a positive integer, or -1 for the devices "
                 "left over")
    fill = [a for a, s in shape.items() if is_int(s) and s == -1]
    if len(fill) > 1:
      out.fail(key, dict(shape.items()), f"at most one axis may be -1, got {fill}")


class Unchecked(NamedTuple):
  """A value no range describes (a nested architecture, axis rules): read where it is used."""

  def __call__(self, out: Failures, key: str, v) -> None:
    del out, key, v


class Key(NamedTuple):
  """One config key: its name in its section, default, check and one-line doc."""
  name: str
  default: Any
  check: Callable[[Failures, str, Any], None]
  doc: str
  in_base: bool = True       # False: a config file may add it (checked when present)
  optional: bool = False     # True: a config written before it existed may lack it
  dpo_only: bool = False     # train keys SFT does not read (checked for DPO only)


# ------------------------------------------------------------------------------------------------
# The sections, in get_base_config()'s order.

TOP = (
    Key("seed", 0, Integer(0), "seeds the prompts drawn, sampling and random init"),
    Key("allow_config_change", False, Flag(), "resume a workdir whose config.json differs"),
    Key("recipe", choices.DEFAULT_RECIPE, Choice(choices.RECIPES),
        "meta_rewarding (also Self-Rewarding) or ste (the Self-Taught Evaluator)", in_base=False),
)

MODEL = (
    Key("checkpoint", "", Text(), "a local HF directory or gs:// path; '' = random init from "
        "`architecture`"),
    Key("tokenizer", "", Text(), "'' = the checkpoint's tokenizer; or a path; or 'train:<vocab>'"),
    Key("chat_format", "auto", Choice(choices.CHAT_FORMATS), "how chats become tokens"),
    Key("architecture", {}, Unchecked(), "DecoderConfig fields for random init and planning",
        optional=True),
    Key("dtype", "bfloat16", Choice(choices.DTYPES), "compute dtype (matmuls, activations)"),
    Key("param_dtype", "float32", Choice(choices.DTYPES), "the parameters' (AdamW master) dtype"),
    Key("scan_layers", False, Flag(), "scan over layers (faster compiles, remat per layer)"),
    Key("remat_policy", "none", Choice(choices.REMAT_POLICIES), "what the backward pass recomputes"),
    Key("attention_chunk", 0, Integer(0, " (0 = all queries at once)"),
        "queries per attention block in training, the reference pass and prefill (0: all at "
        "once): one block's [chunk, keys] scores at a time, recomputed in the backward pass",
        optional=True),
    Key("strict_config", False, Flag(), "refuse unknown keys in the checkpoint's config.json",
        optional=True),
    Key("export_hf", True, Flag(), "save each iteration's model as HF safetensors (else orbax)"),
)

DATA = (
    Key("prompts", "", Text(nonempty=True, why=" (a JSONL/parquet file, 'hf:<dataset>[:<split>]' "
                                               "or 'testbed:<n>')"),
        "the prompt pool: JSONL / parquet path, 'hf:<name>[:<split>]' or 'testbed:<n>'"),
    Key("field", "prompt", Text(nonempty=True), "the prompt's field in each record"),
    Key("skip_long_prompts", True, Flag(), "skip prompts longer than the largest bucket (counted "
        "as skipped/long_prompts)"),
)

MESH = (
    Key("shape", {"data": 1, "fsdp": -1, "tensor": 1}, MeshShape(),
        "devices per mesh axis; -1 = the devices left over"),
    Key("distributed", False, Flag(), "jax.distributed.initialize (multi-host)", optional=True),
    Key("rules", rules.TRAIN_RULES, Unchecked(), "logical axis -> mesh axes; decoding adds the KV "
        "cache's", optional=True),
    Key("decode_rules", (), Unchecked(), "rules that replace `rules`' while sampling (the "
        "sampler's weight copy and KV cache), e.g. rules.DECODE_WEIGHTS_NOT_OVER_FSDP",
        optional=True),
    Key("num_devices", 0, Integer(0, " (0 = the devices present)"),
        "the device count the planner assumes (0 = the devices present)", in_base=False),
    Key("device_memory_gb", 0.0, Number(0), "per-device memory the planner assumes (0 = what "
        "the device reports)", in_base=False),
)

SAMPLING = (
    Key("temperature", 0.8, Number(0), "0 = greedy"),
    Key("top_p", 0.95, Number(0, 1, lo_open=True), "nucleus mass"),
    Key("top_k", 64, Integer(0, " (0 = no top-k)"), "candidates considered before nucleus "
        "filtering (0: off)"),
    Key("batch_size", 16, Integer(1, limit=SAMPLING_BATCH), "decode rows per batch"),
    Key("prompt_buckets", (64, 128, 256, 512, 1024, 2048), Lengths(nonempty=True),
        "prompt lengths are padded up to one of these"),
    Key("max_cache_length", 0, Integer(0, " (0 = the largest bucket + max_new_tokens)"),
        "0 = largest bucket + max_new_tokens"),
    Key("batching", "continuous", Choice(choices.BATCHING), "continuous: finished rows refilled "
        "between blocks; static: per batch"),
    Key("decode_block", 32, Integer(1), "continuous: the most decode steps between two refills"),
    Key("nucleus_candidates", 64, Integer(0), "with top_p < 1 and top_k = 0: the nucleus among "
        "this many most likely tokens (0 = the whole vocabulary: a full sort)", in_base=False),
)

ACTOR = (
    Key("num_responses", 7, Integer(2, " (an actor pair needs two responses to one prompt)",
                                    limit=NUM_RESPONSES), "K: responses per prompt"),
    Key("max_new_tokens", 512, Integer(1, limit=TOKENS), "the longest response"),
)

JUDGE = (
    Key("num_judgments", 11, Integer(1, limit=NUM_JUDGMENTS), "N: judgments per response"),
    Key("max_new_tokens", 256, Integer(1, limit=TOKENS), "the longest judgment"),
    Key("template", prompts.JUDGE_TEMPLATE, Template(prompts.validate_judge_template),
        "the LLM-as-a-Judge prompt (prompts.JUDGE_TEMPLATE)"),
)

META_JUDGE = (
    Key("enabled", True, Flag(), "False = the Self-Rewarding baseline"),
    Key("max_new_tokens", 256, Integer(1, limit=TOKENS), "the longest meta-judgment"),
    Key("template", prompts.META_JUDGE_TEMPLATE, Template(prompts.validate_meta_judge_template),
        "the meta-judge prompt (prompts.META_JUDGE_TEMPLATE)"),
    Key("max_chosen_chars", 1200, Integer(1, " (or None for no limit)", none_ok=True),
        "judge pairs whose chosen judgment is longer are dropped"),
    Key("elo_l2", 1e-3, Number(0, lo_open=True), "L2 regularisation of the Elo fit"),
    Key("run_when_unused", False, Flag(), "meta-judge iterations that train on actor pairs only?"),
    # For a meta-judge that cannot prefer one of two same-score judgments (the testbed's).
    Key("skip_same_score", False, Flag(), "battles only between judgments with different scores "
        "(False = every pair, the paper)"),
    Key("testbed_oracle", "", Choice(choices.META_JUDGE_ORACLES), "testbed diagnostic: the "
        "oracle answers the meta-judge prompts by rule verdict or check; '' = the model"),
)

# `config.train` and `config.sft.train` (config.base.train_config(): its doc says why these).
TRAIN = (
    Key("learning_rate", 5e-7, Number(0, lo_open=True, limit=LEARNING_RATE), "peak learning rate"),
    Key("warmup_steps", 10, Integer(0), "linear warmup: step s (0-based) uses "
        "lr*(s+1)/warmup_steps"),
    Key("decay", "cosine", Choice(choices.DECAYS), "after warmup, over the whole run"),
    Key("end_learning_rate_ratio", 0.1, Number(0, 1), "final lr = ratio * learning_rate (cosine / "
        "linear)"),
    Key("weight_decay", 0.0, Number(0), "AdamW, matrices only (norm scales are never decayed)"),
    Key("adam_b1", 0.9, Number(0, 1, hi_open=True), "AdamW beta1"),
    Key("adam_b2", 0.95, Number(0, 1, hi_open=True), "AdamW beta2"),
    Key("adam_eps", 1e-8, Number(0, lo_open=True), "AdamW epsilon"),
    Key("max_grad_norm", 1.0, Number(0), "global-norm clipping; 0 disables"),
    Key("batch_size", 4, Integer(1, limit=TRAIN_BATCH), "pairs (DPO) / sequences (SFT) per "
        "microbatch"),
    Key("grad_accum_steps", 4, Integer(1, limit=GRAD_ACCUM_STEPS), "microbatches per optimizer "
        "step"),
    Key("num_epochs", 1, Integer(1, limit=NUM_EPOCHS), "passes over the data"),
    Key("max_steps", 0, Integer(0, " (0 = all epochs)"), "stop after this many optimizer steps "
        "(0 = all epochs)"),
    Key("max_length", 2048, Integer(1, limit=TOKENS), "prompt + response tokens, per response"),
    # Each distinct length compiles once; longer rows use 2 * max_length (SFT: max_length).
    Key("length_buckets", (512, 1024, 2048, 3072), Lengths(), "padded lengths of packed rows "
        "(prompt + chosen + rejected)"),
    Key("truncation", "skip", Choice(choices.TRUNCATION_POLICIES), "what happens to a too-long "
        "example (data.truncate_examples)"),
    Key("beta", 0.1, Number(0, lo_open=True), "DPO's beta"),
    Key("loss_type", "sigmoid", Choice(choices.DPO_LOSS_TYPES), "the DPO loss", dpo_only=True),
    # Conservative / robust DPO divide by (1 - 2 label_smoothing).
    Key("label_smoothing", 0.0, Number(0, 0.5, hi_open=True), "conservative / robust DPO's "
        "label noise"),
    Key("nll_scale", 0.0, Number(0), "> 0 adds nll_scale * (chosen response mean token NLL)"),
    Key("checkpoint_every", 100, Integer(1), "optimizer steps between train-state saves"),
    Key("keep_checkpoints", 3, Integer(1), "train-state saves kept"),
    Key("async_checkpointing", True, Flag(), "save train states in the background"),
    Key("log_every", 10, Integer(1), "optimizer steps between metric lines"),
    Key("logps_chunk_size", 0, Integer(0, " (0 = no chunking)"), "> 0: response log-probs this "
        "many tokens at a time, never all [rows, Tr, V] float32 logits at once"),
    Key("reference_batch_size", 0, Integer(0, " (0 = 2 * batch_size)", limit=REFERENCE_BATCH),
        "pairs per reference-pass batch (0 = 2 * batch_size)"),
)

# Stage 0 (config.base.sft_settings); its `train` is a TRAIN section of its own.
SFT = (
    Key("data", "", Text(why=" (a JSONL/parquet file of SFT records; '' = no stage 0)"),
        "stage 0's SFT file ('' = no stage 0)"),
    Key("response_field", "completion", Text(nonempty=True), "the target's field in each record"),
    Key("system_prompt", "", Text(), "before every prompt that has no system message; '' = none"),
)

PIPELINE = (
    Key("num_iterations", 4, Integer(1, limit=NUM_ITERATIONS), "iterations (models trained)"),
    Key("prompts_per_iteration", 5000, Integer(1, limit=PROMPTS_PER_ITERATION),
        "prompts drawn per iteration"),
    Key("rho", (0.0, 0.32, 0.32, 0.4), PerIteration(Number(0, 0.5, hi_open=True)),
        "length control, per iteration"),
    Key("train_pairs", ("both", "both", "actor", "actor"),
        PerIteration(Choice(choices.TRAIN_PAIRS)), "what each iteration trains on"),
    Key("length_unit", "chars", Choice(choices.LENGTH_UNITS), "response length for length "
        "control"),
    Key("chunk_size", 64, Integer(1), "prompts per artifact chunk (the unit of resume)"),
)

EVALUATE = (
    Key("oracle", "", Choice(choices.ORACLES), "'testbed': add oracle metrics (the synthetic "
        "testbed)"),
    Key("heldout_tasks", 0, Integer(0), "testbed: evaluate M_0 ... M_T on this many held-out "
        "tasks"),
    # 0: the development set the seeds were designed on; K > 0: a fresh set drawn with seed K,
    # disjoint from it by construction (testbed.measure.eval_task_list).
    Key("heldout_task_seed", 0, Integer(0, " (0 = the development set)"), "testbed: which "
        "held-out tasks"),
    Key("heldout_every_iteration", True, Flag(), "False: only M_0 and the last iteration's M_T",
        optional=True),
    Key("heldout_samples", 4, Integer(1, limit=HELDOUT_SAMPLES), "testbed: actor samples per "
        "held-out task"),
    # The held-out extras: greedy actor accuracy and the judge on a fixed response set.
    Key("heldout_diagnostics", True, Flag(), "False skips the held-out extras' two sampling "
        "passes", optional=True),
    Key("judge_pairs", "", Text(), "preference pairs (RewardBench format) every model is judged "
        "on; '' = none", optional=True),
    Key("judge_protocol", "pairwise", Choice(choices.JUDGE_PROTOCOLS), "pairwise (the STE "
        "prompt) | pointwise (judge.template)", optional=True),
)

# The Self-Taught Evaluator (config.base.ste_settings: its doc gives the sources of these).
STE = (
    Key("categorize", False, Flag(), "select instructions by category before iteration 1"),
    Key("category_template", prompts.CATEGORY_TEMPLATE,
        Template(prompts.validate_category_template), "the categorisation prompt"),
    Key("categories", ("Knowledge and Reasoning", "Mathematical reasoning"), Unchecked(),
        "the categories kept (checked with categorize on)"),
    Key("category_max_new_tokens", 128, Integer(1, limit=TOKENS), "the longest categorisation"),
    Key("selection_candidates", 0, Integer(0, " (0 = the whole pool)",
                                           limit=PROMPTS_PER_ITERATION),
        "pool instructions categorised, in stream order; 0 = the whole pool"),
    Key("min_complexity", 0, Number(0, 10), "the categoriser's 1-10 complexity score; 0 = off"),
    Key("max_per_category", 0, Integer(0, " (0 = no cap)", limit=PROMPTS_PER_ITERATION),
        "instructions kept per category; 0 = no cap"),
    Key("worse_response_template", prompts.WORSE_RESPONSE_TEMPLATE,
        Template(prompts.validate_worse_response_template), "y_l: the answer to a modified "
        "instruction (the paper's prompt)"),
    Key("worse_max_new_tokens", 4096, Integer(1, limit=TOKENS), "the longest y_l"),
    Key("orders", "both", Choice(choices.PAIR_ORDERS), "both: y_w as A and as B, N each; random: "
        "one seeded order per pair"),
    Key("pairwise_template", prompts.PAIRWISE_TEMPLATE,
        Template(prompts.validate_pairwise_template), "the pairwise judge prompt"),
    Key("system_prompt", prompts.PAIRWISE_SYSTEM_PROMPT, Text(), "the judge's system message; "
        "'' = none"),
    Key("num_judgments", 15, Integer(1, limit=NUM_JUDGMENTS), "N judgments per example and order"),
    Key("judge_max_new_tokens", 4096, Integer(1, limit=TOKENS), "the longest judgment"),
    Key("balance_labels", True, Flag(), "keep as many label-A as label-B examples"),
    Key("train_on", "iteration", Choice(choices.STE_TRAIN_ON), "iteration: iteration t's "
        "judgments; accumulated: iterations 1..t's"),
)

class GenerationKey(NamedTuple):
  """A sampling stage's `max_new_tokens` key; `enabled_by`: the flag that turns the stage on (None:
  always on); `counted_when_off`: the static cache-length check counts it even when off."""
  key: str
  enabled_by: str | None = None
  counted_when_off: bool = False


class RecipeSchema(NamedTuple):
  """What a recipe reads of the config: the check's per-recipe rules, declared once (the recipe
  objects, `recipes.RECIPES`, take `trains` and `heldout_tasks` from here)."""
  trains: str                     # "dpo" | "sft": which `train` keys apply (loss_type: DPO only)
  sections: tuple                 # its own sections: (name, keys) pairs
  generation_keys: tuple          # GenerationKeys of the stages it samples
  stage0: bool                    # sft.data may name a stage-0 SFT file
  heldout_tasks: bool             # evaluate.heldout_tasks may measure its models (the testbed's)
  testbed_judge_pairs: bool       # evaluate.judge_pairs may be 'testbed:<n>'
  meta_judge: bool                # it runs the meta-judge (which needs two judgments)


RECIPES: dict[str, RecipeSchema] = {
    "meta_rewarding": RecipeSchema(
        trains="dpo", sections=(),
        generation_keys=(GenerationKey("actor.max_new_tokens"),
                         GenerationKey("judge.max_new_tokens"),
                         GenerationKey("meta_judge.max_new_tokens", "meta_judge.enabled",
                                       counted_when_off=True)),
        stage0=True, heldout_tasks=True, testbed_judge_pairs=False, meta_judge=True),
    "ste": RecipeSchema(
        trains="sft", sections=(("ste", STE),),
        generation_keys=(GenerationKey("actor.max_new_tokens"),
                         GenerationKey("ste.worse_max_new_tokens"),
                         GenerationKey("ste.judge_max_new_tokens"),
                         GenerationKey("ste.category_max_new_tokens", "ste.categorize")),
        stage0=False, heldout_tasks=False, testbed_judge_pairs=True, meta_judge=False),
}


# The config sections of a pipeline config, in get_base_config()'s order ("" = top level).
SECTIONS: dict[str, tuple[Key, ...]] = {
    "": TOP, "model": MODEL, "data": DATA, "mesh": MESH, "sampling": SAMPLING, "actor": ACTOR,
    "judge": JUDGE, "meta_judge": META_JUDGE, "train": TRAIN, "sft": SFT, "pipeline": PIPELINE,
    "evaluate": EVALUATE,
}

# train_dpo's own schema (configs/dpo_example.py): its top-level keys besides model, mesh, train.
TRAIN_DPO_TOP = (
    Key("mode", "dpo", Choice(choices.TRAIN_MODES), "dpo or sft"),
    Key("seed", 0, Integer(0), "seeds the data order"),
    Key("progress", True, Flag(), "show a progress bar"),
    Key("export_hf", True, Flag(), "save the trained model as HF safetensors"),
    Key("export_dtype", "", Choice(("",) + choices.DTYPES), "the exported weights' dtype; '' = "
        "param_dtype"),
    Key("distributed", False, Flag(), "jax.distributed.initialize (multi-host)", optional=True),
)
# Its model section: the pipeline's, less what train_dpo does not read (it trains a checkpoint and
# exports with its own top-level export_hf).
TRAIN_DPO_MODEL = tuple(k for k in MODEL if k.name not in ("architecture", "export_hf"))


def default_of(path: str) -> Any:
  """The declared default of a dotted key of a pipeline config, e.g. "meta_judge.enabled"."""
  section, _, name = path.rpartition(".")
  keys = SECTIONS.get(section) or dict(s for r in RECIPES.values() for s in r.sections)[section]
  return next(k.default for k in keys if k.name == name)


def defaults(section: tuple[Key, ...]) -> dict[str, Any]:
  """{name: default} of a section's keys that the base config holds."""
  return {k.name: k.default for k in section if k.in_base}


def check_section(get: Callable[[str, Any], Any], out: Failures, section: tuple[Key, ...],
                  prefix: str, *, kind: str = "dpo") -> dict[str, Any]:
  """Checks every key of `section` that `get(name, MISSING)` finds (a missing required key is a
  problem of its own); returns {name: value} of those found. `kind`: "sft" skips DPO-only keys."""
  found = {}
  for key in section:
    if key.dpo_only and kind != "dpo":
      continue
    value = get(key.name, MISSING)
    if value is MISSING:
      if key.in_base and not key.optional:
        out.note(f"{prefix}{key.name} is missing from the config")
      continue
    if (key.optional or not key.in_base) and value is None:
      continue
    found[key.name] = value
    key.check(out, f"{prefix}{key.name}", value)
  return found
