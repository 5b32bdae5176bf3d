"""bench/onnx_exactness.py: the README's per-tensor ONNX figures, and its one-line errors."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "onnx_exactness.py"
_spec = importlib.util.spec_from_file_location("onnx_exactness", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_counts_every_tensor_code_and_finds_none_differing(darts_graph):
  graph, x = darts_graph
  result = bench.code_differences(graph, x, ("extended", "all"))
  codes = sum(t.size for t in bench.integer_graph_trace(graph, x).values()) - len(x) * 10
  for compared, differ, where in result.values():
    assert compared == codes and differ == 0 and where == []


@pytest.mark.parametrize(
  ("args", "message"),
  [(["{tmp}"], "subnet.npz: SubNet file not found"), (["{tmp}", "--levels", "fast"], "--levels")],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
  assert bench.main([a.format(tmp=tmp_path) for a in args]) == 2
  err = capsys.readouterr().err.strip()
  assert message in err and "\n" not in err
