"""Every `.md` file the repository's code, configs and docs point to exists in the repository.

A reference is a path-like token ending in `.md` (`README.md`, `docs/scale.md`,
`bench/results/testbed.md`, optionally with a `#section` anchor). It resolves when the file exists
relative to the repository root or to the referencing file's directory; an anchor must name a
heading of that file (GitHub's heading ids). The project's spec, which lives outside the
repository, must not be cited at all (`SPEC_NAME`): the repository's own docs/design.md describes
the method as built.

Not references (so not checked): absolute paths and URLs (`/tmp/x.md`, `https://.../README.md`),
a whole quoted string in code (`"decode.md"`: a file name the code writes or joins, which its own
tests exercise), and the few names in `NOT_REFERENCES`.
"""

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("README.md", "setup.py", "meta_rewarding", "configs", "bench", "tests", "docs",
           "xm_launch")
SUFFIXES = (".py", ".md", ".txt", ".ini", ".cfg", ".toml", ".yaml", ".yml", ".sh")
# Spelled in two parts so this file does not cite it.
SPEC_NAME = "DESIGN" + ".md"

# (file, name): names of files a script writes, or placeholders, that are no repository file.
NOT_REFERENCES = {
    # What bench/gpu_figures.py writes under its --output_dir.
    ("bench/gpu_figures.py", "decode_8b.md"), ("bench/gpu_figures.py", "decode_1b.md"),
    ("bench/gpu_figures.py", "dpo_1b.md"), ("bench/gpu_figures.py", "iteration_1b.md"),
    ("tests/test_bench_gpu_figures.py", "dpo_1b.md"),
    # The usage line's placeholder for an output file.
    ("meta_rewarding/testbed/diagnose.py", "FILE.md"),
}

# Not after a word character, '/', '.' or '-' (so not inside an absolute path or URL).
_REFERENCE = re.compile(r"(?<![\w/.\-])((?:[\w.\-]+/)*[\w\-][\w.\-]*\.md)(?:#([\w\-]+))?(?![\w])")
_QUOTES = "\"'"


def slug(heading: str) -> str:
  """GitHub's id of a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"[`*]", "", heading.strip().lower())
  text = re.sub(r"[^\w\- ]", "", text)
  return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
  """The heading ids of a markdown text (repeated headings get -1, -2, ... as on GitHub)."""
  seen: dict[str, int] = {}
  out = set()
  in_code = False
  for line in markdown.splitlines():
    if line.lstrip().startswith("```"):
      in_code = not in_code
      continue
    m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
    if m and not in_code:
      base = slug(m.group(1))
      n = seen.get(base, 0)
      seen[base] = n + 1
      out.add(base if n == 0 else f"{base}-{n}")
  return out


def _resolve(rel_file: str, target: str) -> str | None:
  for base in (REPO, os.path.join(REPO, os.path.dirname(rel_file))):
    path = os.path.normpath(os.path.join(base, target))
    if os.path.isfile(path):
      return path
  return None


def problems_in(rel_file: str, text: str) -> list[str]:
  """'file:line: why' for every reference in `text` (the contents of `rel_file`) that does not
  resolve, and every citation of the spec."""
  out = []
  for lineno, line in enumerate(text.splitlines(), start=1):
    where = f"{rel_file}:{lineno}"
    for m in re.finditer(re.escape(SPEC_NAME), line):
      out.append(f"{where}: cites {SPEC_NAME!r}, which is not in the repository "
                 f"(point to docs/design.md)")
    for m in _REFERENCE.finditer(line):
      target, anchor = m.group(1), m.group(2)
      if target.endswith(SPEC_NAME):
        continue  # reported above
      before = line[m.start() - 1] if m.start() > 0 else ""
      after = line[m.end()] if m.end() < len(line) else ""
      if before and before in _QUOTES and after == before:
        continue  # a whole string literal: a file name in code, not a reference
      if (rel_file, target) in NOT_REFERENCES:
        continue
      path = _resolve(rel_file, target)
      if path is None:
        out.append(f"{where}: {target!r} is no file of the repository (relative to the root or "
                   f"to {os.path.dirname(rel_file) or '.'}/)")
      elif anchor:
        with open(path, encoding="utf-8") as f:
          if anchor not in anchors(f.read()):
            out.append(f"{where}: {target}#{anchor}: no such heading in {target}")
  return out


def scanned_files() -> list[str]:
  files = []
  for entry in SCANNED:
    top = os.path.join(REPO, entry)
    if os.path.isfile(top):
      files.append(entry)
      continue
    for root, dirs, names in os.walk(top):
      dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__"))
                       and not d.endswith(".egg-info"))
      for name in sorted(names):
        if name.endswith(SUFFIXES):
          files.append(os.path.relpath(os.path.join(root, name), REPO))
  return files


# This file's own examples (the scanner's tests) name missing files on purpose.
SELF = "tests/test_doc_references.py"


def test_every_md_reference_resolves_and_the_spec_is_not_cited():
  problems = []
  for rel in scanned_files():
    if rel == SELF:
      continue
    with open(os.path.join(REPO, rel), encoding="utf-8", errors="replace") as f:
      problems += problems_in(rel, f.read())
  assert not problems, f"{len(problems)} dangling .md reference(s):\n" + "\n".join(problems)


def test_the_scan_covers_code_configs_and_docs():
  files = scanned_files()
  for expected in ("README.md", "setup.py", "meta_rewarding/pipeline.py", "configs/tpu_v4.py",
                   "docs/design.md", "docs/scale.md", SELF, "bench/results/testbed.md",
                   "xm_launch/launch.py", "meta_rewarding/testbed/seed/README.md"):
    assert expected in files


@pytest.mark.parametrize("line, found", [
    # Built, not written out: the repository itself must cite no missing document.
    ("see docs/" + "missing.md for more", ["'docs/" + "missing.md' is no file"]),
    ("as in " + SPEC_NAME + " 4.2", ["cites"]),
    ("README.md, bench/results/testbed.md and docs/design.md", []),
    ("README.md#no-such-heading-anywhere", ["no such heading"]),
    ("/tmp/out/x.md and https://github.com/o/r/blob/main/x.md", []),
    ('out = os.path.join(d, "report.md")', []),
    ("[report.md](report.md) is written", ["'report.md' is no file", "'report.md' is no file"]),
])
def test_the_scanner(line, found):
  problems = problems_in("meta_rewarding/example.py", line)
  assert len(problems) == len(found)
  for problem, expected in zip(problems, found):
    assert expected in problem and problem.startswith("meta_rewarding/example.py:1: ")


def test_a_reference_resolves_next_to_the_referencing_file():
  # meta_rewarding/testbed/seed/README.md exists: found from its own directory, not from the root.
  assert problems_in("meta_rewarding/testbed/seed/x.py", "see README.md") == []
  assert problems_in("meta_rewarding/testbed/x.py", "see seed/README.md") == []
  assert problems_in("x.py", "see seed/README.md")


def test_heading_ids():
  assert slug("The Self-Taught Evaluator, as built") == "the-self-taught-evaluator-as-built"
  assert slug("`pipeline.train_pairs`: the schedule") == "pipelinetrain_pairs-the-schedule"
  assert anchors("# A\n## A\n```\n# not a heading\n```\n### B c\n") == {"a", "a-1", "b-c"}
