r"""A prompt pool from Open Assistant: the first-turn user messages of `OpenAssistant/oasst1`.

  python -m meta_rewarding.oasst_prompts --source=OpenAssistant/oasst1 --output=prompts.jsonl \
      [--lang=en] [--split=train] [--drop_synthetic]
  python -m meta_rewarding.oasst_prompts --source=oasst1_train.parquet --output=prompts.jsonl

`--source` is a `datasets` hub name (needs network; `--split` picks the split, default "train") or
a local file in oasst1's message schema: parquet (`.parquet`), JSON lines (`.jsonl`, or `.json`
holding JSON lines or one array). One record per message, with the columns

  text          the message (string)
  role          "prompter" (the user) or "assistant"
  parent_id     the message it replies to; null for the first message of a conversation
  lang          language code ("en", "de", "pt-BR", ...); required unless --lang=""
  deleted       optional bool
  review_result optional bool or null (null: not reviewed)
  synthetic     optional bool (read only with --drop_synthetic)

and others (message_id, message_tree_id, rank, labels, ...), which are not read.

What is kept: a record is dropped for the FIRST of these reasons that applies, in this order, and
the count of each is printed as one table:

  assistant message      role is "assistant"
  later user turn        role is "prompter" but parent_id is set (a follow-up in a conversation)
  other language         lang differs from --lang (compared case-insensitively; --lang="" keeps all)
  deleted                deleted is true
  review failed          review_result is false (true or null/absent is kept)
  synthetic              synthetic is true (only with --drop_synthetic)
  empty text             nothing but whitespace
  duplicate              the same text (after stripping surrounding whitespace) was kept before

Kept texts are written, stripped, in source order, as JSONL `{"prompt": ...}` (what
`--config.data.prompts` reads), atomically (`artifacts.write_jsonl`: a local file appears
complete or not at all; a gs:// path is one object upload). A source with no usable prompt is an
error, and nothing is written.

Bad input is one `error:` line on stderr: a malformed record names the file, the row (parquet,
dataset) or line (JSONL) and the field (exit 1); a missing or contradictory flag names the flag
(exit 2). A hub name without network fails with datasets' reason (exit 1).

Where the prompts come from in the papers. The paper excerpts this project works from state that
Meta-Rewarding starts from Llama-3-8B-Instruct (Wu et al. 2024, section 1) and uses an
instruction-following seed model, but they do not name the prompt source of its iterations. That
the iterations drew Open Assistant-derived prompts (Self-Rewarding's prompt set, which started
from Open Assistant's first-turn prompts) is what this project's README and configs say; it is
not confirmed from the papers' text here (docs/design.md, "Departures", lists it). First-turn
oasst1 user messages are the public stand-in: human-written instructions, one per conversation.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Iterable, Mapping, Sequence

from meta_rewarding import artifacts, data
from meta_rewarding.errors import UserError

EXIT_INPUT = 1  # the data: a malformed record, a missing file, no prompt kept
EXIT_USAGE = 2  # the command line

ROLES = ("prompter", "assistant")

# Why a record is dropped, in the order the checks run (each record counts under the first).
REASONS = (
    ("assistant", "assistant message"),
    ("later_turn", "later user turn (parent_id set)"),
    ("language", "other language"),
    ("deleted", "deleted"),
    ("review_failed", "review_result false"),
    ("synthetic", "synthetic"),
    ("empty", "empty text"),
    ("duplicate", "duplicate text"),
)


class OasstError(UserError, ValueError):
  """A record that does not follow oasst1's schema, or a source that yields no prompt."""


def _field(where: str, record: Mapping[str, Any], name: str, types: tuple, *,
           required: bool, nullable: bool) -> Any:
  """record[name], checked against `types`; None when absent or null (where allowed)."""
  if name not in record:
    if required:
      raise OasstError(f"{where}: missing field {name!r} (oasst1's message schema; the record "
                       f"has {sorted(record)})")
    return None
  value = record[name]
  if value is None:
    if not nullable:
      raise OasstError(f"{where}: field {name!r} is null")
    return None
  # bool is an int subclass: a boolean field must be a real bool, a string field a real str.
  if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
    expected = " or ".join(t.__name__ for t in types)
    raise OasstError(f"{where}: field {name!r} must be {expected}"
                     f"{' or null' if nullable else ''}, got {type(value).__name__} "
                     f"{value!r:.40}")
  return value


