"""TFLite export of a DARTS final network's graph: LiteRT within one int8 logit code of the
integer model, the ops a DARTS cell needs, and a one-line refusal of what TFLite cannot hold."""

import dataclasses

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from ai_edge_litert import schema_py_generated as fb  # noqa: E402

from qdarts.errors import ConfigError  # noqa: E402
from qdarts.export.formats import (  # noqa: E402
  LOGIT_RANGE_KEY,
  check_formats,
  export_and_verify,
  with_logit_range,
)
from qdarts.export.graph_integer import integer_graph_forward, to_integer_graph  # noqa: E402
from qdarts.export.graph_ir import Grid  # noqa: E402
from qdarts.export.graph_tflite import (  # noqa: E402
  build_graph_tflite,
  export_graph_tflite,
  graph_logit_quantization,
  observed_logit_range,
)
from qdarts.export.tflite import read_metadata, run_tflite  # noqa: E402


def _logit_codes(logits, scale, zero_point):
  return np.clip(np.round(np.asarray(logits, np.float64) / scale) + zero_point, -128, 127)


@pytest.mark.parametrize(
  "kernels, rounding, differing",
  [("builtin", "litert", 0.0), ("xnnpack", "single", 0.2)],
  ids=["builtin", "xnnpack"],
)
def test_litert_within_one_logit_code_of_the_integer_model(
  darts_graph, tmp_path, kernels, rounding, differing
):
  """Builtin kernels: exact with the integer model in their rounding (measured: 0 codes
  differ; with plain double rounding 6.9% of the logit codes are one off). XNNPACK (float
  requantization) against single rounding: one code off on 6.9% of the logit codes."""
  graph, x = darts_graph
  path = export_graph_tflite(graph, tmp_path / "model.tflite")
  scale, zero_point = graph_logit_quantization(graph)
  got = _logit_codes(run_tflite(path, x, kernels=kernels), scale, zero_point)
  igraph = to_integer_graph(graph, rounding=rounding)
  expected = _logit_codes(integer_graph_forward(igraph, x), scale, zero_point)
  assert np.abs(got - expected).max() <= 1
  assert np.mean(got != expected) <= differing


def test_the_model_holds_the_ops_of_a_darts_cell(darts_graph):
  graph, _ = darts_graph
  model = fb.ModelT.InitFromPackedBuf(build_graph_tflite(graph), 0)
  codes = {op.builtinCode for op in model.operatorCodes}
  names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
  used = {names[c] for c in codes}
  needed = {"ADD", "CONCATENATION", "MAX_POOL_2D", "AVERAGE_POOL_2D", "DEPTHWISE_CONV_2D"}
  assert needed | {"CONV_2D", "STRIDED_SLICE", "MEAN", "FULLY_CONNECTED"} <= used
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


def test_metadata_records_the_graph(darts_graph, tmp_path):
  graph, _ = darts_graph
  meta = read_metadata(export_graph_tflite(graph, tmp_path / "m.tflite"))
  assert meta["qdarts.graph"] == "dag" and meta["dataset"] == "synthetic"
  layers = {layer["name"]: layer for layer in meta["qdarts.layers"]}
  assert layers["cell0.node0.from0.sep_conv_3x3.dw1"]["weights"] == "INT4"


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
  assert record["logit_range"] == "worst case"  # never calibrated on the verification inputs


def test_the_logit_range_comes_from_calibration_inputs_not_verification_inputs(
  darts_graph, tmp_path
):
  graph, x = darts_graph
  calibrated = with_logit_range(graph, x[:8])  # stands in for training inputs
  lo, hi = (float(v) for v in calibrated.metadata[LOGIT_RANGE_KEY].split(","))
  assert (lo, hi) == observed_logit_range(integer_graph_forward(to_integer_graph(graph), x[:8]))
  record = export_and_verify(calibrated, tmp_path, ["tflite"], x[8:])["tflite"]
  assert record["logit_range"] == "recorded from training inputs, x2"
  assert record["max_logit_diff_lsb"] == 0.0
  assert read_metadata(tmp_path / "model.tflite")["qdarts.logits"]["scale"] == pytest.approx(
    graph_logit_quantization(graph, (lo, hi))[0]
  )


def test_an_observed_logit_range_gives_finer_logit_codes(darts_graph, tmp_path):
  """The worst-case range leaves real logits few int8 codes; a range from observed logits (as
  export_and_verify writes it) spreads them over many more, still within a code of the
  integer model."""
  graph, x = darts_graph
  igraph = to_integer_graph(graph, rounding="litert")
  observed = integer_graph_forward(igraph, x)
  logit_range = observed_logit_range(observed)
  path = export_graph_tflite(graph, tmp_path / "m.tflite", logit_range)
  meta = read_metadata(path)["qdarts.logits"]
  scale, zero_point = graph_logit_quantization(graph, logit_range)
  assert (meta["scale"], meta["zero_point"]) == (scale, zero_point)
  assert scale < graph_logit_quantization(graph)[0] / 4
  got = _logit_codes(run_tflite(path, x, kernels="builtin"), scale, zero_point)
  expected = _logit_codes(observed, scale, zero_point)
  assert np.abs(got - expected).max() <= 1
  assert got.min() > -128 and got.max() < 127  # nothing saturates
