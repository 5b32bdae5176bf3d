"""ONNX export of a :class:`~qdarts.export.ir.QuantizedChain` as a QDQ graph, and an ORT runner.

The graph is built node by node with ``onnx.helper`` at opset 21 and IR version 10 (ORT 1.32
accepts newer IR versions, older runtimes do not). It is NCHW, the ONNX convention: the input
``"input"`` is float32 ``[N, C, H, W]`` with a dynamic batch ``N``; :func:`run_onnx` takes the
project's NHWC arrays and transposes them. The output ``"logits"`` is float32
``[N, num_classes]``.

Every layer quantizes its input with the step s_a it learned, as a QuantizeLinear /
DequantizeLinear pair (uint8, zero point 0); below 8 bits a Clip on the uint8 codes narrows the
range to ``[0, 2^b_a − 1]`` (QCDQ: an 8-bit container). Weights are stored as integer codes
(INT4 for ``w_bits ≤ 4``, two per byte, low nibble first; INT8 otherwise) with a per-channel
DequantizeLinear (axis 0, zero points 0); biases as int32 codes ``round(b / (s_a·s_w[c]))``
with scale ``s_a·s_w[c]``. A conv's ReLU is followed directly by the next layer's
QuantizeLinear, whose zero point 0 is uint8's qmin, so ORT (``ORT_ENABLE_EXTENDED`` and above)
removes the ReLU and fuses ``DQ → Conv → Q`` into ``QLinearConv`` for 8-bit weights. ORT has no
integer int4 conv: int4 weights are dequantized and run in float, saving only storage.

Subgraphs, for layer ``L`` with input ``x``::

  QConv:          x → Q(s_a) [→ Clip] → DQ → Conv(DQ(W), DQ(b)) [→ Relu]
  QGlobalAvgPool: x → Q(s_a) [→ Clip] → DQ → GlobalAveragePool
  QLinear:        x → Q(s_a) [→ Clip] → DQ → Flatten → Q(s_a) → DQ
                    → Gemm(·, DQ(W), DQ(b); transB=1) → logits
  QAdd:           x → Q(s_h, uint8 zero point 128) → DQ ┐
                  (skip layer's input codes) → DQ(s_skip) ┴→ Add

For an all-8-bit chain ORT (``"extended"``) runs ``QuantizeLinear → QLinearConv … →
QLinearGlobalAveragePool → Flatten → QGemm``: integer from the input quantizer to the logits.

.. note:: the exported graph computes ``reference_forward(chain, x, int32_bias=True)`` up to
  float32 summation order (measured: ≤ 6e-8 on logits of magnitude 0.4). Against the float-bias
  ``reference_forward(chain, x)`` it also differs by the int32 rounding of each bias (at most
  s_a·s_w[c] / 2), which is negligible at 8 bits but can change predictions at 2 bits. Either
  difference moves an activation sitting on a rounding boundary by one code; steps with simple
  ratios (a pool step exactly twice the next step) put averages on such boundaries.
"""

import json
import os
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qdarts.export.ir import (
  QAdd,
  QConv,
  QGlobalAvgPool,
  QLinear,
  QuantizedChain,
  bias_codes,
  bias_scale,
  validate_chain,
)
from qdarts.run_dir import atomic_write_bytes
from quant.integer import pack_int4, weight_codes

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


def _act_qdq(
  g: _Graph, x: str, prefix: str, step: float, bits: int, tag: str = "in", zero_point: int = 0
) -> str:
  """x → QuantizeLinear(s, uint8 z) [→ Clip(0, 2^b − 1)] → DequantizeLinear(s, z)."""
  scale = g.array(f"{prefix}.{tag}_scale", np.float32(step))
  zero = g.array(f"{prefix}.{tag}_zero_point", np.uint8(zero_point))
  q = g.node("QuantizeLinear", [x, scale, zero], f"{prefix}.{tag}_q")
  if bits < 8:
    qmax = g.array(f"{prefix}.{tag}_qmax", np.uint8(2**bits - 1))
    q = g.node("Clip", [q, zero, qmax], f"{prefix}.{tag}_clip")
  return g.node("DequantizeLinear", [q, scale, zero], f"{prefix}.{tag}_dq")


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


def _bias_dq(g: _Graph, layer: QConv | QLinear) -> str:
  """int32 codes round(b / (s_a·s_w)) with per-channel scale s_a·s_w, DequantizeLinear axis 0."""
  codes = bias_codes(layer)
  if codes.min(initial=0) < _INT32.min or codes.max(initial=0) > _INT32.max:
    raise ValueError(f"layer {layer.name!r}: bias / (in_step * w_step) overflows int32")
  b = g.array(f"{layer.name}.b_codes", codes.astype(np.int32))
  scale = g.array(f"{layer.name}.b_scale", bias_scale(layer))
  zero = g.array(f"{layer.name}.b_zero_point", np.zeros(codes.shape, np.int32))
  return g.node("DequantizeLinear", [b, scale, zero], f"{layer.name}.b", axis=0)