def drop_reason(where: str, record: Mapping[str, Any], *, lang: str,
                drop_synthetic: bool) -> str | None:
  """The first reason (a key of REASONS, before "empty" / "duplicate") to drop `record`, or None.
  Raises OasstError naming `where` and the field when the record breaks the schema."""
  role = _field(where, record, "role", (str,), required=True, nullable=False)
  if role not in ROLES:
    raise OasstError(f"{where}: field 'role' must be one of {', '.join(ROLES)}, got {role!r:.40}")
  # Read before deciding, so a malformed record is reported wherever it is in the file.
  _field(where, record, "text", (str,), required=True, nullable=False)
  # parent_id is null on the first message of a conversation; it must be there to say so.
  parent = _field(where, record, "parent_id", (str, int), required=True, nullable=True)
  language = _field(where, record, "lang", (str,), required=bool(lang), nullable=not lang)
  deleted = _field(where, record, "deleted", (bool,), required=False, nullable=True)
  review = _field(where, record, "review_result", (bool,), required=False, nullable=True)
  synthetic = _field(where, record, "synthetic", (bool,), required=False, nullable=True)
  if role == "assistant":
    return "assistant"
  if parent is not None:
    return "later_turn"
  if lang and (language or "").lower() != lang.lower():
    return "language"
  if deleted:
    return "deleted"
  if review is False:
    return "review_failed"
  if drop_synthetic and synthetic:
    return "synthetic"
  return None


def first_turn_prompts(records: Iterable[tuple[str, Mapping[str, Any]]], *, lang: str = "en",
                       drop_synthetic: bool = False) -> tuple[list[str], dict[str, int]]:
  """(kept prompt texts in source order, {"read": n, reason: count, ...}) from (where, record)
  pairs such as `data.iter_records` yields."""
  counts = {"read": 0, **{key: 0 for key, _ in REASONS}}
  kept: list[str] = []
  seen: set[str] = set()
  for where, record in records:
    counts["read"] += 1
    reason = drop_reason(where, record, lang=lang, drop_synthetic=drop_synthetic)
    text = record["text"].strip()
    if reason is None and not text:
      reason = "empty"
    if reason is None and text in seen:
      reason = "duplicate"
    if reason is not None:
      counts[reason] += 1
      continue
    seen.add(text)
    kept.append(text)
  return kept, counts


def format_counts(counts: Mapping[str, int], kept: int, source: str, output: str,
                  lang: str) -> str:
  """The one table of what was read, dropped (and why) and written."""
  labels = dict(REASONS)
  if lang:
    labels["language"] = f"language is not {lang!r}"
  rows = [("read", str(source), counts["read"])]
  rows += [("dropped", labels[key], counts[key]) for key, _ in REASONS]
  rows.append(("written", str(output), kept))
  width = max(len(what) for _, what, _ in rows)
  lines = [f"{'records':<8} {'':<{width}} {'count':>9}"]
  lines += [f"{kind:<8} {what:<{width}} {n:>9}" for kind, what, n in rows]
  return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
  """argparse that reports a bad command line as one `error:` line (exit 2), like the other CLIs,
  instead of a usage block."""

  def error(self, message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
  p = _Parser(prog="python -m meta_rewarding.oasst_prompts",
              description="First-turn oasst1 user messages -> a prompt pool (JSONL).")
  p.add_argument("--source", required=True,
                 help="datasets hub name (e.g. OpenAssistant/oasst1) or a local parquet / JSONL "
                      "file in oasst1's message schema")
  p.add_argument("--output", required=True, help="the prompt file to write (JSONL)")
  p.add_argument("--lang", default="en", help='language code to keep ("" keeps every language)')
  p.add_argument("--split", default="train", help="split of a hub dataset (ignored for files)")
  p.add_argument("--drop_synthetic", action="store_true",
                 help="also drop messages marked synthetic")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if not args.output.strip():
    print("error: --output is empty", file=sys.stderr)
    return EXIT_USAGE
  try:
    prompts, counts = first_turn_prompts(data.iter_records(args.source, split=args.split),
                                         lang=args.lang, drop_synthetic=args.drop_synthetic)
    if not prompts:
      raise OasstError(f"{args.source}: no first-turn prompt passed the filters "
                       f"({counts['read']} records read; --lang={args.lang!r})")
    artifacts.write_jsonl(args.output, ({"prompt": p} for p in prompts))
  except (UserError, OSError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return EXIT_INPUT
  print(format_counts(counts, len(prompts), args.source, args.output, args.lang), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
