"""ONNX export of a :class:`~qdarts.export.ir.QuantizedChain` as a QDQ graph, and an ORT runner.

A chain is written as its graph (:func:`~qdarts.export.from_chain.graph_from_chain`) by the DAG
writer, :mod:`qdarts.export.graph_onnx`: one writer, whose model ONNX Runtime runs code for
code as the integer model's ``"ort"`` form at ``"extended"`` and ``"all"`` (that module's
docstring has the layout). This module holds what both share: the node builder, the weight
DequantizeLinear, the checked model, and :func:`run_onnx`.

The graph is built node by node with ``onnx.helper`` at opset 21 and IR version 10 (ORT 1.32
accepts newer IR versions, older runtimes do not). It is NCHW, the ONNX convention: the input
``"input"`` is float32 ``[N, C, H, W]`` with a dynamic batch ``N``; :func:`run_onnx` takes the
project's NHWC arrays and transposes them. The output ``"logits"`` is float32
``[N, num_classes]``. Weights are stored as integer codes (INT4 for ``w_bits ≤ 4``, two per
byte, low nibble first; INT8 otherwise) with a per-channel DequantizeLinear (axis 0, zero
points 0); biases as int32 codes. For an all-8-bit chain ORT (``"extended"``) runs
``QuantizeLinear → QLinearConv … → int32 ReduceSum → QuantizeLinear → QGemm``: integer from
the input quantizer to the logits. ORT has no integer int4 conv: int4 weights run as a float32
Conv of integer values (exact), saving storage.
"""

import json
import os
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qdarts.export.ir import (
  QuantizedChain,
)
from qdarts.run_dir import atomic_write_bytes
from quant.integer import pack_int4

OPSET = 21
IR_VERSION = 10
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_INT32 = np.iinfo(np.int32)
OPTIMIZATION_LEVELS = {  # run_onnx's names for ort.GraphOptimizationLevel members
  "disabled": "ORT_DISABLE_ALL",
  "basic": "ORT_ENABLE_BASIC",
  "extended": "ORT_ENABLE_EXTENDED",
  "all": "ORT_ENABLE_ALL",
}


class _Graph:
  """Accumulates nodes and initializers; tensor names are ``<layer>.<role>``."""

  def __init__(self) -> None:
    self.nodes: list[onnx.NodeProto] = []
    self.initializers: list[onnx.TensorProto] = []
    self.names: set[str] = set()  # of the initializers

  def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
    self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
    return output

  def array(self, name: str, value: np.ndarray) -> str:
    self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
    self.names.add(name)
    return name

  def int4(self, name: str, codes: np.ndarray) -> str:
    """An INT4 initializer, packed by :func:`quant.pack_int4` (low nibble first)."""
    raw = pack_int4(codes).tobytes()
    tensor = helper.make_tensor(name, TensorProto.INT4, codes.shape, raw, raw=True)
    self.initializers.append(tensor)
    self.names.add(name)
    return name


def _weight_dq(g: _Graph, prefix: str, codes: np.ndarray, step: np.ndarray, bits: int) -> str:
  """Per-output-channel DequantizeLinear (axis 0) of integer codes, output channels first."""
  cout = codes.shape[0]
  scale = g.array(f"{prefix}.w_scale", np.asarray(step, np.float32))
  if bits <= 4:
    w = g.int4(f"{prefix}.w_codes", codes)
    zero = g.int4(f"{prefix}.w_zero_point", np.zeros(cout, np.int8))
  else:
    w = g.array(f"{prefix}.w_codes", codes.astype(np.int8))
    zero = g.array(f"{prefix}.w_zero_point", np.zeros(cout, np.int8))
  return g.node("DequantizeLinear", [w, scale, zero], f"{prefix}.w", axis=0)


def build_model(chain: QuantizedChain) -> onnx.ModelProto:
  """Builds and checks the QDQ ``ModelProto`` of a chain: its graph's model
  (:func:`~qdarts.export.graph_onnx.build_graph_model`).

  Args:
    chain: the quantized SubNet.

  Returns:
    A model at opset 21, IR version 10, that passes ``check_model(full_check=True)``; its
    ``metadata_props`` hold ``chain.metadata`` plus ``"qdarts.layers"``, a JSON list of
    ``{"name", "w_bits", "a_bits"}`` (``w_bits`` is null for the pool).

  Raises:
    ValueError: the chain is invalid; the message names the layer.
  """
  from qdarts.export.from_chain import graph_from_chain  # noqa: PLC0415 (imports this module)
  from qdarts.export.graph_onnx import build_graph_model  # noqa: PLC0415

  graph = graph_from_chain(chain)  # validates the chain
  props = {**chain.metadata, "qdarts.layers": _layers_json(chain)}
  return build_graph_model(graph, props)