def _conv(g: _Graph, layer: QConv, x: str) -> str:
  x = _act_qdq(g, x, layer.name, layer.in_step, layer.a_bits)
  codes = weight_codes(layer.weight, layer.w_step, layer.w_bits)  # HWIO
  w = _weight_dq(g, layer.name, codes.transpose(3, 2, 0, 1), layer.w_step, layer.w_bits)
  b = _bias_dq(g, layer)
  kh, kw = codes.shape[:2]
  (top, bottom), (left, right) = layer.padding
  y = g.node(
    "Conv",
    [x, w, b],
    f"{layer.name}.conv",
    kernel_shape=[kh, kw],
    strides=[layer.stride, layer.stride],
    pads=[top, left, bottom, right],
    dilations=[1, 1],
    group=layer.groups,
  )
  return g.node("Relu", [y], f"{layer.name}.relu") if layer.relu else y


def _add(g: _Graph, layer: QAdd, skip: QConv, x: str) -> str:
  """x → Q(s_h, uint8 128) → DQ, plus a second DQ of the skip layer's input codes, → Add.

  Zero point 128 on uint8 is the signed int8 quantizer of :class:`QAdd` (``q − 128``): all
  three tensors are uint8, the pattern ORT fuses into ``QLinearAdd`` (``DQ, DQ → Add → Q``).
  """
  h = _act_qdq(g, x, layer.name, layer.in_step, 8, zero_point=128)
  codes = f"{skip.name}.in_clip" if skip.a_bits < 8 else f"{skip.name}.in_q"
  scale, zero = f"{skip.name}.in_scale", f"{skip.name}.in_zero_point"
  skip_dq = g.node("DequantizeLinear", [codes, scale, zero], f"{layer.name}.skip_dq")
  return g.node("Add", [h, skip_dq], f"{layer.name}.add")


def _global_avg_pool(g: _Graph, layer: QGlobalAvgPool, x: str) -> str:
  x = _act_qdq(g, x, layer.name, layer.in_step, layer.a_bits)
  return g.node("GlobalAveragePool", [x], f"{layer.name}.gap")  # (N, C, 1, 1)


def _linear(g: _Graph, layer: QLinear, x: str, output: str) -> str:
  x = _act_qdq(g, x, layer.name, layer.in_step, layer.a_bits)
  x = g.node("Flatten", [x], f"{layer.name}.flatten", axis=1)
  # The same quantizer again, after the Flatten: exact (the values are already codes·s_a within
  # range, so no Clip), and it gives ORT the DQ → GAP → Q and DQ → Gemm patterns it fuses into
  # QLinearGlobalAveragePool and QGemm.
  x = _act_qdq(g, x, layer.name, layer.in_step, 8, tag="flat")
  codes = weight_codes(layer.weight, layer.w_step, layer.w_bits)  # (cin, cout)
  w = _weight_dq(g, layer.name, codes.T, layer.w_step, layer.w_bits)
  return g.node("Gemm", [x, w, _bias_dq(g, layer)], output, transB=1)


def build_model(chain: QuantizedChain) -> onnx.ModelProto:
  """Builds and checks the QDQ ``ModelProto`` of a chain (see the module docstring).

  Args:
    chain: the quantized SubNet.

  Returns:
    A model at opset 21, IR version 10, that passes ``check_model(full_check=True)``; its
    ``metadata_props`` hold ``chain.metadata`` plus ``"qdarts.layers"``, a JSON list of
    ``{"name", "w_bits", "a_bits"}`` (``w_bits`` is null for the pool).

  Raises:
    ValueError: the chain is invalid; the message names the layer.
  """
  validate_chain(chain)
  g = _Graph()
  x = INPUT_NAME
  for layer in chain.layers:
    if isinstance(layer, QConv):
      x = _conv(g, layer, x)
    elif isinstance(layer, QAdd):
      x = _add(g, layer, chain.layers[layer.skip], x)
    elif isinstance(layer, QGlobalAvgPool):
      x = _global_avg_pool(g, layer, x)
    else:  # validate_chain: the one QLinear is last
      x = _linear(g, layer, x, OUTPUT_NAME)
  props = {**chain.metadata, "qdarts.layers": _layers_json(chain)}
  return checked_model(g, "qdarts_chain", chain.input_shape, chain.num_classes, props)


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
  import onnxruntime as ort  # heavy; only the runner needs it

  if optimization not in OPTIMIZATION_LEVELS:
    raise ValueError(
      f"optimization {optimization!r} is not one of {', '.join(OPTIMIZATION_LEVELS)}"
    )
  x = np.asarray(x_nhwc, np.float32)
  if x.ndim != 4:
    raise ValueError(f"expected NHWC input (N, H, W, C), got shape {x.shape}")
  options = ort.SessionOptions()
  level = OPTIMIZATION_LEVELS[optimization]
  options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
  # DQ(int4) + MatMul becomes MatMulNBits, which by default quantizes activations internally.
  options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
  if optimized_model_path is not None:
    options.optimized_model_filepath = os.fspath(optimized_model_path)
  session = ort.InferenceSession(
    os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"]
  )
  nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
  (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: nchw})
  return logits
