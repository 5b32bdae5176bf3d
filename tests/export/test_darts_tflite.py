"""TFLite export of a DARTS final network's graph: LiteRT's builtin kernels and XNNPACK each
exactly one form of the integer model, the ops a DARTS cell needs, and a one-line refusal of
what TFLite cannot hold."""

import dataclasses

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from ai_edge_litert import schema_py_generated as fb  # noqa: E402

from qdarts.errors import ConfigError  # noqa: E402
from qdarts.export.formats import check_formats, export_and_verify  # noqa: E402
from qdarts.export.graph_integer import (  # noqa: E402
  as_litert,
  integer_graph_forward,
  integer_graph_trace,
  rounding_differences,
  to_integer_graph,
)
from qdarts.export.graph_ir import (  # noqa: E402
  INPUT,
  GConv,
  GGlobalAvgPool,
  GLinear,
  GRequant,
  Grid,
  QuantizedGraph,
)
from qdarts.export.graph_tflite import (  # noqa: E402
  build_graph_tflite,
  export_graph_tflite,
  node_codes,
)
from qdarts.export.tflite import read_metadata, run_tflite, run_tflite_tensors  # noqa: E402


def test_builtin_kernels_compute_the_litert_integer_model_exactly(darts_graph, tmp_path):
  """Every node's codes and the float32 logits (no int8 logit grid: BATCH_MATMUL's int32
  accumulators, then float32 ops)."""
  graph, x = darts_graph
  path = export_graph_tflite(graph, tmp_path / "model.tflite")
  litert = to_integer_graph(graph, rounding="litert")
  trace = integer_graph_trace(litert, x)
  for name, codes in node_codes(path, litert, x, "builtin").items():
    np.testing.assert_array_equal(codes, trace[name], err_msg=name)
  logits = run_tflite(path, x, kernels="builtin")
  np.testing.assert_array_equal(logits, integer_graph_forward(litert, x))


def test_xnnpack_computes_the_single_rounding_integer_model_exactly(darts_graph, tmp_path):
  """XNNPACK (LiteRT's default) requantizes in float32, once: with INT8 filters every node is
  the integer model's ``"ort"`` form (float32 single rounding, as ONNX Runtime), logits too.
  With INT4 filters the ≤ 4-bit convs fall back to the builtin kernels (measured 20 codes
  apart on some tensor)."""
  graph, x = darts_graph
  ort = to_integer_graph(graph, rounding="ort")
  trace = integer_graph_trace(ort, x)
  path = export_graph_tflite(graph, tmp_path / "model.tflite")
  for name, codes in node_codes(path, ort, x, "xnnpack").items():
    np.testing.assert_array_equal(codes, trace[name], err_msg=name)
  np.testing.assert_array_equal(run_tflite(path, x), integer_graph_forward(ort, x))
  int4 = export_graph_tflite(graph, tmp_path / "int4.tflite", int8_filters=False)
  worst = max(np.abs(codes - trace[name]).max() for name, codes in node_codes(int4, ort, x).items())
  assert worst > 1


def test_scaled_accumulators_round_like_single_rounding(darts_graph):
  """Per node, fed single-rounding codes: gemmlowp's double rounding (LiteRT before the
  accumulators were scaled up) moves 5.3% of the conv output codes, 0.8% of the
  requantizations' and 31% of the global average pool's (MEAN); the export's scaled
  accumulators leave 0.25% (INT8 filters; 2.6% with 2-bit weights in INT4 containers: ×4
  only), 0 and 0."""
  graph, x = darts_graph
  before = rounding_differences(graph, x, "double")
  after = rounding_differences(graph, x, "litert")
  assert before["GConv"] > 0.04 and before["GGlobalAvgPool"] > 0.25 and before["GRequant"] > 0
  assert after["GConv"] < 0.005 and after["GGlobalAvgPool"] == after["GRequant"] == 0
  assert after["GAdd"] == after["GConcat"] == after["GAvgPool"] == after["GMaxPool"] == 0


@pytest.mark.parametrize("int8_filters", [True, False])
def test_scaled_weights_are_the_trained_weights(darts_graph, int8_filters):
  """``codes·2^k`` at ``step·2^-k``: the same real weights and biases; INT4 codes stay in ±7."""
  graph, _ = darts_graph
  single = to_integer_graph(graph)
  litert = as_litert(single, int8_filters=int8_filters)
  scaled = 0
  for a, b in zip(single.nodes, litert.nodes, strict=True):
    if isinstance(a.node, GConv):
      shape = (-1,) + (1,) * (a.weight.ndim - 1)
      real_a = a.weight * a.w_step.astype(np.float64).reshape(shape)
      np.testing.assert_array_equal(real_a, b.weight * b.w_step.astype(np.float64).reshape(shape))
      np.testing.assert_array_equal(a.bias * a.w_step.astype(np.float64),
                                    b.bias * b.w_step.astype(np.float64))  # fmt: skip
      limit = 7 if a.node.w_bits <= 4 and not int8_filters else 127
      assert np.abs(b.weight).max() <= limit
      scaled += int(b.acc_bits.sum() > 0)
    elif isinstance(a.node, GGlobalAvgPool | GRequant) and b.weight is not None:
      real = b.weight[:, :, :, 0] * b.w_step.astype(np.float64)[:, None, None]
      np.testing.assert_allclose(real, 1.0 / real[0].size, rtol=1e-7)
  assert scaled > 0


