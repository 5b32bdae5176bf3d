"""ONNX QDQ export of a DARTS final network's graph: ONNX Runtime within 1 LSB of the integer
model, the format's conventions, the graph file, and one-line refusals of other formats."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from qdarts.errors import ConfigError
from qdarts.export.formats import export_and_verify
from qdarts.export.graph_file import load_graph, load_subnet, save_graph
from qdarts.export.graph_integer import integer_graph_forward, to_integer_graph
from qdarts.export.graph_ir import GConv, GLinear
from qdarts.export.graph_onnx import build_graph_model, export_graph_onnx
from qdarts.export.onnx import IR_VERSION, OPSET, run_onnx


@pytest.mark.parametrize("level", ["disabled", "extended"])
def test_onnx_runtime_within_one_lsb_of_the_integer_model(darts_graph, tmp_path, level):
  graph, x = darts_graph
  igraph = to_integer_graph(graph)
  path = export_graph_onnx(graph, tmp_path / "model.onnx")
  logits = run_onnx(path, x, optimization=level)
  expected = integer_graph_forward(igraph, x)
  gap = np.abs(logits.astype(np.float64) - expected) / igraph.logit_scale
  assert gap.max() <= 1.0, level  # accumulator LSBs of the classifier; measured 5.1e-5
  assert (logits.argmax(-1) == expected.argmax(-1)).all()


def test_model_follows_the_qdq_conventions(darts_graph):
  graph, _ = darts_graph
  model = build_graph_model(graph)
  assert model.ir_version == IR_VERSION and model.opset_import[0].version == OPSET
  types = {t.name: t.data_type for t in model.graph.initializer}
  for node in graph.nodes:
    if isinstance(node, GConv | GLinear):
      expected = TensorProto.INT4 if node.w_bits <= 4 else TensorProto.INT8
      assert types[f"{node.name}.w_codes"] == expected, node.name
  ops = [n.op_type for n in model.graph.node]
  assert ops.count("Conv") == sum(isinstance(n, GConv) for n in graph.nodes)
  clips = {n.name for n in model.graph.node if n.op_type == "Clip"}
  assert "cell1.node1.from2.sep_conv_5x5.in.q" in clips  # 4-bit activations: QCDQ
  assert {"AveragePool", "MaxPool", "Concat", "Add", "Slice"} <= set(ops)
  props = {p.key: p.value for p in model.metadata_props}
  layers = {layer["name"]: layer for layer in json.loads(props["qdarts.layers"])}
  assert layers["cell0.node0.from0.sep_conv_3x3.dw1"] == {
    "name": "cell0.node0.from0.sep_conv_3x3.dw1",
    "w_bits": 2,
    "a_bits": 4,
  }
  assert props["dataset"] == "synthetic" and props["qdarts.graph"] == "dag"


def test_int4_weights_take_half_the_bytes(darts_graph):
  graph, _ = darts_graph
  model = build_graph_model(graph)
  sizes = {t.name: len(t.raw_data) for t in model.graph.initializer if t.name.endswith("w_codes")}
  dw = "cell1.node1.from2.sep_conv_5x5.dw1"  # 4-bit, 5x5 depthwise on 8 channels: 200 codes
  assert sizes[f"{dw}.w_codes"] == 100


def test_graph_file_round_trip(darts_graph, tmp_path):
  graph, x = darts_graph
  path = save_graph(graph, tmp_path / "subnet.npz")
  loaded = load_subnet(path)
  assert [n.name for n in loaded.nodes] == [n.name for n in graph.nodes]
  np.testing.assert_array_equal(integer_graph_forward(loaded, x), integer_graph_forward(graph, x))
  (tmp_path / "bad.npz").write_bytes(b"not a zip")
  with pytest.raises(ConfigError, match="not a qdarts SubNet file"):
    load_graph(tmp_path / "bad.npz")


def test_export_and_verify_records_the_agreement(darts_graph, tmp_path):
  graph, x = darts_graph
  record = export_and_verify(graph, tmp_path, ["onnx"], x)["onnx"]
  assert record["path"] == "model.onnx" and (tmp_path / "model.onnx").exists()
  assert record["verified"] and record["samples"] == len(x)
  assert record["prediction_agreement"] == 1.0 and record["max_logit_diff_lsb"] <= 1.0
  onnx.checker.check_model(onnx.load(tmp_path / "model.onnx"), full_check=True)


def test_all_8bit_darts_network_runs_integer_kernels_in_ort(tmp_path):
  """Every tensor is uint8 (signed grids at zero point 128), so ORT fuses every conv and add."""
  import jax  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415

  from qdarts.export.from_darts import graph_from_darts  # noqa: PLC0415
  from search_spaces.darts_final import build_final  # noqa: PLC0415
  from search_spaces.darts_genotype import Genotype  # noqa: PLC0415

  normal = (("sep_conv_3x3", 0, 8, 8), ("skip_connect", 1, None, None))
  normal += (("dil_conv_5x5", 2, 8, 8), ("avg_pool_3x3", 0, None, None))
  reduce = (("skip_connect", 0, 8, 8), ("max_pool_3x3", 1, None, None))
  reduce += (("sep_conv_5x5", 2, 8, 8), ("dil_conv_3x3", 1, 8, 8))
  net = build_final(Genotype(normal, (2, 3), reduce, (2, 3)), (8, 8, 3), 10, nnx.Rngs(0), cells=3,
                    init_channels=4)  # fmt: skip
  x = jax.random.uniform(jax.random.key(3), (16, 8, 8, 3))
  net.calibrate(x)
  net.eval()
  graph = graph_from_darts(net, (8, 8, 3), 10, {})
  path = export_graph_onnx(graph, tmp_path / "model.onnx")
  optimized = tmp_path / "optimized.onnx"
  logits = run_onnx(path, np.asarray(x), optimization="extended", optimized_model_path=optimized)
  ops = [n.op_type for n in onnx.load(optimized).graph.node]
  assert ops.count("QLinearConv") == sum(isinstance(n, GConv) for n in graph.nodes)
  assert "Conv" not in ops and ops.count("QLinearAdd") == 2 * 3  # measured: 30 and 6
  igraph = to_integer_graph(graph)
  gap = np.abs(logits - integer_graph_forward(igraph, np.asarray(x))) / igraph.logit_scale
  assert gap.max() <= 1.0
