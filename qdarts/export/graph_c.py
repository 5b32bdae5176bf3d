"""C export of an integer graph (a DARTS final network): tables, packed weights, a C99 runtime.

:func:`export_graph_c` writes into one folder ``model.h`` (``extern const qdarts_graph_model
<symbol>;`` and the size macros of :mod:`qdarts.export.c_export`), ``model.c`` (per node its
packed weight codes, int32 biases, per-channel multipliers and shifts, its input tensor
indices; the tensor table with arena offsets planned from liveness; the node table), the
runtime ``qdarts_graph.h`` / ``qdarts_graph.c`` with ``qdarts_infer.h`` / ``qdarts_infer.c`` (its
fixed point), and ``manifest.json`` (written last). The runtime computes exactly the integers of
:func:`~qdarts.export.graph_integer.integer_graph_trace`; weights are packed as in
:mod:`qdarts.export.c_export` (8, 4 or 2-bit containers, output channels first).
"""

import os
from pathlib import Path

import numpy as np

from qdarts.export.c_export import (
  _IDENTIFIER,
  _RESERVED,
  _ROUNDING,
  DEFAULT_SYMBOL,
  RUNTIME_FILES,
  _c_array,
  _c_float,
  _c_int32,
  _c_string,
  compile_driver,
  container_bits,
  model_header,
  pack_weight_codes,
  write_c_folder,
)
from qdarts.export.graph_file import node_kind
from qdarts.export.graph_integer import IntegerGraph, IntNode, to_integer_graph
from qdarts.export.graph_ir import INPUT, GAdd, GConv, GLinear, QuantizedGraph

FORMAT = "qdarts.c_graph_export/1"
GRAPH_RUNTIME_FILES = ("qdarts_graph.h", "qdarts_graph.c", *RUNTIME_FILES)
_OPS = {
  "conv": "QDARTS_GRAPH_CONV",
  "requant": "QDARTS_GRAPH_REQUANT",
  "add": "QDARTS_GRAPH_ADD",
  "concat": "QDARTS_GRAPH_CONCAT",
  "max_pool": "QDARTS_GRAPH_MAX_POOL",
  "avg_pool": "QDARTS_GRAPH_AVG_POOL",
  "global_avg_pool": "QDARTS_GRAPH_GLOBAL_AVG_POOL",
  "linear": "QDARTS_GRAPH_LINEAR",
}


def _tensors(igraph: IntegerGraph) -> list[dict]:
  """Tensor 0 is the input, then every node output but the logits, in node order, each placed
  in the arena by :func:`_place` (``"offset"``)."""
  records = []
  shapes = [(INPUT, igraph.input_shape, igraph.input_grid)]
  shapes += [(n.node.name, n.out_shape, n.out_grid) for n in igraph.nodes[:-1]]
  for name, shape, grid in shapes:
    h, w, c = shape if len(shape) == 3 else (1, 1, shape[0])
    records.append({"name": name, "shape": [h, w, c], "signed": bool(grid.signed),
                    "bytes": h * w * c})  # fmt: skip
  _place(igraph, records)
  return records


def _place(igraph: IntegerGraph, records: list[dict]) -> None:
  """Arena offsets by liveness: node k's output takes the lowest gap that fits among the
  tensors still to be read (its own inputs included, so it never overlaps them); a tensor's
  bytes are free after the last node that reads it."""
  index = {r["name"]: i for i, r in enumerate(records)}
  last_read = {name: -1 for name in index}
  for k, n in enumerate(igraph.nodes):
    for name in n.node.inputs:
      last_read[name] = k
  live: dict[str, tuple[int, int]] = {}  # name -> (offset, bytes)

  def allocate(name: str) -> None:
    size, offset = records[index[name]]["bytes"], 0
    for start, length in sorted(live.values()):
      if start - offset >= size:
        break
      offset = max(offset, start + length)
    live[name] = (offset, size)
    records[index[name]]["offset"] = offset

  allocate(INPUT)
  for k, n in enumerate(igraph.nodes[:-1]):
    allocate(n.node.name)
    for name in [m for m in live if last_read[m] <= k]:
      del live[name]


def _requant_arrays(n: IntNode) -> tuple[np.ndarray, np.ndarray] | None:
  """Per output channel (broadcast from one value), or the add's three pairs."""
  if isinstance(n.node, GAdd):
    (m_a, s_a), (m_b, s_b) = n.add_inputs
    mult = [m_a, m_b, int(n.requant.multiplier[0])]
    return np.array(mult, np.int32), np.array([s_a, s_b, int(n.requant.shift[0])], np.int32)
  if n.requant is None:
    return None
  c = n.out_shape[-1]
  return (np.broadcast_to(n.requant.multiplier, (c,)).astype(np.int32),
          np.broadcast_to(n.requant.shift, (c,)).astype(np.int32))  # fmt: skip