def test_the_model_holds_the_ops_of_a_darts_cell(darts_graph):
  graph, _ = darts_graph
  model = fb.ModelT.InitFromPackedBuf(build_graph_tflite(graph, int8_filters=False), 0)
  codes = {op.builtinCode for op in model.operatorCodes}
  names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
  used = {names[c] for c in codes}
  needed = {"ADD", "CONCATENATION", "MAX_POOL_2D", "AVERAGE_POOL_2D", "DEPTHWISE_CONV_2D"}
  assert needed | {"CONV_2D", "STRIDED_SLICE", "RESHAPE", "BATCH_MATMUL", "CAST", "MUL"} <= used
  assert not {"FULLY_CONNECTED", "DEQUANTIZE"} & used  # float32 logits, no int8 logit grid
  assert "MEAN" not in used  # the global average pool is a depthwise conv
  sub = model.subgraphs[0]
  dilated = [
    op.builtinOptions
    for op in sub.operators
    if names[model.operatorCodes[op.opcodeIndex].builtinCode] == "DEPTHWISE_CONV_2D"
    and op.builtinOptions.dilationHFactor == 2
  ]
  assert dilated  # the dil_conv ops
  types = {t.type for t in sub.tensors}
  assert fb.TensorType.INT4 in types and fb.TensorType.INT8 in types
  default = fb.ModelT.InitFromPackedBuf(build_graph_tflite(graph), 0)
  assert fb.TensorType.INT4 not in {t.type for t in default.subgraphs[0].tensors}


def test_metadata_records_the_graph(darts_graph, tmp_path):
  graph, _ = darts_graph
  meta = read_metadata(export_graph_tflite(graph, tmp_path / "m.tflite"))
  assert meta["qdarts.graph"] == "dag" and meta["dataset"] == "synthetic"
  layers = {layer["name"]: layer for layer in meta["qdarts.layers"]}
  assert layers["cell0.node0.from0.sep_conv_3x3.dw1"]["weights"] == "INT8"  # 2-bit codes


def test_signed_low_bit_grids_are_refused_in_one_line(darts_graph, tmp_path):
  graph, x = darts_graph
  nodes = tuple(
    dataclasses.replace(n, out=Grid(n.out.step, 4, True)) if n.name == "stem" else n
    for n in graph.nodes
  )
  bad = dataclasses.replace(graph, nodes=nodes)
  message = r"--format tflite: node 'stem': TFLite holds signed grids at 8 bits only"
  with pytest.raises(ConfigError, match=message) as err:
    check_formats(bad, ["onnx", "c", "tflite"])
  assert "\n" not in str(err.value)
  with pytest.raises(ConfigError, match=message):
    export_and_verify(bad, tmp_path, ["onnx", "tflite"], x[:4])
  assert not list(tmp_path.iterdir())


def test_export_and_verify_records_litert(darts_graph, tmp_path):
  graph, x = darts_graph
  record = export_and_verify(graph, tmp_path, ["tflite"], x)["tflite"]
  assert record["path"] == "model.tflite" and record["max_logit_diff_lsb"] == 0.0  # exact
  assert record["prediction_agreement"] == 1.0 and record["kernels"] == "builtin (litert rounding)"
  assert record["filters"] == "int8" and record["xnnpack_prediction_agreement"] == 1.0
  # XNNPACK computes the integer model's float32 single rounding on every tensor (measured 20
  # codes apart with int8 QUANTIZE requantizations, or with INT4 filters)
  assert record["xnnpack_max_logit_diff_lsb"] == 0.0 and record["xnnpack_max_code_diff"] == 0
  int4 = export_and_verify(graph, tmp_path / "int4", ["tflite"], x, tflite_filters="int4")
  assert int4["tflite"]["filters"] == "int4" and int4["tflite"]["max_logit_diff_lsb"] == 0.0
  assert int4["tflite"]["xnnpack_max_code_diff"] > 1  # INT4 convs run on the builtin kernels


def _requant_graph(m: float) -> QuantizedGraph:
  """input (4, 4, 8) → requantization with M = ``m`` (unsigned 8-bit grids, codes 0..255) →
  global average pool → linear."""
  step = 1 / 255
  requant = GRequant("req", (INPUT,), Grid(step / m, 8, False))
  gap = GGlobalAvgPool("gap", ("req",), Grid(step / m, 8, False))
  linear = GLinear("fc", ("gap",), np.eye(8, 10) * 0.5, np.zeros(10), np.full(10, 0.5), 8)
  return QuantizedGraph((requant, gap, linear), (4, 4, 8), Grid(step, 8, False), 10)


def test_xnnpack_requantizes_like_the_integer_model(tmp_path):
  """A requantization with M ≥ 1/2 is a 1×1 depthwise conv, not QUANTIZE: XNNPACK's int8
  QUANTIZE multiplies by M rounded to 8 fractional bits (measured here: one code off on 25% of
  the codes); its depthwise conv requantizes in float32, and every code equals the integer
  model's, with both kernels."""
  graph = _requant_graph(0.70508)  # ≈ 180.5 / 256: about the most 8 fractional bits can miss
  x = np.random.default_rng(1).uniform(0, 1, (64, 4, 4, 8)).astype(np.float32)
  path = export_graph_tflite(graph, tmp_path / "m.tflite")
  model = fb.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
  assert fb.BuiltinOperator.QUANTIZE not in {
    model.operatorCodes[op.opcodeIndex].builtinCode for op in model.subgraphs[0].operators[1:]
  }  # the input's QUANTIZE (float → int8) only
  expected = integer_graph_trace(to_integer_graph(graph, rounding="litert"), x)["req"] - 128
  for kernels in ("builtin", "xnnpack"):
    tensors = run_tflite_tensors(path, x, kernels=kernels)
    (name,) = [k for k in tensors if k.startswith("req.")]
    np.testing.assert_array_equal(tensors[name], expected)
    np.testing.assert_array_equal(tensors["logits"], run_tflite(path, x, kernels=kernels))
