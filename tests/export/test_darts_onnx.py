"""ONNX QDQ export of a DARTS final network's graph: ONNX Runtime computes the integer model's
``"ort"`` form code for code, the format's conventions, the graph file, and one-line refusals of
other formats."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from qdarts.errors import ConfigError
from qdarts.export.formats import export_and_verify
from qdarts.export.graph_file import load_graph, load_subnet, save_graph
from qdarts.export.graph_integer import integer_graph_forward, integer_graph_trace, to_integer_graph
from qdarts.export.graph_ir import GConv, GLinear, Grid, QuantizedGraph
from qdarts.export.graph_onnx import build_graph_model, export_graph_onnx, run_graph_onnx_codes
from qdarts.export.onnx import IR_VERSION, OPSET, OUTPUT_NAME, run_onnx


def _code_differences(model, graph: QuantizedGraph, x: np.ndarray, level: str, rounding: str):
  """Per tensor, how many codes ORT computes otherwise than the integer model in ``rounding``."""
  igraph = to_integer_graph(graph, rounding=rounding)
  expected = integer_graph_trace(igraph, x)
  got = run_graph_onnx_codes(model, igraph, x, level)
  del got[OUTPUT_NAME]
  assert set(got) == set(expected) - {graph.nodes[-1].name}
  return {name: int((codes != expected[name]).sum()) for name, codes in got.items()}


@pytest.mark.parametrize("level", ["extended", "all"])
def test_onnx_runtime_computes_the_ort_form_code_for_code(darts_graph, level):
  graph, x = darts_graph
  differ = _code_differences(build_graph_model(graph), graph, x, level, "ort")
  assert sum(differ.values()) == 0, {k: v for k, v in differ.items() if v}


@pytest.mark.parametrize("level", ["disabled", "basic"])
def test_without_fusion_onnx_runtime_stays_within_one_lsb(darts_graph, tmp_path, level):
  """Unfused, ORT runs the 8-bit convs in float on the trained steps: not exact by
  construction (measured: 1e-5 of the codes on a Fashion-MNIST network), close."""
  graph, x = darts_graph
  igraph = to_integer_graph(graph, rounding="ort")
  logits = run_onnx(export_graph_onnx(graph, tmp_path / "model.onnx"), x, optimization=level)
  expected = integer_graph_forward(igraph, x)
  gap = np.abs(logits.astype(np.float64) - expected) / igraph.logit_scale
  assert gap.max() <= 1.0, level
  assert (logits.argmax(-1) == expected.argmax(-1)).all()


def _on_ties(graph: QuantizedGraph, rng: np.random.Generator) -> QuantizedGraph:
  """``graph`` with every activation step 0.3, every weight step 0.5 and small integer weights,
  no biases: each conv's M = 0.3·0.5/0.3 = 1/2 and each global pool's 1/(H·W), so that many
  requantizations land exactly on a tie, and every product of the trained steps is inexact in
  float32. Single rounding breaks ties away from zero, ORT to even; a float conv on the trained
  steps lands on either side of a tie by its summation error."""

  def grid(g: Grid) -> Grid:
    return Grid(0.3, g.bits, g.signed)

  nodes = []
  for node in graph.nodes:
    changes = {"out": grid(node.out)} if hasattr(node, "out") else {}
    if isinstance(node, GConv | GLinear):
      step = np.full(np.shape(node.w_step), 0.5, np.float32)
      codes = rng.integers(-1, 2, node.weight.shape)
      changes.update(weight=(codes * 0.5).astype(np.float32), w_step=step,
                     bias=np.zeros_like(node.bias))  # fmt: skip
    nodes.append(dataclasses.replace(node, **changes))
  return dataclasses.replace(graph, nodes=tuple(nodes), input_grid=grid(graph.input_grid))


def test_ties_round_as_onnx_runtime_rounds_them(darts_graph):
  """On a graph full of exact ties ORT still matches the ``"ort"`` form code for code, and the
  single-rounding model parts from it: the tie rule is what ``"ort"`` adds."""
  graph, x = darts_graph
  tied = _on_ties(graph, np.random.default_rng(0))
  model = build_graph_model(tied)
  for level in ("extended", "all"):
    differ = _code_differences(model, tied, x, level, "ort")
    assert sum(differ.values()) == 0, {k: v for k, v in differ.items() if v}
  assert sum(_code_differences(model, tied, x, "extended", "single").values()) > 0


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
  assert record["prediction_agreement"] == 1.0 and record["max_logit_diff_lsb"] <= 0.01
  assert record["bit_exact"] and record["max_code_diff"] == 0
  assert record["levels"] == ["extended", "all"]
  onnx.checker.check_model(onnx.load(tmp_path / "model.onnx"), full_check=True)


def test_all_8bit_darts_network_runs_integer_kernels_in_ort(tmp_path):
  """Every tensor is uint8 (signed grids at zero point 128), so ORT fuses every conv; the adds
  run in int32 (no QLinearAdd, whose arithmetic differs between CPUs)."""
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
  assert "Conv" not in ops and "QLinearAdd" not in ops  # measured: 30 QLinearConv
  igraph = to_integer_graph(graph, rounding="ort")
  gap = np.abs(logits - integer_graph_forward(igraph, np.asarray(x))) / igraph.logit_scale
  assert gap.max() <= 0.01
  differ = _code_differences(onnx.load(path), graph, np.asarray(x), "extended", "ort")
  assert sum(differ.values()) == 0