def _node_source(k: int, n: IntNode, index: dict[str, int], parts: list[str]) -> str:
  """Appends node k's arrays to ``parts``; returns its descriptor."""
  node = n.node
  inputs = [str(index[i]) for i in node.inputs]
  parts.append(_c_array("int32_t", f"n{k}_inputs", inputs, 12))
  fields = {
    "name": _c_string(node.name), "op": _OPS[node_kind(node)],
    "num_inputs": len(inputs), "inputs": f"n{k}_inputs",
    "output": index.get(node.name, -1),
    "kernel_h": 0, "kernel_w": 0, "stride": getattr(node, "stride", 1), "pad_top": 0,
    "pad_left": 0, "dilation": 1, "groups": 1, "offset": 0, "w_container_bits": 0,
    "out_min": n.requant.lo if n.requant else 0, "out_max": n.requant.hi if n.requant else 0,
    "weights": "NULL", "bias": "NULL", "multiplier": "NULL", "shift": "NULL",
  }  # fmt: skip
  if isinstance(node, GConv):
    fields.update(kernel_h=n.weight.shape[1], kernel_w=n.weight.shape[2],
                  pad_top=node.padding[0][0], pad_left=node.padding[1][0],
                  dilation=node.dilation, groups=node.groups, offset=node.offset)  # fmt: skip
  if isinstance(node, GConv | GLinear):
    bits = container_bits(node.w_bits)
    packed = pack_weight_codes(n.weight, bits)
    parts.append(_c_array("uint8_t", f"n{k}_weights", [f"0x{b:02x}" for b in packed.tolist()], 12))
    parts.append(_c_array("int32_t", f"n{k}_bias", [_c_int32(v) for v in n.bias.tolist()], 6))
    fields.update(w_container_bits=bits, weights=f"n{k}_weights", bias=f"n{k}_bias")
  requant = _requant_arrays(n)
  if requant is not None:
    for key, values in zip(("multiplier", "shift"), requant, strict=True):
      parts.append(_c_array("int32_t", f"n{k}_{key}", [_c_int32(v) for v in values.tolist()], 6))
      fields[key] = f"n{k}_{key}"
  body = ",\n".join(f"    .{key} = {value}" for key, value in fields.items())
  return f"  {{\n{body}\n  }}"


def render_graph_c(igraph: IntegerGraph, symbol: str = DEFAULT_SYMBOL) -> tuple[str, str]:
  """The text of ``model.h`` and ``model.c`` for an integer graph.

  Raises:
    ValueError: ``symbol`` is not a C identifier or is one of the runtime's names.
  """
  if not _IDENTIFIER.match(symbol) or symbol in _RESERVED or symbol.startswith("qdarts_graph"):
    raise ValueError(f"symbol {symbol!r} must be a C identifier other than the runtime's names")
  if igraph.rounding not in _ROUNDING:
    raise ValueError(f"the C runtime rounds {' or '.join(_ROUNDING)}, not {igraph.rounding!r}")
  tensors = _tensors(igraph)
  index = {t["name"]: i for i, t in enumerate(tensors)}
  sizes = _sizes(igraph, tensors)
  header = model_header(
    f"qdarts.export.graph_c ({FORMAT})", "qdarts_graph.h", "qdarts_graph_model", symbol,
    igraph.input_shape, igraph.num_classes, sizes,
  )  # fmt: skip
  parts = [
    f"/* Generated by qdarts.export.graph_c ({FORMAT}); do not edit.\n"
    f" * {len(igraph.nodes)} nodes, {len(tensors)} tensors, {igraph.rounding} rounding. */\n"
    '#include "model.h"\n\n#include <stddef.h>\n'
  ]
  descriptors = [_node_source(k, n, index, parts) for k, n in enumerate(igraph.nodes)]
  rows = [f"  {{{t['shape'][0]}, {t['shape'][1]}, {t['shape'][2]}, {int(t['signed'])}, "
          f"{t['offset']}}}" for t in tensors]  # fmt: skip
  parts.append(f"static const qdarts_graph_tensor tensors[{len(rows)}] = {{\n"
               + ",\n".join(rows) + "\n};\n")  # fmt: skip
  parts.append(f"static const qdarts_graph_node nodes[{len(descriptors)}] = {{\n"
               + ",\n".join(descriptors) + "\n};\n")  # fmt: skip
  scales = [_c_float(v) for v in igraph.logit_scale.tolist()]
  parts.append(_c_array("float", "logit_scale", scales, 4))
  parts.append(
    f"const qdarts_graph_model {symbol} = {{\n"
    f"  .num_tensors = {len(tensors)},\n  .tensors = tensors,\n"
    f"  .num_nodes = {len(descriptors)},\n  .nodes = nodes,\n"
    f"  .rounding = {_ROUNDING[igraph.rounding]},\n"
    f"  .num_classes = {igraph.num_classes},\n"
    f"  .input_max = {igraph.input_grid.qrange()[1]},\n"
    f"  .input_bytes = {sizes['input_bytes']},\n"
    f"  .scratch_bytes = {sizes['scratch_bytes']},\n"
    f"  .trace_bytes = {sizes['trace_bytes']},\n"
    f"  .input_scale = {_c_float(igraph.input_grid.step)},\n"
    "  .logit_scale = logit_scale\n};\n"
  )
  return header, "\n".join(parts)


