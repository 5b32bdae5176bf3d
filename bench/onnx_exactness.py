"""Every tensor of an exported SubNet in ONNX Runtime against the integer model's ``ort`` form.

Builds the run's ONNX model in memory (chains through their graph), runs the first ``--n`` test
inputs of the run's dataset at each ``--levels`` optimization level with every tensor's codes as
an output, and prints per level how many codes differ from
:func:`qdarts.export.graph_integer.integer_graph_trace` in the ``ort`` form (the README's
"every tensor of every test image" figures):

    python bench/onnx_exactness.py /tmp/dfm1 --n 2000 --data-dir ../shared/datasets
"""

import argparse
import sys

import numpy as np

from qdarts.errors import ConfigError
from qdarts.export.formats import verification_inputs
from qdarts.export.from_chain import graph_from_chain
from qdarts.export.graph_file import load_subnet
from qdarts.export.graph_integer import integer_graph_trace, to_integer_graph
from qdarts.export.graph_ir import QuantizedGraph
from qdarts.export.graph_onnx import build_graph_model, run_graph_onnx_codes
from qdarts.export.onnx import OPTIMIZATION_LEVELS, OUTPUT_NAME


def code_differences(
  graph: QuantizedGraph, x: np.ndarray, levels: tuple[str, ...]
) -> dict[str, tuple[int, int, list[str]]]:
  """Per level: (codes compared, codes that differ, the first tensors that differ)."""
  igraph = to_integer_graph(graph, rounding="ort")
  expected = integer_graph_trace(igraph, x)
  model = build_graph_model(graph)
  result = {}
  for level in levels:
    got = run_graph_onnx_codes(model, igraph, x, level)
    del got[OUTPUT_NAME]
    differ = {name: int((codes != expected[name]).sum()) for name, codes in got.items()}
    compared = sum(codes.size for codes in got.values())
    result[level] = (compared, sum(differ.values()), [k for k, v in differ.items() if v][:3])
  return result


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("run", help="a run folder with subnet.npz")
  parser.add_argument("--n", type=int, default=2000, help="test inputs (default 2000)")
  parser.add_argument("--levels", default="extended,all,disabled", help="comma list")
  parser.add_argument("--data-dir", default=None)
  args = parser.parse_args(argv)
  levels = tuple(args.levels.split(","))
  try:
    unknown = [lvl for lvl in levels if lvl not in OPTIMIZATION_LEVELS]
    if unknown or args.n < 1:
      raise ConfigError(
        f"--levels must name {', '.join(OPTIMIZATION_LEVELS)} and --n be positive, got "
        f"{args.levels!r}, {args.n}"
      )
    subnet = load_subnet(f"{args.run}/subnet.npz")
    graph = subnet if isinstance(subnet, QuantizedGraph) else graph_from_chain(subnet)
    x = verification_inputs(subnet, args.data_dir, args.n)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for level, (compared, differ, where) in code_differences(graph, x, levels).items():
    print(f"{level}: {differ} of {compared} codes differ ({len(x)} inputs) {' '.join(where)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
