"""A :class:`QuantizedGraph` on disk: a DARTS run's ``subnet.npz``.

The layout of :mod:`qdarts.export.chain_file` — one ``.npz`` read with ``allow_pickle=False``:
per node its arrays under ``"{i}/{field}"`` and a JSON document ``"graph.json"`` (uint8 bytes)
with the node kinds and every other field, the input shape and grid, the number of classes and
the metadata — under its own format tag, ``"qdarts.graph/1"``. :func:`load_subnet` reads either
kind of file.
"""

import dataclasses
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from qdarts.errors import ConfigError
from qdarts.export.graph_ir import (
  GAdd,
  GAvgPool,
  GConcat,
  GConv,
  GGlobalAvgPool,
  GLinear,
  GMaxPool,
  GRequant,
  Grid,
  QuantizedGraph,
  validate_graph,
)
from qdarts.export.ir import QuantizedChain
from qdarts.run_dir import atomic_write_bytes

FORMAT = "qdarts.graph/1"
_KINDS = {
  "conv": GConv,
  "requant": GRequant,
  "add": GAdd,
  "concat": GConcat,
  "max_pool": GMaxPool,
  "avg_pool": GAvgPool,
  "global_avg_pool": GGlobalAvgPool,
  "linear": GLinear,
}
_ARRAYS = ("weight", "bias", "w_step")


def node_kind(node) -> str:
  """The file's name of a node's kind (``"conv"``, ``"avg_pool"``, …)."""
  return next(k for k, cls in _KINDS.items() if type(node) is cls)


def _record(i: int, node, arrays: dict) -> dict:
  record = {"kind": node_kind(node)}
  for f in dataclasses.fields(node):
    value = getattr(node, f.name)
    if f.name in _ARRAYS:
      arrays[f"{i}/{f.name}"] = np.asarray(value, np.float32)
    elif isinstance(value, Grid):
      record[f.name] = dataclasses.asdict(value)
    else:
      record[f.name] = value
  return record


def save_graph(graph: QuantizedGraph, path: str | os.PathLike) -> Path:
  """Writes ``graph`` to ``path`` atomically; returns the path."""
  arrays: dict[str, np.ndarray] = {}
  doc = {
    "format": FORMAT,
    "input_shape": list(graph.input_shape),
    "input_grid": dataclasses.asdict(graph.input_grid),
    "num_classes": graph.num_classes,
    "metadata": dict(graph.metadata),
    "nodes": [_record(i, node, arrays) for i, node in enumerate(graph.nodes)],
  }
  arrays["graph.json"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return atomic_write_bytes(Path(path), buffer.getvalue())


def _node(i: int, record: dict, arrays: dict):
  record = dict(record)
  cls = _KINDS[record.pop("kind")]
  names = {f.name for f in dataclasses.fields(cls)}
  for name in _ARRAYS:
    if name in names:
      record[name] = arrays[f"{i}/{name}"]
  if "out" in record:
    record["out"] = Grid(**record["out"])
  if "padding" in record:
    record["padding"] = tuple(tuple(p) for p in record["padding"])
  record["inputs"] = tuple(record["inputs"])
  return cls(**record)


def _read(path: Path) -> tuple[dict, dict]:
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
    key = "graph.json" if "graph.json" in arrays else "chain.json"
    return json.loads(arrays.pop(key).tobytes()), arrays
  except FileNotFoundError:
    raise ConfigError(f"{path}: SubNet file not found") from None
  except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as e:
    raise ConfigError(f"{path}: not a qdarts SubNet file ({e.__class__.__name__})") from None


def load_graph(path: str | os.PathLike) -> QuantizedGraph:
  """Reads a graph written by :func:`save_graph`.

  Raises:
    ConfigError: the file is missing, not such a file, or describes an invalid graph (named).
  """
  path = Path(path)
  doc, arrays = _read(path)
  if not isinstance(doc, dict) or doc.get("format") != FORMAT:
    raise ConfigError(f"{path}: not a qdarts SubNet graph file (expected format {FORMAT!r})")
  try:
    graph = QuantizedGraph(
      nodes=tuple(_node(i, r, arrays) for i, r in enumerate(doc["nodes"])),
      input_shape=tuple(doc["input_shape"]),
      input_grid=Grid(**doc["input_grid"]),
      num_classes=int(doc["num_classes"]),
      metadata=dict(doc["metadata"]),
    )
    validate_graph(graph)
  except (KeyError, TypeError, ValueError) as e:
    raise ConfigError(f"{path}: invalid SubNet graph ({e.__class__.__name__}: {e})") from None
  return graph


def load_subnet(path: str | os.PathLike) -> QuantizedChain | QuantizedGraph:
  """A run's ``subnet.npz``: a chain (:func:`~qdarts.export.chain_file.load_chain`) or a
  graph, told apart by the format tag inside."""
  from qdarts.export.chain_file import load_chain  # noqa: PLC0415

  doc, _ = _read(Path(path))
  if isinstance(doc, dict) and doc.get("format") == FORMAT:
    return load_graph(path)
  return load_chain(path)
