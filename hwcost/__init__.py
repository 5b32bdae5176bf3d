"""Hardware cost models: what a layer costs at a (w_bits, a_bits) pair on a target.

Pure numpy and pyyaml. Knows nothing of the sibling packages (quant, search_spaces, qdarts) and
never imports jax: a cost model knows nothing of search methods.
"""

from hwcost.bops import BopsModel
from hwcost.cost_model import (
  METRICS,
  Cost,
  CostModel,
  CostTableError,
  layer_act_bytes,
  layer_bops,
  layer_flash_bytes,
)
from hwcost.layer_spec import LayerSpec
from hwcost.lut import LutCostModel, share_measured
from hwcost.measured_rows import MeasuredRow, MeasuredRows, read_measured_csv
from hwcost.roofline import RooflineModel, load_target, padded_macs
from hwcost.tables import CostTables, build_cost_tables, layers_cost
from hwcost.target_file import ChannelGranularity

__all__ = [
  "METRICS",
  "BopsModel",
  "ChannelGranularity",
  "Cost",
  "CostModel",
  "CostTableError",
  "CostTables",
  "LayerSpec",
  "LutCostModel",
  "MeasuredRow",
  "MeasuredRows",
  "RooflineModel",
  "build_cost_tables",
  "layer_act_bytes",
  "layer_bops",
  "layer_flash_bytes",
  "layers_cost",
  "load_target",
  "padded_macs",
  "read_measured_csv",
  "share_measured",
]
