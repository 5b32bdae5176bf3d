"""A :class:`QuantizedChain` on disk: ``subnet.npz``, the run's exportable SubNet.

One ``.npz`` (numpy's zip of ``.npy`` arrays, read with ``allow_pickle=False``, so loading
cannot run code): per layer its arrays under ``"{i}/{field}"``, and a JSON document under
``"chain.json"`` (as uint8 bytes) with the layer kinds, names, bits, steps, strides and paddings,
the input shape, the number of classes and the metadata. ``qdarts export RUN`` rebuilds every
format from it without JAX.
"""

import dataclasses
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from qdarts.errors import ConfigError
from qdarts.export.ir import QAdd, QConv, QGlobalAvgPool, QLinear, QuantizedChain, validate_chain
from qdarts.run_dir import atomic_write_bytes

FORMAT = "qdarts.chain/1"
_KINDS = {"conv": QConv, "pool": QGlobalAvgPool, "linear": QLinear, "add": QAdd}
_ARRAYS = ("weight", "bias", "w_step")


def _kind(layer) -> str:
  return next(k for k, cls in _KINDS.items() if isinstance(layer, cls))


def save_chain(chain: QuantizedChain, path: str | os.PathLike) -> Path:
  """Writes ``chain`` to ``path`` atomically; returns the path."""
  arrays, layers = {}, []
  for i, layer in enumerate(chain.layers):
    record = {"kind": _kind(layer)}
    for f in dataclasses.fields(layer):
      value = getattr(layer, f.name)
      if f.name in _ARRAYS:
        arrays[f"{i}/{f.name}"] = np.asarray(value, np.float32)
      else:
        record[f.name] = value
    layers.append(record)
  doc = {
    "format": FORMAT,
    "input_shape": list(chain.input_shape),
    "num_classes": chain.num_classes,
    "metadata": dict(chain.metadata),
    "layers": layers,
  }
  arrays["chain.json"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return atomic_write_bytes(Path(path), buffer.getvalue())


def load_chain(path: str | os.PathLike) -> QuantizedChain:
  """Reads a chain written by :func:`save_chain`.

  Raises:
    ConfigError: the file is missing, not such a file, or describes an invalid chain (named).
  """
  path = Path(path)
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
    doc = json.loads(arrays.pop("chain.json").tobytes())
  except FileNotFoundError:
    raise ConfigError(f"{path}: SubNet file not found") from None
  except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as e:
    raise ConfigError(f"{path}: not a qdarts SubNet file ({e.__class__.__name__})") from None
  if not isinstance(doc, dict) or doc.get("format") != FORMAT:
    raise ConfigError(f"{path}: not a qdarts SubNet file (expected format {FORMAT!r})")
  try:
    layers = []
    for i, record in enumerate(doc["layers"]):
      record = dict(record)
      cls = _KINDS[record.pop("kind")]
      for name in _ARRAYS:
        if name in {f.name for f in dataclasses.fields(cls)}:
          record[name] = arrays[f"{i}/{name}"]
      if "padding" in record:
        record["padding"] = tuple(tuple(p) for p in record["padding"])
      layers.append(cls(**record))
    chain = QuantizedChain(
      layers=tuple(layers),
      input_shape=tuple(doc["input_shape"]),
      num_classes=int(doc["num_classes"]),
      metadata=dict(doc["metadata"]),
    )
    validate_chain(chain)
  except (KeyError, TypeError, ValueError) as e:
    raise ConfigError(f"{path}: invalid SubNet ({e.__class__.__name__}: {e})") from None
  return chain
