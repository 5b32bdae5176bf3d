"""hwcost imports one way: numpy and pyyaml only, never jax or a sibling package."""

import subprocess
import sys

import hwcost


def test_import_pulls_in_no_jax_nor_siblings():
  code = (
    "import sys, hwcost\n"
    "bad = [m for m in ('jax', 'flax', 'optax', 'quant', 'search_spaces', 'qdarts')"
    " if m in sys.modules]\n"
    "print(','.join(bad))\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == ""


def test_public_names():
  assert sorted(hwcost.__all__) == sorted(
    [
      "LayerSpec", "Cost", "CostModel", "CostTableError", "METRICS", "BopsModel",
      "RooflineModel", "load_target", "CostTables", "build_cost_tables", "layers_cost",
      "layer_bops", "layer_flash_bytes", "layer_act_bytes", "LutCostModel", "MeasuredRow",
      "MeasuredRows", "read_measured_csv", "share_measured", "ChannelGranularity", "padded_macs",
    ]
  )  # fmt: skip
  assert all(hasattr(hwcost, name) for name in hwcost.__all__)
