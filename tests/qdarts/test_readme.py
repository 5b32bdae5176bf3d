"""The README's documented target file is a working target."""

import re
from pathlib import Path

from hwcost import LayerSpec, load_target


def test_readme_target_example_loads_and_costs(tmp_path):
  readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
  (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "clock_mhz" in b]
  path = tmp_path / "my_mcu.yaml"
  path.write_text(block)
  model = load_target(path)
  conv = LayerSpec("c", "conv", 3, 1, 16, 16, (8, 8), (8, 8))
  w8, w4 = model.cost(conv, 8, 8), model.cost(conv, 4, 8)
  assert w4.values["latency_ms"] == w8.values["latency_ms"]  # same MACs/cycle
  assert w4.values["flash_bytes"] < w8.values["flash_bytes"]  # packed int4 weights
  assert "promoted" in model.cost(conv, 2, 2).provenance


def test_readme_chain_space_example_is_a_working_space(tmp_path):
  from search_spaces.chain import load_chain_space

  readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
  (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "layers:" in b]
  path = tmp_path / "my_space.yaml"
  path.write_text(block)
  space = load_chain_space(path, (16, 16, 3), 10)
  assert space.choice_names == ("layer0", "layer1", "layer2.0", "layer2.1")
  assert "mb3x3_e3" in space.op_names and "skip" in space.op_names
