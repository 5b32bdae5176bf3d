"""Integer export of a fixed quantized SubNet: a numpy IR, its fake-quant reference, and ONNX.

``reference_forward`` is the oracle: every backend's integer model must reproduce it up to the
int32 rounding of biases and float summation order.
"""

from qdarts.export.c_export import export_c
from qdarts.export.graph_integer import (
  IntegerGraph,
  integer_graph_forward,
  integer_graph_trace,
  to_integer_graph,
)
from qdarts.export.graph_ir import QuantizedGraph, validate_graph
from qdarts.export.graph_ir import reference_forward as graph_reference_forward
from qdarts.export.graph_onnx import build_graph_model, export_graph_onnx
from qdarts.export.integer_model import (
  IntegerChain,
  integer_forward,
  integer_trace,
  quantize_input,
  to_integer_chain,
)
from qdarts.export.ir import (
  QAdd,
  QConv,
  QGlobalAvgPool,
  QLinear,
  QuantizedChain,
  bias_codes,
  bias_scale,
  reference_forward,
  residual_step,
  validate_chain,
)
from qdarts.export.onnx import build_model, export_onnx, run_onnx

__all__ = [
  "IntegerChain",
  "IntegerGraph",
  "QuantizedGraph",
  "build_graph_model",
  "export_graph_onnx",
  "graph_reference_forward",
  "integer_graph_forward",
  "integer_graph_trace",
  "to_integer_graph",
  "validate_graph",
  "QAdd",
  "QConv",
  "QGlobalAvgPool",
  "QLinear",
  "QuantizedChain",
  "bias_codes",
  "bias_scale",
  "build_model",
  "export_c",
  "export_onnx",
  "integer_forward",
  "integer_trace",
  "quantize_input",
  "reference_forward",
  "residual_step",
  "run_onnx",
  "to_integer_chain",
  "validate_chain",
]
