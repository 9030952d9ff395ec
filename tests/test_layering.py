"""The dependency graph runs one way: configs -> config floor -> libraries, never back up.

  * `meta_rewarding/config/` and `meta_rewarding/choices.py` import only ml_collections, the
    standard library and light project modules; they, the config check and the driver with its
    stages and store load without jax or flax;
  * the libraries (model, sharding, decode, sampling, train, losses, ...) never import the config
    package: they take rules and values as arguments;
  * no module of the package imports the repository's `configs` or `bench` packages;
  * every choice list is defined once (`choices`), the one documented exception kept equal.

Read from the sources' import statements (module level and inside functions alike), so a test fails
on the line that adds a wrong import, whether or not it runs.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

from meta_rewarding import choices, losses, recipes
from meta_rewarding.config import declarations

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "meta_rewarding"
HEAVY = ("jax", "flax", "optax", "transformers", "torch", "orbax", "tensorflow")

# Modules that compute (model, sharding, decoding, training) and take what they need as arguments.
LIBRARIES = ("model/llama.py", "model/config.py", "model/presets.py", "sharding.py", "decode.py",
             "sampling.py", "strategies.py", "train.py", "train_step.py", "losses.py", "data.py",
             "checkpoints.py", "tokenizer.py", "prompt_length.py", "distributed.py")
# What the config floor may import besides the standard library.
CONFIG_MAY_IMPORT = ("ml_collections", "meta_rewarding.choices", "meta_rewarding.prompts",
                     "meta_rewarding.errors", "meta_rewarding.config")


def imports(path: pathlib.Path) -> set[str]:
  """Every module `path` imports, at any depth of its code (absolute names)."""
  tree = ast.parse(path.read_text(), str(path))
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out.update(f"{node.module}.{alias.name}" for alias in node.names)
  return out


def _under(name: str, package: str) -> bool:
  return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in
                                        [*(PACKAGE / "config").glob("*.py"),
                                         PACKAGE / "choices.py"]))
def test_the_config_floor_imports_only_light_modules(path):
  stdlib = sys.stdlib_module_names
  bad = sorted(name for name in imports(REPO / path)
               if name.split(".")[0] not in stdlib and name != "__future__"
               and not any(_under(name, allowed) for allowed in CONFIG_MAY_IMPORT))
  assert not bad, f"{path} imports {bad}"


# Modules that load without jax or flax: the config floor (loading a config costs nothing), and the
# driver, its stages and store (tools that read artifacts, and tests with a scripted policy, must
# not pay for the compiled stack).
LIGHT = ("meta_rewarding.config.base", "meta_rewarding.config.rules",
         "meta_rewarding.config.declarations", "meta_rewarding.choices",
         "meta_rewarding.config_check", "meta_rewarding.stages", "meta_rewarding.pipeline",
         "meta_rewarding.chunk_store", "meta_rewarding.recipes", "meta_rewarding.judge_eval",
         "meta_rewarding.testbed.evaluate", "meta_rewarding.hlo_bytes")


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_load_neither_jax_nor_flax(module):
  code = (f"import sys, {module}\n"
          f"bad = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
          "assert not bad, bad\n")
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=60)
  assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("path", LIBRARIES)
def test_libraries_never_import_the_config_package(path):
  bad = sorted(n for n in imports(PACKAGE / path) if _under(n, "meta_rewarding.config"))
  assert not bad, f"meta_rewarding/{path} imports {bad}: take rules and values as arguments"


def test_nothing_in_the_package_imports_configs_or_bench():
  for path in sorted(PACKAGE.rglob("*.py")):
    bad = sorted(n for n in imports(path) if _under(n, "configs") or _under(n, "bench"))
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: the package never reaches back up"


def test_choice_lists_are_defined_once():
  # losses.py keeps its own copy (it loads alone: its module doc); the two stay equal.
  assert losses.DPO_LOSS_TYPES == choices.DPO_LOSS_TYPES
  assert tuple(recipes.RECIPES) == choices.RECIPES == tuple(declarations.RECIPES)
  # Nowhere else does a module assign a tuple of the same strings as a choice list.
  lists = {v: k for k, v in vars(choices).items() if isinstance(v, tuple) and len(v) > 1}
  for path in sorted(PACKAGE.rglob("*.py")):
    if path.name in ("choices.py", "losses.py"):
      continue
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
      if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple):
        try:
          value = ast.literal_eval(node.value)
        except ValueError:
          continue
        if not all(isinstance(v, str) for v in value):
          continue
        assert value not in lists, (f"{path.relative_to(REPO)}:{node.lineno} repeats "
                                    f"choices.{lists[value]}")
