"""Every config key is declared once (`config/declarations.py`), and the base configs and the range
check are both built from that declaration."""

import ml_collections
import pytest

from meta_rewarding import choices, config_check
from meta_rewarding.config import base, declarations as decl


def _leaves(c, prefix=""):
  for k, v in c.items():
    if isinstance(v, ml_collections.ConfigDict) and k not in ("architecture", "shape"):
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def _declared(sections):
  out = {}
  for section, keys in sections.items():
    for key in keys:
      out[f"{section}.{key.name}" if section else key.name] = key
  return out


def _section_keys():
  sections = dict(decl.SECTIONS)
  sections["sft.train"] = decl.TRAIN
  sections["ste"] = decl.STE
  return _declared(sections)


@pytest.mark.parametrize("make", [base.get_base_config, base.get_ste_config])
def test_every_key_of_the_base_configs_is_declared(make):
  declared = _section_keys()
  undeclared = [k for k, _ in _leaves(make()) if k not in declared]
  assert not undeclared


def test_the_base_config_holds_every_declared_default():
  c = base.get_base_config()
  for name, key in _section_keys().items():
    if name.startswith("ste.") or not key.in_base or name.startswith("sft.train."):
      continue
    value = c
    for part in name.split("."):
      value = value[part]
    if isinstance(key.default, dict):
      assert dict(value) == key.default, name
    else:
      assert value == key.default, name


def test_every_key_has_a_doc_and_every_choice_reads_choices():
  lists = {id(v) for v in vars(choices).values() if isinstance(v, tuple)}
  for name, key in _section_keys().items():
    assert key.doc.strip(), name
    check = key.check.entry if isinstance(key.check, decl.PerIteration) else key.check
    if isinstance(check, decl.Choice) and name != "export_dtype":
      assert id(check.values) in lists, f"{name}: its choices are not a choices.* list"


def test_adding_a_key_is_one_declaration(monkeypatch):
  # What a new key costs: one Key in its section. The base config then holds its default and the
  # check names a bad value, with no other edit.
  new = decl.Key("new_knob", 3, decl.Integer(1, limit=decl.Limit(8, "a test bound")),
                 "a knob added by this test")
  monkeypatch.setitem(decl.SECTIONS, "sampling", decl.SAMPLING + (new,))
  c = base.get_base_config()
  assert c.sampling.new_knob == 3
  c.data.prompts = "testbed:10"
  c.model.architecture = ml_collections.ConfigDict({"hidden_size": 8})
  config_check.check_pipeline_config(c)
  c.sampling.new_knob = 9
  with pytest.raises(config_check.ConfigError) as e:
    config_check.check_pipeline_config(c)
  assert e.value.problems == ("sampling.new_knob=9: must be <= 8: a test bound",)
