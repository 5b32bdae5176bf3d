"""C export of a DARTS final network's graph: compiled with the system C compiler, bit-exact with
the integer model on every tensor, in both roundings."""

import json
import shutil

import numpy as np
import pytest

from qdarts.export.c_export import container_bits, run_c_runner
from qdarts.export.formats import export_and_verify
from qdarts.export.graph_c import build_graph_c_runner, decode_trace, export_graph_c
from qdarts.export.graph_integer import integer_graph_trace, quantize_graph_input, to_integer_graph
from qdarts.export.graph_ir import GConv, GLinear

pytestmark = pytest.mark.skipif(
  not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")), reason="no C compiler"
)
STRICT = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")


@pytest.mark.parametrize("rounding", ["single", "double"])
def test_c_runtime_is_bit_exact_on_every_tensor(darts_graph, tmp_path, rounding):
  graph, x = darts_graph
  igraph = to_integer_graph(graph, rounding=rounding)
  export_graph_c(igraph, tmp_path / "c")
  runner = build_graph_c_runner(tmp_path / "c", tmp_path / "run", flags=STRICT)
  out = run_c_runner(runner, quantize_graph_input(igraph, x).astype(np.uint8))
  expected = integer_graph_trace(igraph, x)
  np.testing.assert_array_equal(out.accumulators, expected["head.fc"])
  traced = decode_trace(igraph, out.trace)
  assert len(traced) == len(graph.nodes) - 1
  for name, codes in traced.items():
    np.testing.assert_array_equal(codes, expected[name], err_msg=name)
  logits = out.accumulators.astype(np.float64) * igraph.logit_scale.astype(np.float64)
  np.testing.assert_array_equal(out.logits, logits.astype(np.float32))


def test_manifest_lists_the_tables_and_packed_sizes(darts_graph, tmp_path):
  graph, _ = darts_graph
  written = export_graph_c(graph, tmp_path)
  assert [p.name for p in written][-1] == "manifest.json"
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert manifest["format"] == "qdarts.c_graph_export/1"
  nodes = {n["name"]: n for n in manifest["nodes"]}
  weighted = [n for n in graph.nodes if isinstance(n, GConv | GLinear)]
  for node in weighted:
    record = nodes[node.name]
    count = int(np.prod(np.shape(node.weight)))
    assert record["w_container_bits"] == container_bits(node.w_bits)
    assert record["weight_bytes"] == -(-count * record["w_container_bits"] // 8), node.name
  assert {r["w_container_bits"] for r in nodes.values() if "w_bits" in r} == {2, 4, 8}
  tensors = manifest["tensors"]
  ends = [t["offset"] + t["bytes"] for t in tensors]
  assert manifest["sizes"]["scratch_bytes"] == max(ends) < sum(t["bytes"] for t in tensors) / 4
  signed = {t["name"]: t["signed"] for t in tensors}
  assert signed["cell0.node0"] and not signed["cell0.pre0.in"] and not signed["input"]
  listed = {f["path"] for f in manifest["files"]}
  assert {"model.c", "model.h", "qdarts_graph.c", "qdarts_infer.c"} <= listed


def test_export_and_verify_reports_bit_exact_c(darts_graph, tmp_path):
  graph, x = darts_graph
  record = export_and_verify(graph, tmp_path, ["c"], x)["c"]
  assert record["path"] == "c" and record["bit_exact"] is True
  assert record["prediction_agreement"] == 1.0 and record["max_logit_diff_lsb"] < 1e-3


def test_litert_rounding_has_no_c_runtime(darts_graph, tmp_path):
  graph, _ = darts_graph
  with pytest.raises(ValueError, match="the C runtime rounds single or double, not 'litert'"):
    export_graph_c(to_integer_graph(graph, rounding="litert"), tmp_path)
  assert not list(tmp_path.iterdir())
