"""meta_rewarding.oasst_prompts: first-turn oasst1 prompts from a tiny local file (no network)."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from meta_rewarding import data, oasst_prompts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _msg(message_id, text, *, role="prompter", parent_id=None, lang="en", deleted=False,
         review_result=True, synthetic=False):
  return dict(message_id=message_id, parent_id=parent_id, text=text, role=role, lang=lang,
              deleted=deleted, review_result=review_result, synthetic=synthetic,
              message_tree_id=message_id, rank=None)


# One record per reason to drop, plus the kept ones; `EXPECTED` is what must come out, in order.
ROWS = [
    _msg("m1", "What is the capital of France?"),
    _msg("m2", "Paris.", role="assistant", parent_id="m1"),
    _msg("m3", "And of Spain?", parent_id="m2"),
    _msg("m4", "Wie spät ist es?", lang="de"),
    _msg("m5", "A deleted prompt", deleted=True),
    _msg("m6", "A prompt whose review failed", review_result=False),
    _msg("m7", "Write a haiku about rain.", lang="EN", review_result=None),  # null review: kept
    _msg("m8", "  What is the capital of France?\n"),                        # duplicate once stripped
    _msg("m9", "   \n"),
    _msg("m10", "Explain DPO in two sentences.", synthetic=True),            # kept by default
    _msg("m11", "¿Qué hora es?", lang="es"),
]
EXPECTED = ["What is the capital of France?", "Write a haiku about rain.",
            "Explain DPO in two sentences."]
COUNTS = {"read": 11, "assistant": 1, "later_turn": 1, "language": 2, "deleted": 1,
          "review_failed": 1, "synthetic": 0, "empty": 1, "duplicate": 1}


def _parquet(path, rows=ROWS):
  pd.DataFrame(rows).to_parquet(path)
  return str(path)


def _jsonl(path, rows=ROWS):
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  return str(path)


def _read(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _table_counts(stdout):
  """{label: count} from the printed table's rows."""
  out = {}
  for line in stdout.splitlines()[1:]:
    kind, rest = line.split(maxsplit=1)
    label, count = rest.rsplit(maxsplit=1)
    out[(kind, label)] = int(count)
  return out


def test_parquet_keeps_first_turn_prompts_and_prints_every_drop_reason(tmp_path, capsys):
  out = tmp_path / "prompts.jsonl"
  assert oasst_prompts.main([f"--source={_parquet(tmp_path / 'o.parquet')}",
                             f"--output={out}"]) == 0
  assert _read(out) == [{"prompt": p} for p in EXPECTED]
  table = _table_counts(capsys.readouterr().out)
  labels = dict(oasst_prompts.REASONS, language="language is not 'en'")
  for key, n in COUNTS.items():
    if key != "read":
      assert table[("dropped", labels[key])] == n, key
  assert table[("read", str(tmp_path / "o.parquet"))] == 11
  assert table[("written", str(out))] == len(EXPECTED)
  # Every record is counted once: read = dropped + written.
  assert sum(n for (kind, _), n in table.items() if kind == "dropped") + len(EXPECTED) == 11


def test_the_output_is_what_the_pipeline_reads(tmp_path):
  out = tmp_path / "prompts.jsonl"
  assert oasst_prompts.main([f"--source={_parquet(tmp_path / 'o.parquet')}",
                             f"--output={out}"]) == 0
  assert data.load_prompts(str(out)) == EXPECTED


def test_jsonl_source_gives_the_same_file_as_parquet(tmp_path):
  a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
  assert oasst_prompts.main([f"--source={_parquet(tmp_path / 'o.parquet')}", f"--output={a}"]) == 0
  assert oasst_prompts.main([f"--source={_jsonl(tmp_path / 'o.jsonl')}", f"--output={b}"]) == 0
  assert a.read_bytes() == b.read_bytes()