def _sizes(igraph: IntegerGraph, tensors: list[dict]) -> dict[str, int]:
  return {
    "input_bytes": tensors[0]["bytes"],
    "scratch_bytes": max(t["offset"] + t["bytes"] for t in tensors),
    "trace_bytes": sum(t["bytes"] for t in tensors[1:]),
  }


def _manifest(igraph: IntegerGraph, symbol: str, files: list[dict]) -> dict:
  tensors = _tensors(igraph)
  nodes = []
  for n in igraph.nodes:
    record = {"name": n.node.name, "op": node_kind(n.node), "inputs": list(n.node.inputs)}
    if n.weight is not None:
      bits = container_bits(n.node.w_bits)
      record.update(w_bits=int(n.node.w_bits), w_container_bits=bits,
                    weight_bytes=int(pack_weight_codes(n.weight, bits).nbytes))  # fmt: skip
    nodes.append(record)
  return {
    "format": FORMAT,
    "symbol": symbol,
    "rounding": igraph.rounding,
    "input": {
      "shape": list(igraph.input_shape),
      "layout": "NHWC",
      "dtype": "uint8",
      "bits": igraph.input_grid.bits,
      "scale": igraph.input_grid.step,
      "zero_point": 0,
    },  # fmt: skip
    "output": {
      "num_classes": igraph.num_classes,
      "dtype": "int32",
      "logits": "accumulator * logit_scale[c]",
      "logit_scale": [float(v) for v in igraph.logit_scale],
    },  # fmt: skip
    "sizes": {
      **_sizes(igraph, tensors),
      "weight_bytes": sum(r.get("weight_bytes", 0) for r in nodes),
    },  # fmt: skip
    "tensors": tensors,
    "nodes": nodes,
    "metadata": dict(igraph.metadata),
    "files": files,
  }


def export_graph_c(
  graph: QuantizedGraph | IntegerGraph,
  out_dir: str | os.PathLike,
  *,
  symbol: str = DEFAULT_SYMBOL,
  rounding: str = "single",
) -> list[Path]:
  """Writes ``model.h``, ``model.c``, the graph runtime and ``manifest.json`` into ``out_dir``
  (each file atomically, the manifest last); returns the paths written.

  Raises:
    ValueError: the graph has no integer form (naming the node) or a bad ``symbol``.
  """
  igraph = graph if isinstance(graph, IntegerGraph) else to_integer_graph(graph, rounding=rounding)
  header, source = render_graph_c(igraph, symbol)
  return write_c_folder(
    out_dir, header, source, GRAPH_RUNTIME_FILES, lambda files: _manifest(igraph, symbol, files)
  )


def build_graph_c_runner(
  export_dir: str | os.PathLike,
  executable: str | os.PathLike | None = None,
  *,
  compiler: str | None = None,
  flags: tuple[str, ...] = ("-std=c99", "-O2"),
) -> Path:
  """Compiles an :func:`export_graph_c` folder with the ``qdarts_run`` driver (its file
  formats: :func:`~qdarts.export.c_export.run_c_runner` runs it).

  Raises:
    RuntimeError: no C compiler, or compilation failed (with the compiler's message).
  """
  export_dir = Path(export_dir)
  sources = [export_dir / name for name in ("model.c", "qdarts_graph.c", "qdarts_infer.c")]
  return compile_driver(export_dir, sources, ["-DQDARTS_RUN_GRAPH"], executable, compiler, flags)


def decode_trace(igraph: IntegerGraph, trace: np.ndarray) -> dict[str, np.ndarray]:
  """The C driver's trace bytes ``(N, trace_bytes)`` as int32 codes per node output."""
  out, offset = {}, 0
  for t, n in zip(_tensors(igraph)[1:], igraph.nodes[:-1], strict=True):
    raw = trace[:, offset : offset + t["bytes"]]
    codes = raw.view(np.int8) if t["signed"] else raw
    out[t["name"]] = codes.astype(np.int32).reshape(len(trace), *n.out_shape)
    offset += t["bytes"]
  return out
