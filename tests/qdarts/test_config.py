"""Config loading: defaults, overrides, and one clear error per kind of bad input."""

import pytest

from qdarts.config import Config, config_to_dict, load_config
from qdarts.errors import ConfigError


def test_quickstart_loads_with_its_name(quickstart_path):
  cfg = load_config(quickstart_path)
  assert isinstance(cfg, Config)
  assert cfg.name == "quickstart"
  assert cfg.quant.w_bits == (2, 4, 8)
  assert cfg.search.sampler == "gumbel"


def test_dotted_overrides_are_parsed_as_yaml(quickstart_path):
  cfg = load_config(
    quickstart_path,
    [
      "search.epochs=3",
      "search.warmup_epochs=1",
      "cost.weight=0.25",
      "quant.w_bits=[4, 8]",
      "seed=7",
    ],
  )
  assert cfg.search.epochs == 3
  assert cfg.cost.weight == 0.25
  assert cfg.quant.w_bits == (4, 8)
  assert cfg.seed == 7


def test_int_is_accepted_for_float_fields(quickstart_path):
  assert load_config(quickstart_path, ["cost.weight=1"]).cost.weight == 1.0


def test_config_round_trips_through_plain_data(quickstart_path, tmp_path):
  import yaml

  cfg = load_config(quickstart_path)
  path = tmp_path / "again.yaml"
  path.write_text(yaml.safe_dump(config_to_dict(cfg)))
  assert load_config(path) == cfg


BAD_OVERRIDES = [
  (["search.epoch=3"], "search.epoch: unknown key; allowed: epochs"),
  (["search.epochs=three"], "search.epochs: expected an integer, got 'three'"),
  (["search.sampler=gumble"], "search.sampler: 'gumble' is not one of softmax, gumbel"),
  (["quant.w_bits=[]"], "quant.w_bits: expected a non-empty list of bit-widths"),
  (["quant.a_bits=[1, 4]"], "quant.a_bits: expected distinct bit-widths between 2 and 8"),
  (["space.ops=[conv3x3, conv7x7]"], "space.ops[1]: expected one of conv3x3"),
  (["space.strides=[1]"], "space.strides: expected 4 entries"),
  (["cost.form=hinge"], "cost.budget: expected a positive budget"),
  (["cost.weight=-1"], "cost.weight: expected a number >= 0"),
  (["search.warmup_epochs=30"], "search.warmup_epochs: expected an integer in [0, search.epochs"),
  (["data.dataset=imagenet"], "data.dataset: 'imagenet' is not one of digits, synthetic"),
  (["export.tflite_filters=int3"], "export.tflite_filters: 'int3' is not one of int8, int4"),
  (["search.epochs"], "expected KEY=VALUE"),
  (["search=3"], "search: expected a mapping of SearchConfig fields"),
  (["bogus=1"], "bogus: unknown key"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_OVERRIDES)
def test_bad_values_name_the_key_and_what_was_expected(quickstart_path, overrides, message):
  with pytest.raises(ConfigError) as err:
    load_config(quickstart_path, overrides)
  assert message in str(err.value)
  assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
  with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
    load_config(tmp_path / "nope.yaml")


def test_yaml_syntax_error_names_the_line(tmp_path):
  path = tmp_path / "broken.yaml"
  path.write_text("search:\n  epochs: [3\n")
  with pytest.raises(ConfigError, match=r"broken.yaml:.*line \d+: not valid YAML"):
    load_config(path)


def test_top_level_must_be_a_mapping(tmp_path):
  path = tmp_path / "list.yaml"
  path.write_text("- 1\n- 2\n")
  with pytest.raises(ConfigError, match="expected a mapping of sections"):
    load_config(path)
