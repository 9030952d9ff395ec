"""The config files, as a package: `configs.load(name, variant)` gives what
`--config=configs/<name>.py[:<variant>]` gives, for code that needs a config without the flag.

  config = configs.load("tpu_v4")                      # --config=configs/tpu_v4.py
  config = configs.load("tpu_v4", "mesh=fsdp")         # --config=configs/tpu_v4.py:mesh=fsdp
  config = configs.load("configs/tpu_v4.py:runlocal")  # the flag's own spelling
  module = configs.module("tpu_v4")                    # SLICE, NUM_GPUS, get_hyper, ...

Who uses it: `meta_rewarding.main` and `meta_rewarding.plan` read `--config=configs/<file>.py[:arg]`
through ml_collections' config_flags (which loads the file by path and calls `get_config(arg)`, or
`get_config()` without a colon; `load` calls them the same way); the launcher
(`xm_launch/launch.py`) loads the module to check overrides, read `get_hyper` and plan memory; the
benches (bench/testbed.py, bench/ste.py) and the tests load configs by name. `NAMES` lists the
config files (every module here but `common`, found in this directory).

`configs.common` holds what the config files share (the variant parser, the paper-scale and
testbed helpers); the base configs and the logical-axis rules are `meta_rewarding.config`. Loading
a config imports neither jax, flax nor optax (tests/test_configs.py checks it).
"""

from __future__ import annotations

import importlib
import os
import types

import ml_collections

from meta_rewarding import errors

_DIR = os.path.dirname(os.path.abspath(__file__))
_NOT_CONFIGS = ("common",)  # shared helpers, not config files

NAMES: tuple[str, ...] = tuple(sorted(
    name[:-3] for name in os.listdir(_DIR)
    if name.endswith(".py") and not name.startswith("_") and name[:-3] not in _NOT_CONFIGS))


class UnknownConfigError(errors.UserError, ValueError):
  """A config name that is not one of `NAMES`; the message lists them."""


def split(spec: str) -> tuple[str, str]:
  """'configs/tpu_v4.py:mesh=fsdp' -> ('tpu_v4', 'mesh=fsdp'); 'tpu_v4' -> ('tpu_v4', '').

  `spec` is a config's name, its file name or a path to it in this directory (as `--config=`
  writes it, relative or absolute), optionally followed by `:<variant>`."""
  path, _, variant = spec.partition(":")
  directory, base = os.path.split(os.path.normpath(path)) if path else ("", "")
  name = base[:-3] if base.endswith(".py") else base
  if directory and os.path.basename(directory) != "configs":
    raise UnknownConfigError(f"config {spec!r}: configs.load reads the files of {_DIR} only "
                             f"({', '.join(NAMES)})")
  if name not in NAMES:
    raise UnknownConfigError(f"unknown config {spec!r}; the configs are {', '.join(NAMES)} "
                             f"(configs/<name>.py)")
  return name, variant


def module(name: str) -> types.ModuleType:
  """The config module `configs.<name>` for a name or path as `split` takes (a variant after a
  colon is ignored)."""
  return importlib.import_module(f"{__name__}.{split(name)[0]}")


def load(name: str, variant: str = "") -> ml_collections.ConfigDict:
  """`get_config(variant)` of config `name` ("tpu_v4", "tpu_v4.py", "configs/tpu_v4.py", or any of
  these with ":<variant>" when `variant` is not given): what
  `--config=configs/<name>.py[:<variant>]` gives. No variant: `get_config()`, as config_flags
  calls it without a colon. Raises UnknownConfigError listing the configs for an unknown name,
  and the config file's ValueError for an unknown variant."""
  key, spec_variant = split(name)
  if spec_variant and variant:
    raise ValueError(f"config {name!r} names a variant and variant={variant!r} another; give one")
  variant = variant or spec_variant
  get_config = module(key).get_config
  return get_config(variant) if variant else get_config()
