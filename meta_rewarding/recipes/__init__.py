"""The recipes a run can follow, and the one place a config picks one (`for_config`).

  meta_rewarding   Meta-Rewarding, or Self-Rewarding with `meta_judge.enabled = False`
                   (recipes/meta_rewarding.py: stages.py's stages, DPO)
  ste              the Self-Taught Evaluator (recipes/self_taught_evaluator.py: ste.py's stages,
                   SFT of the seed)

Each is a `recipe_types.Recipe`: the iteration's stages and what it trains on. pipeline.run and
run.py ask `for_config(config)` and use what it gives; nothing else branches on the recipe.
"""

from __future__ import annotations

from meta_rewarding.choices import DEFAULT_RECIPE
from meta_rewarding.recipe_types import PipelineError, Recipe
from meta_rewarding.recipes import meta_rewarding, self_taught_evaluator

# Keyed by the names `choices.RECIPES` lists (the config check's; tests/test_layering.py keeps the
# two equal).
RECIPES = {r.name: r for r in (meta_rewarding.RECIPE, self_taught_evaluator.RECIPE)}


def for_config(config) -> Recipe:
  """The config's recipe (`recipe`, default "meta_rewarding")."""
  name = config.get("recipe", DEFAULT_RECIPE)
  if name not in RECIPES:
    raise PipelineError(f"recipe={name!r}; expected one of {', '.join(RECIPES)}")
  return RECIPES[name]
