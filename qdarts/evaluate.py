"""`qdarts eval MODEL`: accuracy and latency of an exported model in its own runtime.

The model's metadata names its dataset and the exact test split (the run's ``data`` section
and seed), so a deployed artifact is checked in one command against the numbers of its run.
Runtimes are looked up by file kind: ``.onnx`` → ONNX Runtime, ``.tflite`` → LiteRT, a C
export folder (``manifest.json``) → the compiled C reference.
"""

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qdarts.config import DataConfig, build_section
from qdarts.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
  """How to run one kind of exported model.

  Attributes:
    name: shown to the user.
    metadata: ``path -> {key: value}`` of the model's recorded metadata.
    runner: ``path -> (x_nhwc float32 (N, H, W, C) -> logits (N, K))``: loads once.
  """

  name: str
  metadata: Callable[[Path], dict]
  runner: Callable[[Path], Callable[[np.ndarray], np.ndarray]]


def _onnx_metadata(path: Path) -> dict:
  import onnx  # noqa: PLC0415

  try:
    model = onnx.load(str(path), load_external_data=False)
  except Exception as e:  # onnx raises DecodeError and others for a foreign file
    raise ConfigError(f"{path}: not an ONNX model ({e.__class__.__name__})") from None
  return {p.key: p.value for p in model.metadata_props}


def _onnx_runner(path: Path):
  import onnxruntime as ort  # noqa: PLC0415

  options = ort.SessionOptions()
  options.log_severity_level = 3
  session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
  name = session.get_inputs()[0].name

  def run(x: np.ndarray) -> np.ndarray:
    return session.run(None, {name: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]

  return run


RUNTIMES: dict[str, Runtime] = {".onnx": Runtime("onnxruntime", _onnx_metadata, _onnx_runner)}


def runtime_for(path: Path) -> Runtime:
  """The runtime of ``path`` by its kind, or a ConfigError listing the kinds known."""
  key = "manifest" if path.is_dir() or path.name == "manifest.json" else path.suffix
  if key not in RUNTIMES:
    raise ConfigError(
      f"{path}: unknown model kind {key or path.name!r}; known: {', '.join(RUNTIMES)}"
    )
  return RUNTIMES[key]


def data_config_of(metadata: dict, path: Path) -> tuple[DataConfig, int]:
  """The ``DataConfig`` and seed recorded in a model's metadata (key ``data``)."""
  if "data" not in metadata:
    raise ConfigError(
      f"{path}: the model records no dataset (metadata 'data'); pass --dataset and --data-dir"
    )
  try:
    section = json.loads(metadata["data"])
    seed = int(section.pop("seed", 0))
    return build_section(DataConfig, section, f"{path}: metadata data"), seed
  except (ValueError, TypeError, AttributeError) as e:
    raise ConfigError(f"{path}: metadata 'data' is not a data section ({e})") from None


def evaluate(
  path: str | Path,
  *,
  dataset: str | None = None,
  data_dir: str | None = None,
  latency_samples: int = 50,
) -> dict:
  """Accuracy on the recorded (or given) dataset's test split, and median latency per sample.

  Args:
    path: the exported model.
    dataset: another dataset name (default: the model's).
    data_dir: where the dataset files are (default: the usual lookup, see qdarts.datasets).
    latency_samples: single-sample runs timed after one warm-up; the median is reported.

  Returns:
    ``{"model", "runtime", "dataset", "samples", "accuracy", "latency_ms_median"}``.
  """
  from qdarts.data import load_dataset  # noqa: PLC0415 (JAX import, only when evaluating)

  path = Path(path)
  if not path.exists():
    raise ConfigError(f"{path}: model file not found")
  runtime = runtime_for(path)
  metadata = runtime.metadata(path)
  if "data" in metadata or dataset is None:
    cfg, seed = data_config_of(metadata, path)
  else:  # a model from elsewhere: the named dataset's default split
    cfg, seed = DataConfig(dataset=dataset), 0
  updates = {k: v for k, v in (("dataset", dataset), ("data_dir", data_dir)) if v is not None}
  cfg = DataConfig(**{**cfg.__dict__, **updates})
  data = load_dataset(cfg, seed)
  x, y = np.asarray(data.to_input(data.x_test), np.float32), np.asarray(data.y_test)
  run = runtime.runner(path)
  try:
    run(x[:1])
  except Exception as e:  # the runtime's own error type: a model for other inputs
    raise ConfigError(
      f"{path}: {runtime.name} cannot run it on {data.name} inputs of shape "
      f"{tuple(x.shape[1:])} ({e.__class__.__name__})"
    ) from None
  logits = np.concatenate([run(x[i : i + 256]) for i in range(0, len(x), 256)])
  if logits.shape != (len(y), data.num_classes):
    raise ConfigError(
      f"{path}: the model gives outputs of shape {logits.shape[1:]}, "
      f"{data.name} has {data.num_classes} classes"
    )
  times = []
  for i in range(min(latency_samples, len(x))):
    t0 = time.perf_counter()
    run(x[i : i + 1])
    times.append(time.perf_counter() - t0)
  return {
    "model": str(path),
    "runtime": runtime.name,
    "dataset": data.name,
    "samples": int(len(y)),
    "accuracy": float((logits.argmax(-1) == y).mean()),
    "latency_ms_median": 1000 * statistics.median(times),
  }