def checked_model(
  g: "_Graph", name: str, input_shape: tuple[int, int, int], num_classes: int, props: dict
) -> onnx.ModelProto:
  """``g``'s nodes and initializers as a checked model: float NCHW input ``INPUT_NAME`` of
  ``input_shape`` (H, W, C), float logits ``OUTPUT_NAME`` ``(N, num_classes)``, opset 21,
  IR version 10, ``props`` as metadata."""
  h, w, c = input_shape
  graph = helper.make_graph(
    g.nodes,
    name,
    [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", c, h, w])],
    [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", num_classes])],
    initializer=g.initializers,
  )
  model = helper.make_model(
    graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qdarts"
  )
  model.ir_version = IR_VERSION
  helper.set_model_props(model, props)
  onnx.checker.check_model(model, full_check=True)
  return model


def _layers_json(chain: QuantizedChain) -> str:
  return json.dumps(
    [
      {"name": layer.name, "w_bits": getattr(layer, "w_bits", None), "a_bits": layer.a_bits}
      for layer in chain.layers
    ]
  )


def export_onnx(chain: QuantizedChain, path: str | os.PathLike) -> pathlib.Path:
  """Writes the QDQ ONNX model of ``chain`` to ``path``, atomically.

  The model is built and checked in memory, written to a temporary file in the destination
  folder and moved into place with ``os.replace``: a failed export leaves nothing at ``path``
  (an existing file there is left unchanged).

  Args:
    chain: the quantized SubNet.
    path: destination ``.onnx`` file; missing parent folders are created.

  Returns:
    The path written.

  Raises:
    ValueError: the chain is invalid; the message names the layer.

  Example::

    path = export_onnx(chain, "out/subnet.onnx")
    logits = run_onnx(path, x_nhwc)  # ≈ reference_forward(chain, x_nhwc)
  """
  path = pathlib.Path(path)
  data = build_model(chain).SerializeToString()
  path.parent.mkdir(parents=True, exist_ok=True)
  return atomic_write_bytes(path, data)


def run_onnx(
  path: str | os.PathLike,
  x_nhwc: np.ndarray,
  *,
  optimization: str = "extended",
  optimized_model_path: str | os.PathLike | None = None,
) -> np.ndarray:
  """Runs an exported model in ONNX Runtime on the CPU and returns the logits.

  Args:
    path: an ``.onnx`` file written by :func:`export_onnx`.
    x_nhwc: ``(N, H, W, C)`` inputs (the project's layout); transposed here to NCHW.
    optimization: ORT graph optimization level, one of ``"disabled"``, ``"basic"``,
      ``"extended"`` (integer QLinearConv / QGemm fusion) or ``"all"`` (adds layout-specific
      kernels).
    optimized_model_path: if given, ORT saves the optimized graph there (inspect it at
      ``"extended"``; at ``"all"`` it contains hardware-specific nodes).

  Returns:
    ``(N, num_classes)`` float32 logits.

  Raises:
    ValueError: unknown ``optimization`` or an input that is not 4-D.
  """
  x = np.asarray(x_nhwc, np.float32)
  if x.ndim != 4:
    raise ValueError(f"expected NHWC input (N, H, W, C), got shape {x.shape}")
  session = ort_session(path, optimization, optimized_model_path)
  (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: nchw_input(x)})
  return logits


def nchw_input(x_nhwc: np.ndarray) -> np.ndarray:
  """The model input: float32 NCHW of the project's NHWC arrays."""
  return np.ascontiguousarray(np.asarray(x_nhwc, np.float32).transpose(0, 3, 1, 2))


def ort_session(
  model: "str | os.PathLike | onnx.ModelProto",
  optimization: str = "extended",
  optimized_model_path: str | os.PathLike | None = None,
):
  """A CPU ONNX Runtime session of a file or an in-memory model at an optimization level of
  :data:`OPTIMIZATION_LEVELS` (the runners' one place for session options).

  Raises:
    ValueError: unknown ``optimization``.
  """
  import onnxruntime as ort  # heavy; only the runners need it

  if optimization not in OPTIMIZATION_LEVELS:
    raise ValueError(
      f"optimization {optimization!r} is not one of {', '.join(OPTIMIZATION_LEVELS)}"
    )
  options = ort.SessionOptions()
  options.log_severity_level = 3
  level = OPTIMIZATION_LEVELS[optimization]
  options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
  # DQ(int4) + MatMul becomes MatMulNBits, which by default quantizes activations internally.
  options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
  if optimized_model_path is not None:
    options.optimized_model_filepath = os.fspath(optimized_model_path)
  source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
  return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