def test_language_and_synthetic_options():
  records = [(f"row {k}", r) for k, r in enumerate(ROWS)]
  every_lang, counts = oasst_prompts.first_turn_prompts(records, lang="")
  assert every_lang == EXPECTED[:1] + ["Wie spät ist es?"] + EXPECTED[1:] + ["¿Qué hora es?"]
  assert counts["language"] == 0
  spanish, _ = oasst_prompts.first_turn_prompts(records, lang="es")
  assert spanish == ["¿Qué hora es?"]
  no_synthetic, counts = oasst_prompts.first_turn_prompts(records, drop_synthetic=True)
  assert no_synthetic == EXPECTED[:2] and counts["synthetic"] == 1


def test_a_record_is_counted_under_its_first_reason():
  # An assistant reply that is also deleted and in another language counts as an assistant message.
  record = _msg("x", "Hi", role="assistant", parent_id="p", lang="de", deleted=True)
  _, counts = oasst_prompts.first_turn_prompts([("row 0", record)])
  assert counts["assistant"] == 1 and counts["deleted"] == 0 and counts["language"] == 0


@pytest.mark.parametrize("change, field", [
    (lambda r: r.pop("role"), "'role'"),
    (lambda r: r.update(role="user"), "'role'"),
    (lambda r: r.update(text=7), "'text'"),
    (lambda r: r.pop("parent_id"), "'parent_id'"),
    (lambda r: r.update(deleted="no"), "'deleted'"),
    (lambda r: r.update(lang=None), "'lang'"),
])
def test_a_malformed_record_is_one_error_line_naming_file_line_and_field(tmp_path, capsys, change,
                                                                        field):
  rows = [dict(r) for r in ROWS]
  change(rows[2])
  source = _jsonl(tmp_path / "bad.jsonl", rows)
  out = tmp_path / "prompts.jsonl"
  out.write_text("earlier\n")  # an existing output is left as it was
  assert oasst_prompts.main([f"--source={source}", f"--output={out}"]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ")
  assert f"{source}:3" in err[0] and field in err[0]
  assert out.read_text() == "earlier\n"


def test_a_parquet_without_a_column_names_the_file_row_and_field(tmp_path, capsys):
  source = _parquet(tmp_path / "o.parquet", [{k: v for k, v in r.items() if k != "parent_id"}
                                             for r in ROWS])
  assert oasst_prompts.main([f"--source={source}", f"--output={tmp_path / 'p.jsonl'}"]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and f"{source} row 0" in err and "'parent_id'" in err
  assert not (tmp_path / "p.jsonl").exists()


def test_lang_may_be_absent_when_every_language_is_kept(tmp_path):
  rows = [{k: v for k, v in r.items() if k != "lang"} for r in ROWS]
  out = tmp_path / "p.jsonl"
  assert oasst_prompts.main([f"--source={_jsonl(tmp_path / 'o.jsonl', rows)}", f"--output={out}",
                             "--lang="]) == 0
  assert len(_read(out)) == 5
  assert oasst_prompts.main([f"--source={tmp_path / 'o.jsonl'}", f"--output={out}"]) == 1


def test_no_usable_prompt_is_an_error_and_writes_nothing(tmp_path, capsys):
  out = tmp_path / "p.jsonl"
  assert oasst_prompts.main([f"--source={_parquet(tmp_path / 'o.parquet')}", f"--output={out}",
                             "--lang=fr"]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "no first-turn prompt" in err and "'fr'" in err
  assert not out.exists()


def test_missing_file_and_bad_flags(tmp_path, capsys):
  assert oasst_prompts.main([f"--source={tmp_path / 'none.parquet'}",
                             f"--output={tmp_path / 'p.jsonl'}"]) == 1
  assert "no such file" in capsys.readouterr().err
  for argv in ([f"--source={tmp_path / 'x.parquet'}"], ["--output=p.jsonl"],
               ["--source=a.parquet", "--output=p.jsonl", "--nope"]):
    with pytest.raises(SystemExit) as e:
      oasst_prompts.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_command_line(tmp_path):
  out = tmp_path / "prompts.jsonl"
  proc = subprocess.run(
      [sys.executable, "-m", "meta_rewarding.oasst_prompts",
       f"--source={_parquet(tmp_path / 'o.parquet')}", f"--output={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "written" in proc.stdout and _read(out) == [{"prompt": p} for p in EXPECTED]
